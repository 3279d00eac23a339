"""Serving backends: small classes behind one interface (start, wait_ready, stop, reload, handle).

The gateway (serving/app.py) owns auth, logging, metrics and validation and hands each parsed
OpenAI request to a backend:
- TransformersBackend generates in-process with the embedded engine (CPU default; adapter merged);
- VllmBackend runs vLLM's OpenAI server as a child process on a loopback port and proxies to it,
  streaming bytes through unbuffered; adapters are served as LoRA modules and switched at runtime.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_cli.errors import BackendUnavailable

# vLLM accepts only these LoRA ranks for --max-lora-rank.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "No available memory for the cache blocks",
               "insufficient memory", "larger than the available KV cache memory")


class ApiError(Exception):
    """An OpenAI-style error answer: status, message, type and code."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code


@dataclass
class Reply:
    """A backend's answer: a JSON body, or SSE bytes to pass through as they come.

    `meta` holds what the request log needs (response_id, prompt_tokens, completion_tokens,
    finish_reason, text, error); for streams it is complete once the iterator is exhausted.
    """

    status: int = 200
    body: dict[str, Any] | None = None
    chunks: AsyncIterator[bytes] | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class ModelSpec:
    """What is served: a directory (adapter or full model) and how it is named."""

    model_dir: str
    model_ref: str
    model_name: str
    lora_rank: int | None = None
    is_adapter: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelSpec:
        return cls(**{k: data.get(k) for k in ("model_dir", "model_ref", "model_name", "lora_rank")},
                   is_adapter=(Path(data["model_dir"]) / "adapter_config.json").is_file())


class Backend:
    """The interface every backend implements. `state` is loading | ready | failed."""

    name = "base"

    def __init__(self, spec: dict[str, Any]) -> None:
        self.spec = spec
        self.model = ModelSpec.from_dict(spec)
        self.error: str | None = None
        self.hint: str | None = None

    @property
    def state(self) -> str:
        raise NotImplementedError

    def start(self) -> None:
        """Begin loading or launching; returns quickly or after loading (called off the event loop)."""
        raise NotImplementedError

    def wait_ready(self, timeout_s: float) -> None:
        """Block until the backend answers; raise BackendUnavailable with the reason otherwise."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.state == "ready":
                return
            if self.state == "failed":
                raise BackendUnavailable(f"the {self.name} backend failed to start: {self.error}")
            time.sleep(0.2)
        raise BackendUnavailable(f"the {self.name} backend was not ready after {timeout_s:.0f}s")

    def stop(self) -> None:
        """Release the model and any child process."""

    def reload(self, model: ModelSpec) -> None:
        """Serve `model` from now on without failing requests already running."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Close network clients (called on the event loop at shutdown)."""

    async def handle(self, kind: str, body: dict[str, Any], request_id: str) -> Reply:
        """Answer a validated chat (kind='chat') or completion (kind='completion') request."""
        raise NotImplementedError


