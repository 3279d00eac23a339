"""`llmops eval` through the CLI: a failing gate exits 1 with the table; results land in the files."""

import json

from typer.testing import CliRunner

from llmops_cli.cli.app import app
from llmops_cli.config.loader import load_config
from llmops_cli.prep.pipeline import run_prep
from tests.conftest import make_rows, project_yaml, write_jsonl

runner = CliRunner()


def test_failed_gate_exits_1_and_passing_gates_exit_0(tmp_path, tiny_model):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = project_yaml(tmp_path, tiny_model, write_jsonl(tmp_path / "rows.jsonl", make_rows(120)))
    run_prep(load_config(config).prep)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=2, target_modules=["v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(tmp_path / "tune")
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tmp_path / "tune")
    common = ["eval", "-c", str(config), "-s", "eval.limit=6", "-s", "eval.safety=false",
              "-s", f"eval.report_file={tmp_path}/eval.md"]
    failing = runner.invoke(app, [*common, "-s", "eval.gates=[tuned.exact_match >= 0.9, n >= 6]"])
    assert failing.exit_code == 1, failing.output
    assert "FAIL" in failing.output and "1 of 2 gate(s) failed: tuned.exact_match >= 0.9" in failing.output
    passing = runner.invoke(app, [*common, "--json", "-s", "eval.gates=[n >= 6, tuned.perplexity > 1]"])
    assert passing.exit_code == 0, passing.output
    data = json.loads(passing.stdout)
    assert data["gates_passed"] is True and data["tuned"]["perplexity"] > 1
    assert json.loads((tmp_path / "metrics/eval.json").read_text())["n"] == 6

    # A dead endpoint used to exit 0 "ok", its failures only in the JSON.
    from tests.conftest import free_port

    dead = runner.invoke(app, [*common, "-s", "eval.gates=[n >= 6]", "-s", "eval.compare_base=false",
                               "-s", f"eval.endpoint=http://127.0.0.1:{free_port()}/v1"])
    assert dead.exit_code == 1, dead.output
    assert "endpoint.failure_rate <= 0" in dead.output and "Traceback" not in dead.output
    tolerated = runner.invoke(app, [*common, "-s", "eval.gates=[n >= 6]", "-s", "eval.compare_base=false",
                                    "-s", f"eval.endpoint=http://127.0.0.1:{free_port()}/v1",
                                    "-s", "eval.endpoint_max_failure_rate=1"])
    assert tolerated.exit_code == 0, tolerated.output


def test_terminal_shows_no_interval_when_the_bootstrap_is_off(tmp_path, monkeypatch):
    """Core mocked: what `llmops eval` prints about the tuned - base delta, with and without a bootstrap."""
    from llmops_cli.evaluate import run
    from llmops_cli.evaluate.metrics import bootstrap_delta

    def fake_run_eval(cfg, on_progress=None):
        samples = cfg.eval.bootstrap_samples
        return run.EvalResult(n=4, models={"base": {"exact_match": 0.25}, "tuned": {"exact_match": 0.75}},
                              delta={"exact_match": 0.5, "exact_match_ci": bootstrap_delta(
                                  [0, 0, 1, 0], [1, 1, 1, 0], samples, seed=0)})

    monkeypatch.setattr(run, "run_eval", fake_run_eval)
    config = tmp_path / "llmops.yaml"
    config.write_text("project: {name: demo}\n")
    off = runner.invoke(app, ["eval", "-c", str(config), "-s", "eval.bootstrap_samples=0"])
    assert off.exit_code == 0, off.output
    assert "95%" not in off.output and "+0.500 (no interval: eval.bootstrap_samples=0)" in off.output
    on = runner.invoke(app, ["eval", "-c", str(config), "-s", "eval.bootstrap_samples=50"])
    assert on.exit_code == 0 and "95% CI" in on.output, on.output
    data = json.loads(runner.invoke(app, ["eval", "-c", str(config), "--json", "-s",
                                          "eval.bootstrap_samples=0"]).stdout)
    assert data["ok"] is True and data["delta"]["exact_match_ci"] == {"delta": 0.5}
