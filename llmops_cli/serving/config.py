"""Config of `llmops serve`: the gateway, its request log, and the vLLM backend's parameters."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmops_cli.config.base import Section


class VllmSection(Section):
    python: str | None = Field(
        None,
        description="Python interpreter that has vllm (its own venv: vLLM pins torch and transformers); "
                    "default: .venv-vllm/bin/python when `make vllm` created it, else the one running llmops.",
    )
    port: int | None = Field(
        None, ge=1, le=65535,
        description="Loopback port of the vLLM process behind the gateway; default: serve.port + 1.",
    )
    tensor_parallel_size: int = Field(1, ge=1, description="GPUs to shard the model over (--tensor-parallel-size).")
    max_model_len: int | None = Field(
        None, ge=16, description="Context length (--max-model-len); default: the model's."
    )
    gpu_memory_utilization: float = Field(
        0.9, gt=0, le=1,
        description="Fraction of GPU memory vLLM may take (--gpu-memory-utilization; GPU only: on CPU builds "
                    "vLLM reads it as a share of host RAM, so llmops sets cpu_kvcache_gib instead).",
    )
    cpu_kvcache_gib: int = Field(
        1, ge=1, description="KV cache size in whole GiB on vLLM's CPU build (VLLM_CPU_KVCACHE_SPACE)."
    )
    quantization: str | None = Field(None, description="Weight quantization method (--quantization), e.g. fp8, awq.")
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = Field(
        "auto", description="Weight dtype (--dtype); auto: model.dtype, else the checkpoint's own dtype (as the "
                            "transformers backend loads it; vLLM's own auto would turn fp32 into bf16).",
    )
    enable_prefix_caching: bool = Field(True, description="Reuse the KV cache of shared prompt prefixes.")
    max_loras: int = Field(2, ge=1, description="Adapters resident at once (--max-loras); 2 lets reload overlap.")
    max_lora_rank: int | None = Field(
        None, ge=1, description="--max-lora-rank; default: the rank recorded by the registry (serve_readiness)."
    )
    max_restarts: int = Field(
        5, ge=0, description="Restarts of a vLLM engine that died before the gateway gives up (0: never restart)."
    )
    restart_backoff_s: float = Field(
        2.0, gt=0, description="Wait before the first restart; doubled after each failed one (capped at 60 s)."
    )
    tool_call_parser: str | None = Field(
        "hermes",
        description="vLLM's tool-call parser for `tools` with tool_choice auto (--enable-auto-tool-choice "
                    "--tool-call-parser): hermes reads the Hermes/Qwen2.5 tool-call blocks that the bundled chatml "
                    "template renders; e.g. llama3_json or mistral for those families; null: no auto tool choice.",
    )
    extra_args: list[str] = Field(
        default_factory=list, description="Passed through to vLLM's server verbatim, e.g. ['--seed', '0']."
    )


class ServeSection(Section):
    source: str = Field(
        "latest",
        description="What to serve: NAME@alias, NAME:version, latest (the project's newest version) or a path.",
    )
    registry_root: str | None = Field(
        None, description="Deprecated: `source` resolves in the registry the register section names (backend, "
                          "root). If set, it must equal register.root.")
    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="auto picks vllm when serve.vllm.python has a CUDA build of it and sees a GPU; "
                            "vllm also runs vLLM's CPU build when asked for.",
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="Where the transformers backend runs the model: auto picks a CUDA GPU when one is visible."
    )
    host: str = Field("127.0.0.1", description="Interface to bind; keep loopback unless API keys are set.")
    port: int = Field(8321, ge=1, le=65535, description="Port to listen on.")
    api_keys_env: str = Field(
        "LLMOPS_API_KEYS", description="Env var with comma-separated API keys; unset means loopback only."
    )
    api_keys_file: str | None = Field(
        None, description="File with one API key per line (# comments allowed), used with api_keys_env."
    )
    max_new_tokens: int = Field(128, ge=1, description="Default completion budget when a request sets none.")
    max_prompt_tokens: int = Field(1024, ge=1, description="Longer prompts are refused with 400.")
    max_batch: int = Field(
        32, ge=1, description="transformers backend: concurrent non-streaming requests generated together, at most."
    )
    max_body_bytes: int = Field(1_000_000, ge=1024, description="Request bodies larger than this get 413.")
    body_timeout_s: float = Field(30, gt=0, description="A request body not received within this gets 408.")
    max_concurrent_requests: int = Field(
        256, ge=1, description="Generation requests in flight (streams included); more get 429 with Retry-After."
    )
    request_log: str = Field("serve/requests.jsonl", description="JSONL request log read by `llmops monitor`.")
    log_content: bool = Field(
        True, description="Log the prompt and response text (PII-redacted) with each request."
    )
    log_redact: list[str] = Field(
        default_factory=lambda: ["email", "phone", "credit_card", "iban", "ip", "private_key", "aws_key",
                                 "aws_secret", "github_token", "openai_key", "slack_token", "jwt"],
        description="PII types replaced by placeholders in logged text (see prep's PII types).",
    )
    log_sample_rate: float = Field(
        1.0, ge=0, le=1, description="Fraction of successful requests logged; errors are always logged."
    )
    log_max_bytes: int = Field(50_000_000, ge=1024, description="Rotate the request log when it grows past this.")
    log_backups: int = Field(5, ge=0, description="Rotated files kept (<log>.1 is the newest).")
    feedback_log: str = Field("serve/feedback.jsonl", description="JSONL written by POST /v1/feedback.")
    endpoint_file: str = Field("serve/endpoint.json", description="Written by --detach: url, pid, model.")
    ready_timeout_s: float = Field(180, gt=0, description="How long --detach (and reload) wait for readiness.")
    vllm: VllmSection = Field(default_factory=VllmSection, description="Parameters of the vllm backend.")

    @model_validator(mode="after")
    def _known_pii_kinds(self) -> ServeSection:
        from llmops_cli.prep.clean import PII_KINDS

        unknown = sorted(set(self.log_redact) - set(PII_KINDS))
        if unknown:
            raise ValueError(f"log_redact has unknown PII types {unknown}; known: {list(PII_KINDS)}")
        return self
