#!/usr/bin/env bash
# The GPU checks of `llmops serve`, one device call each (see ../shared/gpu/README.md):
#   stage wheels first:  ../shared/gpu/prepare-wheels.sh ../shared/gpu/train-stack.txt ../shared/gpu/vllm-stack.txt
#   then, per chunk:     run(command="mkdir -p /tmp/vw && cp .carry/cK/* /tmp/vw/", carry=[".carry/cK"])
#   pipeline (QLoRA tune + vLLM parity eval + vLLM serve through the gateway, configs/gpu.yaml), as two
#   calls on the same warm machine (each fits the 10-minute limit; `pipeline` runs both in one):
#     run(command="bash benchmarks/gpu/serve_bench.sh train", carry=[".carry/install.sh"], timeout_s=600)
#     run(command="bash benchmarks/gpu/serve_bench.sh serve", carry=[".carry/install.sh"], timeout_s=600)
#   benchmark (vLLM vs transformers, 64 concurrent requests, random-weight 1B Llama):
#     run(command="bash benchmarks/gpu/serve_bench.sh bench", carry=[".carry/install.sh"], timeout_s=600)
# Results land in $OUT (JSON and logs). Each mode is one experiment; vLLM's first start compiles (~4 min).
set -euo pipefail
mode=${1:-bench}
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
[ -d /tmp/site ] || bash .carry/install.sh
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
py=python3
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader | tee "$OUT/gpu.txt"
$py -c "import vllm, torch; print('vllm', vllm.__version__, 'torch', torch.__version__, 'cuda', torch.cuda.is_available())" \
  | tee "$OUT/versions.txt"

cfg=configs/gpu.yaml
llmops() { $py -m llmops_cli "$@"; }
case "$mode" in
  train)
    # The dvc.yaml stages up to register with the GPU parameter set (dvc itself is not on the GPU machine;
    # where it is: dvc exp run -n gpu $(sed -n 's/^#S //p' configs/gpu.yaml)).
    trap 'cp -r reports metrics "$OUT"/ 2>/dev/null || true' EXIT
    llmops model scaffold -c $cfg
    llmops prep -c $cfg
    llmops tune -c $cfg --json > "$OUT/tune.json"
    llmops eval -c $cfg --json > "$OUT/eval.json" || echo "eval gates failed (see eval.json); registering anyway for the serve check"
    llmops register -c $cfg --json > "$OUT/register.json" || llmops register -c $cfg --force --reason "gpu serve check" --json > "$OUT/register.json"
    ;;
  serve)
    # After `train` on the same (warm) machine: offline vLLM parity with transformers, then the vLLM backend
    # behind the gateway: ask, a killed engine restarted by the supervisor, reload, status, stop.
    trap 'llmops serve stop -c $cfg >/dev/null 2>&1 || true; cp -r serve reports metrics "$OUT"/ 2>/dev/null || true' EXIT
    llmops eval -c $cfg --parity --set eval.backend=vllm --set eval.limit=128 --set eval.safety=false \
      --set eval.compare_production=false --set eval.metrics_file=metrics/eval_parity.json \
      --set eval.report_file=reports/eval_parity.md --json > "$OUT/eval_parity.json" || echo "parity eval failed"
    start=$(date +%s)
    llmops serve --detach -c $cfg --json | tee "$OUT/endpoint.json"
    echo "vLLM gateway ready after $(( $(date +%s) - start ))s" | tee "$OUT/serve_start.txt"
    llmops serve ask "I was charged twice for my laptop" -c $cfg --json | tee "$OUT/ask.json"
    url=$(python3 -c "import json; print(json.load(open('serve/endpoint.json'))['url'])")
    gw=$(python3 -c "import json; print(json.load(open('serve/endpoint.json'))['pid'])")
    kill -9 "$(cat "serve/vllm-$gw.pgid")"; killed=$(date +%s)
    until curl -sf -o /dev/null "$url/ready"; do sleep 2; [ $(( $(date +%s) - killed )) -lt 420 ] || break; done
    echo "engine back after $(( $(date +%s) - killed ))s" | tee "$OUT/restart.txt"
    llmops serve ask "I was charged twice for my laptop" -c $cfg --json | tee "$OUT/ask_after_restart.json"
    curl -s "$url/metrics" > "$OUT/metrics.txt"
    llmops serve reload -c $cfg --json | tee "$OUT/reload.json"
    llmops serve status -c $cfg --json | tee "$OUT/status.json"
    ;;
  pipeline) bash "$0" train && bash "$0" serve ;;
  bench)
    $py benchmarks/serve_bench.py --backend vllm --concurrency 64 --requests 256 --max-tokens 128 --rounds 2 \
      --json "$OUT/serve_bench_vllm.json" 2>&1 | tee "$OUT/serve_bench_vllm.txt"
    ;;
  *) echo "usage: $0 train|serve|pipeline|bench" >&2; exit 2 ;;
esac
