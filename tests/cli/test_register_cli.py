"""`llmops register` subcommands through the CLI: exit codes, --json, approvals."""

import json

from typer.testing import CliRunner

from llmops_cli.cli.app import app

runner = CliRunner()


def _run(config, *args):
    return runner.invoke(app, [*args, "-c", str(config)])


def test_register_promote_rollback_verify_gc_through_the_cli(adapter_project):
    tmp, config = adapter_project
    assert _run(config, "register").exit_code == 0
    manifest = tmp / "tune/run_manifest.json"
    manifest.write_text(manifest.read_text().replace('"train_loss": 1.0', '"train_loss": 0.5'))
    added = _run(config, "register", "--json")
    assert added.exit_code == 0 and json.loads(added.stdout)["version"] == 2

    refused = _run(config, "register", "promote", "test-model:1", "--to", "production")
    assert refused.exit_code == 1 and "--approve --by NAME --reason TEXT" in refused.output
    for ref in ("test-model:1", "test-model:2"):
        ok = _run(config, "register", "promote", ref, "--to", "production", "--approve", "--by", "qa",
                  "--reason", "signed off")
        assert ok.exit_code == 0, ok.output
    listed = json.loads(_run(config, "register", "list", "--json").stdout)["versions"]
    assert [v["aliases"] for v in listed] == [[], ["production"]]
    back = _run(config, "register", "rollback", "production", "--reason", "bad latency", "--json")
    assert back.exit_code == 0 and json.loads(back.stdout)["version"] == 1
    shown = json.loads(_run(config, "register", "show", "test-model@production", "--json").stdout)
    assert shown["version"] == 1 and len(shown["alias_history"]) == 3

    diffed = json.loads(_run(config, "register", "diff", "test-model:1", "test-model:2", "--json").stdout)
    assert diffed["files"]["changed"] == ["run_manifest.json"]

    assert _run(config, "register", "verify", "--all").exit_code == 0
    blob = next((tmp / "registry/blobs/sha256").glob("*/*"))
    blob.chmod(0o644)
    blob.write_bytes(b"x")
    bad = _run(config, "register", "verify", "--all", "--json")
    assert bad.exit_code == 1 and "verification failed" in bad.output
    assert _run(config, "register", "gc", "--dry-run").exit_code == 0


def test_bad_references_exit_with_a_clear_message(adapter_project):
    _, config = adapter_project
    result = _run(config, "register", "show", "../../etc:1")
    assert result.exit_code == 1 and "invalid model name" in result.output and "Traceback" not in result.output
    result = _run(config, "register", "promote", "test-model:1", "--to", "Prod;rm")
    assert result.exit_code == 1 and "invalid alias" in result.output
