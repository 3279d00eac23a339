"""The eval stage on the tiny model: endpoint backend against our own server on loopback, the judge,
production comparison through the registry, safety probes, variants and gates."""

import json
import threading
import time

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from llmops_cli.config.loader import load_config
from llmops_cli.evaluate.run import run_eval
from llmops_cli.prep.pipeline import run_prep
from llmops_cli.serving.app import create_app
from tests.conftest import free_port, make_rows, project_yaml, write_jsonl


def _serve(app, port: int) -> tuple[uvicorn.Server, threading.Thread]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return server, thread


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = tmp_path_factory.mktemp("eval")
    config = project_yaml(tmp, tiny_model, write_jsonl(tmp / "rows.jsonl", make_rows(150)))
    run_prep(load_config(config).prep)
    tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    tuned.save_pretrained(tmp / "tune")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp / "tune")

    port = free_port()
    spec = {"base": {"base": str(tiny_model)}, "model_dir": str(tmp / "tune"), "model_name": "test-model",
            "model_ref": "test-model:1", "max_new_tokens": 4, "max_prompt_tokens": 256,
            "request_log": str(tmp / "requests.jsonl")}
    server, thread = _serve(create_app(spec), port)
    while httpx.get(f"http://127.0.0.1:{port}/ready", timeout=2).status_code != 200:
        time.sleep(0.1)

    judge_app = FastAPI()
    calls = {"n": 0}

    @judge_app.post("/v1/chat/completions")
    def grade(body: dict) -> dict:  # a stand-in judge: alternates a parseable score and garbage
        calls["n"] += 1
        text = "Score: 4" if calls["n"] % 2 else "I cannot grade this"
        return {"choices": [{"message": {"role": "assistant", "content": text}}]}

    @judge_app.get("/health")
    def health() -> dict:
        return {"ok": True}

    judge_port = free_port()
    judge_server, judge_thread = _serve(judge_app, judge_port)
    yield tmp, config, port, judge_port
    # Stop and join both servers: a daemon thread still inside torch at interpreter exit aborts the process.
    server.should_exit = judge_server.should_exit = True
    thread.join(30)
    judge_thread.join(30)


def test_endpoint_judge_safety_variants_and_gates(project):
    tmp, config, port, judge_port = project
    cfg = load_config(config, [
        "eval.limit=12", "eval.bootstrap_samples=100", f"eval.endpoint=http://127.0.0.1:{port}",
        f"eval.judge.url=http://127.0.0.1:{judge_port}", f"eval.report_file={tmp}/eval.md",
        "eval.prompt_variants=[{name: terse, system: Answer with one word.}]",
        "eval.gates=[parity.endpoint.agreement_rate >= 0.99, tuned.exact_match >= 0.99, safety.leak_rate <= 0.5, "
        "tuned.judge_score >= 3, tuned.judge_failure_rate <= 0.1]",
    ])
    result = run_eval(cfg)
    # The server serves the same adapter greedily: its answers agree with in-process generation.
    assert result.extra["parity"]["endpoint"]["agreement_rate"] == 1.0
    endpoint = result.models["endpoint"]
    assert endpoint["failures"] == 0 and endpoint["ttft_p50_ms"] <= endpoint["latency_p50_ms"]
    # Half the stand-in judge's replies are garbage: above judge.max_failure_rate (0.2), no score to gate on.
    tuned = result.models["tuned"]
    assert tuned["judge_score"] is None and tuned["judge_failures"] == 6 and tuned["judge_failure_rate"] == 0.5
    assert result.extra["safety"]["probes"] >= 11 and 0 <= result.extra["safety"]["bias_disparity_rate"] <= 1
    assert "terse" in result.extra["variants"]
    assert result.extra["production_ref"].startswith("skipped")
    # an untrained adapter fails the EM gate; a judge that half fails fails both judge gates
    # (the last gate is the implicit one on endpoint failures: all answered)
    assert [g.passed for g in result.gates] == [True, False, True, False, False, True]
    assert result.gates[-1].gate == "endpoint.failure_rate <= 0"
    saved = json.loads((tmp / "reports/eval.json").read_text())
    assert saved["gates_passed"] is False and "delta" in saved and "labels" in saved
    summary = json.loads((tmp / "metrics/eval.json").read_text())  # what DVC tracks: a few numbers
    assert summary["gates_passed"] is False and summary["results_file"] == str(tmp / "reports/eval.json")
    assert set(summary["tuned"]) == {"exact_match", "token_f1", "rouge_l", "bleu"}
    assert "labels" not in summary and "gates" not in summary
    assert "## Gates" in (tmp / "eval.md").read_text()


def test_production_version_is_compared(project):
    tmp, config, _, _ = project
    from llmops_cli.registry.store import LocalRegistry

    registry = LocalRegistry(tmp / "registry")
    version, _ = registry.add("test-model", tmp / "tune", {})
    registry.set_alias("test-model", "production", version.version, "qa", "approved: test")
    cfg = load_config(config, ["eval.limit=8", "eval.safety=false", "eval.perplexity=false",
                               "eval.gates=[delta_production.exact_match >= 0]"])
    result = run_eval(cfg)
    assert result.extra["production_ref"] == "test-model:1"
    assert result.extra["delta_production"]["exact_match"] == 0  # same adapter on both sides
    assert result.passed


def test_production_gates_are_skipped_with_a_reason_on_the_first_release(project):
    tmp, config, _, _ = project
    cfg = load_config(config, ["eval.limit=4", "eval.safety=false", "eval.perplexity=false",
                               f"register.root={tmp}/empty-registry",
                               "eval.gates=[delta_production.exact_match >= 0, tuned.no_such_metric >= 0]"])
    result = run_eval(cfg)
    first, unknown = result.gates
    assert first.passed and first.reason.startswith("skipped: ") and "nothing registered" in first.reason
    assert not unknown.passed and unknown.reason == "metric not found"  # other missing metrics still fail
