"""Config of `llmops monitor`."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from llmops_cli.config.base import Section

_RULE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|>|<|==|!=)\s*(-?[\d.]+(?:e-?\d+)?)\s*$")


class QualitySpec(Section):
    refusal_patterns: list[str] = Field(
        default_factory=lambda: [r"\bI(?:'m| am) (?:sorry|unable)\b", r"\bI can(?:no|')t (?:help|assist)\b",
                                 r"\bas an AI\b"],
        description="Regexes (case-insensitive) that mark a response as a refusal.",
    )
    blocklist: list[str] = Field(
        default_factory=list, description="Terms (case-insensitive, whole words) that flag a response."
    )
    pii: bool = Field(True, description="Flag responses holding PII (prep's detectors, or a redaction placeholder).")
    low_rating: int = Field(2, ge=1, le=5, description="Feedback ratings at or below this count as low.")

    @field_validator("refusal_patterns")
    @classmethod
    def _patterns_compile(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"refusal pattern {pattern!r} is not a valid regex: {exc}") from None
        return value


class DriftSpec(Section):
    enabled: bool = Field(True, description="Compare production prompts with the training data.")
    train_data: str = Field("data/processed/train.jsonl", description="Prep's train split (the reference).")
    prep_report: str = Field("reports/prep.json", description="Prep's report: the train split's "
                             "hash recorded there is checked against train_data.")
    prompt_field: str = Field("prompt", description="Field of train_data holding the prompt.")
    min_samples: int = Field(50, ge=1, description="Versions with fewer logged prompts get no drift score.")
    max_length_psi: float = Field(0.2, ge=0, description="Token-length PSI above this is drift "
                                  "(0.1 slight, 0.2 major).")
    max_vocab_js: float = Field(0.3, ge=0, le=1, description="Unigram Jensen-Shannon divergence (base 2) limit.")
    max_bigram_js: float = Field(0.5, ge=0, le=1, description="Bigram Jensen-Shannon divergence (base 2) limit.")


class ExportSpec(Section):
    output: str = Field("data/feedback/monitor_export.jsonl", description="Prep-ready rows: bad interactions "
                        "with the user's correction as the completion.")
    review_output: str = Field("data/feedback/monitor_review.jsonl", description="Bad interactions without a "
                               "correction, for a person to label (prep does not read it).")
    prompt_field: str = Field("prompt", description="Field name of the prompt in exported rows (match prep.fields).")
    completion_field: str = Field("completion", description="Field name of the correction in exported rows.")
    include_flagged: bool = Field(True, description="Export flagged responses too, not only low-rated ones.")


class AlertRule(Section):
    name: str = Field(description="Alert name (Prometheus alert name when exported).")
    metric: str = Field(description="Metric to test: see `llmops monitor check --help` for the list.")
    op: Literal[">", ">=", "<", "<=", "==", "!="] = Field(">", description="Comparison that means a breach.")
    threshold: float = Field(description="Value compared against.")
    scope: Literal["overall", "per_model"] = Field("per_model", description="Check all traffic, or each version.")
    min_requests: int = Field(1, ge=0, description="Skip a scope with fewer requests (too little data to judge).")
    severity: Literal["info", "warning", "critical"] = Field("warning", description="Alert severity label.")
    for_: str = Field("5m", alias="for", description="Prometheus `for:` duration of the exported rule.")

    model_config = {**Section.model_config, "populate_by_name": True}

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str) -> str:
        # Checked here, so `config validate` refuses what `monitor check` would (exit 2, file and key named).
        import difflib

        from llmops_cli.monitor.summary import METRICS

        if metric not in METRICS:
            close = difflib.get_close_matches(metric, list(METRICS), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise ValueError(f"unknown metric {metric!r}{hint}; known: {', '.join(sorted(METRICS))}")
        return metric

    @model_validator(mode="before")
    @classmethod
    def _from_string(cls, value: Any) -> Any:
        # "error_rate > 0.05" is the short form; the name defaults to the metric.
        if isinstance(value, str):
            match = _RULE.match(value)
            if not match:
                raise ValueError(f"rule {value!r} must look like 'METRIC OP NUMBER', e.g. 'error_rate > 0.05'")
            metric, op, threshold = match.groups()
            return {"name": metric.replace(".", "_"), "metric": metric, "op": op, "threshold": float(threshold)}
        return value


class MonitorSection(Section):
    request_log: str = Field("serve/requests.jsonl", description="Request log written by the server (a path or URL; "
                             "rotated files <log>.1, <log>.2, ... are read too).")
    feedback_log: str = Field("serve/feedback.jsonl", description="Feedback log written by the server (path or URL).")
    metrics_url: str | None = Field(None, description="Gateway /metrics (URL or file) "
                                      "to read Prometheus counters from.")
    output: str = Field("reports/monitor.json", description="Summary written here.")
    window_s: int = Field(3600, ge=1, description="Width in seconds of the per-time-window breakdown.")
    since_s: float | None = Field(None, gt=0, description="Only requests of the last N seconds (default: all).")
    max_error_rate: float | None = Field(None, ge=0, le=1, description="`monitor` exits 1 above this.")
    max_latency_p95_ms: float | None = Field(None, gt=0, description="`monitor` exits 1 above this.")
    quality: QualitySpec = Field(default_factory=QualitySpec, description="What flags a response.")
    drift: DriftSpec = Field(default_factory=DriftSpec, description="Drift of prompts against the training data.")
    alerts: list[AlertRule] = Field(default_factory=list, description="Rules `monitor check` tests "
                                    "(objects, or strings like 'error_rate > 0.05').")
    report: str = Field("reports/monitor.html", description="HTML report written by `monitor report`.")
    export: ExportSpec = Field(default_factory=ExportSpec, description="What `monitor export` writes.")
    rules_dir: str = Field("configs/monitoring", description="Where `monitor export-rules` writes Prometheus "
                           "and Grafana files.")
    metric_prefix: str = Field("llmops", pattern=r"^[a-zA-Z_][a-zA-Z0-9_]*$",
                               description="Prefix of the gateway's Prometheus metric names.")
