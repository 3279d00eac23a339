"""Batched greedy generation with Hugging Face models (left padding, chat template applied)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from llmops_cli.tune.data import prompt_messages


@dataclass
class Generations:
    texts: list[str]
    seconds: float
    new_tokens: int


def render_prompts(tokenizer: Any, rows: list[dict[str, Any]]) -> list[str]:
    return [
        tokenizer.apply_chat_template(prompt_messages(r), tokenize=False, add_generation_prompt=True) for r in rows
    ]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> Generations:
    """Greedy completions for already-rendered prompts; stops at the tokenizer's EOS."""
    import torch

    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    texts: list[str] = []
    new_tokens = 0
    started = time.perf_counter()
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i : i + batch_size]
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        gen = out[:, enc["input_ids"].shape[1] :]
        for row in gen:
            ids = row.tolist()
            if tokenizer.eos_token_id in ids:
                ids = ids[: ids.index(tokenizer.eos_token_id)]
            ids = [t for t in ids if t != tokenizer.pad_token_id]
            new_tokens += len(ids)
            texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        if on_batch:
            on_batch(len(batch))
    return Generations(texts, time.perf_counter() - started, new_tokens)
