"""The real demo pipeline: `dvc repro` on a copy of the project, ending with a live server on loopback."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tests.conftest import free_port
from tests.e2e.conftest import demo_copy, run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    work, env = demo_copy(tmp_path_factory.mktemp("project"), free_port())
    run(["dvc", "repro"], work, env)
    yield work, env
    subprocess.run(["llmops", "serve", "stop", "-c", "configs/demo.yaml"], cwd=work, env=env, timeout=60)


def test_tuned_model_beats_base_on_the_test_split(project):
    work, _ = project
    metrics = json.loads((work / "metrics/eval.json").read_text())
    assert metrics["n"] >= 100
    assert metrics["gates_passed"] is True
    assert metrics["tuned"]["exact_match"] >= metrics["base"]["exact_match"] + 0.3, metrics
    tune = json.loads((work / "metrics/tune.json").read_text())
    assert tune["eval_loss_after"] < tune["eval_loss_before"]


def test_prep_accounts_for_every_row(project):
    work, _ = project
    report = json.loads((work / "reports/prep.json").read_text())
    assert report["rows_in"] == sum(report["splits"].values()) + report["quarantined"]
    assert report["reasons"]["duplicate"] > 0 and report["pii"]["email"] > 0


def test_pipeline_ends_with_a_live_endpoint_serving_the_registered_version(project):
    work, env = project
    endpoint = json.loads((work / "serve/endpoint.json").read_text())
    registered = json.loads((work / "reports/register.json").read_text())
    assert endpoint["model_ref"] == registered["ref"]
    models = httpx.get(f"{endpoint['url']}/v1/models", timeout=10).json()
    assert models["data"][0]["id"] == "support-assistant"
    ask = run(["llmops", "serve", "ask", "-c", "configs/demo.yaml", "--json",
                "My parcel still has not been delivered, the tracking page is stuck."], work, env, 120)
    answer = json.loads(ask.stdout)["content"]
    assert answer in {"billing", "shipping", "returns", "account", "technical", "cancellation"}, answer
    monitor = run(["llmops", "monitor", "-c", "configs/demo.yaml", "--json"], work, env, 60)
    assert json.loads(monitor.stdout)["overall"]["requests"] >= 1


def test_second_repro_runs_nothing_and_params_rerun_only_their_stage(project):
    work, env = project
    again = run(["dvc", "repro"], work, env)
    assert "Running stage" not in again.stdout, again.stdout
    config = work / "configs/demo.yaml"
    original = config.read_text()
    try:
        config.write_text(original.replace("batch_size: 64", "batch_size: 32"))
        status = json.loads(run(["dvc", "status", "--json"], work, env).stdout)
        assert set(status) == {"eval"}, status
    finally:
        config.write_text(original)
