"""The real demo pipeline: `dvc repro` on a copy of the project, ending with a live server on loopback."""

from __future__ import annotations

import json
import subprocess

import httpx
import pytest

from tests.conftest import ROOT, free_port
from tests.e2e.conftest import demo_copy, run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory):
    work, env = demo_copy(tmp_path_factory.mktemp("project"), free_port())
    run(["dvc", "repro"], work, env)
    # What `make demo` does after the pipeline: the registered version to the staging slot, served.
    run(["llmops", "register", "promote", "latest", "--to", "staging", "-c", "configs/demo.yaml"], work, env)
    run(["llmops", "serve", "--detach", "-c", "configs/demo.yaml"], work, env)
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
    monitor = run(["llmops", "monitor", "-c", "configs/demo.yaml", "--json", "--report-only"], work, env, 60)
    assert json.loads(monitor.stdout)["overall"]["requests"] >= 1


def test_second_repro_runs_nothing_and_params_rerun_only_their_stage(project):
    work, env = project
    again = run(["dvc", "repro"], work, env)
    # Only the production pointer is re-read (always_changed); nothing it feeds re-runs.
    assert again.stdout.count("Running stage") == 1 and "Running stage 'production'" in again.stdout, again.stdout
    config = work / "configs/demo.yaml"
    original = config.read_text()
    try:
        config.write_text(original.replace("batch_size: 64", "batch_size: 32"))
        status = json.loads(run(["dvc", "status", "--json"], work, env).stdout)
        assert set(status) == {"eval", "production"}, status
        config.write_text(original.replace("logging_steps: 10", "logging_steps: 20"))  # not a result
        status = json.loads(run(["dvc", "status", "--json"], work, env).stdout)
        assert set(status) == {"production"}, status
    finally:
        config.write_text(original)


def test_metrics_are_small_numbers_that_dvc_compares(project):
    work, env = project
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], work, env).stdout)
    data = next(iter(shown.values()))["data"]
    leaves = [v for f in data.values() for v in _leaves(f["data"])]
    assert set(data) == {"metrics/prep.json", "metrics/tune.json", "metrics/eval.json"}, set(data)
    assert len(leaves) <= 45 and all(isinstance(v, int | float | bool) or k == "results_file"
                                     for k, v in _items(data["metrics/eval.json"]["data"]))
    assert sum(1 for line in (work / "metrics/tune_loss.csv").read_text().splitlines()[1:]
               if line.split(",")[1] == "") == 0  # no row without a loss (a drop to zero in the plot)


def _leaves(obj):
    return [v for _, v in _items(obj)]


def _items(obj, prefix=""):
    if isinstance(obj, dict):
        return [kv for k, v in obj.items() for kv in _items(v, f"{prefix}{k}.")]
    return [(prefix[:-1], obj)]


def test_promotion_re_runs_eval_and_a_variant_does_not_touch_what_is_served(project):
    work, env = project
    served = json.loads((work / "serve/endpoint.json").read_text())["model_ref"]
    run(["llmops", "register", "promote", served, "--to", "production", "--approve", "--by", "qa",
         "--reason", "e2e", "-c", "configs/demo.yaml"], work, env)
    again = run(["dvc", "repro"], work, env)
    assert "Running stage 'eval'" in again.stdout, again.stdout  # eval depends on the production pointer
    metrics = json.loads((work / "metrics/eval.json").read_text())
    assert metrics["delta_production"]["exact_match"] == 0  # the same model on both sides
    run(["git", "add", "-A"], work, env)
    run(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "demo"], work, env)
    registered = json.loads((work / "reports/register.json").read_text())
    run(["dvc", "exp", "run", "-S", "configs/demo.yaml:eval.max_new_tokens=9"], work, env)
    variant = json.loads((work / "reports/register.json").read_text())
    assert variant["ref"] == registered["ref"] and variant["created"] is False  # same weights: same version
    assert json.loads((work / "serve/endpoint.json").read_text())["model_ref"] == served
    # Compare experiments as the README says: only the columns that differ.
    table = run(["dvc", "exp", "show", "--only-changed", "--no-pager", "--csv"], work, env).stdout
    assert len(table.splitlines()[0].split(",")) <= 30, table.splitlines()[0]
    assert "eval.max_new_tokens" in table.splitlines()[0]


def _readme_blocks(section: str) -> list[list[str]]:
    """The ```bash blocks of one README section, as lists of command lines."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    body = text[text.index(section):]
    body = body[:body.index("\n### ", 1)] if "\n### " in body[1:] else body
    blocks = []
    for chunk in body.split("```bash\n")[1:]:
        lines = chunk.split("```", 1)[0].replace("\\\n", " ").splitlines()
        blocks.append([line for line in lines if line.strip() and not line.startswith("#")])
    return blocks


def test_readme_examples_run_as_written(project):
    """The quick start's request and every `llmops register` example, in the demo workspace."""
    work, env = project
    port = json.loads((work / "serve/endpoint.json").read_text())["url"].rsplit(":", 1)[1]
    curl = next(b for b in _readme_blocks("## Quick start") if b and b[0].startswith("curl"))
    answer = run(["bash", "-c", " ".join(curl).replace("8321", port)], work, env, 60)
    assert json.loads(answer.stdout)["choices"][0]["message"]["content"] == "shipping"
    for block in _readme_blocks("### `llmops register`"):
        for line in block:
            run(["bash", "-c", line], work, env, 600)
    endpoint = json.loads((work / "serve/endpoint.json").read_text())
    assert endpoint["model_ref"] == "support-assistant:1"  # rolled back, and the server followed
