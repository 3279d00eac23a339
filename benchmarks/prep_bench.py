"""Throughput and peak memory of the WHOLE `llmops prep` command on generated data.

    .venv/bin/python benchmarks/prep_bench.py --rows 100000 300000 1000000   # the issue's sizes
    .venv/bin/python benchmarks/prep_bench.py --rows 20000 --steps           # also each step in isolation

Generates rows of ~200 tokens (about 150 words of support-ticket-like text, with PII in ~2% of rows,
~3% exact and ~3% near duplicates) and runs `llmops prep -c <project.yaml>` in a subprocess, as a user
would: the project's defaults (tokenize on with models/base's tokenizer and chat template, near-dup on).
Per run: wall time, rows/s, CPU seconds and peak RSS of the command (os.wait4's rusage of that child).
The baseline, the same command in the same run with `--set prep.tokenize.enabled=false --set
prep.near_dup.enabled=false` (read, clean, PII, exact dedup, split, write), makes the figures ratios;
absolute numbers depend on the machine and on its load.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import shutil
import subprocess
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


def run_command(project: Path, overrides: list[str], rows: int) -> dict[str, float]:
    """`llmops prep -c project` in a subprocess: wall s, rows/s, CPU s and peak RSS (MiB) of that child."""
    command = [str(ROOT / ".venv" / "bin" / "llmops"), "prep", "-c", str(project)]
    for item in overrides:
        command += ["--set", item]
    start = time.perf_counter()
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({proc.returncode}): {proc.stderr.read().decode()[-2000:]}")
    return {"wall_s": round(wall, 1), "rows_per_s": round(rows / wall),
            "cpu_s": round(usage.ru_utime + usage.ru_stime, 1), "peak_rss_mib": round(usage.ru_maxrss / 1024)}


def whole_command(sizes: list[int], words: int, work: Path, tokenizer: str) -> list[dict[str, object]]:
    """Each size: generate the corpus, then the baseline and the default command, one after the other."""
    out = []
    for rows in sizes:
        data = work / f"rows{rows}.jsonl"
        if not data.is_file():
            generate(data, rows, words)
        project = work / f"project{rows}.yaml"
        project.write_text(json.dumps({  # JSON is YAML
            "project": {"name": "prep-bench"}, "model": {"base": tokenizer},
            "prep": {"sources": [{"path": str(data)}], "max_chars": 100_000, "output_dir": str(work / f"out{rows}"),
                     "report": str(work / f"prep{rows}.json"), "metrics_file": str(work / f"metrics{rows}.json")},
        }), encoding="utf-8")
        base = run_command(project, ["prep.tokenize.enabled=false", "prep.near_dup.enabled=false"], rows)
        full = run_command(project, [], rows)
        report = json.loads((work / f"prep{rows}.json").read_text())
        out.append({"rows": rows, "file_mb": round(data.stat().st_size / 2**20), "baseline": base, "default": full,
                    "x_baseline": round(full["rows_per_s"] / base["rows_per_s"], 2),
                    "splits": report["splits"], "quarantined": report["quarantined"], "dedup": report["dedup"]["near"],
                    "tokens_p50": (report.get("tokens") or {}).get("p50")})
        shutil.rmtree(work / f"out{rows}", ignore_errors=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[100_000, 300_000, 1_000_000])
    parser.add_argument("--steps", action="store_true", help="also time each step in isolation (first size)")
    parser.add_argument("--base", default=str(ROOT / "models" / "base"), help="model.base (tokenizer + template)")
    parser.add_argument("--words", type=int, default=150, help="words per prompt (~200 tokens)")
    parser.add_argument("--tokenizer", default=None, help="also time chat-template rendering with this tokenizer")
    parser.add_argument("--token-rows", type=int, default=20000, help="rows used for the rendering step")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    args = parser.parse_args()
    work = Path(args.workdir or tempfile.mkdtemp(prefix="prep-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    results = whole_command(args.rows, args.words, work, args.base)
    info = {"cpus": os.cpu_count(), "load_avg": [round(x, 1) for x in os.getloadavg()],
            "python": platform.python_version(), "runs": results}
    if args.json and not args.steps:
        print(json.dumps(info, indent=2))  # noqa: T201
        return
    print(f"cpus={info['cpus']} load average at the end={info['load_avg']}")  # noqa: T201
    for r in results:
        b, d = r["baseline"], r["default"]
        print(f"{r['rows']:>9,} rows ({r['file_mb']} MB): default {d['rows_per_s']:>7,} rows/s "  # noqa: T201
              f"({d['wall_s']} s wall, {d['cpu_s']} s CPU, peak {d['peak_rss_mib']} MiB) | baseline "
              f"{b['rows_per_s']:>7,} rows/s ({b['wall_s']} s, {b['cpu_s']} s CPU, {b['peak_rss_mib']} MiB) | "
              f"x{r['x_baseline']} | kept {sum(r['splits'].values()):,}, near-dups {r['dedup']}, "
              f"p50 {r['tokens_p50']} tokens")
    if args.steps:
        steps(args.rows[0], args.words, work, args.tokenizer, args.token_rows, args.json)


def steps(rows: int, words: int, work: Path, tokenizer: str | None, token_rows: int, as_json: bool) -> None:
    """Each step in isolation on the same rows (where the time goes inside the command)."""
    from llmops_cli.prep.clean import dedup_key, find_pii, normalize_text, redact_pii
    from llmops_cli.prep.config import PrepSection
    from llmops_cli.prep.neardup import NearDupIndex
    from llmops_cli.prep.pipeline import run_prep

    data = work / f"rows{rows}.jsonl"
    gen_s, size = 0.0, data.stat().st_size
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

    record("baseline: json parse + dump", *timed(io_floor)[:1], rows)

    rows = [json.loads(line) for line in data.open(encoding="utf-8")]
    texts = [r["prompt"] for r in rows]

    record("clean (normalize_text)", timed(lambda: [normalize_text(t) for t in texts])[0], rows)
    record("pii detect (find_pii, 9 types)", timed(lambda: [find_pii(t) for t in texts])[0], rows)

    def pii_redact() -> None:
        for t in texts:
            found = find_pii(t)
            if found:
                redact_pii(t, list(found))

    record("pii detect + redact", timed(pii_redact)[0], rows)

    def exact() -> int:
        seen: set[bytes] = set()
        dups = 0
        for r in rows:
            d = hashlib.blake2b((dedup_key(r["prompt"]) + "\0" + dedup_key(r["completion"])).encode(),
                                digest_size=16).digest()
            dups += d in seen
            seen.add(d)
        return dups

    record("exact dedup (key + hash)", timed(exact)[0], rows)

    def clean_pii_exact() -> None:
        seen: set[bytes] = set()
        for r in rows:
            p, c = normalize_text(r["prompt"]), normalize_text(r["completion"])
            found = find_pii(p + "\n" + c)
            if found:
                p, c = redact_pii(p, list(found)), redact_pii(c, list(found))
            d = hashlib.blake2b((dedup_key(p) + "\0" + dedup_key(c)).encode(), digest_size=16).digest()
            seen.add(d)

    record("clean + PII + exact dedup (in memory)", timed(clean_pii_exact)[0], rows)

    index = NearDupIndex(threshold=0.8, num_perm=64, ngram=3)
    keys = [dedup_key(t) for t in texts]
    sig_s = timed(lambda: [index.add(k) for k in keys])[0]
    record("near-dup: MinHash signatures", sig_s, rows)
    splits = ["test" if i % 10 == 0 else "validation" if i % 10 == 1 else "train" for i in range(rows)]
    lsh_s, removed = timed(index.resolve, splits)
    record("near-dup: LSH across splits", lsh_s, rows)
    record("near-dup total (signatures + LSH)", sig_s + lsh_s, rows)

    if tokenizer:
        from llmops_cli.prep.render import load_renderer

        renderer = load_renderer(tokenizer, None, None)
        with data.open(encoding="utf-8") as fh:
            sample = [json.loads(next(fh)) for _ in range(min(token_rows, rows))]
        msgs = [[{"role": "user", "content": r["prompt"]}, {"role": "assistant", "content": r["completion"]}]
                for r in sample]
        record("render chat template + tokenize + mask", timed(lambda: [renderer.render_chat(m) for m in msgs])[0],
               len(msgs))

    def pipeline(near: bool) -> None:
        cfg = PrepSection(sources=[{"path": str(data)}], output_dir=str(work / "out"), report=str(work / "prep.json"),
                          max_chars=100_000, near_dup={"enabled": near}, tokenize={"enabled": False})
        run_prep(cfg)

    record("run_prep end to end, no near-dup (read, clean, PII, exact, split, write jsonl+parquet)",
           timed(pipeline, False)[0], rows)
    record("run_prep end to end, with near-dup", timed(pipeline, True)[0], rows)
    report = json.loads((work / "prep.json").read_text())

    base = results["baseline: json parse + dump"]["rows_per_s"]
    summary = {
        "rows": rows, "words_per_row": words, "file_mb": round(size / 2**20, 1),
        "generate_s": round(gen_s, 1), "cpu": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(), "python": platform.python_version(),
        "near_dups_removed_in_isolation": len(removed),
        "pipeline_report": {k: report[k] for k in ("splits", "quarantined", "reasons", "pii", "dedup")},
        "steps": {k: {**v, "x_baseline": round(v["rows_per_s"] / base, 3) if base else None}
                  for k, v in results.items()},
    }
    if as_json:
        print(json.dumps(summary, indent=2))  # noqa: T201
        return
    print(f"rows={rows} (~{words} words each, {summary['file_mb']} MB), cpus={os.cpu_count()}")  # noqa: T201
    width = max(map(len, results))
    for step, v in summary["steps"].items():
        print(f"{step.ljust(width)}  {v['rows_per_s']:>10,.0f} rows/s  {v['seconds']:>8.2f} s  "  # noqa: T201
              f"x{v['x_baseline']} of baseline")
    print("pipeline:", json.dumps(summary["pipeline_report"]))  # noqa: T201


if __name__ == "__main__":
    main()
