"""Throughput and latency of `llmops serve` through the gateway and against the backend directly, in one run.

    .venv/bin/python benchmarks/serve_bench.py                                  # CPU, transformers backend
    .venv/bin/python benchmarks/serve_bench.py --concurrency 32 --requests 400 --max-tokens 8
    .venv/bin/python benchmarks/serve_bench.py --backend vllm --concurrency 1 16 64 --max-tokens 16  # vLLM CPU build
    python3 benchmarks/serve_bench.py --backend vllm --concurrency 64           # GPU (benchmarks/gpu/serve_bench.sh)

transformers (default): two server processes on the same model, started side by side and measured in
alternating rounds: the gateway (`python -m llmops_cli.serving.app`, with an API key, content logging
with PII redaction and Prometheus metrics all on) and "direct", a bare FastAPI app in this file that hands
the same request body to the same backend object with no gateway work. The difference is the gateway's
overhead (target: < 5% throughput, < 3 ms p50).

echo: the same two servers over a backend that answers at once (no model): the gateway's own cost per
request, an upper bound on its share of any real backend's time.

vllm: on a CUDA machine, a random-weight Llama of Llama-3.2-1B shape with a random LoRA adapter (built
here, nothing downloaded), elsewhere --model with --adapter (default: the demo's base and tuned adapter)
on vLLM's CPU build from .venv-vllm, is served by (a) the gateway with the vllm backend, (b) vLLM's own port
directly (gateway overhead), and (c) the gateway with the transformers backend on the same GPU; all at
the same concurrency. Ratios: vLLM / transformers throughput, and gateway / direct.
Results are printed as a table and written as JSON with --json.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from fastapi import Request  # module level: FastAPI resolves route annotations from module globals

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

KEY = "bench-key-0123456789"
PROMPTS = ["I was charged twice for my laptop, contact me at jane@example.com",
           "my package with the kettle has not arrived", "I cannot log in to my account",
           "the delivery of my jacket is late, call +1 415-555-0132"]


# -- the "direct" server: the backend with no gateway in front ---------------------------------------
def echo_backend(spec: dict[str, Any]) -> Any:
    """A backend that answers at once with a fixed completion: isolates the gateway's own cost."""
    from llmops_cli.serving.backends import Backend, Reply

    class Echo(Backend):
        name = "echo"

        @property
        def state(self) -> str:
            return "ready"

        def start(self) -> None:
            pass

        async def handle(self, kind: str, body: dict[str, Any], request_id: str) -> Reply:
            text = "billing " * int(body.get("max_tokens") or 8)
            usage = {"prompt_tokens": 12, "completion_tokens": int(body.get("max_tokens") or 8)}
            rid = f"chatcmpl-{request_id}"
            return Reply(200, {"id": rid, "object": "chat.completion", "created": 0, "model": "bench",
                               "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                                            "finish_reason": "length"}],
                               "usage": {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}},
                         meta={"response_id": rid, **usage, "finish_reason": "length", "text": text})

    return Echo(spec)


def serve_gateway(spec_path: str) -> None:
    """The real gateway (create_app) over the echo backend."""
    import uvicorn

    from llmops_cli.serving.app import create_app
    from llmops_cli.serving.auth import load_api_keys

    spec = json.loads(Path(spec_path).read_text())
    spec["api_keys"] = load_api_keys(spec["api_keys_env"], None)
    uvicorn.run(create_app(spec, backend=echo_backend(spec)), host="127.0.0.1", port=spec["port"],
                log_level="warning", access_log=False)


ECHO = "--echo"  # in a spec file's name: serve it with the echo backend (the spec itself names a real one)


def serve_direct(spec_path: str, port: int) -> None:
    """A bare app: parse JSON, call backend.handle, return its body. No auth, log, metrics or checks."""
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    from llmops_cli.serving.app import make_backend

    spec = json.loads(Path(spec_path).read_text())
    backend = echo_backend(spec) if ECHO in spec_path else make_backend(spec)
    backend.start()
    app = FastAPI()
    counter = {"n": 0}

    @app.get("/ready")
    def ready() -> dict[str, str]:
        return {"status": backend.state}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        counter["n"] += 1
        reply = await backend.handle("chat", json.loads(await request.body()), f"direct-{counter['n']}")
        return JSONResponse(reply.body, status_code=reply.status)

    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


