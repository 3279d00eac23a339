"""Offline vLLM generation, run as a script by the vLLM interpreter (`eval.backend: vllm`, `--parity`).

vLLM lives in its own virtualenv (it pins torch and transformers), so this file imports nothing
from llmops: only the standard library and vllm. llmops writes a job (JSON), runs
`VLLM_PYTHON vllm_offline.py JOB OUT`, and reads the answers back. One engine serves every run of a
job: the base model and each LoRA adapter over the same weights.

Job: {"model", "engine": {LLM keyword arguments}, "runs": [{"name", "lora": path|null}],
      "prompt_token_ids": [[...], ...], "max_new_tokens"}
Out: {"vllm_version", "runs": {name: {"texts", "new_tokens", "seconds", "latencies", "ttft", "latency_measure"}}}

Latency is per request, from vLLM's own per-request timestamps (RequestOutput.metrics, filled when the
engine runs with log stats on): queued to last token. Where a vLLM build gives none, latencies are
absent (null) rather than the batch's wall time copied to every request.
"""

import json
import sys
import time
from typing import Any


def request_timings(output: Any) -> tuple[float, float] | None:
    """(latency, time to first token) in seconds of one RequestOutput, from its metrics: V1's
    RequestStateStats (engine-core monotonic timestamps: queued_ts, first_token_ts, last_token_ts) or
    the older RequestMetrics (wall clock: arrival_time, first_token_time, finished_time/last_token_time).
    None when the request carries no usable timestamps."""
    metrics = getattr(output, "metrics", None)
    if metrics is None:
        return None
    queued, first, last = (getattr(metrics, k, None) for k in ("queued_ts", "first_token_ts", "last_token_ts"))
    if not (queued and first and last):
        queued, first = getattr(metrics, "arrival_time", None), getattr(metrics, "first_token_time", None)
        last = getattr(metrics, "finished_time", None) or getattr(metrics, "last_token_time", None)
    if not (queued and first and last) or last < queued:
        return None
    return last - queued, first - queued


def main(job_path: str, out_path: str) -> None:
    with open(job_path, encoding="utf-8") as fh:
        job = json.load(fh)
    import vllm
    from vllm import LLM, SamplingParams
    from vllm.lora.request import LoRARequest

    llm = LLM(model=job["model"], **job["engine"])
    # Greedy, as the transformers path: token ids in (the prompts were rendered and tokenized by
    # llmops exactly as for transformers), text out, stopping at the model's EOS.
    params = SamplingParams(temperature=0, max_tokens=job["max_new_tokens"])
    prompts = [{"prompt_token_ids": ids} for ids in job["prompt_token_ids"]]
    runs = {}
    for i, run in enumerate(job["runs"], start=1):
        lora = LoRARequest(run["name"], i, run["lora"]) if run.get("lora") else None
        started = time.perf_counter()
        outputs = llm.generate(prompts, params, lora_request=lora, use_tqdm=False)
        seconds = time.perf_counter() - started
        timings = [request_timings(o) for o in outputs]
        complete = all(t is not None for t in timings)  # all or none: a partial list would skew p50/p95
        runs[run["name"]] = {
            "texts": [o.outputs[0].text.strip() for o in outputs],
            "new_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
            "seconds": seconds,
            "latencies": [t[0] for t in timings] if complete else None,
            "ttft": [t[1] for t in timings] if complete else None,
            "latency_measure": "vllm offline: engine queue to the request's last token (RequestOutput.metrics)"
            if complete else "absent: this vLLM build returned no per-request timestamps (RequestOutput.metrics)",
        }
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump({"vllm_version": getattr(vllm, "__version__", None), "runs": runs}, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
