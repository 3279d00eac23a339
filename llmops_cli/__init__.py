"""llmops: take an open LLM through its operational life from one command-line tool."""

__version__ = "0.1.0"
