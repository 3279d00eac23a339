"""`register promote|rollback --reload` switch a real detached server between registered versions."""

import httpx

from llmops_cli.config.loader import load_config
from llmops_cli.registry.operations import promote, rollback
from llmops_cli.registry.register import register_model
from llmops_cli.serving import lifecycle
from tests.conftest import free_port

TRANSFORMERS = lifecycle.BackendChoice("transformers", "test")



def test_promote_and_rollback_reload_the_running_server(adapter_project):
    tmp, config = adapter_project
    cfg = load_config(config, [f"serve.port={free_port()}", "serve.source=test-model@production",
                               "serve.backend=transformers", "serve.max_new_tokens=2"])
    register_model(cfg)
    manifest = tmp / "tune/run_manifest.json"
    manifest.write_text(manifest.read_text().replace('"train_loss": 1.0', '"train_loss": 0.7'))
    register_model(cfg)
    promote(cfg, "test-model:1", "production", approve=True, by="qa", reason="first release")
    served = lifecycle.resolve_source(cfg)
    endpoint = lifecycle.start_detached(lifecycle.build_spec(cfg, served, TRANSFORMERS),
                                        cfg.serve.endpoint_file, 120)
    try:
        assert endpoint["model_ref"] == "test-model:1"
        change = promote(cfg, "test-model:2", "production", approve=True, by="qa", reason="v2", reload=True)
        assert change.reload["model_ref"] == "test-model:2" and change.reload["previous_model_ref"] == "test-model:1"
        chat = {"model": "test-model", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
        answer = httpx.post(f"{endpoint['url']}/v1/chat/completions", json=chat, timeout=60)
        assert answer.status_code == 200
        back = rollback(cfg, "production", reason="regression", reload=True)
        assert back.reload["model_ref"] == "test-model:1"
    finally:
        lifecycle.stop_server(cfg.serve.endpoint_file)
