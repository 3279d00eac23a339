"""Summarise the request and feedback logs: health, quality and drift per model version and time window.

One pass over the (rotated) request log fills a small bucket per (model, window); overall and per-model
figures are merged from the buckets afterwards, so a million lines cost one json.loads each and a few
additions. Everything the alert rules can test is a flat number in a scope's summary (see METRICS).
"""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from llmops_cli.monitor.config import MonitorSection
from llmops_cli.monitor.sources import JsonlReader, is_traffic, parse_prometheus, read_text
from llmops_cli.utils import atomic_write_json

# What `monitor check` rules can name; the summary of every scope holds these keys (None when unknown).
METRICS = {
    "requests": "requests in the scope",
    "errors": "requests answered with status >= 400",
    "error_rate": "errors / requests",
    "request_rate_per_s": "requests per second over the scope's time span",
    "latency_p50_ms": "median latency", "latency_p95_ms": "95th percentile latency",
    "latency_p99_ms": "99th percentile latency",
    "ttft_p50_ms": "median time to first token (streaming)", "ttft_p95_ms": "95th percentile time to first token",
    "tokens_in": "prompt tokens", "tokens_out": "completion tokens",
    "response_tokens_p50": "median completion length", "response_tokens_p95": "95th percentile completion length",
    "empty_rate": "successful responses with no text or zero completion tokens",
    "truncated_rate": "successful responses cut at max tokens (finish_reason length)",
    "refusal_rate": "logged responses matching a refusal pattern",
    "pii_rate": "logged responses holding PII (or a redaction placeholder)",
    "blocklist_rate": "logged responses holding a blocklisted term",
    "flagged_rate": "logged responses with any flag (empty, truncated, refusal, pii, blocklist)",
    "feedback_count": "feedback entries", "mean_rating": "mean feedback rating (1-5)",
    "low_rating_rate": "feedback at or below quality.low_rating",
    "drift_length_psi": "token-length PSI of prompts vs the train split",
    "drift_vocab_js": "unigram Jensen-Shannon divergence vs the train split",
    "drift_bigram_js": "bigram Jensen-Shannon divergence vs the train split",
    "drift_oov_rate": "share of prompt tokens never seen in the train split",
}


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Linear-interpolated percentile (numpy's default method) of an already sorted list."""
    if not sorted_values:
        return None
    pos = (len(sorted_values) - 1) * q
    low = int(pos)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (pos - low)


def length_bucket(n: int) -> str:
    """Power-of-two bucket label of a response length: 0, 1, 2-3, 4-7, ..."""
    if n <= 1:
        return str(max(n, 0))
    b = n.bit_length()
    return f"{1 << (b - 1)}-{(1 << b) - 1}"


@dataclass
class _Stats:
    requests: int = 0
    errors: int = 0
    latencies: list[float] = field(default_factory=list)
    ttfts: list[float] = field(default_factory=list)
    out_lengths: list[int] = field(default_factory=list)
    tokens_in: int = 0
    tokens_out: int = 0
    ts_min: float = float("inf")
    ts_max: float = float("-inf")
    with_content: int = 0
    ok: int = 0
    flags: Counter[str] = field(default_factory=Counter)

    def merge(self, other: _Stats) -> None:
        for name in ("requests", "errors", "tokens_in", "tokens_out", "with_content", "ok"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.latencies += other.latencies
        self.ttfts += other.ttfts
        self.out_lengths += other.out_lengths
        self.ts_min, self.ts_max = min(self.ts_min, other.ts_min), max(self.ts_max, other.ts_max)
        self.flags.update(other.flags)

    def summary(self, span_s: float | None = None) -> dict[str, Any]:
        lat, ttft, out = sorted(self.latencies), sorted(self.ttfts), sorted(self.out_lengths)
        if span_s is None and self.ts_max > self.ts_min:
            span_s = self.ts_max - self.ts_min
        content, ok = self.with_content, self.ok
        return {
            "requests": self.requests,
            "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else 0.0,
            "request_rate_per_s": self.requests / span_s if span_s else None,
            "latency_p50_ms": percentile(lat, 0.50),
            "latency_p95_ms": percentile(lat, 0.95),
            "latency_p99_ms": percentile(lat, 0.99),
            "ttft_p50_ms": percentile(ttft, 0.50),
            "ttft_p95_ms": percentile(ttft, 0.95),
            "tokens_in": self.tokens_in,
            "tokens_out": self.tokens_out,
            "response_tokens_p50": percentile(out, 0.50),
            "response_tokens_p95": percentile(out, 0.95),
            "response_length_histogram": _histogram(out),
            "empty_rate": self.flags["empty"] / ok if ok else None,
            "truncated_rate": self.flags["truncated"] / ok if ok else None,
            "refusal_rate": self.flags["refusal"] / content if content else None,
            "pii_rate": self.flags["pii"] / content if content else None,
            "blocklist_rate": self.flags["blocklist"] / content if content else None,
            "flagged_rate": self.flags["flagged"] / ok if ok else None,
            "flags": {k: v for k, v in sorted(self.flags.items()) if k != "flagged"},
            "first_ts": self.ts_min if self.ts_min != float("inf") else None,
            "last_ts": self.ts_max if self.ts_max != float("-inf") else None,
        }


def _histogram(lengths: list[int]) -> dict[str, int]:
    out: Counter[str] = Counter()
    for n, count in Counter(lengths).items():  # few distinct lengths: bucket each once
        out[length_bucket(n)] += count
    return dict(out)


class Flagger:
    """Decides which quality flags a response gets (refusal, PII, blocklist; empty and truncated)."""

    def __init__(self, cfg: MonitorSection) -> None:
        q = cfg.quality
        patterns = "|".join(f"(?:{p})" for p in q.refusal_patterns)
        self.refusal = re.compile(patterns, re.I) if patterns else None
        terms = [re.escape(t) for t in q.blocklist if t.strip()]
        self.blocklist = re.compile(r"\b(?:" + "|".join(terms) + r")\b", re.I) if terms else None
        self.pii = q.pii
        self._placeholders: tuple[str, ...] = ()
        self._find_pii: Any = None
        if q.pii:
            from llmops_cli.prep.clean import PLACEHOLDERS, find_pii

            self._placeholders = tuple(PLACEHOLDERS.values())
            self._find_pii = find_pii
        # Short answers repeat a lot (labels, canned refusals): remember verdicts, bounded in size.
        self._cache: dict[str, tuple[str, ...]] = {}

    def text_flags(self, text: str) -> tuple[str, ...]:
        cached = self._cache.get(text)
        if cached is not None:
            return cached
        flags = []
        if self.refusal is not None and self.refusal.search(text):
            flags.append("refusal")
        if self._find_pii is not None and (any(p in text for p in self._placeholders) or self._find_pii(text)):
            flags.append("pii")
        if self.blocklist is not None and self.blocklist.search(text):
            flags.append("blocklist")
        if len(self._cache) < 100_000:
            self._cache[text] = tuple(flags)
        return tuple(flags)


@dataclass
class MonitorResult:
    overall: dict[str, Any]
    per_model: dict[str, dict[str, Any]]
    windows: list[dict[str, Any]]
    corrupt_lines: int
    breaches: list[str]
    output: str
    lines: int = 0
    files: list[str] = field(default_factory=list)
    window_s: int = 3600
    per_model_windows: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    feedback: dict[str, Any] = field(default_factory=dict)
    drift: dict[str, Any] = field(default_factory=dict)
    gateway_metrics: dict[str, Any] | None = None
    alerts: list[dict[str, Any]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    # Low-rated and flagged interactions for `monitor export`; too big for the JSON summary.
    interactions: list[dict[str, Any]] = field(default_factory=list, repr=False)

    def to_dict(self) -> dict[str, Any]:
        out = dict(self.__dict__)
        out.pop("interactions")
        out["interactions_flagged"] = len(self.interactions)
        return out


def _read_feedback(cfg: MonitorSection, result_warnings: list[str]) -> tuple[dict[str, dict[str, Any]], int]:
    """Latest feedback per response id (a later rating replaces an earlier one) and the corrupt-line count."""
    reader = JsonlReader(cfg.feedback_log, required=False)
    if not reader.files:
        return {}, 0
    latest: dict[str, dict[str, Any]] = {}
    bad = 0
    for rec in reader:
        try:
            rating = int(rec["rating"])
            response_id = str(rec["response_id"])
        except (KeyError, TypeError, ValueError):
            bad += 1
            continue
        if not 1 <= rating <= 5:
            bad += 1
            continue
        latest[response_id] = {**rec, "rating": rating}
    if reader.corrupt + bad:
        result_warnings.append(f"{reader.corrupt + bad} corrupt feedback line(s) skipped")
    return latest, reader.corrupt + bad


def summarize(cfg: MonitorSection, now: float | None = None, write: bool = True) -> MonitorResult:
    """Read the logs named in `cfg` and return (and write to cfg.output) the monitoring summary."""
    from llmops_cli.monitor import alerts as alert_rules

    warnings: list[str] = []
    reader = JsonlReader(cfg.request_log)
    feedback, _ = _read_feedback(cfg, warnings)
    low_ids = {rid for rid, fb in feedback.items() if fb["rating"] <= cfg.quality.low_rating}
    reference = _load_reference(cfg, warnings)
    flagger = Flagger(cfg)
    from llmops_cli.monitor.drift import TextProfile

    profiles: dict[str, TextProfile] = defaultdict(TextProfile)
    buckets: dict[tuple[str, int], _Stats] = {}
    response_model: dict[str, str] = {}
    interactions: list[dict[str, Any]] = []
    window_s = cfg.window_s
    since = (now or time.time()) - cfg.since_s if cfg.since_s else None
    corrupt_fields = 0

    for rec in reader:
        try:
            status = int(rec["status"])
            latency = float(rec["latency_ms"])
            ts = float(rec.get("ts") or 0.0)
        except (KeyError, TypeError, ValueError):
            corrupt_fields += 1  # a JSON object without the fields every request has: foreign or truncated
            continue
        if since is not None and ts < since:
            continue
        if not is_traffic(rec.get("path")):
            continue  # a feedback post or an admin call: not a request to the model
        model = str(rec.get("model") or "unknown")
        key = (model, int(ts // window_s) if ts else -1)
        stats = buckets.get(key)
        if stats is None:
            stats = buckets[key] = _Stats()
        stats.requests += 1
        stats.latencies.append(latency)
        if ts:
            stats.ts_min = min(stats.ts_min, ts)
            stats.ts_max = max(stats.ts_max, ts)
        try:
            stats.tokens_in += int(rec.get("prompt_tokens") or 0)
            out_tokens = rec.get("completion_tokens")
            out_tokens = int(out_tokens) if out_tokens is not None else None
            ttft = rec.get("ttft_ms")
            if ttft is not None:
                stats.ttfts.append(float(ttft))
        except (TypeError, ValueError):
            out_tokens = None
        if status >= 400:
            stats.errors += 1
            continue
        stats.ok += 1
        if out_tokens is not None:
            stats.tokens_out += out_tokens
            stats.out_lengths.append(out_tokens)
        response = rec.get("response")
        flags = []
        if out_tokens == 0 or (isinstance(response, str) and not response.strip()):
            flags.append("empty")
        if rec.get("finish_reason") == "length":
            flags.append("truncated")
        if isinstance(response, str):
            stats.with_content += 1
            if response:
                flags.extend(flagger.text_flags(response))
        prompt = rec.get("prompt")
        if reference is not None and isinstance(prompt, str):
            profiles[model].add(prompt)
        response_id = rec.get("response_id")
        if response_id in feedback:
            response_model[response_id] = model
        if flags:
            stats.flags.update(flags)
            stats.flags["flagged"] += 1
        if (flags or response_id in low_ids) and isinstance(prompt, str):
            interactions.append({"response_id": response_id, "model": model, "ts": ts or None, "prompt": prompt,
                                 "response": response, "finish_reason": rec.get("finish_reason"), "flags": flags})

    overall = _Stats()
    per_model: dict[str, _Stats] = defaultdict(_Stats)
    per_window: dict[int, _Stats] = defaultdict(_Stats)
    per_model_window: dict[str, dict[int, _Stats]] = defaultdict(dict)
    for (model, window), stats in sorted(buckets.items()):
        overall.merge(stats)
        per_model[model].merge(stats)
        if window >= 0:
            per_window[window].merge(stats)
            per_model_window[model][window] = stats

    summaries = {m: s.summary() for m, s in sorted(per_model.items())}
    overall_summary = overall.summary()
    feedback_summary = _feedback_summary(feedback, response_model, cfg.quality.low_rating, overall_summary, summaries)
    drift = _drift_summary(cfg, reference, profiles, summaries, warnings)
    captured = {i["response_id"] for i in interactions}
    feedback_summary["low_rated"] = len(low_ids)
    feedback_summary["low_rated_without_content"] = len(low_ids - captured)
    for interaction in interactions:
        fb = feedback.get(interaction["response_id"] or "")
        if fb:
            interaction.update(rating=fb["rating"], comment=fb.get("comment"), correction=fb.get("correction"))

    gateway = None
    if cfg.metrics_url:
        gateway = parse_prometheus(read_text(cfg.metrics_url), cfg.metric_prefix)

    corrupt = reader.corrupt + corrupt_fields
    alerts = alert_rules.evaluate(alert_rules.effective_rules(cfg), overall_summary, summaries)
    result = MonitorResult(
        overall=overall_summary,
        per_model=summaries,
        windows=[{"start": w * window_s, **s.summary(float(window_s))} for w, s in sorted(per_window.items())],
        corrupt_lines=corrupt,
        breaches=[a["message"] for a in alerts if a["breached"]],
        output=cfg.output,
        lines=reader.lines,
        files=reader.files,
        window_s=window_s,
        per_model_windows={m: [{"start": w * window_s, **s.summary(float(window_s))} for w, s in sorted(ws.items())]
                           for m, ws in sorted(per_model_window.items())},
        feedback=feedback_summary,
        drift=drift,
        gateway_metrics=gateway,
        alerts=alerts,
        warnings=warnings,
        interactions=interactions,
    )
    if write:
        atomic_write_json(cfg.output, result.to_dict())
    return result


def _load_reference(cfg: MonitorSection, warnings: list[str]) -> Any:
    if not cfg.drift.enabled:
        return None
    from llmops_cli.errors import DataError
    from llmops_cli.monitor.drift import load_reference

    try:
        return load_reference(cfg.drift.train_data, cfg.drift.prompt_field)
    except DataError as exc:
        warnings.append(f"drift skipped: {exc.message}")
        return None


def _feedback_summary(feedback: dict[str, dict[str, Any]], response_model: dict[str, str], low: int,
                      overall: dict[str, Any], per_model: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Add feedback_count / mean_rating / low_rating_rate to each scope; return the rating histograms."""
    by_model: dict[str, list[int]] = defaultdict(list)
    for rid, fb in feedback.items():
        # The log knows which version answered; the feedback's own `model` is the fallback.
        by_model[response_model.get(rid) or str(fb.get("model") or "unknown")].append(fb["rating"])

    def fill(target: dict[str, Any], ratings: list[int]) -> dict[str, int]:
        target["feedback_count"] = len(ratings)
        target["mean_rating"] = sum(ratings) / len(ratings) if ratings else None
        target["low_rating_rate"] = sum(r <= low for r in ratings) / len(ratings) if ratings else None
        return {str(k): v for k, v in sorted(Counter(ratings).items())}

    histograms = {"all": fill(overall, [r for rs in by_model.values() for r in rs])}
    for model in set(per_model) | set(by_model):
        target = per_model.setdefault(model, {"requests": 0})
        histograms[model] = fill(target, by_model.get(model, []))
    return {"ratings": histograms, "low_rating": low}


def _drift_summary(cfg: MonitorSection, reference: Any, profiles: dict[str, Any], per_model: dict[str, dict[str, Any]],
                   warnings: list[str]) -> dict[str, Any]:
    from llmops_cli.monitor.drift import compare

    out: dict[str, Any] = {"reference": cfg.drift.train_data if reference is not None else None,
                           "reference_prompts": reference.count if reference is not None else 0, "per_model": {}}
    for model, summary in per_model.items():
        for key in ("drift_length_psi", "drift_vocab_js", "drift_bigram_js", "drift_oov_rate"):
            summary[key] = None
        profile = profiles.get(model)
        if reference is None or profile is None:
            continue
        if profile.count < cfg.drift.min_samples:
            out["per_model"][model] = {"prompts": profile.count, "skipped": f"fewer than {cfg.drift.min_samples}"}
            continue
        scores = compare(reference, profile)
        summary.update(scores)
        lengths = sorted(profile.lengths)
        out["per_model"][model] = {"prompts": profile.count, **scores,
                                   "prompt_tokens_p50": percentile(lengths, 0.5),
                                   "prompt_tokens_p95": percentile(lengths, 0.95)}
    if reference is not None:
        out.update(_reference_lineage(cfg, warnings))
        ref = sorted(reference.lengths)
        out["reference_tokens_p50"] = percentile(ref, 0.5)
        out["reference_tokens_p95"] = percentile(ref, 0.95)
        out["reference_lengths"] = _length_shares(reference.lengths)
        out["current_lengths"] = {m: _length_shares(p.lengths) for m, p in profiles.items()
                                  if p.count >= cfg.drift.min_samples}
        if not any(profiles.values()):
            warnings.append("drift skipped: the request log holds no prompts (turn on content logging in serve)")
    return out


def _reference_lineage(cfg: MonitorSection, warnings: list[str]) -> dict[str, Any]:
    """The train split's hash, checked against the one prep recorded (a stale or edited reference is a warning)."""
    import json
    from pathlib import Path

    from llmops_cli.utils import sha256_file

    digest = sha256_file(cfg.drift.train_data)
    recorded = None
    report = Path(cfg.drift.prep_report)
    if report.is_file():
        try:
            recorded = json.loads(report.read_text(encoding="utf-8")).get("hashes", {}).get("train")
        except (ValueError, AttributeError):
            warnings.append(f"cannot read the train hash from {report}")
    if recorded and recorded != digest:
        warnings.append(f"{cfg.drift.train_data} differs from the split recorded in {report}: re-run `llmops prep`")
    return {"reference_sha256": digest, "reference_matches_prep_report": None if not recorded else recorded == digest}


def _length_shares(lengths: list[int]) -> dict[str, float]:
    counts = Counter(length_bucket(n) for n in lengths)
    return {k: v / len(lengths) for k, v in counts.items()}
