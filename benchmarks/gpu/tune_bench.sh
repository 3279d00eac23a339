#!/usr/bin/env bash
# `llmops tune` vs plain Trainer + PEFT on a random-weight 1B Llama (Llama-3.2-1B shape), LoRA and QLoRA,
# in ONE device call (see ../shared/gpu/README.md; stage the train-stack wheels first):
#   ../shared/gpu/prepare-wheels.sh ../shared/gpu/train-stack.txt      # here, then per chunk:
#   run(command="mkdir -p /tmp/vw && cp .carry/cK/* /tmp/vw/", carry=[".carry/cK"])
#   run(command="bash benchmarks/gpu/tune_bench.sh", carry=[".carry/install.sh"], timeout_s=600)
# Prints effective (non-padding) tokens/s and peak memory for both sides, and the pre-flight estimate
# next to the measured peak; JSON in $OUT/tune_bench.json. Target: llmops >= 2x baseline tokens/s at no
# more peak memory; estimate within 25% of the measured peak.
set -euo pipefail
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
[ -d /tmp/site ] || bash .carry/install.sh
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
python3 benchmarks/tune_bench.py --device cuda --methods lora qlora --steps 40 --json "$OUT/tune_bench.json" \
  2>&1 | tee "$OUT/tune_bench.txt"
python3 benchmarks/tune_bench.py --device cuda --methods lora --steps 40 --gradient-checkpointing \
  --json "$OUT/tune_bench_gc.json" 2>&1 | tee "$OUT/tune_bench_gc.txt"