# -- transformers ----------------------------------------------------------------------------------
class TransformersBackend(Backend):
    """The embedded engine. Reload builds the new engine first and then swaps one reference:
    requests already running keep the engine they started with."""

    name = "transformers"

    def __init__(self, spec: dict[str, Any], engine: Any = None) -> None:
        super().__init__(spec)
        self.engine = engine
        self._reload_lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.engine is not None and self.engine.ready:
            return "ready"
        return "failed" if self.error else "loading"

    def start(self) -> None:
        from llmops_cli.serving.engine import TransformersEngine

        if self.engine is None:
            self.engine = TransformersEngine(self.spec["base"], self.model.model_dir, self.spec.get("device", "cpu"))
        if self.engine.ready:
            return
        try:
            self.engine.load()
        except Exception as exc:
            self.error = self.engine.load_error or f"{type(exc).__name__}: {exc}"
            raise

    def stop(self) -> None:
        self.engine = None

    def reload(self, model: ModelSpec) -> None:
        from llmops_cli.serving.engine import TransformersEngine

        with self._reload_lock:
            fresh = TransformersEngine(self.spec["base"], model.model_dir, self.spec.get("device", "cpu"))
            try:
                fresh.load()
            except Exception as exc:
                raise BackendUnavailable(f"cannot load {model.model_ref}: {fresh.load_error or exc}",
                                         hint="the previous model is still being served") from None
            self.engine, self.model = fresh, model

    async def handle(self, kind: str, body: dict[str, Any], request_id: str) -> Reply:
        from starlette.concurrency import run_in_threadpool

        engine = self.engine  # pinned for the whole request: a reload swaps the attribute, not this engine
        if engine is None or not engine.ready:
            raise ApiError(503, "model is still loading", "server_error", "not_ready")
        if kind == "chat":
            prompt = engine.render_chat([{"role": m["role"], "content": m["content"]} for m in body["messages"]])
            max_tokens = body.get("max_completion_tokens") or body.get("max_tokens")
        else:
            prompt, max_tokens = body["prompt"], body.get("max_tokens")
        prompt_tokens = await run_in_threadpool(engine.count_tokens, prompt)
        limit = self.spec["max_prompt_tokens"]
        if prompt_tokens > limit:
            raise ApiError(400, f"prompt has {prompt_tokens} tokens; the limit is {limit}",
                           code="context_length_exceeded")
        max_tokens = max_tokens or self.spec["max_new_tokens"]
        temperature = float(body.get("temperature") or 0.0)
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else (stop or [])
        prefix = "chatcmpl" if kind == "chat" else "cmpl"
        response_id = f"{prefix}-{request_id}"
        served = self.spec["model_name"]
        if body.get("stream"):
            return self._stream(engine, kind, prompt, max_tokens, temperature, response_id, served)
        result = await run_in_threadpool(engine.complete, prompt, max_tokens, temperature, stops)
        usage = {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
                 "total_tokens": result.prompt_tokens + result.completion_tokens}
        if kind == "chat":
            choice = {"index": 0, "message": {"role": "assistant", "content": result.text},
                      "finish_reason": result.finish_reason}
            obj = "chat.completion"
        else:
            choice = {"index": 0, "text": result.text, "finish_reason": result.finish_reason}
            obj = "text_completion"
        meta = {"response_id": response_id, "prompt_tokens": result.prompt_tokens,
                "completion_tokens": result.completion_tokens, "finish_reason": result.finish_reason,
                "text": result.text}
        return Reply(200, {"id": response_id, "object": obj, "created": int(time.time()), "model": served,
                           "choices": [choice], "usage": usage}, meta=meta)

    def _stream(self, engine: Any, kind: str, prompt: str, max_tokens: int, temperature: float,
                response_id: str, served: str) -> Reply:
        meta: dict[str, Any] = {"response_id": response_id}
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        created = int(time.time())

        def event(delta: dict[str, Any] | None, text: str | None, finish: str | None) -> bytes:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if kind == "chat":
                choice["delta"] = delta or {}
            else:
                choice["text"] = text or ""
            chunk = {"id": response_id, "object": obj, "created": created, "model": served, "choices": [choice]}
            return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

        async def chunks() -> AsyncIterator[bytes]:
            state: dict[str, Any] = {}
            pieces: list[str] = []
            stream = engine.stream(prompt, max_tokens, temperature, state)
            try:
                async for piece in stream:
                    # The role rides on the first piece, so the first byte marks the first token (ttft).
                    delta = {"content": piece} if pieces else {"role": "assistant", "content": piece}
                    pieces.append(piece)
                    yield event(delta, piece, None)
            finally:
                await stream.aclose()  # stops generation now, not whenever the generator is collected
                meta.update(prompt_tokens=state.get("prompt_tokens"), completion_tokens=state.get("completion_tokens"),
                            finish_reason=state.get("finish_reason"), text="".join(pieces).strip(),
                            error=state.get("error"))
            yield event({} if pieces else {"role": "assistant", "content": ""}, "", meta["finish_reason"])
            usage = {"prompt_tokens": meta["prompt_tokens"], "completion_tokens": meta["completion_tokens"],
                     "total_tokens": (meta["prompt_tokens"] or 0) + (meta["completion_tokens"] or 0)}
            yield f"data: {json.dumps({'id': response_id, 'object': obj, 'created': created, 'model': served, 'choices': [], 'usage': usage})}\n\n".encode()  # noqa: E501
            yield b"data: [DONE]\n\n"

        return Reply(200, chunks=chunks(), meta=meta)


