"""Time `monitor` summarising a large request log against a plain json.loads loop, in the same run.

    .venv/bin/python benchmarks/monitor_bench.py                       # 1M lines, the issue's target
    .venv/bin/python benchmarks/monitor_bench.py --lines 200000 --content

Generates a log in the serve contract's format (3 model versions, 1% errors, 0.1% corrupt lines, spread
over 3 rotated files); with --content each line also carries a prompt and a response, so quality flags
and drift (against a generated train split) are computed too. Prints seconds and lines/s for the
baseline (json.loads of every line, nothing else) and for `summarize`, and their ratio.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

PROMPTS = ["I was charged twice for my {p}", "my package with the {p} has not arrived", "I forgot my password again",
           "the delivery of my {p} is late", "please change the email on my account", "how do I return the {p}"]
PRODUCTS = ["shoes", "laptop", "headphones", "jacket", "phone case", "kettle", "desk lamp"]
RESPONSES = ["billing", "shipping", "account", "returns", "I'm sorry, I cannot help with that", "technical"]


def generate(root: Path, lines: int, content: bool, seed: int = 0) -> Path:
    rng = random.Random(seed)
    log = root / "requests.jsonl"
    files = [root / "requests.jsonl.2", root / "requests.jsonl.1", log]
    per_file = lines // len(files) + 1
    t0 = 1_700_000_000.0
    i = 0
    for path in files:
        with path.open("w", encoding="utf-8") as fh:
            for _ in range(per_file):
                if i >= lines:
                    break
                if i % 1000 == 999:
                    fh.write('{"ts": 1700000000.0, "request_id": "req-trunc\n')  # a crash mid-write
                    i += 1
                    continue
                status = 500 if rng.random() < 0.01 else 200
                rec = {"ts": t0 + i * 0.05, "request_id": f"req-{i}", "response_id": f"chatcmpl-req-{i}",
                       "method": "POST", "path": "/v1/chat/completions", "status": status,
                       "latency_ms": rng.lognormvariate(4, 0.5), "ttft_ms": rng.uniform(5, 50) if i % 2 else None,
                       "model": f"support-assistant:{1 + i % 3}", "backend": "vllm",
                       "prompt_tokens": rng.randint(8, 80),
                       "completion_tokens": rng.randint(0, 16), "finish_reason": rng.choice(["stop", "stop", "length"]),
                       "error": None if status == 200 else "backend error"}
                if content:
                    rec["prompt"] = rng.choice(PROMPTS).format(p=rng.choice(PRODUCTS))
                    # Half the answers are unique text, so no cache of verdicts can skip the checks.
                    rec["response"] = rng.choice(RESPONSES) + (f" (ticket {i})" if i % 2 else "")
                fh.write(json.dumps(rec) + "\n")
                i += 1
    with (root / "train.jsonl").open("w", encoding="utf-8") as fh:
        for j in range(3000):
            fh.write(json.dumps({"id": j, "prompt": rng.choice(PROMPTS).format(p=rng.choice(PRODUCTS)),
                                 "completion": "billing"}) + "\n")
    return log


def baseline(log: Path) -> int:
    """Only what any reader must do: read every line of every rotation and json.loads it."""
    n = 0
    for path in (log.with_name(log.name + ".2"), log.with_name(log.name + ".1"), log):
        with path.open("rb") as fh:
            for line in fh:
                try:
                    json.loads(line)
                except ValueError:
                    pass
                n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--content", action="store_true", help="log prompts and responses (flags and drift)")
    args = parser.parse_args()
    from llmops_cli.monitor.config import MonitorSection
    from llmops_cli.monitor.summary import summarize

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        log = generate(root, args.lines, args.content)
        size_mb = sum(p.stat().st_size for p in root.glob("requests.jsonl*")) / 1e6
        print(f"generated {args.lines} lines ({size_mb:.0f} MB) in {time.perf_counter() - started:.1f}s")  # noqa: T201

        started = time.perf_counter()
        baseline(log)
        base_s = time.perf_counter() - started

        cfg = MonitorSection(request_log=str(log), feedback_log=str(root / "feedback.jsonl"),
                             output=str(root / "monitor.json"), max_error_rate=0.05,
                             drift={"train_data": str(root / "train.jsonl"), "enabled": args.content})
        started = time.perf_counter()
        result = summarize(cfg)
        mon_s = time.perf_counter() - started

    print(f"baseline json.loads loop: {base_s:6.2f}s  {args.lines / base_s:>10,.0f} lines/s")  # noqa: T201
    print(f"llmops monitor summarize: {mon_s:6.2f}s  {args.lines / mon_s:>10,.0f} lines/s  "  # noqa: T201
          f"({mon_s / base_s:.2f}x baseline)")
    print(f"requests={result.overall['requests']} corrupt={result.corrupt_lines} "  # noqa: T201
          f"models={len(result.per_model)} windows={len(result.windows)} breaches={len(result.breaches)}")
    print(f"target < 30 s: {'PASS' if mon_s < 30 else 'FAIL'}")  # noqa: T201


if __name__ == "__main__":
    main()
