"""Near-dup on template-heavy rows (#14): every row = one shared template + random words, so most pairs are
LSH candidates well below the threshold; CPU seconds of NearDupIndex add + resolve, and how many candidate
pairs reached the exact n-gram set check.

    .venv/bin/python benchmarks/neardup_template_bench.py --rows 5000 --template 30 --random 20
    .venv/bin/python benchmarks/neardup_template_bench.py --rows 5000 --template 60 --random 20
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--template", type=int, default=30, help="words of the shared template")
    parser.add_argument("--random", type=int, default=20, help="random words after it")
    parser.add_argument("--threshold", type=float, default=0.8)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    from llmops_cli.prep.config import NearDupSpec
    from llmops_cli.prep.neardup import NearDupIndex

    rng = random.Random(args.seed)
    vocab = [f"w{i}" for i in range(5000)]
    template = [rng.choice(vocab) for _ in range(args.template)]
    texts = [" ".join(template + rng.choices(vocab, k=args.random)) for _ in range(args.rows)]
    splits = rng.choices(("train", "validation", "test"), (0.8, 0.1, 0.1), k=args.rows)
    start = time.process_time()
    index = NearDupIndex(threshold=args.threshold, num_perm=NearDupSpec().num_perm, ngram=3)
    for text in texts:
        index.add(text)
    removed = index.resolve(splits)
    cpu = time.process_time() - start
    print(f"rows={args.rows} template={args.template} random={args.random} cpu_s={cpu:.2f} "
          f"removed={len(removed)} candidate_pairs={getattr(index, 'candidate_pairs', '-')} "
          f"exact_checks={getattr(index, 'exact_checks', '-')}")


if __name__ == "__main__":
    main()
