"""`llmops eval`: metrics for base vs tuned on the same examples, and gates CI can act on."""
