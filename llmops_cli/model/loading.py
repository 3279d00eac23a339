"""Load tokenizers and models. Hub ids and local paths go through exactly the same calls."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_cli.errors import ConfigError
from llmops_cli.model.config import ModelSection

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase


def _hub_kwargs(model: ModelSection) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"trust_remote_code": model.trust_remote_code}
    if model.revision:
        kwargs["revision"] = model.revision
    token = os.environ.get(model.token_env)
    if token:
        kwargs["token"] = token  # read from the environment only; never logged or written
    return kwargs


def resolve_dtype(name: str, device: str) -> torch.dtype:
    import torch

    if name == "auto":
        if device.startswith("cuda") and torch.cuda.is_bf16_supported():
            return torch.bfloat16
        return torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_tokenizer(model: ModelSection, path: str | None = None) -> PreTrainedTokenizerBase:
    """Tokenizer of the base model (or of `path`, e.g. a tuned model directory)."""
    from transformers import AutoTokenizer

    source = path or model.base
    check_source(source, model.revision)
    try:
        tok = AutoTokenizer.from_pretrained(source, **_hub_kwargs(model))
    except OSError as exc:
        raise _not_found(source, exc) from None
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load_causal_lm(
    model: ModelSection, device: str | None = None, adapter: str | None = None, merge: bool = False,
    quantization_config: Any = None, dtype: str | None = None,
) -> PreTrainedModel:
    """Load the base model from safetensors, optionally 4-bit quantised or with a PEFT adapter (merged if asked)."""
    from transformers import AutoModelForCausalLM

    check_source(model.base, model.revision)
    device = device or default_device()
    extra: dict[str, Any] = {}
    if quantization_config is not None:  # bitsandbytes places the weights itself
        extra = {"quantization_config": quantization_config, "device_map": {"": 0}}
    try:
        lm = AutoModelForCausalLM.from_pretrained(
            model.base, dtype=resolve_dtype(dtype or model.dtype, device), use_safetensors=True,
            **_hub_kwargs(model), **extra,
        )
    except OSError as exc:
        raise _not_found(model.base, exc) from None
    except ValueError as exc:
        if "model type" not in str(exc):
            raise
        raise ConfigError(
            f"cannot load model {model.base!r}: {str(exc).split('. ')[0]}",
            hint="this transformers does not know the architecture: upgrade transformers, or set "
                 "model.trust_remote_code=true for a model that ships its own code (only if you trust it)",
        ) from None
    if adapter:
        from peft import PeftModel

        lm = PeftModel.from_pretrained(lm, adapter)
        if merge:
            lm = lm.merge_and_unload()
    return (lm if quantization_config is not None else lm.to(device)).eval()


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path) / "adapter_config.json").is_file()


def _offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(v, "").strip().lower() for v in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(f in ("1", "true", "yes", "on") for f in flags)


def check_source(source: str, revision: str | None = None) -> None:
    """Fail in one line, before anything is downloaded, when `source` is neither an existing directory nor a
    hub id that can be reached: a mistyped path would otherwise go to the hub as a repo id (a long
    traceback after ~30 s of retries), and an uncached hub id under HF_HUB_OFFLINE fails the same way."""
    if Path(source).expanduser().exists():
        return
    from huggingface_hub import try_to_load_from_cache
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(source)
        hub_id = not source.startswith((".", "~"))
    except HFValidationError:
        hub_id = False
    if not hub_id:
        raise ConfigError(
            f"cannot load model {source!r}: no such directory (and not a hub id of the form org/name)",
            hint="fix model.base, or run `llmops model scaffold` (or `make base-model`) to build the offline demo "
                 "model",
        )
    if _offline() and not isinstance(try_to_load_from_cache(source, "config.json", revision=revision), str):
        raise ConfigError(
            f"cannot load model {source!r}: no such directory, and HF_HUB_OFFLINE=1 forbids downloading it from "
            "the hub (it is not in the local Hugging Face cache)",
            hint=f"download it once with network access (`hf download {source}`), unset HF_HUB_OFFLINE, or point "
                 "model.base at a local model directory",
        )


def _not_found(source: str, exc: Exception) -> ConfigError:
    local = Path(source).exists() or source.startswith((".", "/")) or source.count("/") != 1
    hint = (
        "run `llmops model scaffold` (or `make base-model`) to build the offline demo model"
        if local
        else "check the hub id, set HF_TOKEN for gated models, or point model.base at a local copy"
    )
    if "couldn't connect" in str(exc).lower():  # no network: every later attempt waits through the same retries
        hint = ("the hub cannot be reached from here: point model.base at a local model directory, or set "
                "HF_HUB_OFFLINE=1 to use the local Hugging Face cache and fail fast")
    return ConfigError(f"cannot load model {source!r}: {str(exc).splitlines()[0]}", hint=hint)
