"""A copy of the demo project, as a fresh clone holds it, for the e2e suites."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 900) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{cmd} failed:\n{result.stdout[-4000:]}\n{result.stderr[-4000:]}"
    return result


def demo_copy(work: Path, port: int) -> tuple[Path, dict[str, str]]:
    """Exactly the tracked files (no dvc.lock, so every stage runs), the demo's port changed, a git repo."""
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for rel in tracked.splitlines():
        if rel == "dvc.lock" or not (ROOT / rel).is_file():
            continue
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, work / rel)
    config = work / "configs/demo.yaml"
    config.write_text(config.read_text().replace("port: 8321", f"port: {port}"))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}", "CI": "1"}
    subprocess.run(["git", "init", "-q"], cwd=work, check=True)
    return work, env
