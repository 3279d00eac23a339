"""Serving backends: small classes behind one interface (start, wait_ready, stop, reload, handle).

The gateway (serving/app.py) owns auth, logging, metrics and validation and hands each parsed
OpenAI request to a backend:
- TransformersBackend generates in-process with the embedded engine (CPU default; adapter merged);
- VllmBackend runs vLLM's OpenAI server as a child process on a loopback port and proxies to it,
  streaming bytes through unbuffered; adapters are served as LoRA modules and switched at runtime.
"""

from llmops_cli.serving.backends.base import ApiError, Backend, ModelSpec, Reply
from llmops_cli.serving.backends.transformers import StopScanner, TransformersBackend
from llmops_cli.serving.backends.vllm import (
    VLLM_LORA_RANKS,
    VllmBackend,
    lora_name,
    vllm_command,
    vllm_lora_rank,
    vllm_pgid_file,
)

__all__ = ["VLLM_LORA_RANKS", "ApiError", "Backend", "ModelSpec", "Reply", "StopScanner", "TransformersBackend",
           "VllmBackend", "lora_name", "vllm_command", "vllm_lora_rank", "vllm_pgid_file"]
