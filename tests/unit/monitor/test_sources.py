import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from llmops_cli.errors import DataError
from llmops_cli.monitor.config import MonitorSection
from llmops_cli.monitor.sources import JsonlReader, histogram_quantile, parse_prometheus, rotated_files
from llmops_cli.monitor.summary import summarize
from tests.conftest import free_port
from tests.unit.monitor.logdata import request, write_log


def _metrics_text() -> str:
    """Real exposition text from the gateway's own Metrics class (serving/app.py): the contract under test."""
    from llmops_cli.serving.telemetry import Metrics

    metrics = Metrics()
    metrics.requests.labels("/v1/chat/completions", "200", "m:1").inc(90)
    metrics.requests.labels("/v1/chat/completions", "500", "m:1").inc(10)
    # Two paths: their histogram series must be summed per bucket, as PromQL's sum by (le) does.
    for _ in range(50):
        metrics.latency.labels("/v1/chat/completions", "m:1").observe(0.02)
    for _ in range(50):
        metrics.latency.labels("/v1/completions", "m:1").observe(0.04)
    for _ in range(10):
        metrics.ttft.labels("/v1/chat/completions", "m:1").observe(0.007)
    metrics.tokens.labels("in", "m:1").inc(1000)
    metrics.tokens.labels("out", "m:1").inc(400)
    for rating in ("5", "4", "3"):
        metrics.feedback.labels(rating, "m:1").inc()
    return metrics.render().decode()


def test_parse_prometheus_text_from_the_gateway():
    parsed = parse_prometheus(_metrics_text())
    stats = parsed["m:1"]
    assert stats["requests"] == 100 and stats["errors"] == 10 and stats["error_rate"] == pytest.approx(0.1)
    assert stats["tokens_in"] == 1000 and stats["tokens_out"] == 400
    gateway = parsed["m:1"]  # every series carries the model label, so all of it is per version
    assert gateway["mean_rating"] == pytest.approx(4.0) and gateway["feedback_count"] == 3
    # buckets .01 .025 .05: half the observations in (.01, .025], half in (.025, .05]; p50 at the .025 bound
    assert gateway["latency_p50_ms"] == pytest.approx(25.0)
    assert gateway["latency_p95_ms"] == pytest.approx(47.5)
    assert gateway["ttft_p50_ms"] == pytest.approx(7.5)  # (.005, .01] interpolated


def test_histogram_quantile_matches_promql_rules():
    buckets = [(0.1, 0.0), (0.2, 10.0), (float("inf"), 10.0)]
    assert histogram_quantile(buckets, 0.5) == pytest.approx(0.15)
    assert histogram_quantile([(1.0, 0.0), (float("inf"), 4.0)], 0.9) == 1.0  # above the last finite bound
    assert histogram_quantile([], 0.5) is None


def test_malformed_prometheus_text_is_a_data_error():
    with pytest.raises(DataError, match="Prometheus"):
        parse_prometheus('llmops_requests_total{model="m" 12\n')


def test_rotated_files_order(tmp_path):
    for name in ("log.jsonl.10", "log.jsonl.2", "log.jsonl.1", "log.jsonl", "log.jsonl.old", "other.jsonl.1"):
        (tmp_path / name).write_text("")
    assert [p.name for p in rotated_files(tmp_path / "log.jsonl")] == ["log.jsonl.10", "log.jsonl.2", "log.jsonl.1",
                                                                       "log.jsonl"]


def test_reader_requires_the_live_log_only_when_asked(tmp_path):
    assert list(JsonlReader(str(tmp_path / "none.jsonl"), required=False)) == []
    with pytest.raises(DataError):
        JsonlReader(str(tmp_path / "none.jsonl"))


@pytest.fixture
def http_server(tmp_path):
    """A real HTTP server on loopback serving the files of tmp_path/www (404 otherwise)."""
    root = tmp_path / "www"
    root.mkdir()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            path = root / self.path.lstrip("/")
            if not path.is_file():
                self.send_error(404)
                return
            body = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", free_port()), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_logs_and_metrics_from_urls(http_server, tmp_path):
    root, base = http_server
    write_log(root / "requests.jsonl", [request(i, status=500 if i == 0 else 200) for i in range(4)], tail='{"tru')
    write_log(root / "feedback.jsonl", [{"response_id": "chatcmpl-req-1", "rating": 4, "model": "m:1"}])
    (root / "metrics").write_text(_metrics_text())
    cfg = MonitorSection(request_log=f"{base}/requests.jsonl", feedback_log=f"{base}/feedback.jsonl",
                         metrics_url=f"{base}/metrics", output=str(tmp_path / "out.json"), drift={"enabled": False})
    result = summarize(cfg)
    assert result.overall["requests"] == 4 and result.corrupt_lines == 1
    assert result.per_model["m:1"]["mean_rating"] == 4
    assert result.gateway_metrics["m:1"]["requests"] == 100 and result.gateway_metrics["m:1"]["latency_p50_ms"]
    assert json.loads((tmp_path / "out.json").read_text())["gateway_metrics"]["m:1"]["errors"] == 10
    bad = cfg.model_copy(update={"request_log": f"{base}/missing.jsonl"})
    with pytest.raises(DataError, match="cannot read"):
        summarize(bad)


def test_prometheus_request_metrics_leave_out_feedback_and_admin_routes():
    from llmops_cli.serving.telemetry import Metrics

    metrics = Metrics()
    metrics.requests.labels("/v1/chat/completions", "200", "m:1").inc(56)
    metrics.requests.labels("/v1/feedback", "200", "m:1").inc(20)
    metrics.requests.labels("/admin/reload", "500", "m:1").inc(1)
    for _ in range(20):
        metrics.latency.labels("/v1/feedback", "m:1").observe(0.001)
    for _ in range(56):
        metrics.latency.labels("/v1/chat/completions", "m:1").observe(0.04)
    metrics.feedback.labels("4", "m:1").inc(20)
    stats = parse_prometheus(metrics.render().decode())["m:1"]
    assert stats["requests"] == 56 and stats.get("errors", 0) == 0
    assert stats["latency_p50_ms"] > 25 and stats["feedback_count"] == 20
