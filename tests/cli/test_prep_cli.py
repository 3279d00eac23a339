"""`llmops prep` through the real CLI: exit codes, --json, summary, and that PII never reaches the terminal."""

import json
import subprocess
import sys

from typer.testing import CliRunner

from llmops_cli.cli.app import app
from tests.conftest import make_rows, project_yaml, write_jsonl

runner = CliRunner()


def test_prep_json_result_and_terminal_summary(tmp_path, tiny_model):
    rows = [*make_rows(80), {"id": "pii", "message": "mail me at jane.doe@example.com about the kettle",
                             "category": "shipping"}, {"id": "bad", "message": 7, "category": "x"}]
    config = project_yaml(tmp_path, tiny_model, write_jsonl(tmp_path / "raw.jsonl", rows))
    result = runner.invoke(app, ["prep", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["rows_in"] == 82 == sum(data["splits"].values()) + data["quarantined"]
    assert data["pii"] == {"email": 1} and data["reasons"]["wrong_type"] == 1
    assert data["chat_template"]["eos_token"] == "<|im_end|>" and data["tokens"]["count"] > 0
    assert (tmp_path / "processed/train.parquet").is_file() and data["tokenized_cache"]["hit"] is False
    assert "jane.doe" not in result.output

    plain = runner.invoke(app, ["prep", "-c", str(config)], env={"CI": "1"})
    assert plain.exit_code == 0, plain.output
    for needle in ("rows per source", "quarantined by reason", "PII found", "duplicates removed",
                   "tokens per example", "rows in:"):
        assert needle in plain.output, needle
    assert "jane.doe" not in plain.output


def test_bad_input_exits_1_and_bad_config_exits_2_without_traceback(tmp_path, tiny_model):
    config = project_yaml(tmp_path, tiny_model, tmp_path / "missing.jsonl")
    missing = runner.invoke(app, ["prep", "-c", str(config)])
    assert missing.exit_code == 1 and "source not found" in missing.output
    assert "Traceback" not in missing.output
    bad = runner.invoke(app, ["prep", "-c", str(config), "-s", "prep.near_dup.threshold=1.5",
                              "-s", "prep.pii.iban=scramble"])
    assert bad.exit_code == 2 and "prep.near_dup.threshold" in bad.output and "prep.pii.iban" in bad.output
    both = runner.invoke(app, ["prep", "-c", str(config), "-s", "prep.sources=[{path: a.jsonl, hub: x/y}]"])
    assert both.exit_code == 2 and "exactly one of" in both.output


def test_mixed_schemas_exit_1_with_a_hint(tmp_path, tiny_model):
    write_jsonl(tmp_path / "raw/a.jsonl", make_rows(5))
    write_jsonl(tmp_path / "raw/b.jsonl", [{"text": "pre-training text"}])
    config = project_yaml(tmp_path, tiny_model, tmp_path / "raw/*.jsonl")
    result = runner.invoke(app, ["prep", "-c", str(config), "--json"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert "mixed schemas" in data["error"] and "separate prep runs" in data["hint"]


def test_importing_prep_cli_leaves_the_ml_stack_out():
    code = ("import sys; import llmops_cli.cli.prep_cmd, llmops_cli.prep.config\n"
            "print([m for m in ('torch', 'transformers', 'datasets', 'pyarrow', 'datasketch') if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr
