"""`-c/--set/--json` given to a command group before its subcommand apply to the subcommand, in every
group (`llmops serve -c other.yaml stop` used to act on the default project)."""

import json

import pytest
from typer.testing import CliRunner

from llmops_cli.cli.app import app

runner = CliRunner()


@pytest.fixture
def projects(tmp_path, monkeypatch):
    """A default project in the working directory and another one elsewhere."""
    def write(where, name):
        where.mkdir(parents=True, exist_ok=True)
        path = where / "llmops.yaml"
        path.write_text(json.dumps({"project": {"name": name},
                                    "serve": {"endpoint_file": str(where / "serve/endpoint.json")},
                                    "register": {"root": str(where / "registry")}}))
        return path

    write(tmp_path / "cwd", "default-model")
    other = write(tmp_path / "other", "other-model")
    monkeypatch.chdir(tmp_path / "cwd")
    return tmp_path, other


@pytest.mark.parametrize("argv", [["serve", "-c", "{other}", "status", "--json"],
                                  ["serve", "-c", "{other}", "--json", "status"],
                                  ["serve", "--set", "serve.endpoint_file={tmp}/other/serve/endpoint.json",
                                   "status", "--json"]])
def test_serve_subcommands_use_the_group_options(projects, argv):
    tmp, other = projects
    argv = [a.format(other=other, tmp=tmp) for a in argv]
    result = runner.invoke(app, argv)
    assert result.exit_code == 1
    assert str(tmp / "other/serve/endpoint.json") in json.loads(result.stdout)["reason"]


def test_the_subcommands_own_config_wins(projects):
    tmp, other = projects
    result = runner.invoke(app, ["serve", "-c", str(tmp / "nope.yaml"), "status", "-c", str(other), "--json"])
    assert str(tmp / "other/serve/endpoint.json") in json.loads(result.stdout)["reason"]


def test_register_and_tune_subcommands_use_the_group_config(projects):
    from llmops_cli.registry.store import LocalRegistry

    tmp, other = projects
    model = tmp / "weights"
    model.mkdir()
    (model / "config.json").write_text("{}")
    LocalRegistry(tmp / "other/registry").add("other-model", model, {})
    listed = runner.invoke(app, ["register", "-c", str(other), "--json", "list"])
    assert listed.exit_code == 0, listed.output
    assert [v["ref"] for v in json.loads(listed.stdout)["versions"]] == ["other-model:1"]
    merged = runner.invoke(app, ["tune", "-c", str(other), "--set", "tune.output_dir=/no/such/dir", "merge", "--json"])
    assert merged.exit_code != 0 and "/no/such/dir" in merged.stdout
