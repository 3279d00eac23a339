"""Default sampling parameters: one rule for every backend.

A request that sets no sampling parameter must get the same behaviour from the transformers
backend and from vLLM. The engines disagree on their own (transformers reads the model's
generation_config.json, including `do_sample` and a default top_k of 50; vLLM ignores `do_sample`
and samples at OpenAI's temperature 1.0), so the gateway fills every missing parameter from this
rule before a backend sees the request:

1. the model's generation_config.json (the served directory first, then the base model), where
   `do_sample: false` means greedy (temperature 0) and temperature/top_p/top_k are taken as written;
2. otherwise OpenAI's defaults: temperature 1.0, top_p 1.0, no top-k.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class SamplingDefaults:
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int | None = None  # None: no top-k filtering (OpenAI has no such parameter)
    source: str = "OpenAI defaults"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def apply(self, body: dict[str, Any]) -> dict[str, Any]:
        """The request with every unset sampling parameter filled in (explicit values win)."""
        filled = dict(body)
        if filled.get("temperature") is None:
            filled["temperature"] = self.temperature
        if filled.get("top_p") is None:
            filled["top_p"] = self.top_p
        if filled.get("top_k") is None and self.top_k is not None:
            filled["top_k"] = self.top_k
        return filled


def sampling_defaults(*models: str | None, revision: str | None = None) -> SamplingDefaults:
    """Defaults from the first generation_config.json found for `models` (directories, or hub ids
    already in the local cache: nothing is downloaded), else OpenAI's."""
    for model in models:
        path = _generation_config_path(model, revision) if model else None
        if path is None:
            continue
        try:
            config = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            continue
        return _from_generation_config(config, str(path))
    return SamplingDefaults()


def _generation_config_path(model: str, revision: str | None) -> Path | None:
    local = Path(model) / "generation_config.json"
    if local.is_file() or Path(model).is_dir():
        return local if local.is_file() else None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        cached = try_to_load_from_cache(model, "generation_config.json", revision=revision)
    except Exception:  # noqa: BLE001 - not a valid repo id: no hub defaults
        return None
    return Path(cached) if isinstance(cached, str) else None


def _from_generation_config(config: dict[str, Any], source: str) -> SamplingDefaults:
    if config.get("do_sample") is False or config.get("temperature") == 0:
        return SamplingDefaults(temperature=0.0, top_p=1.0, top_k=None, source=f"{source} (do_sample: false)")
    top_k = config.get("top_k")
    return SamplingDefaults(
        temperature=float(config.get("temperature", 1.0)),
        top_p=float(config.get("top_p", 1.0)),
        top_k=int(top_k) if isinstance(top_k, int) and top_k > 0 else None,
        source=source,
    )
