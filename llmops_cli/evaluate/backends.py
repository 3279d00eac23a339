"""Where predictions come from: an OpenAI-compatible endpoint, or offline vLLM (CPU or GPU build).
(In-process transformers generation lives in generate.py.)"""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
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
                           sum(len(r[0].split()) for r in ok), [r[1] for r in ok], [r[2] for r in ok],
                           latency_measure=f"endpoint: request sent to the last byte of its answer "
                                           f"({'streamed' if stream else 'not streamed'}, up to "
                                           f"{max(1, concurrency)} in flight; successful requests)")
        gens.failures = len(results) - len(ok)  # type: ignore[attr-defined]
        return gens


def _raise_for(response: Any) -> None:
    if response.status_code >= 400:
        try:
            message = response.json().get("error", {}).get("message")
        except Exception:  # noqa: BLE001 - streamed or non-JSON error bodies
            message = None
        raise RuntimeError(f"endpoint answered {response.status_code}: {message or 'no error message'}")


def vllm_generate(vllm_cfg: Any, base: Any, runs: dict[str, str | None], prompt_token_ids: list[list[int]],
                  max_new_tokens: int, log_path: str) -> dict[str, Generations]:
    """Greedy answers of each run (name -> adapter dir, full model dir, or None for the base model)
    from offline vLLM, run by the vLLM interpreter (serve.vllm.python / .venv-vllm) in a child
    process; one engine per distinct set of weights. `vllm_cfg` is serve.vllm, `base` the model section."""
    from llmops_cli.model.loading import is_adapter_dir
    from llmops_cli.serving.backends import vllm_lora_rank
    from llmops_cli.serving.lifecycle import adapter_rank
    from llmops_cli.serving.vllm_env import probe_vllm, vllm_python

    python = vllm_python(vllm_cfg.python)
    info = probe_vllm(python)
    if info is None:
        raise BackendUnavailable(f"eval.backend=vllm (or --parity) but {python} has no vllm",
                                 hint="run `make vllm` (creates .venv-vllm, used by default), set serve.vllm.python, "
                                      "or use eval.backend=hf")
    groups: dict[str, dict[str, str | None]] = {}  # weights -> {run name: LoRA dir or None}
    for name, model_dir in runs.items():
        adapter = model_dir if model_dir and is_adapter_dir(model_dir) else None
        weights = base.base if adapter or not model_dir else model_dir
        groups.setdefault(weights, {})[name] = adapter
    results: dict[str, Generations] = {}
    for weights, members in groups.items():
        ranks = [adapter_rank(Path(d)) or 16 for d in members.values() if d]
        job = {"model": weights, "max_new_tokens": max_new_tokens, "prompt_token_ids": prompt_token_ids,
               "runs": [{"name": n, "lora": d} for n, d in members.items()],
               "engine": _engine_kwargs(vllm_cfg, base, weights, info.device,
                                        vllm_lora_rank(max(ranks), vllm_cfg.max_lora_rank) if ranks else None)}
        out = _run_offline(python, job, info.device, vllm_cfg, log_path)
        results.update({name: offline_generations(run) for name, run in out["runs"].items()})
    return results


def offline_generations(run: dict[str, Any]) -> Generations:
    """One run of vllm_offline.py's output; per-request latencies stay absent (empty, so latency_p50_ms
    is null) when vLLM gave none, rather than being filled with the batch's time."""
    return Generations(run["texts"], run["seconds"], run["new_tokens"], run.get("latencies") or [],
                       run.get("ttft") or [], latency_measure=run.get("latency_measure")
                       or "absent: no per-request timings from vLLM")


def _engine_kwargs(vllm_cfg: Any, base: Any, weights: str, device: str, lora_rank: int | None) -> dict[str, Any]:
    """LLM(...) keyword arguments: the server's engine settings (vllm_env.engine_options) and the offline extras."""
    from llmops_cli.serving.vllm_env import engine_options, resolve_dtype

    kwargs = engine_options(vllm_cfg.model_dump(), device, resolve_dtype(vllm_cfg.dtype, base.dtype, weights))
    # disable_log_stats=False: vLLM attaches per-request timestamps (RequestOutput.metrics) only with stats on.
    kwargs.update(seed=0, trust_remote_code=base.trust_remote_code,
                  enable_prefix_caching=vllm_cfg.enable_prefix_caching, disable_log_stats=False)
    if base.revision and weights == base.base:
        kwargs["revision"] = base.revision
    if lora_rank:
        kwargs.update(enable_lora=True, max_lora_rank=lora_rank, max_loras=vllm_cfg.max_loras)
    return kwargs


def _run_offline(python: str, job: dict[str, Any], device: str, vllm_cfg: Any, log_path: str) -> dict[str, Any]:
    import subprocess
    import tempfile

    from llmops_cli.serving.vllm_env import engine_env, root_cause

    script = Path(__file__).with_name("vllm_offline.py")
    Path(log_path).parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="llmops-vllm-eval-") as tmp:
        job_path, out_path = Path(tmp) / "job.json", Path(tmp) / "out.json"
        job_path.write_text(json.dumps(job), encoding="utf-8")
        with open(log_path, "ab") as log:
            done = subprocess.run([python, str(script), str(job_path), str(out_path)], stdout=log,
                                  stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  env=engine_env(vllm_cfg.model_dump(), device))
        if done.returncode != 0 or not out_path.is_file():
            text = Path(log_path).read_text(encoding="utf-8", errors="replace")[-200_000:]
            cause = root_cause(text) or f"exit code {done.returncode}"
            raise BackendUnavailable(f"offline vLLM generation failed: {cause}", hint=f"full log: {log_path}")
        return json.loads(out_path.read_text(encoding="utf-8"))
