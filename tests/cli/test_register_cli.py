"""`llmops register` subcommands through the CLI: exit codes, --json, approvals."""

import json

import pytest
from typer.testing import CliRunner

from llmops_cli.cli.app import app
from tests.registry_fixtures import new_weights

runner = CliRunner()
APPROVE = ("--approve", "--by", "qa", "--reason", "signed off")


def _run(config, *args):
    return runner.invoke(app, [*args, "-c", str(config)])


def test_register_promote_rollback_verify_gc_through_the_cli(adapter_project):
    tmp, config = adapter_project
    assert _run(config, "register").exit_code == 0
    new_weights(tmp, 0.01)
    added = _run(config, "register", "--json")
    assert added.exit_code == 0 and json.loads(added.stdout)["version"] == 2 and json.loads(added.stdout)["ok"]

    refused = _run(config, "register", "promote", "test-model:1", "--to", "production")
    assert refused.exit_code == 2 and "--approve --by NAME --reason TEXT" in refused.output
    for ref in ("test-model:1", "test-model:2"):
        ok = _run(config, "register", "promote", ref, "--to", "production", *APPROVE)
        assert ok.exit_code == 0, ok.output
    listed = json.loads(_run(config, "register", "list", "--json").stdout)["versions"]
    assert [v["aliases"] for v in listed] == [[], ["production"]]
    assert _run(config, "register", "rollback", "production", "--reason", "bad latency").exit_code == 2
    back = _run(config, "register", "rollback", "production", *APPROVE, "--json")
    assert back.exit_code == 0 and json.loads(back.stdout)["version"] == 1
    shown = json.loads(_run(config, "register", "show", "test-model@production", "--json").stdout)
    assert shown["version"] == 1 and len(shown["alias_history"]) == 3

    diffed = json.loads(_run(config, "register", "diff", "test-model:1", "test-model:2", "--json").stdout)
    assert diffed["files"]["changed"] == ["adapter_model.safetensors"]

    assert _run(config, "register", "verify", "--all").exit_code == 0
    blob = next((tmp / "registry/blobs/sha256").glob("*/*"))
    blob.chmod(0o644)
    blob.write_bytes(b"x")
    bad = _run(config, "register", "verify", "--all", "--json")
    assert bad.exit_code == 1 and "verification failed" in bad.output
    assert _run(config, "register", "gc", "--dry-run").exit_code == 0


@pytest.mark.parametrize("args, message", [
    (("register", "show", "../../etc:1"), "invalid model name"),
    (("register", "show", "test-model:²"), "invalid version"),
    (("register", "show", "test-model:" + "9" * 24), "invalid version"),
    (("register", "show", "test-model:١"), "invalid version"),
    (("register", "show", "test-model:9"), "no version test-model:9"),
    (("register", "show", "test-model@production"), "nothing registered"),
    (("register", "promote", "test-model:1", "--to", "Prod;rm"), "invalid alias"),
    (("register", "promote", "test-model:1", "--to", "canary"), "unknown alias"),
    (("register", "promote", "test-model:1", "--to", "production"), "explicit approval"),
    (("register", "rollback", "production", "--name", "../x"), "invalid model name"),
    (("register", "diff", "test-model:1", "test-model:77"), "no version"),
    (("register", "verify", "test-model:5"), "no version"),
    (("register", "export", "test-model:5", "out"), "no version"),
    (("register", "list", "bad/name"), "invalid model name"),
    (("register", "--force"), "--force needs --reason"),
])
def test_usage_and_reference_errors_exit_2_without_a_traceback(adapter_project, args, message):
    _, config = adapter_project
    assert _run(config, "register").exit_code == 0
    result = _run(config, *args)
    assert result.exit_code == 2, result.output
    assert message in result.output and "Traceback" not in result.output


def test_show_honours_json_given_to_the_group(adapter_project):
    _, config = adapter_project
    assert _run(config, "register").exit_code == 0
    result = runner.invoke(app, ["register", "--json", "show", "test-model:1", "-c", str(config)])
    assert result.exit_code == 0 and json.loads(result.stdout)["ok"] is True


def test_resolve_writes_a_pointer_and_refuses_malformed_refs(adapter_project, tmp_path):
    _, config = adapter_project
    out = tmp_path / "pointer.json"
    missing = _run(config, "register", "resolve", "@production", "-o", str(out))
    assert missing.exit_code == 0 and json.loads(out.read_text())["ref"] is None
    assert _run(config, "register").exit_code == 0
    assert _run(config, "register", "resolve", "latest", "-o", str(out)).exit_code == 0
    assert json.loads(out.read_text())["ref"] == "test-model:1"
    assert _run(config, "register", "resolve", "test-model:²").exit_code == 2
