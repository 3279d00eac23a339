"""The MLflow backend against a real local MLflow store (SQLite tracking + file artifacts, no server)."""

import json

import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.errors import RegistryError
from llmops_cli.registry.operations import promote, rollback
from llmops_cli.registry.register import register_model
from llmops_cli.registry.store import open_registry


def test_same_commands_on_mlflow(adapter_project, monkeypatch):
    tmp, config = adapter_project
    monkeypatch.chdir(tmp)  # MLflow writes nothing outside tmp
    cfg = load_config(config, ["register.backend=mlflow", f"register.mlflow_tracking_uri=sqlite:///{tmp}/mlflow.db",
                               f"register.mlflow_artifact_location={tmp}/mlartifacts"])
    first = register_model(cfg)
    assert first.created and first.version.version == 1
    assert register_model(cfg).created is False  # identical content: same version
    manifest = tmp / "tune/run_manifest.json"
    manifest.write_text(manifest.read_text().replace('"train_loss": 1.0', '"train_loss": 0.4'))
    second = register_model(cfg).version
    assert second.version == 2 and second.manifest["serve_readiness"]["lora_rank"] == 4

    registry = open_registry(cfg)
    assert [v.ref for v in registry.list("test-model")] == ["test-model:1", "test-model:2"]
    with pytest.raises(RegistryError, match="explicit approval"):
        promote(cfg, "test-model:1", "production")
    promote(cfg, "test-model:1", "production", approve=True, by="qa", reason="ok")
    promote(cfg, "test-model:2", "production", approve=True, by="qa", reason="better")
    assert registry.resolve("test-model@production").version == 2
    assert rollback(cfg, "production", reason="regression").version == 1
    assert [h["version"] for h in registry.alias_history("test-model", "production")] == [1, 2, 1]

    out = registry.materialize(registry.resolve("test-model@production"))
    assert (out / "adapter_config.json").is_file() and "## Evaluation" in (out / "README.md").read_text()
    assert registry.verify(second) == []
    stored = next((tmp / "mlartifacts").rglob("adapter_model.safetensors"))
    stored.write_bytes(b"tampered")
    problems = registry.verify(registry.resolve("test-model:1")) + registry.verify(second)
    assert any("adapter_model.safetensors" in p for p in problems)
    assert json.loads(json.dumps(registry.gc()))["removed"] == 0