# -- vLLM ------------------------------------------------------------------------------------------
def lora_name(model: ModelSpec) -> str:
    """A LoRA module name per registry version, so that old and new adapters can be resident together."""
    return model.model_ref.replace(":", "-").replace("@", "-").replace("/", "-")


def vllm_lora_rank(rank: int | None, configured: int | None) -> int:
    """The --max-lora-rank to pass: the configured or recorded rank, rounded up to one vLLM supports."""
    wanted = configured or rank or 16
    for allowed in VLLM_LORA_RANKS:
        if allowed >= wanted:
            return allowed
    raise BackendUnavailable(f"LoRA rank {wanted} is larger than vLLM supports ({VLLM_LORA_RANKS[-1]})",
                             hint="use the transformers backend, or merge the adapter and register a full model")


def vllm_command(spec: dict[str, Any], model: ModelSpec, port: int) -> list[str]:
    """The argv that launches vLLM's OpenAI server for `model` (documented CLI flags only)."""
    v = spec["vllm"]
    base = spec["base"]
    cmd = [v.get("python") or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--host", "127.0.0.1", "--port", str(port), "--dtype", v["dtype"],
           "--tensor-parallel-size", str(v["tensor_parallel_size"]),
           "--gpu-memory-utilization", str(v["gpu_memory_utilization"])]
    if model.is_adapter:
        cmd += ["--model", base["base"], "--served-model-name", spec["model_name"],
                "--enable-lora", "--lora-modules", f"{lora_name(model)}={model.model_dir}",
                "--max-lora-rank", str(vllm_lora_rank(model.lora_rank, v.get("max_lora_rank"))),
                "--max-loras", str(v["max_loras"])]
        if base.get("revision"):
            cmd += ["--revision", base["revision"]]
    else:
        cmd += ["--model", model.model_dir, "--served-model-name", spec["model_name"]]
    if base.get("trust_remote_code"):
        cmd.append("--trust-remote-code")
    if v.get("max_model_len"):
        cmd += ["--max-model-len", str(v["max_model_len"])]
    if v.get("quantization"):
        cmd += ["--quantization", v["quantization"]]
    cmd.append("--enable-prefix-caching" if v["enable_prefix_caching"] else "--no-enable-prefix-caching")
    return cmd + list(v.get("extra_args") or [])


