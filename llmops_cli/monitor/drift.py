"""Drift of production prompts against the training data: token-length PSI and n-gram JS divergence.

Tokens are lower-cased words and punctuation marks (a regex, no model tokenizer): the same on both
sides, cheap enough for a million prompts, and independent of which model version served them.
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_cli.errors import DataError

_TOKEN = re.compile(r"\w+|[^\w\s]")
EPS = 1e-4  # floor of a bin's share, so that an empty bin does not make PSI infinite


def tokenize(text: str) -> list[str]:
    return _TOKEN.findall(text.lower())


@dataclass
class TextProfile:
    """Token-length samples and unigram / bigram counts of a set of prompts."""

    lengths: list[int] = field(default_factory=list)
    unigrams: Counter[str] = field(default_factory=Counter)
    bigrams: Counter[tuple[str, str]] = field(default_factory=Counter)

    def add(self, text: str) -> None:
        tokens = tokenize(text)
        self.lengths.append(len(tokens))
        self.unigrams.update(tokens)
        self.bigrams.update(zip(tokens, tokens[1:], strict=False))

    @property
    def count(self) -> int:
        return len(self.lengths)


def load_reference(train_data: str | Path, prompt_field: str = "prompt") -> TextProfile:
    """Profile the prompts of prep's train split (rows whose prompt is missing or not text are skipped)."""
    path = Path(train_data)
    if not path.is_file():
        raise DataError(f"no training data at {path} to compare prompts with",
                        hint="run `llmops prep` first, or set monitor.drift.train_data / drift.enabled=false")
    profile = TextProfile()
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                row = json.loads(line)
            except ValueError:
                continue
            text = row.get(prompt_field) if isinstance(row, dict) else None
            if isinstance(text, list):  # chat rows: the last user message is what production logs hold
                users = [m.get("content") for m in text if isinstance(m, dict) and m.get("role") == "user"]
                text = users[-1] if users else None
            if isinstance(text, str):
                profile.add(text)
    if not profile.count:
        raise DataError(f"{path} holds no prompts in field {prompt_field!r}", hint="set monitor.drift.prompt_field")
    return profile


def psi(reference: list[int], current: list[int], bins: int = 10) -> float:
    """Population stability index of `current` against `reference`, over the reference's quantile bins."""
    ref = sorted(reference)
    edges = sorted({ref[min(len(ref) - 1, int(len(ref) * i / bins))] for i in range(1, bins)})

    def shares(values: list[int]) -> list[float]:
        from bisect import bisect_left

        counts = [0] * (len(edges) + 1)
        for v in values:
            counts[bisect_left(edges, v)] += 1  # bin i holds (edges[i-1], edges[i]]
        return [max(c / len(values), EPS) for c in counts]

    expected, actual = shares(reference), shares(current)
    return sum((a - e) * math.log(a / e) for a, e in zip(actual, expected, strict=True))


def js_divergence(p: Counter[Any], q: Counter[Any]) -> float:
    """Jensen-Shannon divergence (base 2, so within [0, 1]) of two count distributions."""
    p_total, q_total = sum(p.values()), sum(q.values())
    if not p_total or not q_total:
        return 0.0 if p_total == q_total else 1.0
    total = 0.0
    for key in p.keys() | q.keys():
        a, b = p.get(key, 0) / p_total, q.get(key, 0) / q_total
        m = (a + b) / 2
        if a:
            total += a * math.log2(a / m)
        if b:
            total += b * math.log2(b / m)
    return total / 2


def compare(reference: TextProfile, current: TextProfile) -> dict[str, float]:
    """Drift scores of `current` prompts against the reference profile."""
    return {
        "drift_length_psi": psi(reference.lengths, current.lengths),
        "drift_vocab_js": js_divergence(reference.unigrams, current.unigrams),
        "drift_bigram_js": js_divergence(reference.bigrams, current.bigrams),
        "drift_oov_rate": (sum(c for t, c in current.unigrams.items() if t not in reference.unigrams)
                           / max(1, sum(current.unigrams.values()))),
    }
