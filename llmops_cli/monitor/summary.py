"""Summarise a JSONL request log: counts, errors, latency percentiles, tokens; per model version."""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_cli.errors import DataError
from llmops_cli.monitor.config import MonitorSection
from llmops_cli.utils import atomic_write_json


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method) of an already sorted list."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


@dataclass
class _Window:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0

    def summary(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "latency_p50_ms": percentile(lat, 0.50),
            "latency_p95_ms": percentile(lat, 0.95),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
        }


@dataclass
class MonitorResult:
    overall: dict[str, Any]
    per_model: dict[str, dict[str, Any]]
    corrupt_lines: int
    breaches: list[str]
    output: str

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def summarize(cfg: MonitorSection) -> MonitorResult:
    path = Path(cfg.request_log)
    if not path.is_file():
        raise DataError(f"no request log at {path}", hint="serve some requests first, or set monitor.request_log")
    overall = _Window()
    per_model: dict[str, _Window] = defaultdict(_Window)
    corrupt = 0
    with path.open(encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
                status = int(rec["status"])
                latency = float(rec["latency_ms"])
            except (json.JSONDecodeError, KeyError, TypeError, ValueError):
                corrupt += 1  # truncated or foreign lines are counted, never fatal
                continue
            for window in (overall, per_model[str(rec.get("model"))]):
                window.requests += 1
                window.errors += status >= 400
                window.latencies.append(latency)
                window.tokens_in += int(rec.get("prompt_tokens") or 0)
                window.tokens_out += int(rec.get("completion_tokens") or 0)
    summary = overall.summary()
    breaches = []
    if cfg.max_error_rate is not None and summary["error_rate"] > cfg.max_error_rate:
        breaches.append(f"error_rate {summary['error_rate']:.3f} > {cfg.max_error_rate}")
    p95 = summary["latency_p95_ms"]
    if cfg.max_latency_p95_ms is not None and p95 is not None and p95 > cfg.max_latency_p95_ms:
        breaches.append(f"latency_p95_ms {p95:.1f} > {cfg.max_latency_p95_ms}")
    result = MonitorResult(summary, {k: w.summary() for k, w in sorted(per_model.items())}, corrupt, breaches,
                           cfg.output)
    atomic_write_json(cfg.output, result.to_dict())
    return result
