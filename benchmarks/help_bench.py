"""Start-up cost of `llmops --help` against a bare interpreter start, measured in the same run.

    python benchmarks/help_bench.py [--runs 10]

Prints the median wall time of each and their ratio; the target is `llmops --help` < 0.5 s.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def _median_seconds(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    baseline = _median_seconds([sys.executable, "-c", "pass"], args.runs)
    results = {"python -c pass": baseline}
    for sub in ([], ["tune"], ["serve"]):
        results[" ".join(["llmops", *sub, "--help"])] = _median_seconds(
            [sys.executable, "-m", "llmops_cli", *sub, "--help"], args.runs)
    for name, seconds in results.items():
        print(f"{name:24s} {seconds * 1000:7.1f} ms  ({seconds / baseline:4.1f}x bare python)")


if __name__ == "__main__":
    main()
