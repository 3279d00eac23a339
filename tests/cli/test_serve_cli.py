"""`llmops serve` commands through the Typer layer: exit codes, messages, --json (core mocked where slow)."""

import json

import pytest
from typer.testing import CliRunner

from llmops_cli.cli.app import app
from llmops_cli.serving import lifecycle

runner = CliRunner()


@pytest.fixture
def cfg(tmp_path):
    path = tmp_path / "llmops.yaml"
    path.write_text(json.dumps({"project": {"name": "m"}, "serve": {
        "source": str(tmp_path), "endpoint_file": str(tmp_path / "serve/endpoint.json"),
        "request_log": str(tmp_path / "serve/requests.jsonl")}}))
    return path


def test_reload_help():
    result = runner.invoke(app, ["serve", "reload", "--help"])
    assert result.exit_code == 0 and "without failing requests" in result.output


def test_reload_without_a_server_exits_1_with_a_hint(cfg):
    result = runner.invoke(app, ["serve", "reload", "-c", str(cfg)])
    assert result.exit_code == 1
    assert "no server is running" in result.output and "llmops serve --detach" in result.output
    assert "Traceback" not in result.output


def test_reload_json_prints_the_updated_endpoint(cfg, monkeypatch):
    seen = {}

    def fake_reload(config, source=None):
        seen["source"] = source
        return {"url": "http://127.0.0.1:1", "model_ref": "m:3", "previous_model_ref": "m:2"}

    monkeypatch.setattr(lifecycle, "reload_server", fake_reload)
    result = runner.invoke(app, ["serve", "reload", "m:3", "-c", str(cfg), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["model_ref"] == "m:3" and seen["source"] == "m:3"


def test_vllm_without_vllm_exits_1_with_a_clear_message(cfg, monkeypatch):
    monkeypatch.setattr(lifecycle, "probe_vllm", lambda python: None)
    result = runner.invoke(app, ["serve", "-c", str(cfg), "--set", "serve.backend=vllm", "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["type"] == "BackendUnavailable" and "has no vllm" in data["error"] and "make vllm" in data["hint"]


@pytest.mark.parametrize("override", ["serve.log_sample_rate=2", "serve.vllm.gpu_memory_utilization=0",
                                      "serve.vllm.bogus=1", "serve.log_redact=[nope]"])
def test_bad_serve_config_exits_2(cfg, override):
    result = runner.invoke(app, ["serve", "-c", str(cfg), "--set", override])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output


def test_public_host_without_keys_exits_2(cfg, monkeypatch):
    monkeypatch.delenv("LLMOPS_API_KEYS", raising=False)
    monkeypatch.setattr(lifecycle, "resolve_source", lambda c, s=None: lifecycle.Served(str(cfg.parent), "x", "m"))
    result = runner.invoke(app, ["serve", "-c", str(cfg), "--set", "serve.host=0.0.0.0",
                                 "--set", "serve.backend=transformers"])
    assert result.exit_code == 2 and "no API key" in result.output


def test_status_when_not_running_exits_1(cfg):
    result = runner.invoke(app, ["serve", "status", "-c", str(cfg), "--json"])
    data = json.loads(result.stdout)
    # exit 1 and "ok": true would contradict each other for `... --json | jq .ok` in a deploy script
    assert result.exit_code == 1 and data["running"] is False and data["ok"] is False


def test_foreground_server_is_found_by_status_and_stopped_by_stop(tiny_model, tiny_corpus, tmp_path):
    """`llmops serve` in the foreground (a real process): status, reload and stop find it by its endpoint file."""
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import free_port, project_yaml

    cfg = project_yaml(tmp_path, tiny_model, tiny_corpus, serve={"source": str(tiny_model), "port": free_port(),
                                                                 "backend": "transformers"})
    proc = subprocess.Popen([sys.executable, "-m", "llmops_cli", "serve", "-c", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "CI": "1"})
    try:
        endpoint_file = tmp_path / "serve/endpoint.json"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            status = runner.invoke(app, ["serve", "status", "-c", str(cfg), "--json"])
            if status.exit_code == 0:
                break
            assert proc.poll() is None, proc.stderr.read().decode()
            time.sleep(0.3)
        info = json.loads(status.stdout)
        assert info["foreground"] is True and info["pid"] == proc.pid and info["ready"] is True
        reload = runner.invoke(app, ["serve", "reload", "-c", str(cfg), "--json"])
        assert reload.exit_code == 0 and json.loads(reload.stdout)["unchanged"] is True
        stop = runner.invoke(app, ["serve", "stop", "-c", str(cfg), "--json"])
        assert stop.exit_code == 0 and json.loads(stop.stdout)["stopped"] is True
        assert proc.wait(timeout=30) is not None
        assert not endpoint_file.exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
