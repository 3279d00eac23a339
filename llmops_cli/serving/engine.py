"""The embedded CPU backend: a transformers model (adapter merged) generating in-process."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


class TransformersEngine:
    """Loads once, then generates one request at a time (a lock: HF generate is not re-entrant)."""

    def __init__(self, base_spec: dict[str, Any], model_dir: str) -> None:
        self.base_spec = base_spec
        self.model_dir = model_dir
        self.model: Any = None
        self.tokenizer: Any = None
        self.load_error: str | None = None
        self._lock = threading.Lock()

    @property
    def ready(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        from llmops_cli.model.config import ModelSection
        from llmops_cli.model.loading import is_adapter_dir, load_causal_lm, load_tokenizer

        try:
            base = ModelSection(**self.base_spec)
            if is_adapter_dir(self.model_dir):
                model = load_causal_lm(base, device="cpu", adapter=self.model_dir, merge=True)
            else:
                model = load_causal_lm(base.model_copy(update={"base": self.model_dir}), device="cpu")
            self.tokenizer = load_tokenizer(base, path=self.model_dir)
            self.model = model
        except Exception as exc:  # reported through /ready and the server log, never swallowed
            self.load_error = f"{type(exc).__name__}: {exc}"
            raise

    def count_tokens(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def render_chat(self, messages: list[dict[str, str]]) -> str:
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def complete(self, prompt: str, max_tokens: int, temperature: float = 0.0,
                 stop: list[str] | None = None) -> Completion:
        import torch

        enc = self.tokenizer(prompt, return_tensors="pt", add_special_tokens=False)
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "eos_token_id": self.tokenizer.eos_token_id,
                                  "pad_token_id": self.tokenizer.pad_token_id}
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature)
        else:
            kwargs.update(do_sample=False)
        with self._lock, torch.inference_mode():
            out = self.model.generate(**enc, **kwargs)
        ids = out[0, enc["input_ids"].shape[1]:].tolist()
        finish = "length"
        if self.tokenizer.eos_token_id in ids:
            ids = ids[: ids.index(self.tokenizer.eos_token_id)]
            finish = "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for marker in stop or []:
            if marker and marker in text:
                text, finish = text[: text.index(marker)], "stop"
        return Completion(text.strip(), enc["input_ids"].shape[1], len(ids), finish)


def now() -> int:
    return int(time.time())
