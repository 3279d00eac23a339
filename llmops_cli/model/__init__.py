"""Base model loading (hub id or local path through the same code) and offline scaffolding."""
