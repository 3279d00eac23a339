"""`llmops register`: a local model registry (SQLite index + content-addressed blobs)."""
