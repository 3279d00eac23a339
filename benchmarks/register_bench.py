"""Bytes read per byte registered, and per byte served, for the local registry.

Registers a model directory of --mb MiB (a few shard files) with the code in this checkout and, with
--baseline REV, with the code of that git revision (a temporary worktree) in the same call; reports
bytes read (/proc/self/io rchar) per model byte for `add` (register) and the first `materialize`
(what serve does), and wall seconds.

    .venv/bin/python benchmarks/register_bench.py --mb 512 --baseline 6e0f09b
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_PROBE = """
import json, sys, time
from llmops_cli.registry.store import LocalRegistry

def rchar():
    # rchar counts read() and sendfile() alike (checked: shutil.copyfile of N bytes adds N).
    return int(next(l for l in open('/proc/self/io') if l.startswith('rchar')).split()[1])

root, src, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
reg = LocalRegistry(root)
out = {}
r0, t0 = rchar(), time.perf_counter()
version, _ = reg.add('bench', src, {})
r1, t1 = rchar(), time.perf_counter()
reg.materialize(version)
r2, t2 = rchar(), time.perf_counter()
out['register_read_per_byte'] = (r1 - r0) / size
out['register_s'] = t1 - t0
out['materialize_read_per_byte'] = (r2 - r1) / size
out['materialize_s'] = t2 - t1
print(json.dumps(out))
"""


def make_model(directory: Path, mib: int, shards: int = 4) -> int:
    directory.mkdir(parents=True)
    for i in range(shards):
        chunk = os.urandom(1 << 20)  # distinct shards: identical ones would be stored once
        with open(directory / f"model-{i:05d}.safetensors", "wb") as fh:
            for _ in range(mib // shards):
                fh.write(chunk)
    (directory / "config.json").write_text(json.dumps({"model_type": "llama"}))
    return sum(p.stat().st_size for p in directory.iterdir())


def measure(code_root: Path, work: Path, src: Path, size: int) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(code_root)}
    reg = work / f"reg-{code_root.name}"
    # cwd too: `python -c` puts the working directory first on sys.path, before PYTHONPATH.
    result = subprocess.run([sys.executable, "-c", _PROBE, str(reg), str(src), str(size)], env=env, cwd=code_root,
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=int, default=512)
    parser.add_argument("--baseline", help="git revision to compare against (same call)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT) as tmp:
        work = Path(tmp)
        src = work / "model"
        size = make_model(src, args.mb)
        rows = {"current": measure(ROOT, work, src, size)}
        if args.baseline:
            base = work / "baseline"
            subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "-q", "--detach", str(base), args.baseline],
                           check=True)
            try:
                rows[f"baseline {args.baseline}"] = measure(base, work, src, size)
            finally:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(base)], check=True)
    print(f"model: {size / (1 << 20):.0f} MiB")
    print("| code | register: bytes read / byte | register s | serve (materialize): bytes read / byte | s |")
    print("|---|---|---|---|---|")
    for name, row in rows.items():
        print(f"| {name} | {row['register_read_per_byte']:.2f} | {row['register_s']:.2f} | "
              f"{row['materialize_read_per_byte']:.2f} | {row['materialize_s']:.2f} |")


if __name__ == "__main__":
    main()
