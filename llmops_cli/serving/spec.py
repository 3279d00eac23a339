"""The serve spec: everything the server process needs, one typed object built once from the config
(lifecycle.build_spec), written once (serve/spec.json) and validated again when the server reads it.

Every default lives here: readers use attributes and never re-default a value themselves (the
untyped dict this replaces had readers defaulting `log_redact` and `ready_timeout_s` differently).
"""

from __future__ import annotations

import time
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from llmops_cli.serving.config import ServeSection, VllmSection

_SERVE = ServeSection()  # the config's defaults are the spec's defaults


class BaseModelSpec(BaseModel):
    """The base model, as `model` configures it (the server may run from another directory: paths
    are absolute)."""

    model_config = ConfigDict(extra="ignore")
    base: str = "models/base"
    revision: str | None = None
    trust_remote_code: bool = False
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    token_env: str = "HF_TOKEN"


class VllmSpec(VllmSection):
    """serve.vllm plus what was found out about the vLLM interpreter."""

    device: Literal["cpu", "cuda"] | None = Field(None, description="What the vLLM build runs on (probed).")


class ServeSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers", "vllm"] = "transformers"
    base: BaseModelSpec = Field(default_factory=BaseModelSpec)
    model_dir: str
    model_name: str
    model_ref: str = ""
    model_aliases: list[str] = Field(default_factory=list)
    lora_rank: int | None = None
    device: Literal["auto", "cpu", "cuda"] = _SERVE.device
    host: str = _SERVE.host
    port: int = _SERVE.port
    api_keys_env: str | None = _SERVE.api_keys_env
    api_keys_file: str | None = None
    api_keys: list[str] = Field(default_factory=list, description="Filled in by the server process, never written.")
    admin_token: str | None = None
    max_new_tokens: int = _SERVE.max_new_tokens
    max_prompt_tokens: int = _SERVE.max_prompt_tokens
    max_batch: int = _SERVE.max_batch
    max_body_bytes: int = _SERVE.max_body_bytes
    body_timeout_s: float = _SERVE.body_timeout_s
    max_concurrent_requests: int = _SERVE.max_concurrent_requests
    request_log: str = _SERVE.request_log
    log_content: bool = _SERVE.log_content
    log_redact: list[str] = Field(default_factory=lambda: list(_SERVE.log_redact))
    log_sample_rate: float = _SERVE.log_sample_rate
    log_max_bytes: int = _SERVE.log_max_bytes
    log_backups: int = _SERVE.log_backups
    feedback_log: str | None = None  # default: feedback.jsonl next to the request log
    ready_timeout_s: float = _SERVE.ready_timeout_s
    graceful_shutdown_s: float = 10
    vllm: VllmSpec = Field(default_factory=VllmSpec)
    vllm_log: str | None = None  # default: vllm.log next to the request log
    created: int = Field(default_factory=lambda: int(time.time()))

    @property
    def vllm_port(self) -> int:
        return self.vllm.port or self.port + 1

    @property
    def feedback_path(self) -> str:
        from pathlib import Path

        return self.feedback_log or str(Path(self.request_log).with_name("feedback.jsonl"))

    @property
    def vllm_log_path(self) -> str:
        from pathlib import Path

        return self.vllm_log or str(Path(self.request_log).with_name("vllm.log"))

    @classmethod
    def of(cls, spec: ServeSpec | dict[str, Any]) -> ServeSpec:
        """Accept a spec or its dict form (tests and benchmarks build those)."""
        return spec if isinstance(spec, ServeSpec) else cls.model_validate(spec)

    def to_file(self) -> str:
        """JSON for serve/spec.json: without the API keys (they stay in the environment or key file)."""
        return self.model_dump_json(exclude={"api_keys"}, indent=2)
