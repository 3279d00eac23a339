import json
import os

import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.errors import ConfigError, RegistryError
from llmops_cli.registry.operations import diff, export, promote, rollback
from llmops_cli.registry.register import register_model
from llmops_cli.registry.store import LocalRegistry


def _register(cfg, tmp, lr: float):
    manifest = tmp / "tune/run_manifest.json"
    data = json.loads(manifest.read_text())
    data["config"]["tune"]["learning_rate"] = lr
    manifest.write_text(json.dumps(data))
    return register_model(cfg).version


def test_version_holds_model_card_and_serve_readiness(adapter_project):
    tmp, config = adapter_project
    version = register_model(load_config(config)).version
    readiness = version.manifest["serve_readiness"]
    assert readiness["lora_rank"] == 4 and readiness["requires_merge"] is False
    assert readiness["eos_token"] == "<|im_end|>" and readiness["chat_template_sha256"]
    card = (LocalRegistry(tmp / "registry").materialize(version) / "README.md").read_text()
    assert "## Intended use" in card and "tuned: exact_match=0.8" in card and "## Limitations" in card


def test_modules_to_save_requires_a_merged_model(adapter_project):
    tmp, config = adapter_project
    cfg_file = tmp / "tune/adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["modules_to_save"] = ["lm_head"]
    cfg_file.write_text(json.dumps(cfg))
    readiness = register_model(load_config(config)).version.manifest["serve_readiness"]
    assert readiness["requires_merge"] is True and "modules_to_save" in readiness["reasons"][0]


def test_promotion_to_production_needs_approval_and_rollback_restores(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    v1, v2 = _register(cfg, tmp, 0.1), _register(cfg, tmp, 0.2)
    assert promote(cfg, "test-model:1", "staging").previous is None  # unprotected: no approval needed
    with pytest.raises(RegistryError, match="requires an explicit approval"):
        promote(cfg, "test-model:1", "production")
    with pytest.raises(ConfigError, match="unknown alias"):
        promote(cfg, "test-model:1", "canary")
    promote(cfg, f"test-model:{v1.version}", "production", approve=True, by="qa-lead", reason="passed QA")
    change = promote(cfg, f"test-model:{v2.version}", "production", approve=True, by="qa-lead", reason="v2")
    assert change.previous == v1.version
    registry = LocalRegistry(tmp / "registry")
    assert registry.resolve("test-model@production").version == v2.version
    back = rollback(cfg, "production", by="oncall", reason="latency regression")
    assert (back.version, back.previous) == (v1.version, v2.version)
    assert registry.resolve("test-model@production").version == v1.version
    history = registry.alias_history("test-model", "production")
    assert [h["version"] for h in history] == [v1.version, v2.version, v1.version]
    assert history[0]["actor"] == "qa-lead" and history[0]["reason"] == "approved: passed QA"
    assert history[-1]["reason"] == "rollback: latency regression" and history[-1]["at"]
    with pytest.raises(RegistryError, match="no earlier version"):
        rollback(cfg, "production")  # v1 was the first production version


def test_promotion_refuses_a_tampered_version(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    version = register_model(cfg).version
    sha = version.manifest["files"]["adapter_model.safetensors"]
    blob = tmp / "registry/blobs/sha256" / sha[:2] / sha
    os.chmod(blob, 0o644)
    blob.write_bytes(b"corrupt")
    with pytest.raises(RegistryError, match="failed verification"):
        promote(cfg, version.ref, "staging")


def test_diff_reports_metric_config_and_file_changes(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    v1 = _register(cfg, tmp, 0.1)
    (tmp / "metrics/eval.json").write_text(json.dumps({"n": 10, "tuned": {"exact_match": 0.9}, "gates": [],
                                                       "gates_passed": True}))
    v2 = _register(cfg, tmp, 0.2)
    result = diff(v1, v2)
    assert result["metrics"]["tuned.exact_match"]["delta"] == pytest.approx(0.1)
    assert result["config"]["tune.learning_rate"] == {"a": 0.1, "b": 0.2}
    assert "run_manifest.json" in result["files"]["changed"]


def test_export_plain_and_merged(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    registry = LocalRegistry(tmp / "registry")
    version = register_model(cfg).version
    plain = export(cfg, registry, version, str(tmp / "plain"))
    assert not plain["merged"] and (tmp / "plain/adapter_config.json").is_file()
    merged = export(cfg, registry, version, str(tmp / "merged"), merge=True)
    assert merged["merged"] and (tmp / "merged/model.safetensors").is_file()
    assert not (tmp / "merged/adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp / "merged").config.num_hidden_layers == 2
    with pytest.raises(RegistryError, match="not empty"):
        export(cfg, registry, version, str(tmp / "plain"))
    with pytest.raises(RegistryError, match="HF_HUB_OFFLINE"):
        export(cfg, registry, version, str(tmp / "pushed"), push_to_hub="me/model")


def test_gc_removes_only_unreferenced_blobs(adapter_project):
    tmp, config = adapter_project
    registry = LocalRegistry(tmp / "registry")
    version = register_model(load_config(config)).version
    orphan = registry.blobs / "ff" / ("ff" * 32)
    orphan.parent.mkdir(parents=True, exist_ok=True)
    orphan.write_bytes(b"orphan")
    assert registry.gc(dry_run=True)["removed"] == 1 and orphan.exists()
    assert registry.gc()["removed"] == 1 and not orphan.exists()
    assert registry.verify(version) == []
