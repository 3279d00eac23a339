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
