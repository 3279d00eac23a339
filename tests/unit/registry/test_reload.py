"""`register promote|rollback --reload` switch a real detached server between registered versions."""

import httpx
import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.errors import BackendUnavailable
from llmops_cli.registry import operations
from llmops_cli.registry.factory import open_registry
from llmops_cli.registry.operations import Approval, promote, rollback
from llmops_cli.registry.register import register_model
from llmops_cli.serving import lifecycle
from tests.conftest import free_port
from tests.registry_fixtures import new_weights

TRANSFORMERS = lifecycle.BackendChoice("transformers", "test")



def test_promote_and_rollback_reload_the_running_server(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config, [f"serve.port={free_port()}", "serve.source=test-model@production",
                               "serve.backend=transformers", "serve.max_new_tokens=2"])
    register_model(cfg)
    new_weights(tmp, 0.01)
    register_model(cfg)
    promote(cfg, "test-model:1", "production", Approval(True, "qa", "first release"))
    served = lifecycle.resolve_source(cfg)
    endpoint = lifecycle.start_detached(lifecycle.build_spec(cfg, served, TRANSFORMERS),
                                        cfg.serve.endpoint_file, 120)
    try:
        assert endpoint["model_ref"] == "test-model:1"
        change = promote(cfg, "test-model:2", "production", Approval(True, "qa", "v2"), reload=True)
        assert change.reload["model_ref"] == "test-model:2" and change.reload["previous_model_ref"] == "test-model:1"
        chat = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        answer = httpx.post(f"{endpoint['url']}/v1/chat/completions", json=chat, timeout=60)
        assert answer.status_code == 200
        back = rollback(cfg, "production", approval=Approval(True, "oncall", "regression"), reload=True)
        assert back.reload["model_ref"] == "test-model:1"
    finally:
        lifecycle.stop_server(cfg.serve.endpoint_file)


@pytest.mark.parametrize("first", [True, False])
def test_a_failed_reload_reverts_the_alias(adapter_project, monkeypatch, first):
    """promote --reload: the alias move and the reload both happen or neither does."""
    tmp, config = adapter_project
    cfg = load_config(config)
    register_model(cfg)
    new_weights(tmp, 0.01)
    register_model(cfg)
    if not first:
        promote(cfg, "test-model:1", "production", Approval(True, "qa", "first release"))
    monkeypatch.setattr(lifecycle, "running_endpoint", lambda _file: {"pid": 1})

    def broken_reload(_cfg, _ref):
        raise BackendUnavailable("reload to test-model:2 failed: engine out of memory")

    monkeypatch.setattr(operations, "_reload", broken_reload)
    with pytest.raises(BackendUnavailable, match="is back at") as info:
        promote(cfg, "test-model:2", "production", Approval(True, "qa", "v2"), reload=True)
    assert "out of memory" in info.value.message
    registry = open_registry(cfg)
    assert registry.aliases("test-model").get("production") == (None if first else 1)
    history = registry.alias_history("test-model", "production")
    assert history[-1]["action"] == "revert" and "out of memory" in history[-1]["reason"]
