"""The Typer layer: help, exit codes, error rendering, --json, and lazy imports."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from llmops_cli.cli.app import app

runner = CliRunner()
COMMANDS = [[], ["prep"], ["tune"], ["eval"], ["register"], ["register", "list"], ["register", "show"],
            ["serve"], ["serve", "status"], ["serve", "stop"], ["serve", "ask"], ["monitor"], ["config", "show"],
            ["config", "validate"], ["config", "reference"], ["model", "scaffold"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: " ".join(c) or "root")
def test_help(cmd):
    result = runner.invoke(app, [*cmd, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.output


@pytest.mark.parametrize("cmd", [["--help"], ["tune", "--help"], ["serve", "--help"], ["config", "show"]])
def test_help_does_not_import_the_ml_stack(cmd):
    code = ("import sys; from llmops_cli.cli.app import main; sys.argv = ['llmops', *sys.argv[1:]]\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "heavy = [m for m in ('torch', 'transformers', 'datasets', 'peft', 'trl') if m in sys.modules]\n"
            "print('HEAVY', heavy, file=sys.stderr)")
    out = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True, timeout=60)
    assert "HEAVY []" in out.stderr, out.stderr[-2000:]


def test_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and result.output.startswith("llmops ")


def test_bad_config_exits_2_without_traceback(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("tune:\n  epocs: 3\n")
    for cmd in (["prep"], ["tune"], ["eval"], ["register"], ["serve"], ["monitor"], ["config", "validate"]):
        result = runner.invoke(app, [*cmd, "--config", str(bad)])
        assert result.exit_code == 2, (cmd, result.output)
        assert "did you mean 'epochs'" in result.output
        assert "Traceback" not in result.output


def test_bad_override_and_missing_file_exit_2(tmp_path):
    result = runner.invoke(app, ["tune", "--set", "tune.batch_size=many"])
    assert result.exit_code == 2 and "tune.batch_size" in result.output
    result = runner.invoke(app, ["prep", "--config", str(tmp_path / "missing.yaml")])
    assert result.exit_code == 2 and "config file not found" in result.output


def test_usage_error_exits_2():
    assert runner.invoke(app, ["tune", "--no-such-flag"]).exit_code == 2


def test_config_show_json_is_one_object_and_redacts(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_secret_value")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("tune:\n  epochs: 5\n")
    result = runner.invoke(app, ["config", "show", "-c", str(cfg), "--json", "-s", "serve.port=9000"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tune"]["epochs"] == 5 and data["serve"]["port"] == 9000
    assert data["model"]["token_env"] == "HF_TOKEN"
    assert "hf_secret_value" not in result.output


def test_failure_in_json_mode_prints_an_error_object(tmp_path):
    result = runner.invoke(app, ["prep", "--json", "-s", f"prep.sources=[{{path: {tmp_path}/none.jsonl}}]"])
    assert result.exit_code == 1
    data = json.loads(result.stdout)
    assert data["ok"] is False and "source not found" in data["error"]


def test_register_refuses_failed_gates_unless_forced(tmp_path):
    (tmp_path / "tune").mkdir()
    (tmp_path / "tune" / "run_manifest.json").write_text("{}")
    (tmp_path / "tune" / "adapter_model.safetensors").write_text("w")
    (tmp_path / "eval.json").write_text(json.dumps({"gates_passed": False,
                                                    "gates": [{"gate": "tuned.exact_match >= 0.9", "passed": False}]}))
    args = ["register", "-s", f"register.root={tmp_path}/reg", "-s", f"register.model_dir={tmp_path}/tune",
            "-s", f"register.eval_metrics={tmp_path}/eval.json", "-s", f"register.output={tmp_path}/out.json"]
    refused = runner.invoke(app, args)
    assert refused.exit_code == 1 and "refusing to register" in refused.output
    assert runner.invoke(app, [*args, "--force"]).exit_code == 2  # --force needs --reason
    forced = runner.invoke(app, [*args, "--force", "--reason", "hotfix approved by QA", "--json"])
    assert forced.exit_code == 0, forced.output
    assert json.loads(forced.stdout)["forced"] is True


def _all_commands():
    import typer.main

    root = typer.main.get_command(app)

    def walk(cmd, path):
        yield path
        for name, sub in getattr(cmd, "commands", {}).items():
            yield from walk(sub, [*path, name])

    return list(walk(root, []))


@pytest.mark.parametrize("path", _all_commands(), ids=lambda p: " ".join(p) or "llmops")
def test_help_shows_text_as_written_and_flags_without_a_metavar(path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "<bool>" not in result.output and "BOOLEAN" not in result.output, result.output


def test_reference_syntax_survives_in_help():
    for path in (["register", "show"], ["register", "diff"], ["register", "export"]):
        assert "NAME[@alias|:version]" in runner.invoke(app, [*path, "--help"]).output


def test_successful_json_results_carry_ok_true(tmp_path):
    config = tmp_path / "llmops.yaml"
    config.write_text(f"project: {{name: demo}}\nregister: {{root: {tmp_path}/registry}}\n")
    for args in (["config", "validate", str(config)], ["config", "show", "-c", str(config)],
                 ["register", "list", "-c", str(config)], ["register", "gc", "--dry-run", "-c", str(config)],
                 ["register", "resolve", "@production", "-c", str(config)]):
        result = runner.invoke(app, [*args, "--json"])
        assert result.exit_code == 0, (args, result.output)
        assert json.loads(result.stdout)["ok"] is True, args
