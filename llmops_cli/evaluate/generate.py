"""Batched greedy generation with Hugging Face models (left padding, chat template applied)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from llmops_cli.tune.data import render_prompt


@dataclass
class Generations:
    texts: list[str]
    seconds: float
    new_tokens: int
    latencies: list[float] = field(default_factory=list)  # per example; what it measures: latency_measure
    ttft: list[float] = field(default_factory=list)  # per example: time to its first generated token
    latency_measure: str = "hf in-process: batch start to the row's last generated token"


def render_prompts(tokenizer: Any, rows: list[dict[str, Any]]) -> list[str]:
    return [render_prompt(tokenizer, r) for r in rows]


def generate(
    model: Any,
    tokenizer: Any,
    prompts: list[str],
    max_new_tokens: int,
    batch_size: int,
    on_batch: Callable[[int], None] | None = None,
) -> Generations:
    """Greedy completions for already-rendered prompts; stops at the tokenizer's EOS. A row's latency is
    the time from its batch's start to the step that produced its last token (its EOS, or the last step
    when max_new_tokens cut it): what that request would have waited, not the whole batch's wall time."""
    import torch
    from transformers import StoppingCriteriaList

    tokenizer.padding_side = "left"  # decoder-only models continue from the right edge
    texts: list[str] = []
    new_tokens = 0
    started = time.perf_counter()
    latencies: list[float] = []
    ttft: list[float] = []
    for i in range(0, len(prompts), batch_size):
        batch = prompts[i : i + batch_size]
        batch_started = time.perf_counter()
        enc = tokenizer(batch, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
        steps = _StepClock()
        with torch.inference_mode():
            out = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=False,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                stopping_criteria=StoppingCriteriaList([steps]),
            )
        batch_done = time.perf_counter()
        gen = out[:, enc["input_ids"].shape[1] :]
        for row in gen:
            ids = row.tolist()
            end = ids.index(tokenizer.eos_token_id) if tokenizer.eos_token_id in ids else len(ids)
            # Step k produced token k: a row ends at its EOS (step end + 1), else at the batch's last step.
            latencies.append(steps.at(min(end + 1, len(ids)), batch_done) - batch_started)
            ttft.append(steps.at(1, batch_done) - batch_started)  # the first step gives every row its first token
            ids = [t for t in ids[:end] if t != tokenizer.pad_token_id]
            new_tokens += len(ids)
            texts.append(tokenizer.decode(ids, skip_special_tokens=True).strip())
        if on_batch:
            on_batch(len(batch))
    return Generations(texts, time.perf_counter() - started, new_tokens, latencies, ttft)


class _StepClock:
    """A stopping criterion that never stops: transformers calls it once per decoding step, right after
    the step's token is appended, so it records when each step's tokens existed."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self, input_ids: Any, scores: Any, **_kwargs: Any) -> Any:
        import torch

        if input_ids.is_cuda:  # kernels run ahead of Python: wait for this step's token to really exist
            torch.cuda.synchronize(input_ids.device)
        self.times.append(time.perf_counter())
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)

    def at(self, step: int, fallback: float) -> float:
        """When step `step` (1-based) finished; `fallback` when it was not observed (no steps at all)."""
        return self.times[min(step, len(self.times)) - 1] if self.times and step > 0 else fallback


def reference_perplexity(model: Any, tokenizer: Any, prompts: list[str], references: list[str]) -> float:
    """exp(mean NLL) of the reference answers (and their EOS) given the rendered prompts."""
    import math

    import torch

    total, count = 0.0, 0
    with torch.inference_mode():
        for prompt, reference in zip(prompts, references, strict=True):
            p_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
            r_ids = tokenizer(reference + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
            ids = torch.tensor([p_ids + r_ids], device=model.device)
            labels = ids.clone()
            labels[0, : len(p_ids)] = -100
            loss = model(input_ids=ids, labels=labels).loss
            total += float(loss) * len(r_ids)
            count += len(r_ids)
    return math.exp(min(total / max(count, 1), 50))
