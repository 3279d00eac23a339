"""A fake of vLLM's OpenAI server for CPU tests of the vllm backend (only importable from these tests).

It records its argv and environment, serves /health, the two completion routes (JSON and SSE) for
the served model and its LoRA modules, and the runtime LoRA load/unload routes. FAKE_VLLM_MODE=oom
prints vLLM's out-of-memory error and exits; FAKE_VLLM_MODE=die exits 2 s after becoming healthy;
FAKE_VLLM_MODE=die_once does that on its first start only (a restarted one keeps serving);
FAKE_VLLM_MODE=cause prints a root cause followed by many lines of shutdown noise, then exits 1.
"""

import json
import os
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RECORD = os.environ.get("FAKE_VLLM_RECORD")


def record(event):
    if RECORD:
        with open(RECORD, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(event) + "\n")


def arg(name, default=None):
    argv = sys.argv[1:]
    return argv[argv.index(name) + 1] if name in argv else default


served = arg("--served-model-name", arg("--model"))
loras = {}
if "--lora-modules" in sys.argv:
    name, _, path = arg("--lora-modules").partition("=")
    loras[name] = path
first_start = not any(json.loads(line)["event"] == "start" for line in open(RECORD)) if (
    RECORD and os.path.exists(RECORD)) else True
record({"event": "start", "argv": sys.argv[1:], "pid": os.getpid(),
        "runtime_lora": os.environ.get("VLLM_ALLOW_RUNTIME_LORA_UPDATING"),
        "cpu_kvcache": os.environ.get("VLLM_CPU_KVCACHE_SPACE")})
if os.environ.get("FAKE_VLLM_MODE") == "cause":
    print("(EngineCore pid=1) ERROR 11-24 08:00:00 [core.py:1] ValueError: Available memory 1.0 GiB is less "
          "than desired CPU memory utilization", flush=True)
    for i in range(60):
        print(f"(APIServer pid=2) INFO shutdown noise line {i}", flush=True)
    sys.exit(1)
if os.environ.get("FAKE_VLLM_MODE") == "oom":
    print("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 20.00 GiB", flush=True)
    sys.exit(1)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status, obj):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self):
        if self.path == "/health":
            return self._json(200, {})
        return self._json(404, {"error": {"message": "not found", "type": "NotFoundError", "code": 404}})

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
        if self.path == "/v1/load_lora_adapter":
            loras[body["lora_name"]] = body["lora_path"]
            record({"event": "load", **body})
            return self._json(200, {"status": "ok"})
        if self.path == "/v1/unload_lora_adapter":
            loras.pop(body["lora_name"], None)
            record({"event": "unload", **body})
            return self._json(200, {"status": "ok"})
        model = body.get("model")
        if model != served and model not in loras:
            return self._json(404, {"error": {"message": f"The model `{model}` does not exist.",
                                              "type": "NotFoundError", "code": 404}})
        record({"event": "request", "model": model, "stream": bool(body.get("stream")),
                "stream_options": body.get("stream_options"),
                **{k: body.get(k) for k in ("temperature", "top_p", "top_k", "max_tokens")}})
        delay = float(body.get("fake_delay", 0))
        chat = self.path == "/v1/chat/completions"
        words = ["fake", " answer", " from", f" {model}"]
        if not body.get("stream"):
            time.sleep(delay)
            choice = ({"index": 0, "message": {"role": "assistant", "content": "".join(words)}, "finish_reason": "stop"}
                      if chat else {"index": 0, "text": "".join(words), "finish_reason": "stop"})
            return self._json(200, {"id": "chatcmpl-fake1", "object": "chat.completion", "model": model,
                                    "choices": [choice],
                                    "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("transfer-encoding", "chunked")
        self.end_headers()

        def send(obj):
            data = f"data: {obj if isinstance(obj, str) else json.dumps(obj)}\n\n".encode()
            self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
            self.wfile.flush()

        for i, word in enumerate(words):
            send({"id": "chatcmpl-fake2", "object": "chat.completion.chunk", "model": model,
                  "choices": [{"index": 0, "delta": {"content": word},
                               "finish_reason": "stop" if i == len(words) - 1 else None}]})
            time.sleep(delay)
        send({"id": "chatcmpl-fake2", "object": "chat.completion.chunk", "model": model, "choices": [],
              "usage": {"prompt_tokens": 5, "completion_tokens": 4, "total_tokens": 9}})
        send("[DONE]")
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


server = ThreadingHTTPServer((arg("--host", "127.0.0.1"), int(arg("--port", "8000"))), Handler)
if os.environ.get("FAKE_VLLM_MODE") == "die" or (os.environ.get("FAKE_VLLM_MODE") == "die_once" and first_start):
    threading.Timer(2.0, lambda: os._exit(3)).start()
server.serve_forever()
