"""Alert rules: evaluate them on a summary, and export them as Prometheus rules and a Grafana dashboard."""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_cli.monitor.config import AlertRule, MonitorSection
from llmops_cli.monitor.sources import NOT_TRAFFIC_PROMQL
from llmops_cli.utils import atomic_write_text

_OPS: dict[str, Callable[[float, float], bool]] = {
    ">": operator.gt, ">=": operator.ge, "<": operator.lt, "<=": operator.le, "==": operator.eq, "!=": operator.ne,
}


def effective_rules(cfg: MonitorSection) -> list[AlertRule]:
    """The configured rules plus those implied by the legacy thresholds and the drift limits."""
    rules = list(cfg.alerts)
    if cfg.max_error_rate is not None:
        rules.append(AlertRule(name="error_rate", metric="error_rate", threshold=cfg.max_error_rate, scope="overall",
                               severity="critical"))
    if cfg.max_latency_p95_ms is not None:
        rules.append(AlertRule(name="latency_p95_ms", metric="latency_p95_ms", threshold=cfg.max_latency_p95_ms,
                               scope="overall"))
    if cfg.drift.enabled:
        limits = {"drift_length_psi": cfg.drift.max_length_psi, "drift_vocab_js": cfg.drift.max_vocab_js,
                  "drift_bigram_js": cfg.drift.max_bigram_js}
        for metric, limit in limits.items():
            rules.append(AlertRule(name=metric, metric=metric, threshold=limit, scope="per_model", min_requests=0))
    return rules


def evaluate(rules: list[AlertRule], overall: dict[str, Any], per_model: dict[str, dict[str, Any]]) -> list[dict]:
    """One entry per (rule, scope) that has a value; `breached` tells whether the rule fires."""
    out = []
    for rule in rules:
        scopes = [("all", overall)] if rule.scope == "overall" else list(per_model.items())
        for scope, summary in scopes:
            value = summary.get(rule.metric)
            if value is None or summary.get("requests", 0) < rule.min_requests:
                continue  # no data for this metric here (no feedback, no content logging): nothing to judge
            breached = _OPS[rule.op](float(value), rule.threshold)
            where = ("" if rule.scope == "overall" else f"{scope}: ") + (f"[{rule.name}] " if rule.name != rule.metric
                                                                          else "")
            out.append({"rule": rule.name, "metric": rule.metric, "scope": scope, "value": value, "op": rule.op,
                        "threshold": rule.threshold, "severity": rule.severity, "breached": breached,
                        "message": f"{where}{rule.metric} {_fmt(value)} {rule.op} {rule.threshold:g}"})
    return out


def _fmt(value: float) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


_TRAFFIC = NOT_TRAFFIC_PROMQL  # no braces in it: safe inside the str.format templates below


def _quantile(q: float, histogram: str) -> str:
    return (f"1000 * histogram_quantile({q}, sum by (model, le) "
            f"(rate({{p}}_{histogram}_bucket{{{{{_TRAFFIC}}}}}[{{w}}])))")


# PromQL for the metrics the gateway exports; `{p}` is monitor.metric_prefix, `{w}` the rate window.
# Metrics that need response text or the training data (refusals, drift) have no PromQL: they stay in `check`.
PROMQL = {
    "requests": "sum by (model) (increase({p}_requests_total{{" + _TRAFFIC + "}}[{w}]))",
    "errors": 'sum by (model) (increase({p}_requests_total{{status=~"[45]..",' + _TRAFFIC + '}}[{w}]))',
    "error_rate": ('sum by (model) (rate({p}_requests_total{{status=~"[45]..",' + _TRAFFIC + '}}[{w}])) / '
                   "sum by (model) (rate({p}_requests_total{{" + _TRAFFIC + "}}[{w}]))"),
    "request_rate_per_s": "sum by (model) (rate({p}_requests_total{{" + _TRAFFIC + "}}[{w}]))",
    "latency_p50_ms": _quantile(0.5, "request_latency_seconds"),
    "latency_p95_ms": _quantile(0.95, "request_latency_seconds"),
    "latency_p99_ms": _quantile(0.99, "request_latency_seconds"),
    "ttft_p50_ms": _quantile(0.5, "time_to_first_token_seconds"),
    "ttft_p95_ms": _quantile(0.95, "time_to_first_token_seconds"),
    "tokens_in": 'sum by (model) (increase({p}_tokens_total{{direction="in"}}[{w}]))',
    "tokens_out": 'sum by (model) (increase({p}_tokens_total{{direction="out"}}[{w}]))',
    # The gateway counts feedback by rating label: the mean is the rating-weighted sum over the count. A rating
    # never given has no series, so each term falls back to 0 (keeping the model label) instead of emptying the sum.
    "mean_rating": ("(" + " + ".join(f'{r} * (sum by (model) (rate({{p}}_feedback_total{{{{rating="{r}"}}}}[{{w}}])) '
                                     f"or 0 * sum by (model) (rate({{p}}_feedback_total[{{w}}])))" for r in range(1, 6))
                    + ") / sum by (model) (rate({p}_feedback_total[{w}]))"),
    "feedback_count": "sum by (model) (increase({p}_feedback_total[{w}]))",
}


