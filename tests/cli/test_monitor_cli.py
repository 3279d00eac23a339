"""`llmops monitor` and its subcommands through the Typer layer, on small real logs."""

import json
import subprocess
import sys

import pytest
import yaml
from typer.testing import CliRunner

from llmops_cli.cli.app import app
from tests.unit.monitor.logdata import PROMPTS, request, train_file, write_log

runner = CliRunner()


@pytest.fixture
def project(tmp_path):
    train = train_file(tmp_path / "train.jsonl")
    recs = [request(i, "m:1", prompt=f"{PROMPTS[i % 5]} (ref {i})", response="billing", latency_ms=40.0)
            for i in range(60)]
    recs += [request(100 + i, "m:2", status=500 if i < 3 else 200, latency_ms=80.0, prompt="Where is my parcel?",
                     response="I'm sorry, I cannot help") for i in range(10)]
    write_log(tmp_path / "serve/requests.jsonl", recs, tail='{"ts": 1, "stat')
    write_log(tmp_path / "serve/feedback.jsonl", [{"response_id": "chatcmpl-req-105", "rating": 1,
                                                   "correction": "shipping"}])
    cfg = {"project": {"name": "demo"}, "monitor": {
        "request_log": str(tmp_path / "serve/requests.jsonl"), "feedback_log": str(tmp_path / "serve/feedback.jsonl"),
        "output": str(tmp_path / "reports/monitor.json"), "report": str(tmp_path / "reports/monitor.html"),
        "rules_dir": str(tmp_path / "monitoring"), "drift": {"train_data": str(train), "min_samples": 50},
        "export": {"output": str(tmp_path / "fb/export.jsonl"), "review_output": str(tmp_path / "fb/review.jsonl")},
        "alerts": ["error_rate > 0.2"]}}
    path = tmp_path / "llmops.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _json(result):
    return json.loads(result.stdout)


def test_help_of_every_subcommand():
    for sub in ([], ["check"], ["watch"], ["report"], ["export"], ["export-rules"]):
        result = runner.invoke(app, ["monitor", *sub, "--help"])
        assert result.exit_code == 0 and "Usage" in result.output, (sub, result.output)
    assert "drift_length_psi" in runner.invoke(app, ["monitor", "check", "--help"]).output


def test_summary_json_and_check_exit_codes(project, tmp_path):
    result = runner.invoke(app, ["monitor", "-c", str(project), "--json"])
    assert result.exit_code == 1, result.output  # m:2 error rate 0.3 > 0.2
    body = _json(result)
    assert body["overall"]["requests"] == 70 and body["corrupt_lines"] == 1
    assert body["breaches"] == ["m:2: error_rate 0.300 > 0.2"]
    assert (tmp_path / "reports/monitor.json").is_file()

    result = runner.invoke(app, ["monitor", "check", "-c", str(project)])
    assert result.exit_code == 1 and "m:2: error_rate 0.300 > 0.2" in result.output
    assert "Traceback" not in result.output
    ok = runner.invoke(app, ["monitor", "check", "-c", str(project), "--set", "monitor.alerts=[]", "--json"])
    assert ok.exit_code == 0, ok.output
    assert _json(ok)["ok"] is True and _json(ok)["breaches"] == []


def test_report_only_reports_breaches_and_exits_0(project):
    """`make demo` re-run after traffic: alerts are shown, the target does not fail."""
    result = runner.invoke(app, ["monitor", "-c", str(project), "--json", "--report-only"])
    assert result.exit_code == 0, result.output
    assert _json(result)["breaches"] == ["m:2: error_rate 0.300 > 0.2"]
    assert "alerts breached (reported only)" in result.output


def test_group_options_before_the_subcommand_apply(project):
    result = runner.invoke(app, ["monitor", "-c", str(project), "--json", "check"])
    assert result.exit_code == 1 and _json(result)["breaches"]


def test_bad_rules_exit_2_without_traceback(project, tmp_path):
    for value, needle in (("[error_rate >> 1]", "METRIC OP NUMBER"), ("[latncy_p95_ms > 1]", "unknown metric")):
        result = runner.invoke(app, ["monitor", "check", "-c", str(project), "--set", f"monitor.alerts={value}"])
        assert result.exit_code == 2, result.output
        assert needle in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["monitor", "-c", str(project), "--set",
                                 f"monitor.request_log={tmp_path / 'missing.jsonl'}"])
    assert result.exit_code == 1 and "no log at" in result.output


def test_watch_report_export_and_export_rules(project, tmp_path):
    result = runner.invoke(app, ["monitor", "watch", "-c", str(project), "--iterations", "1", "--interval", "0"])
    assert result.exit_code == 0, result.output
    # CliRunner's stdout is no terminal: plain lines with whole numbers, nothing cut to 80 columns
    line = next(x for x in result.stdout.splitlines() if x.startswith("m:2 "))
    assert "requests=10" in line and "error_rate=0.3" in line and "latency_p95_ms=80" in line
    assert "…" not in result.stdout and "\x1b[" not in result.stdout

    result = runner.invoke(app, ["monitor", "report", "-c", str(project), "--json"])
    assert result.exit_code == 0, result.output
    assert "<svg" in (tmp_path / "reports/monitor.html").read_text()

    result = runner.invoke(app, ["monitor", "export", "-c", str(project), "--json"])
    assert result.exit_code == 0, result.output
    # m:2: 7 answered refusals (3 of 10 errored); 1 has a correction, 6 go to review
    assert _json(result)["exported"] == 1 and _json(result)["for_review"] == 6
    row = json.loads((tmp_path / "fb/export.jsonl").read_text())
    assert row["prompt"] == "Where is my parcel?" and row["completion"] == "shipping"

    result = runner.invoke(app, ["monitor", "export-rules", "-c", str(project), "--json"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "monitoring/prometheus-rules.yml").is_file()
    assert json.loads((tmp_path / "monitoring/grafana-dashboard.json").read_text())["panels"]


def test_monitor_help_does_not_import_the_ml_stack():
    code = ("import sys; from llmops_cli.cli.app import main; sys.argv = ['llmops', 'monitor', 'check', '--help']\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'matplotlib', 'pandas') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stderr, out.stderr[-2000:]


def test_config_validate_refuses_unknown_alert_metrics(tmp_path):
    config = tmp_path / "llmops.yaml"
    config.write_text("monitor:\n  alerts:\n    - error_rat > 0.1\n"
                      "    - {name: x, metric: latency_p95_ms, threshold: 1}\n")
    result = runner.invoke(app, ["config", "validate", str(config)])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "unknown metric 'error_rat'" in result.output and "did you mean 'error_rate'" in result.output
    assert str(config) in result.output and "monitor.alerts" in result.output
