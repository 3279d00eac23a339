"""The MLflow backend against a real local MLflow store (SQLite tracking + file artifacts, no server):
the same commands as the local backend, serving included."""

import json
import os

import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.errors import ApprovalRequired, RefError
from llmops_cli.registry.factory import open_registry
from llmops_cli.registry.mlflow_store import MlflowRegistry
from llmops_cli.registry.operations import Approval, promote, rollback
from llmops_cli.registry.register import register_model
from llmops_cli.serving import lifecycle
from tests.registry_fixtures import new_weights


def _mlflow_cfg(tmp, config, *extra):
    return load_config(config, ["register.backend=mlflow", f"register.mlflow_tracking_uri=sqlite:///{tmp}/mlflow.db",
                                f"register.mlflow_artifact_location={tmp}/mlartifacts", *extra])


def test_same_commands_on_mlflow(adapter_project, monkeypatch):
    tmp, config = adapter_project
    monkeypatch.chdir(tmp)  # MLflow writes nothing outside tmp
    cfg = _mlflow_cfg(tmp, config)
    first = register_model(cfg)
    assert first.created and first.version.version == 1
    assert register_model(cfg).created is False  # identical content: same version
    new_weights(tmp, 0.01)
    second = register_model(cfg).version
    assert second.version == 2 and second.manifest["serve_readiness"]["lora_rank"] == 4

    registry = open_registry(cfg)
    assert isinstance(registry, MlflowRegistry)
    assert [v.ref for v in registry.list("test-model")] == ["test-model:1", "test-model:2"]
    with pytest.raises(ApprovalRequired, match="explicit approval"):
        promote(cfg, "test-model:1", "production")
    promote(cfg, "test-model:1", "production", Approval(True, "qa", "ok"))
    promote(cfg, "test-model:2", "production", Approval(True, "qa", "rollback-proof release"))
    assert registry.resolve("test-model@production").version == 2
    assert rollback(cfg, "production", approval=Approval(True, "oncall", "regression")).version == 1
    history = registry.alias_history("test-model", "production")
    assert [h["version"] for h in history] == [1, 2, 1] and history[-1]["action"] == "rollback"
    assert history[0]["os_user"]
    with pytest.raises(RefError):
        registry.resolve("test-model:²")

    out = registry.materialize(registry.resolve("test-model@production"))
    assert (out / "adapter_config.json").is_file() and "## Evaluation" in (out / "README.md").read_text()
    assert registry.verify(second) == []
    stored = next((tmp / "mlartifacts").rglob("adapter_model.safetensors"))
    stored.write_bytes(b"tampered")
    problems = registry.verify(registry.resolve("test-model:1")) + registry.verify(second)
    assert any("adapter_model.safetensors" in p for p in problems)
    assert json.loads(json.dumps(registry.gc()))["removed"] == 0


def test_serve_resolves_through_the_mlflow_backend(adapter_project, monkeypatch):
    """serve used to open the local store directly: an MLflow-registered model could not be served."""
    tmp, config = adapter_project
    monkeypatch.chdir(tmp)
    cfg = _mlflow_cfg(tmp, config, "serve.source=test-model@production")
    register_model(cfg)
    promote(cfg, "test-model:1", "production", Approval(True, "qa", "ok"))
    served = lifecycle.resolve_source(cfg)
    assert served.model_ref == "test-model:1" and served.lora_rank == 4
    model_dir = os.path.realpath(served.model_dir)
    assert model_dir.startswith(os.path.realpath(tmp / "registry" / "mlflow-cache"))
    evil = os.path.join(model_dir, "extra_evil.py")
    os.chmod(model_dir, 0o755)
    open(evil, "w").write("import os")
    registry = open_registry(cfg)
    assert any("extra_evil.py" in p for p in registry.verify(registry.resolve("test-model:1")))
    again = lifecycle.resolve_source(cfg)  # re-hashed before serving: rebuilt without the extra file
    assert not os.path.exists(os.path.join(again.model_dir, "extra_evil.py"))
