"""Where predictions come from: an OpenAI-compatible endpoint, or vLLM offline on a GPU.
(In-process transformers generation lives in generate.py.)"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from llmops_cli.errors import BackendUnavailable
from llmops_cli.evaluate.generate import Generations


class EndpointClient:
    """Chat completions against any OpenAI-compatible server (ours, vLLM, a hosted API, a judge)."""

    def __init__(self, url: str, model: str, api_key_env: str | None = None, timeout_s: float = 120) -> None:
        self.url = url.rstrip("/")
        if not self.url.endswith("/v1"):
            self.url += "/v1"
        self.model = model
        key = os.environ.get(api_key_env or "", "")
        self.headers = {"Authorization": f"Bearer {key}"} if key else {}  # the key never leaves memory
        self.timeout_s = timeout_s

    def chat(self, messages: list[dict[str, str]], max_tokens: int, stream: bool = False) -> tuple[str, float, float]:
        """(text, latency s, time to first token s). Raises httpx errors to the caller."""
        import httpx

        body = {"model": self.model, "messages": messages, "max_tokens": max_tokens, "temperature": 0,
                "stream": stream}
        started = time.perf_counter()
        if not stream:
            response = httpx.post(f"{self.url}/chat/completions", json=body, headers=self.headers,
                                  timeout=self.timeout_s)
            _raise_for(response)
            elapsed = time.perf_counter() - started
            return response.json()["choices"][0]["message"]["content"] or "", elapsed, elapsed
        parts: list[str] = []
        first: float | None = None
        with httpx.stream("POST", f"{self.url}/chat/completions", json=body, headers=self.headers,
                          timeout=self.timeout_s) as response:
            _raise_for(response)
            for line in response.iter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    break
                choices = json.loads(data).get("choices") or [{}]  # the final usage chunk has no choices
                delta = (choices[0].get("delta") or {}).get("content") or ""
                if delta and first is None:
                    first = time.perf_counter() - started
                parts.append(delta)
        elapsed = time.perf_counter() - started
        return "".join(parts), elapsed, first if first is not None else elapsed

    def generate(self, conversations: list[list[dict[str, str]]], max_tokens: int, concurrency: int,
                 stream: bool = True, on_done: Any = None) -> Generations:
        """All conversations, `concurrency` at a time; failures become empty answers and are counted."""
        results: list[tuple[str, float, float] | None] = [None] * len(conversations)
        started = time.perf_counter()

        def one(i: int) -> None:
            try:
                results[i] = self.chat(conversations[i], max_tokens, stream=stream)
            except Exception:  # noqa: BLE001 - one failed request must not end the evaluation
                results[i] = None
            if on_done:
                on_done(1)

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as pool:
            list(pool.map(one, range(len(conversations))))
        ok = [r for r in results if r is not None]
        gens = Generations([r[0].strip() if r else "" for r in results], time.perf_counter() - started,
                           sum(len(r[0].split()) for r in ok), [r[1] for r in ok], [r[2] for r in ok])
        gens.failures = len(results) - len(ok)  # type: ignore[attr-defined]
        return gens


def _raise_for(response: Any) -> None:
    if response.status_code >= 400:
        try:
            message = response.json().get("error", {}).get("message")
        except Exception:  # noqa: BLE001 - streamed or non-JSON error bodies
            message = None
        raise RuntimeError(f"endpoint answered {response.status_code}: {message or 'no error message'}")


def vllm_generate(base: str, adapter: str | None, prompts: list[str], max_new_tokens: int) -> Generations:
    """Offline vLLM generation (GPU only) with the adapter as a LoRA request."""
    import importlib.util

    if importlib.util.find_spec("vllm") is None:
        raise BackendUnavailable("eval.backend=vllm but vllm is not installed",
                                 hint="pip install 'llmops-cli[gpu]' on a CUDA machine, or use eval.backend=hf")
    import torch

    if not torch.cuda.is_available():
        raise BackendUnavailable("eval.backend=vllm needs a CUDA GPU", hint="use eval.backend=hf on this machine")
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    llm = LLM(model=base, enable_lora=adapter is not None)
    params = SamplingParams(temperature=0, max_tokens=max_new_tokens)
    started = time.perf_counter()
    outputs = llm.generate(prompts, params, lora_request=LoRARequest("tuned", 1, adapter) if adapter else None)
    seconds = time.perf_counter() - started
    texts = [o.outputs[0].text.strip() for o in outputs]
    return Generations(texts, seconds, sum(len(o.outputs[0].token_ids) for o in outputs), [seconds] * len(texts))
