"""`llmops monitor`: summarise the server's request log and check alert thresholds."""
