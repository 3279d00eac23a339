"""The vLLM backend: vLLM's OpenAI server as a supervised child process on a loopback port, run by
the vLLM interpreter (serving/vllm_env.py); the gateway proxies to it, streaming bytes unbuffered;
adapters are LoRA modules switched at runtime."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from llmops_cli.errors import BackendUnavailable
from llmops_cli.serving.backends.base import ApiError, Backend, ModelSpec, Reply
from llmops_cli.serving.spec import ServeSpec
from llmops_cli.utils import atomic_write_text

# vLLM accepts only these LoRA ranks for --max-lora-rank.
VLLM_LORA_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)
OOM_MARKERS = ("CUDA out of memory", "OutOfMemoryError", "No available memory for the cache blocks",
               "insufficient memory", "larger than the available KV cache memory")


# What vLLM's server answers while its engine process is dead (it exits right after).
ENGINE_DEAD_MARKERS = ("EngineCore encountered an issue", "EngineDeadError", "Engine loop is not running")



def vllm_pgid_file(log_path: str | Path, gateway_pid: int) -> Path:
    """Where a gateway records the process group of its vLLM child (next to vllm.log; one file per
    gateway, since a new server starts before the old one stops)."""
    return Path(log_path).with_name(f"vllm-{gateway_pid}.pgid")


def _signal_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


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


def vllm_command(spec: ServeSpec | dict[str, Any], model: ModelSpec, port: int) -> list[str]:
    """The argv that launches vLLM's OpenAI server for `model` (documented CLI flags only)."""
    spec = ServeSpec.of(spec)
    from llmops_cli.serving.vllm_env import engine_args, resolve_dtype

    v, base = spec.vllm, spec.base
    weights = base.base if model.is_adapter else model.model_dir
    dtype = resolve_dtype(v.dtype, base.dtype, weights)
    cmd = [v.python or sys.executable, "-m", "vllm.entrypoints.openai.api_server",
           "--host", "127.0.0.1", "--port", str(port), "--model", weights,
           "--served-model-name", spec.model_name, *engine_args(v.model_dump(), v.device or "cuda", dtype)]
    if model.is_adapter:
        cmd += ["--enable-lora", "--lora-modules", f"{lora_name(model)}={model.model_dir}",
                "--max-lora-rank", str(vllm_lora_rank(model.lora_rank, v.max_lora_rank)),
                "--max-loras", str(v.max_loras)]
        if base.revision:
            cmd += ["--revision", base.revision]
        # vLLM renders with the base's tokenizer; the tuned adapter carries the template it was trained
        # with (tune saves it, chosen once in prep), which may differ from the base's or be its only one.
        template = Path(model.model_dir) / "chat_template.jinja"
        if template.is_file():
            cmd += ["--chat-template", str(template)]
    if base.trust_remote_code:
        cmd.append("--trust-remote-code")
    cmd.append("--enable-prefix-caching" if v.enable_prefix_caching else "--no-enable-prefix-caching")
    if v.tool_call_parser:  # tool_choice none / named / required work without it; auto needs a parser
        cmd += ["--enable-auto-tool-choice", "--tool-call-parser", v.tool_call_parser]
    return cmd + list(v.extra_args)