# -- load generation ---------------------------------------------------------------------------------
async def load(url: str, model: str, requests: int, concurrency: int, max_tokens: int,
               headers: dict[str, str]) -> dict[str, Any]:
    import httpx

    latencies: list[float] = []
    tokens = errors = 0
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(requests):
        queue.put_nowait(i)

    async def worker(client: httpx.AsyncClient) -> None:
        nonlocal tokens, errors
        while True:
            try:
                i = queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            body = {"model": model, "max_tokens": max_tokens, "temperature": 0,
                    "messages": [{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}]}
            started = time.perf_counter()
            response = await client.post(f"{url}/v1/chat/completions", json=body, headers=headers)
            latencies.append(time.perf_counter() - started)
            if response.status_code != 200:
                errors += 1
            else:
                tokens += response.json()["usage"]["completion_tokens"]

    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(timeout=600, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(concurrency)))
        wall = time.perf_counter() - started
    latencies.sort()
    return {"requests": requests, "errors": errors, "wall_s": wall, "req_per_s": requests / wall,
            "tok_per_s": tokens / wall, "p50_ms": 1000 * latencies[len(latencies) // 2],
            "p95_ms": 1000 * latencies[int(len(latencies) * 0.95) - 1]}


def wait_ready(url: str, procs: list[subprocess.Popen[bytes]], timeout_s: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in procs:
            if proc.poll() is not None:
                raise SystemExit(f"a server exited with code {proc.returncode} (see its log)")
        try:
            if httpx.get(f"{url}/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise SystemExit(f"{url} was not ready after {timeout_s:.0f}s")


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def make_spec(tmp: Path, model_dir: str, base: str, backend: str, port: int, **extra: Any) -> dict[str, Any]:
    return {"backend": "transformers" if backend == "echo" else backend, "base": {"base": base, "dtype": "auto"},
            "model_dir": model_dir,
            "model_name": "bench", "model_ref": "bench:1", "model_aliases": [], "host": "127.0.0.1", "port": port,
            "api_keys_env": "LLMOPS_BENCH_KEYS", "max_new_tokens": 16, "max_prompt_tokens": 1024,
            "request_log": str(tmp / f"requests-{backend}.jsonl"), "feedback_log": str(tmp / "feedback.jsonl"),
            "log_content": True, "log_redact": ["email", "phone", "credit_card", "iban", "ip"],
            "ready_timeout_s": 900, **extra}


def start(spec: dict[str, Any], tmp: Path, name: str, direct_port: int | None = None,
          echo: bool = False) -> subprocess.Popen[bytes]:
    path = tmp / f"spec-{name}{ECHO if echo else ''}.json"
    path.write_text(json.dumps(spec))
    if direct_port:
        cmd = [sys.executable, __file__, "--serve-direct", str(path), "--port", str(direct_port)]
    elif echo:
        cmd = [sys.executable, __file__, "--serve-gateway", str(path)]
    else:
        cmd = [sys.executable, "-m", "llmops_cli.serving.app", str(path)]
    env = {**os.environ, "LLMOPS_BENCH_KEYS": KEY, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    log = open(tmp / f"{name}.log", "ab")  # noqa: SIM115 - lives as long as the server
    return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)


def measure(targets: dict[str, tuple[str, str, dict[str, str]]], args: argparse.Namespace) -> dict[str, Any]:
    """Alternate targets round by round so that machine noise hits all of them alike."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in targets}
    for url, model, headers in targets.values():  # warm-up, not recorded
        asyncio.run(load(url, model, min(args.concurrency, 16), args.concurrency, args.max_tokens, headers))
    for r in range(args.rounds):
        order = list(targets) if r % 2 == 0 else list(reversed(targets))
        for name in order:
            url, model, headers = targets[name]
            runs[name].append(asyncio.run(load(url, model, args.requests, args.concurrency, args.max_tokens,
                                               headers)))
    summary = {}
    for name, results in runs.items():
        summary[name] = {
            "req_per_s": statistics.median(x["req_per_s"] for x in results),
            "tok_per_s": statistics.median(x["tok_per_s"] for x in results),
            "p50_ms": statistics.median(x["p50_ms"] for x in results),
            "p95_ms": statistics.median(x["p95_ms"] for x in results),
            "errors": sum(x["errors"] for x in results), "rounds": results,
        }
    return summary


def build_gpu_model(tmp: Path) -> tuple[str, str]:
    """A random-weight Llama of Llama-3.2-1B shape plus a random r=16 LoRA adapter (no download)."""
    from llmops_cli.model.config import ScaffoldSection
    from llmops_cli.model.scaffold import scaffold_model

    base = tmp / "base-1b"
    corpus = tmp / "corpus.txt"
    corpus.write_text("\n".join(PROMPTS * 200))
    scaffold_model(ScaffoldSection(output=str(base), corpus=[str(corpus)], vocab_size=2048, hidden_size=2048,
                                   num_layers=16, num_heads=32, intermediate_size=8192,
                                   max_position_embeddings=2048))
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.bfloat16)
    peft_model = get_peft_model(model, LoraConfig(r=16, lora_alpha=32, target_modules="all-linear"))
    adapter = tmp / "adapter"
    peft_model.save_pretrained(adapter)
    AutoTokenizer.from_pretrained(base).save_pretrained(adapter)
    return str(base), str(adapter)


def start_vllm_targets(args: argparse.Namespace, tmp: Path, procs: list[subprocess.Popen[bytes]],
                       auth: dict[str, str]) -> dict[str, tuple[str, str, dict[str, str]]]:
    """vLLM behind the gateway, vLLM's own port, and the transformers backend behind the gateway, on
    the same model: a random 1B Llama + LoRA on a GPU, the given model + adapter elsewhere (CPU build)."""
    sys.path.insert(0, str(ROOT))
    from llmops_cli.serving.vllm_env import probe_vllm, vllm_python

    info = probe_vllm(vllm_python(args.vllm_python, ROOT))
    if info is None:
        raise SystemExit("no vllm: run `make vllm` or pass --vllm-python")
    if info.device == "cuda":
        base, adapter = build_gpu_model(tmp)
        vllm = {"dtype": "bfloat16", "max_model_len": 2048, "gpu_memory_utilization": 0.6}
    else:
        base, adapter = args.model, args.adapter
        vllm = {"dtype": "auto", "max_model_len": None, "gpu_memory_utilization": 0.9}
    gw_port, vllm_port, hf_port = free_port(), free_port(), free_port()
    vllm.update(python=info.python, device=info.device, port=vllm_port, tensor_parallel_size=1, quantization=None,
                enable_prefix_caching=True, max_loras=2, max_lora_rank=None, cpu_kvcache_gib=2, max_restarts=0,
                restart_backoff_s=2.0, extra_args=list(args.vllm_extra))
    served = adapter or base  # no adapter: the base model served as a full model
    procs.append(start(make_spec(tmp, served, base, "vllm", gw_port, vllm=vllm, lora_rank=16 if adapter else None,
                                 vllm_log=str(tmp / "vllm.log")), tmp, "vllm-gateway"))
    procs.append(start(make_spec(tmp, served, base, "transformers", hf_port, device="auto"), tmp, "hf-gateway"))
    for port in (gw_port, hf_port):
        wait_ready(f"http://127.0.0.1:{port}", procs, 900)
    return {"vllm_direct": (f"http://127.0.0.1:{vllm_port}", "bench-1" if adapter else "bench", {}),
            "vllm_gateway": (f"http://127.0.0.1:{gw_port}", "bench", auth),
            "transformers_gateway": (f"http://127.0.0.1:{hf_port}", "bench", auth)}


def report_level(summary: dict[str, Any], backend: str) -> dict[str, Any]:
    if backend != "vllm":
        d, g = summary["direct"], summary["gateway"]
        extra = {f"gateway_vs_{name}_tok_per_s": g["tok_per_s"] / max(s["tok_per_s"], 1e-9)
                 for name, s in summary.items() if name.startswith("gateway_max_batch")}
    else:
        d, g = summary["vllm_direct"], summary["vllm_gateway"]
        extra = {"vllm_vs_transformers_throughput": g["tok_per_s"] / max(summary["transformers_gateway"]["tok_per_s"],
                                                                         1e-9)}
    return {"results": summary, "gateway_throughput_ratio": g["req_per_s"] / d["req_per_s"],
            "gateway_p50_overhead_ms": g["p50_ms"] - d["p50_ms"], **extra}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["transformers", "vllm", "echo"], default="transformers",
                        help="echo: a backend that answers at once, to measure the gateway alone")
    parser.add_argument("--model", default=str(ROOT / "models/base"), help="model dir (base model in vllm mode)")
    parser.add_argument("--adapter", default=str(ROOT / "artifacts/tune"),
                        help="LoRA adapter (vllm mode, CPU); '' serves --model itself as a full model")
    parser.add_argument("--vllm-python", help="interpreter with vllm (default: .venv-vllm, else this one)")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[16], help="one or more levels, same run")
    parser.add_argument("--max-batch", type=int, default=32, help="serve.max_batch of the transformers backend")
    parser.add_argument("--baseline-max-batch", type=int,
                        help="also measure a gateway with this serve.max_batch (e.g. 1: one request at a time)")
    parser.add_argument("--requests", type=int, default=200, help="requests per round and target")
    parser.add_argument("--max-tokens", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--vllm-extra", nargs="*", default=[], help="extra vLLM flags, e.g. --enforce-eager")
    parser.add_argument("--json", help="write the results here")
    parser.add_argument("--serve-direct", help=argparse.SUPPRESS)
    parser.add_argument("--serve-gateway", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_direct:
        serve_direct(args.serve_direct, args.port)
        return
    if args.serve_gateway:
        serve_gateway(args.serve_gateway)
        return

    tmp = Path(tempfile.mkdtemp(prefix="serve-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    auth = {"Authorization": f"Bearer {KEY}"}
    levels: dict[int, dict[str, Any]] = {}
    try:
        if args.backend in ("transformers", "echo"):
            gw_port, direct_port, base_port = free_port(), free_port(), free_port()
            spec = make_spec(tmp, args.model, args.model, args.backend, gw_port, max_batch=args.max_batch)
            echo = args.backend == "echo"
            procs += [start(spec, tmp, "gateway", echo=echo), start(spec, tmp, "direct", direct_port, echo=echo)]
            ports = [gw_port, direct_port]
            if args.baseline_max_batch:  # the same gateway generating at most N requests at a time
                procs.append(start({**spec, "port": base_port, "max_batch": args.baseline_max_batch}, tmp, "baseline",
                                   echo=echo))
                ports.append(base_port)
            for port in ports:
                wait_ready(f"http://127.0.0.1:{port}", procs, 300)
            targets = {"direct": (f"http://127.0.0.1:{direct_port}", "bench", {}),
                       "gateway": (f"http://127.0.0.1:{gw_port}", "bench", auth)}
            if args.baseline_max_batch:
                targets[f"gateway_max_batch_{args.baseline_max_batch}"] = (f"http://127.0.0.1:{base_port}", "bench",
                                                                           auth)
        else:
            targets = start_vllm_targets(args, tmp, procs, auth)
        for level in args.concurrency:
            args_level = argparse.Namespace(**{**vars(args), "concurrency": level})
            levels[level] = report_level(measure(targets, args_level), args.backend)
    finally:
        for proc in procs:
            try:
                os.killpg(proc.pid, 15)
                proc.wait(timeout=60)
            except (ProcessLookupError, subprocess.TimeoutExpired):
                pass
    report = {"backend": args.backend, "requests": args.requests, "max_tokens": args.max_tokens,
              "rounds": args.rounds, "python": platform.python_version(), "cpus": os.cpu_count(),
              "levels": {str(k): v for k, v in levels.items()}}
    for level, result in levels.items():
        print(f"\nconcurrency {level}")  # noqa: T201
        print(f"{'target':<22}{'req/s':>9}{'tok/s':>10}{'p50 ms':>9}{'p95 ms':>9}{'errors':>8}")  # noqa: T201
        for name, s in result["results"].items():
            print(f"{name:<22}{s['req_per_s']:>9.1f}{s['tok_per_s']:>10.1f}{s['p50_ms']:>9.1f}"  # noqa: T201
                  f"{s['p95_ms']:>9.1f}{s['errors']:>8}")
        print(f"gateway/direct throughput: {result['gateway_throughput_ratio']:.3f}  "  # noqa: T201
              f"p50 overhead: {result['gateway_p50_overhead_ms']:+.2f} ms")
        for key in (k for k in result if k.startswith("gateway_vs_")):
            print(f"{key}: {result[key]:.2f}x")  # noqa: T201
        if "vllm_vs_transformers_throughput" in result:
            print(f"vLLM / transformers throughput: {result['vllm_vs_transformers_throughput']:.2f}x")  # noqa: T201
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
