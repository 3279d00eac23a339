import json
import os

import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.errors import ApprovalRequired, BackendUnavailable, ConfigError, ModelMismatch, RegistryError
from llmops_cli.registry.operations import Approval, diff, export, promote, rollback
from llmops_cli.registry.register import register_model
from llmops_cli.registry.store import LocalRegistry
from tests.registry_fixtures import bind_eval, new_weights

QA = Approval(approve=True, by="qa-lead", reason="passed QA")


def _register(cfg, tmp, scale: float, force: str | None = None, **eval_changes):
    new_weights(tmp, scale, **eval_changes)
    return register_model(cfg, force_reason=force).version


def test_version_card_and_serve_readiness(adapter_project):
    tmp, config = adapter_project
    version = register_model(load_config(config)).version
    readiness = version.manifest["serve_readiness"]
    assert readiness["lora_rank"] == 4 and readiness["requires_merge"] is False
    assert readiness["eos_token"] == "<|im_end|>" and readiness["chat_template_sha256"]
    card = (LocalRegistry(tmp / "registry").materialize(version) / "README.md").read_text()
    assert "## Intended use" in card and "exact_match=0.8" in card and "## Limitations" in card
    assert "README.md" not in version.files and "run_manifest.json" not in version.files


def test_eval_only_change_is_not_a_new_version(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    first = register_model(cfg)
    bind_eval(tmp, tuned={"exact_match": 0.9})  # same weights, new metrics: metadata, not content
    again = register_model(cfg)
    assert first.created and not again.created and again.version.version == first.version.version


def test_modules_to_save_requires_a_merged_model(adapter_project):
    tmp, config = adapter_project
    cfg_file = tmp / "tune/adapter_config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["modules_to_save"] = ["lm_head"]
    cfg_file.write_text(json.dumps(cfg))
    bind_eval(tmp)
    readiness = register_model(load_config(config)).version.manifest["serve_readiness"]
    assert readiness["requires_merge"] is True and "modules_to_save" in readiness["reasons"][0]


def test_register_refuses_weights_that_were_not_evaluated(adapter_project):
    tmp, config = adapter_project
    other = tmp / "other"  # another tune output registered with the first one's eval results
    import shutil

    shutil.copytree(tmp / "tune", other)
    (other / "adapter_model.safetensors").write_bytes((other / "adapter_model.safetensors").read_bytes()[:-1] + b"x")
    swapped = load_config(config, [f"register.model_dir={other}"])
    with pytest.raises(ModelMismatch, match="not the model that was evaluated"):
        register_model(swapped)
    assert LocalRegistry(tmp / "registry").list() == []  # nothing became visible
    forced = register_model(swapped, force_reason="hotfix, eval pending").version
    assert forced.forced and forced.force_reason == "hotfix, eval pending"
    assert forced.manifest["custody"]["evaluated"]["digest"] != forced.digest
    assert "hotfix, eval pending" in (LocalRegistry(tmp / "registry").materialize(forced) / "README.md").read_text()


def test_register_refuses_eval_results_without_a_model_hash_or_on_another_base(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    metrics = json.loads((tmp / "metrics/eval.json").read_text())
    (tmp / "metrics/eval.json").write_text(json.dumps({k: v for k, v in metrics.items() if k != "model"}))
    with pytest.raises(ModelMismatch, match="does not say which model"):
        register_model(cfg)
    metrics["model"]["base"]["content_sha256"] = "0" * 64
    (tmp / "metrics/eval.json").write_text(json.dumps(metrics))
    with pytest.raises(ModelMismatch, match="another base model"):
        register_model(cfg)


def test_promotion_to_production_needs_approval_and_rollback_restores(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    v1, v2 = _register(cfg, tmp, 0.1), _register(cfg, tmp, 0.2)
    assert promote(cfg, "test-model:1", "staging").previous is None  # unprotected: no approval needed
    with pytest.raises(ApprovalRequired, match="requires an explicit approval"):
        promote(cfg, "test-model:1", "production")
    with pytest.raises(ConfigError, match="unknown alias"):
        promote(cfg, "test-model:1", "canary")
    promote(cfg, f"test-model:{v1.version}", "production", QA)
    change = promote(cfg, f"test-model:{v2.version}", "production", Approval(True, "qa-lead", "v2"))
    assert change.previous == v1.version
    registry = LocalRegistry(tmp / "registry")
    assert registry.resolve("test-model@production").version == v2.version
    with pytest.raises(ApprovalRequired, match="rollback of production requires"):
        rollback(cfg, "production", approval=Approval(reason="latency"))
    back = rollback(cfg, "production", approval=Approval(True, "oncall", "latency regression"))
    assert (back.version, back.previous) == (v1.version, v2.version)
    assert registry.resolve("test-model@production").version == v1.version
    history = registry.alias_history("test-model", "production")
    assert [h["version"] for h in history] == [v1.version, v2.version, v1.version]
    assert [h["action"] for h in history] == ["promote", "promote", "rollback"]
    assert history[0]["actor"] == "qa-lead" and history[0]["reason"] == "approved: passed QA"
    assert history[0]["os_user"]  # who really ran it, beside the --by name anyone can type
    assert history[-1]["reason"] == "approved: latency regression" and history[-1]["at"]
    with pytest.raises(RegistryError, match="no earlier version"):
        rollback(cfg, "production", approval=QA)  # v1 was the first production version


def test_a_reason_starting_with_rollback_is_not_a_rollback(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    _register(cfg, tmp, 0.1), _register(cfg, tmp, 0.2), _register(cfg, tmp, 0.3)
    promote(cfg, "test-model:1", "production", QA)
    promote(cfg, "test-model:2", "production", Approval(True, "qa", "rollback-safe release"))
    promote(cfg, "test-model:3", "production", QA)
    assert rollback(cfg, "production", approval=QA).version == 2


def test_rollback_refuses_a_tampered_target(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    v1, v2 = _register(cfg, tmp, 0.1), _register(cfg, tmp, 0.2)
    promote(cfg, v1.ref, "production", QA)
    promote(cfg, v2.ref, "production", QA)
    sha = v1.files["adapter_model.safetensors"]
    blob = tmp / "registry/blobs/sha256" / sha[:2] / sha
    os.chmod(blob, 0o644)
    blob.write_bytes(b"corrupt")
    with pytest.raises(RegistryError, match="failed verification"):
        rollback(cfg, "production", approval=QA)
    assert LocalRegistry(tmp / "registry").resolve("test-model@production").version == v2.version


def test_forced_version_needs_its_own_acceptance_for_production(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    forced = _register(cfg, tmp, 0.1, force="demo deadline", gates_passed=False)
    assert forced.forced
    promote(cfg, forced.ref, "staging")  # unprotected aliases take it
    with pytest.raises(ApprovalRequired, match="registered with --force"):
        promote(cfg, forced.ref, "production", QA)
    change = promote(cfg, forced.ref, "production", Approval(True, "qa", "ok", accept_forced="known gap, fix in v2"))
    assert change.version == forced.version
    history = LocalRegistry(tmp / "registry").alias_history("test-model", "production")
    assert "known gap, fix in v2" in history[-1]["reason"]


def test_promote_reload_without_a_server_changes_nothing(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    v1, v2 = _register(cfg, tmp, 0.1), _register(cfg, tmp, 0.2)
    promote(cfg, v1.ref, "production", QA)
    with pytest.raises(BackendUnavailable, match="no server is running"):
        promote(cfg, v2.ref, "production", QA, reload=True)
    registry = LocalRegistry(tmp / "registry")
    assert registry.resolve("test-model@production").version == v1.version
    assert len(registry.alias_history("test-model", "production")) == 1


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
    manifest = tmp / "tune/run_manifest.json"
    manifest.write_text(manifest.read_text().replace('"learning_rate": 0.1', '"learning_rate": 0.2'))
    v2 = _register(cfg, tmp, 0.2, tuned={"exact_match": 0.9})
    result = diff(v1, v2)
    assert result["metrics"]["tuned.exact_match"]["delta"] == pytest.approx(0.1)
    assert result["config"]["tune.learning_rate"] == {"a": 0.1, "b": 0.2}
    assert result["files"]["changed"] == ["adapter_model.safetensors"]


def test_export_plain_and_merged(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    registry = LocalRegistry(tmp / "registry")
    version = register_model(cfg).version
    plain = export(cfg, registry, version, str(tmp / "plain"))
    assert not plain["merged"] and (tmp / "plain/adapter_config.json").is_file()
    assert os.access(tmp / "plain/adapter_config.json", os.W_OK) and (tmp / "plain/README.md").is_file()
    merged = export(cfg, registry, version, str(tmp / "merged"), merge=True)
    assert merged["merged"] and (tmp / "merged/model.safetensors").is_file()
    assert not (tmp / "merged/adapter_config.json").exists()
    from transformers import AutoModelForCausalLM

    assert AutoModelForCausalLM.from_pretrained(tmp / "merged").config.num_hidden_layers == 2
    with pytest.raises(RegistryError, match="not empty"):
        export(cfg, registry, version, str(tmp / "plain"))
    with pytest.raises(RegistryError, match="HF_HUB_OFFLINE"):
        export(cfg, registry, version, str(tmp / "pushed"), push_to_hub="me/model")


def test_export_never_copies_a_tampered_materialized_copy(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    registry = LocalRegistry(tmp / "registry")
    version = register_model(cfg).version
    copy = registry.materialize(version)
    os.chmod(copy, 0o755)
    (copy / "extra_evil.py").write_text("import os")
    weights = copy / "adapter_model.safetensors"
    os.chmod(weights, 0o644)
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    assert any("extra_evil.py" in p for p in registry.verify(version))
    assert any("adapter_model.safetensors" in p for p in registry.verify(version))
    export(cfg, registry, version, str(tmp / "out"))
    assert not (tmp / "out/extra_evil.py").exists()
    assert (tmp / "out/adapter_model.safetensors").read_bytes() == (tmp / "tune/adapter_model.safetensors").read_bytes()
    assert registry.verify(version) == []  # rebuilt from the blobs


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


def test_promoting_the_version_an_alias_already_names_records_nothing(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config)
    version = register_model(cfg).version
    promote(cfg, "latest", "staging")
    again = promote(cfg, "latest", "staging")  # `make demo` re-run
    assert again.previous == version.version
    assert len(LocalRegistry(tmp / "registry").alias_history("test-model", "staging")) == 1
