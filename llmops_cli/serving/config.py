"""Config of `llmops serve`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmops_cli.config.base import Section


class ServeSection(Section):
    source: str = Field(
        "latest",
        description="What to serve: NAME@alias, NAME:version, latest (the project's newest version) or a path.",
    )
    registry_root: str = Field("registry", description="Registry root used to resolve `source`.")
    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="auto picks vllm when it is importable and a CUDA GPU is visible."
    )
    host: str = Field("127.0.0.1", description="Interface to bind; keep loopback unless API keys are set.")
    port: int = Field(8321, ge=1, le=65535, description="Port to listen on.")
    api_keys_env: str = Field(
        "LLMOPS_API_KEYS", description="Env var with comma-separated API keys; unset means loopback only."
    )
    max_new_tokens: int = Field(128, ge=1, description="Default completion budget when a request sets none.")
    max_prompt_tokens: int = Field(1024, ge=1, description="Longer prompts are refused with 400.")
    request_log: str = Field("serve/requests.jsonl", description="JSONL request log read by `llmops monitor`.")
    endpoint_file: str = Field("serve/endpoint.json", description="Written by --detach: url, pid, model.")
    ready_timeout_s: float = Field(180, gt=0, description="How long --detach waits for readiness.")
