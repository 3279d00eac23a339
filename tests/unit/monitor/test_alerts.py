import json
import re

import pytest
import yaml
from pydantic import ValidationError

from llmops_cli.monitor.alerts import effective_rules, evaluate, export_rules
from llmops_cli.monitor.config import AlertRule, MonitorSection


def test_rule_short_form_and_object_form():
    rule = AlertRule.model_validate("latency_p95_ms >= 2000")
    assert (rule.name, rule.metric, rule.op, rule.threshold, rule.scope) == ("latency_p95_ms", "latency_p95_ms", ">=",
                                                                             2000.0, "per_model")
    full = AlertRule.model_validate({"name": "x", "metric": "mean_rating", "op": "<", "threshold": 3, "for": "10m"})
    assert full.for_ == "10m"
    for bad in ("error_rate", "error_rate >> 1", "error_rate > high"):
        with pytest.raises(ValidationError):
            AlertRule.model_validate(bad)
    with pytest.raises(ValidationError):
        MonitorSection(alerts=[{"name": "x", "metric": "error_rate", "threshold": 1, "colour": "red"}])


def test_evaluate_per_model_and_overall_with_min_requests():
    rules = [AlertRule.model_validate("error_rate > 0.05"),
             AlertRule(name="rating", metric="mean_rating", op="<", threshold=3.5, scope="overall"),
             AlertRule(name="p95", metric="latency_p95_ms", threshold=100, min_requests=10)]
    overall = {"requests": 30, "error_rate": 0.04, "mean_rating": 3.0, "latency_p95_ms": 150}
    per_model = {"a:1": {"requests": 25, "error_rate": 0.0, "latency_p95_ms": 90},
                 "a:2": {"requests": 5, "error_rate": 0.2, "latency_p95_ms": 900}}
    out = evaluate(rules, overall, per_model)
    fired = [a["message"] for a in out if a["breached"]]
    assert fired == ["a:2: error_rate 0.200 > 0.05", "[rating] mean_rating 3.000 < 3.5"]
    # a:2 has 5 requests < min_requests 10: its p95 is not judged; a rule with no data is skipped
    assert [(a["rule"], a["scope"]) for a in out if a["rule"] == "p95"] == [("p95", "a:1")]
    assert evaluate([AlertRule.model_validate("mean_rating < 3")], {}, {"a:1": {"requests": 3}}) == []


def test_legacy_thresholds_and_drift_limits_become_rules():
    cfg = MonitorSection(max_error_rate=0.1, max_latency_p95_ms=500, drift={"max_length_psi": 0.3})
    rules = {r.name: r for r in effective_rules(cfg)}
    assert rules["error_rate"].scope == "overall" and rules["latency_p95_ms"].threshold == 500
    assert rules["drift_length_psi"].threshold == 0.3
    assert "drift_length_psi" not in {r.name for r in effective_rules(MonitorSection(drift={"enabled": False}))}


def test_unknown_metric_is_refused_by_the_schema():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="unknown metric 'latncy_p95_ms'.*did you mean 'latency_p95_ms'"):
        AlertRule.model_validate("latncy_p95_ms > 1")


def test_export_prometheus_rules_and_grafana_dashboard(tmp_path):
    cfg = MonitorSection(max_error_rate=0.05, alerts=["latency_p99_ms > 3000", "refusal_rate > 0.1",
                                                      {"name": "low-rating", "metric": "mean_rating", "op": "<",
                                                       "threshold": 3, "severity": "critical", "for": "15m"}])
    out = export_rules(cfg, "support-assistant", tmp_path)
    doc = yaml.safe_load((tmp_path / "prometheus-rules.yml").read_text())
    rules = {r["alert"]: r for r in doc["groups"][0]["rules"]}
    assert set(rules) == {"SupportAssistantLatencyP99Ms", "SupportAssistantLowRating", "SupportAssistantErrorRate"}
    assert rules["SupportAssistantLowRating"]["for"] == "15m"
    assert rules["SupportAssistantLowRating"]["labels"]["severity"] == "critical"
    assert rules["SupportAssistantLatencyP99Ms"]["expr"].startswith("(1000 * histogram_quantile(0.99")
    assert rules["SupportAssistantLatencyP99Ms"]["expr"].endswith("> 3000")
    assert 'llmops_requests_total{status=~"[45]..",path!~"/v1/feedback|' in rules["SupportAssistantErrorRate"]["expr"]
    # refusals and drift need the logs: not exported, and said so
    assert any(s.startswith("refusal_rate") for s in out.skipped) and out.rules == 3
    dash = json.loads((tmp_path / "grafana-dashboard.json").read_text())
    assert dash["uid"] and dash["templating"]["list"][0]["type"] == "datasource"
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    assert all(e and "$__rate_interval" in e for e in exprs)
    assert len({(p["gridPos"]["x"], p["gridPos"]["y"]) for p in dash["panels"]}) == len(dash["panels"])


def test_every_exported_promql_expression_parses(tmp_path):
    """Syntax check with the Prometheus parser (promql-parser, an optional dev dependency)."""
    promql_parser = pytest.importorskip("promql_parser")
    from llmops_cli.monitor.alerts import PROMQL

    rules = [{"name": m, "metric": m, "threshold": 1, "scope": scope}
             for m in PROMQL for scope in ("overall", "per_model")]
    export_rules(MonitorSection(alerts=rules), "demo", tmp_path)
    doc = yaml.safe_load((tmp_path / "prometheus-rules.yml").read_text())
    exprs = [r["expr"] for r in doc["groups"][0]["rules"]]
    assert len(exprs) == 2 * len(PROMQL)
    dash = json.loads((tmp_path / "grafana-dashboard.json").read_text())
    exprs += [t["expr"].replace("$__rate_interval", "5m") for p in dash["panels"] for t in p["targets"]]
    for expr in exprs:
        promql_parser.parse(expr)


def test_grafana_request_panels_leave_out_feedback_and_admin_routes():
    """Grafana inherited the monitor's 76 'requests' for 56 chats + 20 feedback posts."""
    from llmops_cli.monitor.alerts import grafana_dashboard

    dash = grafana_dashboard(MonitorSection(), "demo")
    request_exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]
                     if "_requests_total" in t["expr"] or "_seconds_bucket" in t["expr"]]
    assert len(request_exprs) == 7  # req/s, error rate, three latency and two time-to-first-token quantiles
    for expr in request_exprs:
        selectors = re.findall(r"llmops_(?:requests_total|\w+_seconds_bucket)\{([^}]*)\}", expr)
        assert selectors, expr
        for selector in selectors:
            assert 'path!~"/v1/feedback|/health|/ready|/metrics|/admin/.*"' in selector, expr
