"""`llmops tune` through the CLI: dry-run estimate, packing run, clear errors."""

import json

from typer.testing import CliRunner

from llmops_cli.cli.app import app
from llmops_cli.config.loader import load_config
from llmops_cli.prep.pipeline import run_prep
from tests.conftest import make_rows, project_yaml, write_jsonl

runner = CliRunner()


def test_dry_run_prints_the_estimate_without_training(tmp_path, tiny_model):
    config = project_yaml(tmp_path, tiny_model, write_jsonl(tmp_path / "rows.jsonl", make_rows(10)))
    result = runner.invoke(app, ["tune", "-c", str(config), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["estimate"]["total_params"] > data["estimate"]["trainable_params"] > 0
    assert not (tmp_path / "tune").exists()
    too_small = runner.invoke(app, ["tune", "-c", str(config), "--dry-run", "-s", "tune.gpu_memory_gib=0.01"])
    assert too_small.exit_code == 1 and "exceeds" in too_small.output and "gradient_checkpointing" in too_small.output


def test_packed_training_run_writes_adapter_manifest_and_loss_curve(tmp_path, tiny_model):
    config = project_yaml(tmp_path, tiny_model, write_jsonl(tmp_path / "rows.jsonl", make_rows(120)))
    run_prep(load_config(config).prep)
    result = runner.invoke(app, ["tune", "-c", str(config), "--json", "-s", "tune.packing=true",
                                 "-s", "tune.max_steps=3", "-s", "tune.logging_steps=1",
                                 "-s", f"tune.plots_file={tmp_path}/loss.csv"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["steps"] == 3
    manifest = json.loads((tmp_path / "tune/run_manifest.json").read_text())
    assert manifest["config"]["tune"]["packing"] is True and manifest["packages"]["torch"]
    assert manifest["memory_preflight"]["total_gib"] > 0
    assert len((tmp_path / "loss.csv").read_text().splitlines()) >= 4


def test_a_run_without_a_config_file_says_so(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMOPS_CONFIG", raising=False)
    result = runner.invoke(app, ["tune", "--dry-run", "-s", f"model.base={tiny_model}"])
    assert result.exit_code == 0, result.output
    assert "no config file loaded" in result.stderr and "built-in defaults" in result.stderr
    (tmp_path / "llmops.yaml").write_text(f"model:\n  base: {tiny_model}\n")
    found = runner.invoke(app, ["tune", "--dry-run"])
    assert found.exit_code == 0 and "no config file loaded" not in found.stderr


def test_interrupted_training_hints_the_exact_resume_command(tmp_path, tiny_model, monkeypatch):
    from llmops_cli.tune import train

    def interrupted(*args, **kwargs):
        raise train.TrainingInterrupted("training stopped by SIGINT at step 4", hint="placeholder")

    monkeypatch.setattr(train, "run_tune", interrupted)
    config = project_yaml(tmp_path, tiny_model, write_jsonl(tmp_path / "rows.jsonl", make_rows(10)))
    result = runner.invoke(app, ["tune", "-c", str(config), "-s", "tune.epochs=1"])
    assert result.exit_code == 130
    assert f"llmops tune -c {config} --set tune.epochs=1 --resume" in result.stderr
