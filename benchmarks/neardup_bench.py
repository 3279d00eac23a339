"""Near-dup step of `llmops prep`: leakage, speed and memory, on generated rows with planted near-duplicates.

    .venv/bin/python benchmarks/neardup_bench.py --rows 300000
    .venv/bin/python benchmarks/neardup_bench.py --rows 1000000 --no-check      # memory at 1M
    git show <commit>:llmops_cli/prep/neardup.py > /tmp/old_neardup.py
    .venv/bin/python benchmarks/neardup_bench.py --rows 300000 --impl /tmp/old_neardup.py --num-perm 64

Rows are ~150 words (~200 tokens) drawn from a 5,000-word vocabulary, already in dedup-key form. About
3% are variants of an earlier row (a few words replaced) whose exact Jaccard similarity to it is in
[threshold, 0.95] (they must not survive next to it), about 1% variants in [threshold - 0.15, threshold)
(they must stay). Splits are random (80/10/10), so most planted pairs straddle two splits.

The near-dup step (NearDupIndex.add for every row, then resolve) runs in a child process that streams
the keys from a file, so its peak RSS is the index's: bytes/row = (peak RSS - RSS before the index) / rows.

Leakage is checked independently of MinHash and LSH: every pair of rows sharing at least one shingle
(found by sorting all shingle hashes) gets its intersection counted, pairs at Jaccard >= threshold are
confirmed on the shingle sets, and the pairs whose two rows both survive are counted, across splits
(leakage) and within a split. Removals whose pair is below the threshold are counted too.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import random
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SPLITS = {"t": "train", "v": "validation", "e": "test"}
SYLLABLES = ("ka ro mi tu sen dal vor pi lu gra ten mo sha rik el fa bin cor dus ne ja ost pel wim tar qui "
             "zo hab lin mer ud gos fen ix pra dor sul ve nak bro tis em gal yor hu fir cas lem tod ank").split()


def _vocab() -> list[str]:
    words = sorted({a + b for a in SYLLABLES for b in SYLLABLES} | {a + b + "s" for a in SYLLABLES[:20]
                                                                    for b in SYLLABLES[:20]})
    return words[:5000]


def _shingle_set(text: str, n: int = 3) -> set[bytes]:
    from llmops_cli.prep.neardup import shingles

    return set(shingles(text, n))


def generate(path: Path, splits_path: Path, rows: int, words: int, threshold: float, seed: int) -> dict[str, int]:
    """Write one dedup key per line and one split letter per row; returns what was planted."""
    rng = random.Random(seed)
    vocab = _vocab()
    pool: list[list[str]] = []
    planted = {"above": 0, "below": 0}
    with path.open("w", encoding="utf-8") as fh:
        for _ in range(rows):
            row = None
            if pool and rng.random() < 0.045:
                base = rng.choice(pool)
                base_set = _shingle_set(" ".join(base))
                for _attempt in range(20):
                    variant = list(base)
                    for _ in range(rng.randint(1, 8)):
                        variant[rng.randrange(len(variant))] = rng.choice(vocab)
                    sim = len(base_set & (s := _shingle_set(" ".join(variant)))) / len(base_set | s)
                    kind = "above" if threshold <= sim <= 0.95 else "below" if sim >= threshold - 0.15 else None
                    if kind == "above" or (kind == "below" and planted["below"] * 3 < planted["above"]):
                        planted[kind] += 1
                        row = variant
                        break
            if row is None:
                row = [rng.choice(vocab) for _ in range(words + rng.randint(-20, 20))]
            if len(pool) < 20000:
                pool.append(row)
            else:
                pool[rng.randrange(len(pool))] = row
            fh.write(" ".join(row) + "\n")
    splits_path.write_text("".join(rng.choices("tve", (0.8, 0.1, 0.1), k=rows)), encoding="ascii")
    return planted


def _rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def child(keys: Path, splits_path: Path, out: Path, impl: str | None, threshold: float, num_perm: int) -> None:
    """The measured near-dup step; writes the removed rows and the numbers as JSON."""
    import gc

    if impl:
        spec = importlib.util.spec_from_file_location("neardup_impl", impl)
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules["neardup_impl"] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
        index = module.NearDupIndex(threshold, num_perm, 3)
    else:
        from llmops_cli.prep.neardup import NearDupIndex

        index = NearDupIndex(threshold, num_perm, 3, spool_dir=out.parent)
    split_of = [SPLITS[c] for c in splits_path.read_text(encoding="ascii")]
    gc.disable()  # as run_prep does
    before = _rss_kb()
    add_s = add_cpu = 0.0
    with keys.open(encoding="utf-8") as fh:
        for line in fh:
            start, cpu = time.perf_counter(), time.process_time()
            index.add(line.rstrip("\n"))
            add_s += time.perf_counter() - start
            add_cpu += time.process_time() - cpu
    after_add = _rss_kb()
    start, cpu = time.perf_counter(), time.process_time()
    removed = index.resolve(split_of)
    resolve_s, resolve_cpu = time.perf_counter() - start, time.process_time() - cpu
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rows = len(split_of)
    out.write_text(json.dumps({
        "removed": {str(i): [j, sim] for i, (j, sim) in removed.items()},
        "add_s": round(add_s, 2), "resolve_s": round(resolve_s, 2),
        "add_rows_per_s": round(rows / add_s), "resolve_rows_per_s": round(rows / resolve_s),
        "step_rows_per_s": round(rows / (add_s + resolve_s)),
        # CPU seconds: the wall clock of a shared machine counts other people's work too
        "add_cpu_s": round(add_cpu, 2), "resolve_cpu_s": round(resolve_cpu, 2),
        "step_rows_per_cpu_s": round(rows / (add_cpu + resolve_cpu)),
        "rss_before_mb": round(before / 1024, 1), "rss_after_add_mb": round(after_add / 1024, 1),
        "peak_rss_mb": round(peak / 1024, 1),
        "bytes_per_row_rss_after_add": round((after_add - before) * 1024 / rows),
        "bytes_per_row_peak_rss": round((peak - before) * 1024 / rows),
        "index_bytes_per_row": getattr(index, "bytes_per_row", None),
        "banding": [getattr(index, "bands", None), getattr(index, "rows", None)],
    }))


def similar_pairs(keys: Path, threshold: float) -> dict[tuple[int, int], float]:
    """Every pair at exact Jaccard >= threshold: all pairs sharing a shingle, counted by sorting the hashes."""
    import numpy as np

    hashes: list[np.ndarray] = []
    sizes: list[int] = []
    texts = keys.read_text(encoding="utf-8").splitlines()
    for text in texts:
        s = _shingle_set(text)
        sizes.append(len(s))
        hashes.append(np.fromiter(map(hash, s), dtype=np.int64, count=len(s)))
    row = np.repeat(np.arange(len(texts), dtype=np.int64), sizes)
    flat = np.concatenate(hashes)
    del hashes
    order = np.argsort(flat, kind="stable")
    flat, row = flat[order], row[order]
    del order
    starts = np.flatnonzero(np.concatenate(([True], flat[1:] != flat[:-1])))
    counts = np.diff(np.concatenate((starts, [len(flat)])))
    pair_keys: list[np.ndarray] = []
    for size in np.unique(counts[counts > 1]):  # groups of the same size at once: all their pairs
        first = starts[counts == size]
        members = row[first[:, None] + np.arange(size)]
        a, b = np.triu_indices(int(size), 1)
        lo, hi = np.minimum(members[:, a], members[:, b]), np.maximum(members[:, a], members[:, b])
        keep = lo != hi
        pair_keys.append((lo[keep] * len(texts) + hi[keep]).ravel())
    if not pair_keys:
        return {}
    pairs, common = np.unique(np.concatenate(pair_keys), return_counts=True)
    size = np.asarray(sizes)
    a, b = pairs // len(texts), pairs % len(texts)
    sim = common / (size[a] + size[b] - common)
    found = {}
    for i, j in zip(a[sim >= threshold - 1e-9].tolist(), b[sim >= threshold - 1e-9].tolist(), strict=True):
        si, sj = _shingle_set(texts[i]), _shingle_set(texts[j])  # confirm on the sets (no hash collision)
        exact = len(si & sj) / len(si | sj)
        if exact >= threshold:
            found[i, j] = exact
    return found


def check(keys: Path, split_of: list[str], removed: dict[int, int], threshold: float) -> dict[str, int]:
    similar = similar_pairs(keys, threshold)
    surviving = [(a, b) for a, b in similar if a not in removed and b not in removed]
    cross = [(a, b) for a, b in surviving if split_of[a] != split_of[b]]
    texts = keys.read_text(encoding="utf-8").splitlines()
    wrong = 0
    for i, j in removed.items():
        si, sj = _shingle_set(texts[i]), _shingle_set(texts[j])
        wrong += len(si & sj) / len(si | sj) < threshold
    return {
        "pairs_at_or_above_threshold": len(similar),
        "cross_split_pairs_at_or_above_threshold": sum(split_of[a] != split_of[b] for a, b in similar),
        "leaked_cross_split_pairs": len(cross),
        "leaked_rows_test": len({x for p in cross for x in p if split_of[x] == "test"}),
        "leaked_rows_validation": len({x for p in cross for x in p if split_of[x] == "validation"}),
        "surviving_pairs_within_a_split": len(surviving) - len(cross),
        "removed": len(removed),
        "removed_below_threshold": wrong,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=300_000)
    parser.add_argument("--words", type=int, default=150, help="words per row (~200 tokens)")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--num-perm", type=int, default=128)
    parser.add_argument("--impl", default=None, help="a neardup.py to measure instead (e.g. an older version)")
    parser.add_argument("--no-check", action="store_true", help="skip the leakage check (memory runs at 1M)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--child", nargs=3, metavar=("KEYS", "SPLITS", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*map(Path, args.child), args.impl, args.threshold, args.num_perm)
        return

    work = Path(args.workdir or tempfile.mkdtemp(prefix="neardup-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    keys, splits_path, out = work / "keys.txt", work / "splits.txt", work / "step.json"
    start = time.perf_counter()
    meta, meta_path = [args.rows, args.words, args.threshold, args.seed], work / "planted.json"
    if meta_path.is_file() and json.loads(meta_path.read_text())["meta"] == meta:  # same rows: reuse them
        planted = json.loads(meta_path.read_text())["planted"]
    else:
        planted = generate(keys, splits_path, args.rows, args.words, args.threshold, args.seed)
        meta_path.write_text(json.dumps({"meta": meta, "planted": planted}))
    gen_s = time.perf_counter() - start
    cmd = [sys.executable, __file__, "--child", str(keys), str(splits_path), str(out),
           "--threshold", str(args.threshold), "--num-perm", str(args.num_perm)]
    if args.impl:
        cmd += ["--impl", args.impl]
    subprocess.run(cmd, check=True)
    step = json.loads(out.read_text())
    removed = {int(i): j for i, (j, _sim) in step.pop("removed").items()}
    summary = {"rows": args.rows, "words_per_row": args.words, "threshold": args.threshold,
               "num_perm": args.num_perm, "impl": args.impl or "llmops_cli/prep/neardup.py",
               "planted_above": planted["above"], "planted_below": planted["below"],
               "generate_s": round(gen_s, 1), "cpus": os.cpu_count(), "python": platform.python_version(),
               "step": step}
    if not args.no_check:
        start = time.perf_counter()
        split_of = [SPLITS[c] for c in splits_path.read_text(encoding="ascii")]
        summary["check"] = check(keys, split_of, removed, args.threshold)
        summary["check_s"] = round(time.perf_counter() - start, 1)
    print(json.dumps(summary, indent=2))  # noqa: T201


if __name__ == "__main__":
    main()
