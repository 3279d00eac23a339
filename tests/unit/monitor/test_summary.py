import json

import pytest

from llmops_cli.errors import DataError
from llmops_cli.monitor.config import MonitorSection
from llmops_cli.monitor.summary import percentile, summarize


def test_percentile_matches_linear_interpolation():
    values = sorted(float(v) for v in range(1, 101))
    assert percentile(values, 0.5) == pytest.approx(50.5)
    assert percentile(values, 0.95) == pytest.approx(95.05)
    assert percentile([], 0.5) is None


def test_summary_counts_errors_skips_corrupt_lines_and_flags_breaches(tmp_path):
    log = tmp_path / "requests.jsonl"
    lines = [json.dumps({"status": 200, "latency_ms": 10 * (i + 1), "model": "m:1", "prompt_tokens": 5,
                         "completion_tokens": 2}) for i in range(9)]
    lines += [json.dumps({"status": 500, "latency_ms": 1000, "model": "m:2"}), '{"status": 200, "late', "garbage"]
    log.write_text("\n".join(lines) + "\n")
    result = summarize(MonitorSection(request_log=str(log), output=str(tmp_path / "m.json"), max_error_rate=0.05))
    assert result.overall["requests"] == 10
    assert result.overall["errors"] == 1
    assert result.corrupt_lines == 2
    assert result.per_model["m:1"]["tokens_in"] == 45
    assert result.breaches == ["error_rate 0.100 > 0.05"]
    assert json.loads((tmp_path / "m.json").read_text())["overall"]["requests"] == 10


def test_missing_log_is_a_clear_error(tmp_path):
    with pytest.raises(DataError, match="no request log"):
        summarize(MonitorSection(request_log=str(tmp_path / "none.jsonl")))