def promql(metric: str, prefix: str, window: str = "5m") -> str | None:
    template = PROMQL.get(metric)
    return template.format(p=prefix, w=window) if template else None


@dataclass
class ExportedRules:
    prometheus_rules: str
    grafana_dashboard: str
    rules: int
    skipped: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def prometheus_rules(cfg: MonitorSection, project: str) -> tuple[dict[str, Any], list[str]]:
    """A Prometheus rule file (as a dict) for every rule that has a PromQL equivalent; and the skipped ones."""
    rules, skipped = [], []
    for rule in effective_rules(cfg):
        expr = promql(rule.metric, cfg.metric_prefix)
        if expr is None:
            skipped.append(f"{rule.name} ({rule.metric}: needs logs or training data, checked by `monitor check`)")
            continue
        if rule.scope == "overall":  # aggregate over all versions instead of one series per model
            expr = expr.replace("sum by (model, le)", "sum by (le)").replace("sum by (model)", "sum")
        rules.append({
            "alert": "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", f"{project}_{rule.name}")),
            "expr": f"({expr}) {rule.op} {rule.threshold:g}",
            "for": rule.for_,
            "labels": {"severity": rule.severity, "project": project},
            "annotations": {"summary": f"{rule.metric} {rule.op} {rule.threshold:g}"
                                       + (" on {{ $labels.model }}" if rule.scope == "per_model" else ""),
                            "description": "value: {{ $value }}; see `llmops monitor check` for details"},
        })
    return {"groups": [{"name": f"{project}-llmops", "rules": rules}]}, skipped


def grafana_dashboard(cfg: MonitorSection, project: str) -> dict[str, Any]:
    """A Grafana dashboard (JSON model, Prometheus datasource variable) with the health panels per model."""
    panels = []
    layout = [("Request rate (req/s)", ["request_rate_per_s"], "reqps"), ("Error rate", ["error_rate"], "percentunit"),
              ("Latency (ms)", ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"], "ms"),
              ("Time to first token (ms)", ["ttft_p50_ms", "ttft_p95_ms"], "ms"),
              ("Tokens in / out", ["tokens_in", "tokens_out"], "short"),
              ("Mean feedback rating", ["mean_rating"], "short")]
    for i, (title, metrics, unit) in enumerate(layout):
        panels.append({
            "id": i + 1, "type": "timeseries", "title": title,
            "datasource": {"type": "prometheus", "uid": "${datasource}"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "targets": [{"refId": chr(65 + j), "expr": promql(m, cfg.metric_prefix, "$__rate_interval"),
                         "legendFormat": f"{{{{model}}}} {m}"} for j, m in enumerate(metrics)],
        })
    return {
        "title": f"{project} — llmops serving", "uid": f"llmops-{project}"[:40], "schemaVersion": 39,
        "tags": ["llmops"], "time": {"from": "now-6h", "to": "now"}, "refresh": "30s",
        "templating": {"list": [{"name": "datasource", "type": "datasource", "query": "prometheus"}]},
        "panels": panels,
    }


def export_rules(cfg: MonitorSection, project: str, out_dir: str | Path | None = None) -> ExportedRules:
    """Write `<out_dir>/prometheus-rules.yml` and `<out_dir>/grafana-dashboard.json`."""
    import yaml

    out = Path(out_dir or cfg.rules_dir)
    rules, skipped = prometheus_rules(cfg, project)
    rules_path, dash_path = out / "prometheus-rules.yml", out / "grafana-dashboard.json"
    header = "# Generated by `llmops monitor export-rules` from the monitor section of the project config.\n"
    atomic_write_text(rules_path, header + yaml.safe_dump(rules, sort_keys=False, width=200))
    atomic_write_text(dash_path, json.dumps(grafana_dashboard(cfg, project), indent=2) + "\n")
    return ExportedRules(str(rules_path), str(dash_path), len(rules["groups"][0]["rules"]), skipped)
