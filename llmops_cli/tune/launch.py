"""Multi-GPU: re-run the same `llmops tune` command under torchrun (DDP; FSDP via accelerate configs)."""

from __future__ import annotations

import os
import subprocess
import sys


def launcher_command(nproc: int, argv: list[str]) -> list[str]:
    """torchrun running `python -m llmops_cli <argv>` with --nproc removed (each worker trains)."""
    cleaned: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--nproc":
            skip = True
            continue
        if arg.startswith("--nproc="):
            continue
        cleaned.append(arg)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}",
            "-m", "llmops_cli", *cleaned]


def relaunch(nproc: int, argv: list[str]) -> int:
    """Run the launcher and return its exit code; refuse to nest inside an existing launcher."""
    from llmops_cli.errors import ConfigError

    if os.environ.get("LOCAL_RANK") is not None:
        raise ConfigError("--nproc inside torchrun/accelerate: the launcher already started the workers",
                          hint="drop --nproc when you launch with accelerate launch or torchrun yourself")
    return subprocess.call(launcher_command(nproc, argv))