class VllmBackend(Backend):
    """vLLM's OpenAI server as a child process on loopback; the gateway proxies to it.

    The child stays in the gateway's process group (the gateway is a session leader when detached),
    so `serve stop` signals both; the gateway also terminates it on shutdown. (PR_SET_PDEATHSIG is
    not used: it fires when the *thread* that started the child exits, not the process.)
    """

    name = "vllm"

    def __init__(self, spec: dict[str, Any]) -> None:
        super().__init__(spec)
        v = spec["vllm"]
        self.port = int(v.get("port") or spec["port"] + 1)
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = Path(spec.get("vllm_log") or Path(spec["request_log"]).with_name("vllm.log"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._client: Any = None
        self.current = lora_name(self.model) if self.model.is_adapter else spec["model_name"]
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.proc is not None and self.proc.poll() is not None and not self.error:
            self._mark_exited()
        if self.error:
            return "failed"
        return "ready" if self._ready else "loading"

    def command(self) -> list[str]:
        return vllm_command(self.spec, self.model, self.port)

    def start(self) -> None:
        from llmops_cli.serving.lifecycle import check_port_free

        check_port_free("127.0.0.1", self.port, what="the vLLM port (serve.vllm.port)")
        env = {**os.environ, "VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env)
        try:
            self.wait_ready(float(self.spec.get("ready_timeout_s", 600)))
        except BackendUnavailable as exc:
            self.error, self.hint = self.error or exc.message, exc.hint
            self.stop()
            raise

    def wait_ready(self, timeout_s: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                self._mark_exited()
                raise BackendUnavailable(self.error or "vLLM exited", hint=self.hint)
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    self._ready = True
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        self.error = f"vLLM was not healthy after {timeout_s:.0f}s"
        raise BackendUnavailable(self.error, hint=f"raise serve.ready_timeout_s; log: {self.log_path}")

    def _log_tail(self, lines: int = 12) -> str:
        try:
            return "\n".join(self.log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def _mark_exited(self) -> None:
        # The hint first: /ready (another thread) reports a failure as soon as `error` is set.
        reason = self._exit_reason()
        self.hint = self._hint(reason)
        self.error = reason

    def _exit_reason(self) -> str:
        code = None if self.proc is None else self.proc.returncode
        tail = self._log_tail(200)
        if any(marker in tail for marker in OOM_MARKERS):
            return f"vLLM ran out of GPU memory at start (exit code {code})"
        return f"vLLM exited with code {code}"

    def _hint(self, reason: str) -> str:
        if "out of GPU memory" in reason:
            return ("lower serve.vllm.gpu_memory_utilization or serve.vllm.max_model_len, or raise "
                    f"serve.vllm.tensor_parallel_size; log: {self.log_path}")
        return f"last lines of {self.log_path}:\n    " + self._log_tail().replace("\n", "\n    ")

    def stop(self) -> None:
        self._ready = False
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def reload(self, model: ModelSpec) -> None:
        import httpx

        if not (model.is_adapter and self.model.is_adapter):
            raise BackendUnavailable(
                f"vLLM switches LoRA adapters at runtime only; {model.model_ref} or the served model is a full model",
                hint="restart instead: `llmops serve --detach --set serve.source=...`")
        started_rank = vllm_lora_rank(self.model.lora_rank, self.spec["vllm"].get("max_lora_rank"))
        if (model.lora_rank or 0) > started_rank:
            raise BackendUnavailable(f"{model.model_ref} has LoRA rank {model.lora_rank} but vLLM was started with "
                                     f"--max-lora-rank {started_rank}",
                                     hint="restart with `llmops serve --detach` (or set serve.vllm.max_lora_rank)")
        new = lora_name(model)
        if new != self.current:
            response = httpx.post(f"{self.url}/v1/load_lora_adapter",
                                  json={"lora_name": new, "lora_path": model.model_dir}, timeout=600)
            if response.status_code != 200 and "already" not in response.text:
                raise BackendUnavailable(f"vLLM refused to load {model.model_ref}: {response.text[:300]}",
                                         hint="the previous adapter is still being served")
        old, self.current, self.model = self.current, new, model
        if old != new:
            # Unload the old adapter once the requests still using it have finished.
            threading.Thread(target=self._unload_when_idle, args=(old,), daemon=True).start()

    def _unload_when_idle(self, name: str, timeout_s: float = 600) -> None:
        import httpx

        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and self._inflight.get(name, 0) > 0:
            time.sleep(0.1)
        if name == self.current:
            return
        try:
            httpx.post(f"{self.url}/v1/unload_lora_adapter", json={"lora_name": name}, timeout=60)
        except httpx.HTTPError:
            pass  # a resident adapter only costs memory; the next reload tries again

    def _client_get(self) -> Any:
        import httpx

        if self._client is None:
            self._client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(None, connect=5),
                                             limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256))
        return self._client

    def _track(self, name: str, delta: int) -> None:
        with self._lock:
            self._inflight[name] = self._inflight.get(name, 0) + delta

    async def handle(self, kind: str, body: dict[str, Any], request_id: str) -> Reply:
        import httpx

        if self.state != "ready":
            raise ApiError(503, f"the vLLM backend is not available: {self.error or 'still starting'}",
                           "server_error", "backend_unavailable")
        name = self.current
        served = self.spec["model_name"]
        body = {**body, "model": name}
        path = "/v1/chat/completions" if kind == "chat" else "/v1/completions"
        if body.get("stream"):
            body["stream_options"] = {**(body.get("stream_options") or {}), "include_usage": True}
        client = self._client_get()
        self._track(name, 1)
        try:
            response = await client.send(client.build_request("POST", path, json=body,
                                                              headers={"X-Request-Id": request_id}), stream=True)
        except httpx.HTTPError as exc:
            self._track(name, -1)
            raise ApiError(503, f"the vLLM backend is unreachable: {type(exc).__name__}", "server_error",
                           "backend_unavailable") from None
        if not body.get("stream") or response.status_code != 200:
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
                self._track(name, -1)
            return self._json_reply(response.status_code, raw, name, served)
        meta: dict[str, Any] = {}
        return Reply(200, chunks=self._pass_through(response, name, served, meta), meta=meta)

    def _json_reply(self, status: int, raw: bytes, name: str, served: str) -> Reply:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            raise ApiError(502, f"vLLM answered {status} with a non-JSON body", "server_error", "bad_gateway") from None
        if status >= 400:
            err = data.get("error") if isinstance(data.get("error"), dict) else data
            raise ApiError(status, str(err.get("message") or data)[:500], err.get("type") or "invalid_request_error",
                           err.get("code") if isinstance(err.get("code"), str) else None)
        data["model"] = served
        usage = data.get("usage") or {}
        choice = (data.get("choices") or [{}])[0]
        text = choice.get("text") if "text" in choice else (choice.get("message") or {}).get("content")
        return Reply(status, data, meta={"response_id": data.get("id"), "prompt_tokens": usage.get("prompt_tokens"),
                                         "completion_tokens": usage.get("completion_tokens"),
                                         "finish_reason": choice.get("finish_reason"), "text": text})

    async def _pass_through(self, response: Any, name: str, served: str, reply_meta: dict[str, Any]
                            ) -> AsyncIterator[bytes]:
        """Forward SSE bytes as they arrive; parse a copy line by line only for the request log."""
        pieces: list[str] = []
        buffer = b""
        old, new = f'"model":"{name}"'.encode(), f'"model":"{served}"'.encode()
        old_spaced = f'"model": "{name}"'.encode()
        try:
            async for chunk in response.aiter_raw():
                yield chunk.replace(old, new).replace(old_spaced, new)
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    _parse_sse_line(line, reply_meta, pieces)
        finally:
            await response.aclose()
            self._track(name, -1)
            reply_meta["text"] = "".join(pieces)


def _parse_sse_line(line: bytes, meta: dict[str, Any], pieces: list[str]) -> None:
    line = line.strip()
    if not line.startswith(b"data:") or line == b"data: [DONE]":
        return
    try:
        data = json.loads(line[5:])
    except json.JSONDecodeError:
        return
    meta.setdefault("response_id", data.get("id"))
    for choice in data.get("choices") or []:
        piece = choice.get("text") if "text" in choice else (choice.get("delta") or {}).get("content")
        if piece:
            pieces.append(piece)
        if choice.get("finish_reason"):
            meta["finish_reason"] = choice["finish_reason"]
    if data.get("usage"):
        meta.update(prompt_tokens=data["usage"].get("prompt_tokens"),
                    completion_tokens=data["usage"].get("completion_tokens"))
