"""`llmops serve`: an OpenAI-compatible endpoint over a registered model."""
