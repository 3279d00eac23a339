"""Config schemas and the loader."""
