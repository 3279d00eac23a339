"""Offline vLLM generation, run as a script by the vLLM interpreter (`eval.backend: vllm`, `--parity`).

vLLM lives in its own virtualenv (it pins torch and transformers), so this file imports nothing
from llmops: only the standard library and vllm. llmops writes a job (JSON), runs
`VLLM_PYTHON vllm_offline.py JOB OUT`, and reads the answers back. One engine serves every run of a
job: the base model and each LoRA adapter over the same weights.

Job: {"model", "engine": {LLM keyword arguments}, "runs": [{"name", "lora": path|null}],
      "prompt_token_ids": [[...], ...], "max_new_tokens"}
Out: {"vllm_version", "runs": {name: {"texts", "new_tokens", "seconds", "latencies"}}}
"""

import json
import sys
import time


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
        runs[run["name"]] = {
            "texts": [o.outputs[0].text.strip() for o in outputs],
            "new_tokens": sum(len(o.outputs[0].token_ids) for o in outputs),
            "seconds": seconds,
            # One batch: each request's latency is the batch's (vLLM schedules them together).
            "latencies": [seconds] * len(outputs),
        }
    with open(out_path, "w", encoding="utf-8") as fh:
        json.dump({"vllm_version": getattr(vllm, "__version__", None), "runs": runs}, fh)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