class VllmBackend(Backend):
    """vLLM's OpenAI server as a child process on loopback; the gateway proxies to it.

    The child runs in a process group of its own, with its engine core: the gateway signals that
    group on shutdown and before a restart, and `serve stop` signals it too (its id is in
    serve/vllm-<gateway pid>.pgid), so no engine outlives the server. (PR_SET_PDEATHSIG is not used: it fires
    when the *thread* that started the child exits, not the process.)

    Once the first start has succeeded, a supervisor thread watches the child: when it exits (vLLM's
    server exits when its engine dies) or stops answering /health, requests get 503 with
    Retry-After while it is restarted with backoff, serving the version that was current, up to
    serve.vllm.max_restarts times. A failure at the first start is not retried: it is a
    configuration problem that a restart would only repeat.
    """

    name = "vllm"
    HEALTH_EVERY_S = 5.0
    HEALTH_FAILURES = 3  # consecutive /health failures of a live child before it is restarted

    def __init__(self, spec: ServeSpec | dict[str, Any]) -> None:
        super().__init__(spec)
        self.port = self.spec.vllm_port
        self.url = f"http://127.0.0.1:{self.port}"
        self.device = self.spec.vllm.device or "cuda"
        self.log_path = Path(self.spec.vllm_log_path)
        self.proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._client: Any = None
        self.current = lora_name(self.model) if self.model.is_adapter else self.spec.model_name
        self._inflight: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._start_seconds = 60.0  # how long the last successful start took (for Retry-After)
        self._back_at: float | None = None  # monotonic time a restart is expected to be ready
        self._supervisor: threading.Thread | None = None
        self._log_offset = 0  # where the current child's output starts in the log
        self._client_for: Any = None  # the child process the pooled HTTP client talks to

    @property
    def state(self) -> str:
        if self.error:
            return "failed"
        if self.proc is None or self.proc.poll() is not None:
            return "restarting" if self._supervised else "loading"
        return "ready" if self._ready else ("restarting" if self._supervised else "loading")

    @property
    def _supervised(self) -> bool:
        return self._supervisor is not None

    def retry_after_s(self) -> int:
        """Seconds a client should wait before retrying while the engine restarts."""
        if self._back_at is None:
            return max(1, int(self._start_seconds))
        return max(1, int(self._back_at - time.monotonic()) + 1)

    def command(self) -> list[str]:
        return vllm_command(self.spec, self.model, self.port)

    def _launch(self) -> None:
        from llmops_cli.serving.lifecycle import check_port_free
        from llmops_cli.serving.vllm_env import engine_env

        check_port_free("127.0.0.1", self.port, what="the vLLM port (serve.vllm.port)")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            log.write(f"\n==== llmops: starting vLLM at {time.strftime('%Y-%m-%dT%H:%M:%S')} ====\n".encode())
            log.flush()
            self._log_offset = log.tell()
            # A session (and process group) of its own, so that the engine core it forks can be
            # signalled with it; its id is written next to the log for `serve stop` (lifecycle.py),
            # which reaches it even if this gateway was killed first.
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True,
                                         env=engine_env(self.spec.vllm.model_dump(), self.device))
        atomic_write_text(vllm_pgid_file(self.log_path, os.getpid()), f"{self.proc.pid}\n")

    def start(self) -> None:
        started = time.monotonic()
        self._launch()
        try:
            self.wait_ready(self.spec.ready_timeout_s)
        except BackendUnavailable as exc:
            self.error, self.hint = self.error or exc.message, exc.hint
            self.stop()
            raise
        self._start_seconds = time.monotonic() - started
        self._supervisor = threading.Thread(target=self._supervise, name="vllm-supervisor", daemon=True)
        self._supervisor.start()

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._stopping.is_set():
                raise BackendUnavailable("the server is stopping")
            if self.proc is None or self.proc.poll() is not None:
                self._mark_exited()
                raise BackendUnavailable(self.error or "vLLM exited", hint=self.hint)
            if self._healthy(timeout_s=2):
                self._ready = True
                return
            time.sleep(0.5)
        self.error = f"vLLM was not healthy after {timeout_s:.0f}s"
        raise BackendUnavailable(self.error, hint=f"raise serve.ready_timeout_s; log: {self.log_path}")

    # -- the supervisor ----------------------------------------------------------------------------
    def _supervise(self) -> None:
        failures = 0  # consecutive failed restarts, for the backoff
        unhealthy = 0
        next_health = time.monotonic() + self.HEALTH_EVERY_S
        while not self._stopping.wait(0.5):
            proc = self.proc
            if proc is not None and proc.poll() is None:
                if time.monotonic() >= next_health:
                    next_health = time.monotonic() + self.HEALTH_EVERY_S
                    healthy = self._healthy()
                    unhealthy = 0 if healthy else unhealthy + 1
                    self._ready = self._ready or healthy  # e.g. after an engine error it survived
                    if unhealthy >= self.HEALTH_FAILURES:
                        self._say(f"vLLM (pid {proc.pid}) failed {unhealthy} health checks: restarting it")
                        self._ready = False
                        self._terminate(proc)
                continue
            if self._stopping.is_set():
                return
            self._ready = False
            unhealthy = 0
            if proc is not None:
                self._terminate(proc, grace_s=0)  # its engine core may have outlived it
            reason = self._exit_reason()
            v = self.spec.vllm
            if len(self.restarts) >= v.max_restarts:
                self.hint = (f"it was restarted {len(self.restarts)} times (serve.vllm.max_restarts); "
                             f"see {self.log_path}")
                self.error = f"{reason}; not restarted again"
                self._say(f"{self.error} ({self.hint})")
                return
            backoff = min(v.restart_backoff_s * 2 ** failures, 60.0)
            self._back_at = time.monotonic() + backoff + self._start_seconds
            self._say(f"{reason}; restarting in {backoff:.0f}s (restart {len(self.restarts) + 1} of "
                      f"{v.max_restarts})")
            if self._stopping.wait(backoff):
                return
            failures = 0 if self._restart(reason) else failures + 1
            next_health = time.monotonic() + self.HEALTH_EVERY_S

    def _restart(self, reason: str) -> bool:
        started = time.monotonic()
        event: dict[str, Any] = {"at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "reason": reason,
                                 "model_ref": self.model.model_ref}
        try:
            self._launch()
            self.wait_ready(self.spec.ready_timeout_s)
            event.update(ok=True, seconds=round(time.monotonic() - started, 1))
            self._start_seconds = time.monotonic() - started
            self._say(f"vLLM is back after {event['seconds']}s, serving {self.model.model_ref}")
        except BackendUnavailable as exc:
            self.error = None  # wait_ready records why; the supervisor decides whether to give up
            event.update(ok=False, error=exc.message)
            self._say(f"restart failed: {exc.message}")
            if self.proc is not None:
                self._terminate(self.proc)
        self._back_at = None
        self.restarts.append(event)
        if self.on_restart is not None:
            self.on_restart(event)
        return bool(event["ok"])

    def _healthy(self, timeout_s: float = 10) -> bool:
        import httpx

        try:
            return httpx.get(f"{self.url}/health", timeout=timeout_s).status_code == 200
        except httpx.HTTPError:
            return False

    def _say(self, message: str) -> None:
        # The gateway's stderr is serve/server.log for a detached server.
        sys.stderr.write(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} llmops vllm supervisor: {message}\n")
        sys.stderr.flush()

    # -- exits and their causes ----------------------------------------------------------------------
    def _log_text(self) -> str:
        """The current child's output (its last 200 kB), where the causes of its exit are."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(self._log_offset, fh.seek(0, os.SEEK_END) - 200_000))
                return fh.read().decode("utf-8", errors="replace")
        except OSError:
            return ""

    def _log_tail(self, lines: int = 40) -> str:
        return "\n".join(self._log_text().splitlines()[-lines:])

    def _mark_exited(self) -> None:
        # The hint first: /ready (another thread) reports a failure as soon as `error` is set.
        reason = self._exit_reason()
        self.hint = self._hint(reason)
        self.error = reason

    def _exit_reason(self) -> str:
        from llmops_cli.serving.vllm_env import root_cause

        code = None if self.proc is None else self.proc.returncode
        text = self._log_text()
        if any(marker in text for marker in OOM_MARKERS):
            where = "GPU" if self.device == "cuda" else "CPU"
            return f"vLLM ran out of {where} memory at start (exit code {code})"
        cause = root_cause(text)
        return f"vLLM exited with code {code}" + (f": {cause}" if cause else "")

    def _hint(self, reason: str) -> str:
        if "out of GPU memory" in reason:
            return ("lower serve.vllm.gpu_memory_utilization or serve.vllm.max_model_len, or raise "
                    f"serve.vllm.tensor_parallel_size; log: {self.log_path}")
        if "out of CPU memory" in reason or "memory utilization" in reason:
            return (f"lower serve.vllm.cpu_kvcache_gib or serve.vllm.max_model_len; log: {self.log_path}")
        return f"last lines of {self.log_path}:\n    " + self._log_tail().replace("\n", "\n    ")

    def _terminate(self, proc: subprocess.Popen[bytes], grace_s: float = 20) -> None:
        """SIGTERM to the child's whole process group (its engine core and helpers too), SIGKILL to
        whatever is left after the grace period. Also sweeps the group of a child that already died:
        a SIGKILLed vLLM server leaves its engine core running otherwise."""
        if proc.poll() is None:
            _signal_group(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=grace_s)
            except subprocess.TimeoutExpired:
                pass
        _signal_group(proc.pid, signal.SIGKILL)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def stop(self) -> None:
        self._stopping.set()
        self._ready = False
        proc, self.proc = self.proc, None
        if proc is not None:
            self._terminate(proc)
            vllm_pgid_file(self.log_path, os.getpid()).unlink(missing_ok=True)

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def reload(self, model: ModelSpec) -> None:
        import httpx

        if self.state != "ready":
            raise BackendUnavailable(f"the vLLM engine is {self.state}: {self.error or 'try again shortly'}",
                                     hint="the previous version is still the one that will be served")
        if not (model.is_adapter and self.model.is_adapter):
            raise BackendUnavailable(
                f"vLLM switches LoRA adapters at runtime only; {model.model_ref} or the served model is a full model",
                hint="restart instead: `llmops serve --detach --set serve.source=...`")
        started_rank = vllm_lora_rank(self.model.lora_rank, self.spec.vllm.max_lora_rank)
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
        import asyncio

        import httpx

        if self._client is not None and self._client_for is not self.proc:
            # A restarted child: the pooled keep-alive connections point at the dead one.
            asyncio.get_running_loop().create_task(self._client.aclose())
            self._client = None
        if self._client is None:
            self._client_for = self.proc
            self._client = httpx.AsyncClient(base_url=self.url, timeout=httpx.Timeout(None, connect=5),
                                             limits=httpx.Limits(max_connections=1024, max_keepalive_connections=256))
        return self._client

    def _track(self, name: str, delta: int) -> None:
        with self._lock:
            self._inflight[name] = self._inflight.get(name, 0) + delta

    async def handle(self, kind: str, body: dict[str, Any], request_id: str) -> Reply:
        import httpx

        state = self.state
        if state != "ready":
            raise self._unavailable(self.error or ("restarting after its engine died" if state == "restarting"
                                                   else "still starting"))
        name = self.current
        served = self.spec.model_name
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
            raise self._unavailable(f"unreachable ({type(exc).__name__})") from None
        if not body.get("stream") or response.status_code != 200:
            try:
                raw = await response.aread()
            finally:
                await response.aclose()
                self._track(name, -1)
            return self._json_reply(response.status_code, raw, name, served)
        meta: dict[str, Any] = {}
        return Reply(200, chunks=self._pass_through(response, name, served, meta), meta=meta)

    def _unavailable(self, why: str) -> ApiError:
        headers = {} if self.error else {"Retry-After": str(self.retry_after_s())}
        return ApiError(503, f"the vLLM backend is not available: {why}", "server_error", "backend_unavailable",
                        headers=headers)

    def _json_reply(self, status: int, raw: bytes, name: str, served: str) -> Reply:
        try:
            data = json.loads(raw)
        except json.JSONDecodeError:
            raise ApiError(502, f"vLLM answered {status} with a non-JSON body", "server_error", "bad_gateway") from None
        if status >= 400:
            err = data.get("error") if isinstance(data.get("error"), dict) else data
            if status >= 500 and any(m in str(err.get("message")) for m in ENGINE_DEAD_MARKERS):
                self._ready = False  # the supervisor restarts it; until then clients are told to retry
                raise self._unavailable("its engine died; it is being restarted")
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
