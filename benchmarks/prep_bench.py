"""Throughput of `llmops prep`, step by step, on generated data.

    .venv/bin/python benchmarks/prep_bench.py --rows 1000000           # the issue's target size
    .venv/bin/python benchmarks/prep_bench.py --rows 100000 --tokenizer models/base

Generates rows of ~200 tokens (about 150 words of support-ticket-like text, with PII in ~2% of
rows, ~3% exact and ~3% near duplicates), then reports rows/s for each step measured in isolation
on the same rows, and for the whole pipeline (`run_prep`) with and without near-dup. The baseline,
measured in the same run, is the I/O floor: json.loads + json.dumps of every row. Ratios are
reported against it; absolute numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

WORDS = ("order parcel refund invoice account password delivery tracking charged twice subscription cancel "
         "laptop phone shoes jacket kettle headphones battery screen update firmware login email address "
         "payment card bank transfer support ticket agent reply week month today yesterday please help thanks "
         "broken damaged missing late early price discount coupon code warranty repair replace return label "
         "box courier driver warehouse store online app website error message crash slow fast the a my your "
         "and or but with without for from to of in on at by is was not have has had been can could would").split()
PII = ["contact me at jane.doe{n}@example.com", "call +1 415-555-{n:04d}", "card 4111 1111 1111 1111",
       "from 10.0.{a}.{b}", "iban GB82 WEST 1234 5698 7654 32"]


def generate(path: Path, rows: int, words: int, seed: int = 0) -> int:
    """Write `rows` jsonl rows; returns the file size in bytes."""
    rng = random.Random(seed)
    previous: list[tuple[str, str]] = []
    with path.open("w", encoding="utf-8") as fh:
        for i in range(rows):
            roll = rng.random()
            answer = rng.choice(WORDS)
            if previous and roll < 0.03:
                text, answer = rng.choice(previous)  # exact duplicate
            elif previous and roll < 0.06:
                base = rng.choice(previous)[0].split()
                base[rng.randrange(len(base))] = rng.choice(WORDS)  # near duplicate: one word changed
                text = " ".join(base)
            else:
                text = " ".join(rng.choice(WORDS) for _ in range(words))
                if rng.random() < 0.02:
                    text += " " + rng.choice(PII).format(n=rng.randrange(10000), a=rng.randrange(256),
                                                         b=rng.randrange(256))
            if len(previous) < 5000:
                previous.append((text, answer))
            elif rng.random() < 0.01:
                previous[rng.randrange(5000)] = (text, answer)
            fh.write(json.dumps({"id": f"B{i:07d}", "prompt": text, "completion": answer}) + "\n")
    return path.stat().st_size


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--words", type=int, default=150, help="words per prompt (~200 tokens)")
    parser.add_argument("--tokenizer", default=None, help="also time chat-template rendering with this tokenizer")
    parser.add_argument("--token-rows", type=int, default=20000, help="rows used for the rendering step")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()

    from llmops_cli.prep.clean import dedup_key, find_pii, normalize_text, redact_pii
    from llmops_cli.prep.config import PrepSection
    from llmops_cli.prep.neardup import NearDupIndex
    from llmops_cli.prep.pipeline import run_prep

    work = Path(args.workdir or tempfile.mkdtemp(prefix="prep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    data = work / "rows.jsonl"
    gen_s, size = timed(generate, data, args.rows, args.words)
    results: dict[str, dict[str, float]] = {}

    def record(step: str, seconds: float, n: int) -> None:
        results[step] = {"seconds": round(seconds, 2), "rows_per_s": round(n / seconds) if seconds else 0.0}

    # Baseline: the I/O floor (parse every row and serialise it again).
    def io_floor() -> int:
        n = 0
        with data.open(encoding="utf-8") as fh:
            for line in fh:
                json.dumps(json.loads(line))
                n += 1
        return n

    record("baseline: json parse + dump", *timed(io_floor)[:1], args.rows)

    rows = [json.loads(line) for line in data.open(encoding="utf-8")]
    texts = [r["prompt"] for r in rows]

    record("clean (normalize_text)", timed(lambda: [normalize_text(t) for t in texts])[0], args.rows)
    record("pii detect (find_pii, 9 types)", timed(lambda: [find_pii(t) for t in texts])[0], args.rows)

    def pii_redact() -> None:
        for t in texts:
            found = find_pii(t)
            if found:
                redact_pii(t, list(found))

    record("pii detect + redact", timed(pii_redact)[0], args.rows)

    def exact() -> int:
        seen: set[bytes] = set()
        dups = 0
        for r in rows:
            d = hashlib.blake2b((dedup_key(r["prompt"]) + "\0" + dedup_key(r["completion"])).encode(),
                                digest_size=16).digest()
            dups += d in seen
            seen.add(d)
        return dups

    record("exact dedup (key + hash)", timed(exact)[0], args.rows)

    def clean_pii_exact() -> None:
        seen: set[bytes] = set()
        for r in rows:
            p, c = normalize_text(r["prompt"]), normalize_text(r["completion"])
            found = find_pii(p + "\n" + c)
            if found:
                p, c = redact_pii(p, list(found)), redact_pii(c, list(found))
            d = hashlib.blake2b((dedup_key(p) + "\0" + dedup_key(c)).encode(), digest_size=16).digest()
            seen.add(d)

    record("clean + PII + exact dedup (in memory)", timed(clean_pii_exact)[0], args.rows)

    index = NearDupIndex(threshold=0.8, num_perm=64, ngram=3)
    keys = [dedup_key(t) for t in texts]
    sig_s = timed(lambda: [index.add(k) for k in keys])[0]
    record("near-dup: MinHash signatures", sig_s, args.rows)
    splits = ["test" if i % 10 == 0 else "validation" if i % 10 == 1 else "train" for i in range(args.rows)]
    lsh_s, removed = timed(index.resolve, splits)
    record("near-dup: LSH across splits", lsh_s, args.rows)
    record("near-dup total (signatures + LSH)", sig_s + lsh_s, args.rows)

    if args.tokenizer:
        from llmops_cli.prep.render import load_renderer

        renderer = load_renderer(args.tokenizer, None, None)
        with data.open(encoding="utf-8") as fh:
            sample = [json.loads(next(fh)) for _ in range(min(args.token_rows, args.rows))]
        msgs = [[{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]
                for r in sample]
        record("render chat template + tokenize + mask", timed(lambda: [renderer.render_chat(m) for m in msgs])[0],
               len(msgs))

    def pipeline(near: bool) -> None:
        cfg = PrepSection(sources=[{"path": str(data)}], output_dir=str(work / "out"), report=str(work / "prep.json"),
                          max_chars=100_000, near_dup={"enabled": near}, tokenize={"enabled": False})
        run_prep(cfg)

    record("run_prep end to end, no near-dup (read, clean, PII, exact, split, write jsonl+parquet)",
           timed(pipeline, False)[0], args.rows)
    record("run_prep end to end, with near-dup", timed(pipeline, True)[0], args.rows)
    report = json.loads((work / "prep.json").read_text())

    base = results["baseline: json parse + dump"]["rows_per_s"]
    summary = {
        "rows": args.rows, "words_per_row": args.words, "file_mb": round(size / 2**20, 1),
        "generate_s": round(gen_s, 1), "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "near_dups_removed_in_isolation": len(removed),
        "pipeline_report": {k: report[k] for k in ("splits", "quarantined", "reasons", "pii", "dedup")},
        "steps": {k: {**v, "x_baseline": round(v["rows_per_s"] / base, 3) if base else None}
                  for k, v in results.items()},
    }
    if args.json:
        print(json.dumps(summary, indent=2))  # noqa: T201
        return
    print(f"rows={args.rows} (~{args.words} words each, {summary['file_mb']} MB), cpus={os.cpu_count()}")  # noqa: T201
    width = max(map(len, results))
    for step, v in summary["steps"].items():
        print(f"{step.ljust(width)}  {v['rows_per_s']:>10,.0f} rows/s  {v['seconds']:>8.2f} s  "  # noqa: T201
              f"x{v['x_baseline']} of baseline")
    print("pipeline:", json.dumps(summary["pipeline_report"]))  # noqa: T201


if __name__ == "__main__":
    main()
