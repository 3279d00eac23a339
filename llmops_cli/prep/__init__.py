"""`llmops prep`: read sources, clean, scrub PII, dedup, split; every input row is accounted for."""
