"""The MLflow backend against a real `mlflow server` on loopback: concurrency, clean --json, a run an
MLflow user can read. Concurrent callers are real processes."""

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from llmops_cli.cli.app import app
from llmops_cli.config.loader import load_config
from llmops_cli.registry.factory import open_registry
from llmops_cli.registry.mlflow_store import EXPERIMENT
from llmops_cli.registry.register import register_model
from tests.conftest import free_port
from tests.registry_fixtures import new_weights

pytestmark = pytest.mark.mlflow


@pytest.fixture(scope="module")
def mlflow_server(tmp_path_factory):
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [str(Path(sys.executable).with_name("mlflow")), "server", "--host", "127.0.0.1", "--port", str(port),
         "--backend-store-uri", f"sqlite:///{root}/mlflow.db", "--artifacts-destination", str(root / "artifacts"),
         "--workers", "1"], stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        else:
            raise RuntimeError("mlflow server did not start:\n" + (root / "server.log").read_text()[-2000:])
        yield url
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(30)
        log.close()


def _cfg(tmp, config, url, name="test-model"):
    return load_config(config, ["register.backend=mlflow", f"register.mlflow_tracking_uri={url}",
                                f"project.name={name}"])


def _concurrently(code: str, *args_list) -> list[str]:
    procs = [subprocess.Popen([sys.executable, "-c", code, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for args in args_list]
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0 and "Traceback" not in err, err[-2000:]
        outs.append(out.strip().splitlines()[-1])
    return outs


_REGISTER = """
import sys
from llmops_cli.config.loader import load_config
from llmops_cli.registry.register import register_model
cfg = load_config(sys.argv[1], ["register.backend=mlflow", "register.mlflow_tracking_uri=" + sys.argv[2],
                                "project.name=" + sys.argv[3]])
print(register_model(cfg).version.version)
"""


def test_concurrent_identical_registers_make_one_version_and_first_registers_do_not_crash(
        adapter_project, mlflow_server):
    tmp, config = adapter_project
    # 8 processes, identical content, a model name nobody registered yet (concurrent first registers)
    versions = _concurrently(_REGISTER, *[(str(config), mlflow_server, "race-model")] * 8)
    assert set(versions) == {"1"}
    registry = open_registry(_cfg(tmp, config, mlflow_server, "race-model"))
    assert [v.version for v in registry.list("race-model")] == [1]
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    runs = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                              filter_string="tags.`llmops.model` = 'race-model'")
    assert len(runs) == 1  # the losers' runs are deleted: no orphans


# The backend's set_alias itself (promote skips a move to the version the alias already names).
_PROMOTE = """
import sys
from llmops_cli.registry.mlflow_store import MlflowRegistry
registry = MlflowRegistry(sys.argv[2], cache_root=sys.argv[1] + ".cache")
print(registry.set_alias("promo-model", "staging", int(sys.argv[3]), "qa", "p" + sys.argv[3]))
"""


def test_concurrent_promotes_keep_every_history_entry(adapter_project, mlflow_server):
    tmp, config = adapter_project
    cfg = _cfg(tmp, config, mlflow_server, "promo-model")
    register_model(cfg)
    new_weights(tmp, 0.01)
    register_model(cfg)
    _concurrently(_PROMOTE, *[(str(config), mlflow_server, str(1 + i % 2)) for i in range(6)])
    history = open_registry(cfg).alias_history("promo-model", "staging")
    assert len(history) == 6 and sorted(h["reason"] for h in history) == sorted(f"p{1 + i % 2}" for i in range(6))


def test_register_json_is_clean_and_the_run_shows_params_metrics_tags(adapter_project, mlflow_server):
    tmp, config = adapter_project
    result = CliRunner().invoke(app, ["register", "-c", str(config), "--json", "--set", "register.backend=mlflow",
                                      "--set", f"register.mlflow_tracking_uri={mlflow_server}",
                                      "--set", "project.name=json-model"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["ok"] is True  # nothing but the JSON on stdout ("View run" went to stderr)
    from mlflow import MlflowClient

    client = MlflowClient(mlflow_server)
    version = client.get_model_version("json-model", "1")
    run = client.get_run(version.run_id)
    assert run.data.params["tune.learning_rate"] == "0.1" and run.data.params["tune.method"] == "lora"
    assert run.data.metrics["tuned.exact_match"] == pytest.approx(0.8)
    assert "mlflow.source.git.commit" in run.data.tags or run.data.tags["llmops.digest"]
    assert version.tags["llmops.seal"] and version.tags["llmops.digest"]
    cfg = _cfg(tmp, config, mlflow_server, "json-model")
    registry = open_registry(cfg)
    assert registry.verify(registry.resolve("json-model:1")) == []
    client.set_model_version_tag("json-model", "1", "llmops.digest", "0" * 64)  # an edited record
    assert registry.verify(registry.resolve("json-model:1"))


def test_server_down_is_one_line_not_a_traceback(adapter_project, monkeypatch):
    tmp, config = adapter_project
    # MLflow's own retry policy waits ~4 minutes on a refused connection by default.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    result = CliRunner().invoke(app, ["register", "list", "-c", str(config), "--set", "register.backend=mlflow",
                                      "--set", f"register.mlflow_tracking_uri=http://127.0.0.1:{free_port()}"])
    assert result.exit_code == 1 and "Traceback" not in result.output and "MLflow" in result.output
