"""What serve resolves from the registry: verified directory, serve_readiness, refusal of tampering."""

import json
from pathlib import Path

import pytest

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.errors import ConfigError, RegistryError
from llmops_cli.registry.store import LocalRegistry
from llmops_cli.serving import lifecycle

TRANSFORMERS = lifecycle.BackendChoice("transformers", "test")
VLLM = lifecycle.BackendChoice("vllm", "test")



def _registered(tmp_path, readiness):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text(json.dumps({"r": 16}))
    (adapter / "adapter_model.safetensors").write_bytes(b"weights")
    registry = LocalRegistry(tmp_path / "registry")
    version, _ = registry.add("support", adapter, {"serve_readiness": readiness})
    cfg = ProjectConfig.model_validate({"project": {"name": "support"}, "register": {
        "root": str(tmp_path / "registry")}, "serve": {"source": "support:1",
        "request_log": str(tmp_path / "serve/requests.jsonl")}})
    return registry, version, cfg


def test_registry_ref_resolves_to_a_verified_dir_with_serve_readiness(tmp_path):
    _, version, cfg = _registered(tmp_path, {"lora_rank": 32, "requires_merge": False, "reasons": []})
    served = lifecycle.resolve_source(cfg)
    assert served.model_ref == "support:1" and served.model_name == "support"
    assert served.lora_rank == 32  # the registry's record wins over re-reading the adapter
    assert (tmp_path / "registry").resolve() in Path(served.model_dir).resolve().parents
    spec = lifecycle.build_spec(cfg, served, VLLM)
    assert spec.lora_rank == 32 and spec.backend == "vllm" and spec.admin_token
    assert "api_keys" not in spec  # keys never reach the spec file


def test_requires_merge_is_refused_for_vllm(tmp_path):
    _, _, cfg = _registered(tmp_path, {"lora_rank": None, "requires_merge": True, "reasons": ["modules_to_save"]})
    served = lifecycle.resolve_source(cfg)
    with pytest.raises(ConfigError, match="needs merging"):
        lifecycle.build_spec(cfg, served, VLLM)
    assert lifecycle.build_spec(cfg, served, TRANSFORMERS).backend == "transformers"


def test_tampered_version_is_refused(tmp_path):
    registry, version, cfg = _registered(tmp_path, {})
    sha = version.manifest["files"]["adapter_model.safetensors"]
    (registry.blobs / sha[:2] / sha).write_bytes(b"evil")
    with pytest.raises(RegistryError, match="failed verification"):
        lifecycle.resolve_source(cfg)
