"""The gateway: one OpenAI-compatible front door over any backend.

It owns what every backend needs and vLLM alone does not give: API keys (constant-time compare),
request validation with OpenAI-style 4xx errors, a JSONL request log for `monitor` (PII-redacted,
sampled, size-bounded with rotation), POST /v1/feedback, Prometheus /metrics, /health and /ready,
and an authenticated /admin/reload that swaps the served model without failing requests in flight.

Run as `python -m llmops_cli.serving.app SPEC.json` (that is what `llmops serve --detach` starts).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import os
import random
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops_cli.serving.backends import ApiError, Backend, ModelSpec, Reply
from llmops_cli.serving.openai_schema import ChatRequest, CompletionRequest
from llmops_cli.serving.sampling import sampling_defaults
from llmops_cli.serving.spec import ServeSpec

MAX_LOGGED_CHARS = 4000  # a logged prompt or response is cut here: the log is for monitoring, not archiving
# Metric labels name these routes; any other path is counted as "other", so that requests for made-up
# paths cannot grow /metrics (and the server's memory) without bound.
ROUTES = frozenset({"/v1/chat/completions", "/v1/completions", "/v1/models", "/v1/feedback", "/admin/reload"})
# (GET /v1/models/{id} is counted as "other" too: its ids come from clients.)


class Admission:
    """At most `limit` generation requests in flight (streams until their last byte); the next get 429
    with Retry-After rather than an unbounded queue. One event loop: no lock needed."""

    def __init__(self, limit: int) -> None:
        self.limit, self.active = limit, 0

    def enter(self) -> None:
        if self.active >= self.limit:
            raise ApiError(429, f"the server is at its limit of {self.limit} concurrent requests; retry shortly",
                           "rate_limit_error", "too_many_requests", headers={"Retry-After": "1"})
        self.active += 1

    def leave(self) -> None:
        self.active -= 1


class FeedbackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    response_id: str = Field(min_length=1, max_length=200)
    rating: int = Field(ge=1, le=5)
    comment: str | None = Field(None, max_length=10_000)
    correction: str | None = Field(None, max_length=100_000)


class ReloadRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")
    model_dir: str
    model_ref: str
    model_name: str
    lora_rank: int | None = None
    aliases: list[str] = Field(default_factory=list)


class JsonlLog:
    """Append-only JSONL with size-bounded rotation (<file>.1 is the newest rotated file).

    One lock keeps lines whole under concurrency; the file stays open between writes and every line
    is flushed, so a reader (monitor) never sees half a line except the one being written.
    """

    def __init__(self, path: str, max_bytes: int = 50_000_000, backups: int = 5) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_bytes, self.backups = max_bytes, backups
        self._lock = threading.Lock()
        self._fh: Any = None
        self._size = 0

    def write(self, record: dict[str, Any]) -> None:
        data = (json.dumps(record, ensure_ascii=False, default=str) + "\n").encode("utf-8")
        with self._lock:
            if self._fh is None:
                self._open()
            if self._size and self._size + len(data) > self.max_bytes:
                self._rotate()
            self._fh.write(data)
            self._fh.flush()
            self._size += len(data)

    def _open(self) -> None:
        self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open across writes, closed by close()/rotation
        self._size = self._fh.tell()

    def _rotate(self) -> None:
        self._fh.close()
        if self.backups == 0:
            self.path.unlink(missing_ok=True)
        else:
            Path(f"{self.path}.{self.backups}").unlink(missing_ok=True)
            for i in range(self.backups - 1, 0, -1):
                older = Path(f"{self.path}.{i}")
                if older.exists():
                    os.replace(older, f"{self.path}.{i + 1}")
            os.replace(self.path, f"{self.path}.1")
        self._open()

    def close(self) -> None:
        with self._lock:
            if self._fh is not None:
                self._fh.close()
                self._fh = None


class Metrics:
    """Prometheus metrics in a registry of their own (no process-global state)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Histogram

        self.registry = CollectorRegistry()
        self.requests = Counter("llmops_requests", "Requests to /v1 routes.", ["path", "status", "model"],
                                registry=self.registry)
        self.latency = Histogram("llmops_request_latency_seconds", "Request latency (to the last byte).",
                                 ["path", "model"],
                                 registry=self.registry,
                                 buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120))
        self.ttft = Histogram("llmops_time_to_first_token_seconds", "Time to first streamed byte.", ["path", "model"],
                              registry=self.registry, buckets=(.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10))
        self.tokens = Counter("llmops_tokens", "Tokens processed.", ["direction", "model"], registry=self.registry)
        self.errors = Counter("llmops_errors", "Error answers by code.", ["code"], registry=self.registry)
        self.feedback = Counter("llmops_feedback", "Feedback received by rating.", ["rating", "model"],
                                registry=self.registry)
        self.restarts = Counter("llmops_backend_restarts", "Restarts of a backend engine that died, by outcome.",
                                ["backend", "outcome"], registry=self.registry)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)


def load_api_keys(env_name: str | None, keys_file: str | None) -> list[str]:
    """Keys from the environment variable (comma-separated) and the file (one per line, # comments)."""
    keys = [k.strip() for k in os.environ.get(env_name or "", "").split(",") if k.strip()]
    if keys_file:
        for line in Path(keys_file).read_text(encoding="utf-8").splitlines():
            line = line.split("#", 1)[0].strip()
            if line:
                keys.append(line)
    return keys


def key_matches(given: str, keys: list[str]) -> bool:
    """Constant-time against every key: no early exit that would tell how many keys were tried."""
    found = False
    for key in keys:
        found |= hmac.compare_digest(given.encode(), key.encode())
    return found


def create_app(spec: ServeSpec | dict[str, Any], backend: Backend | None = None) -> FastAPI:
    """Build the gateway for a serve spec (see serving/lifecycle.py:build_spec for its fields)."""
    from llmops_cli.prep.clean import redact_pii

    spec = ServeSpec.of(spec)
    if backend is None:
        backend = make_backend(spec)
    keys = [k for k in spec.api_keys if k]
    admin_token = spec.admin_token
    log = JsonlLog(spec.request_log, spec.log_max_bytes, spec.log_backups)
    feedback_log = JsonlLog(spec.feedback_path, spec.log_max_bytes, spec.log_backups)
    log_content, redact_kinds, sample_rate = spec.log_content, spec.log_redact, spec.log_sample_rate
    max_body, max_new_tokens, body_timeout = spec.max_body_bytes, spec.max_new_tokens, spec.body_timeout_s
    admission = Admission(spec.max_concurrent_requests)
    rng = random.Random()
    metrics = Metrics()
    served = spec.model_name
    base_model = spec.base.base
    current = {"ref": spec.model_ref or served,
               "aliases": {served, spec.model_ref or served, *spec.model_aliases},
               "sampling": sampling_defaults(spec.model_dir, base_model, revision=spec.base.revision)}
    backend.on_restart = lambda event: metrics.restarts.labels(
            backend.name, "ok" if event.get("ok") else "failed").inc()

    def redact(text: Any) -> str | None:
        if not isinstance(text, str):
            return None
        return redact_pii(text[:MAX_LOGGED_CHARS], redact_kinds)

    def record(request: Request, rid: str, status: int, started: float, meta: dict[str, Any],
               error: str | None, code: str | None = None, ttft_ms: float | None = None,
               prompt: str | None = None) -> None:
        latency = time.perf_counter() - started
        path = request.scope["path"]  # cheaper than building request.url
        label = path if path in ROUTES else "other"
        ref = meta.get("model") or current["ref"]
        metrics.requests.labels(label, str(status), ref).inc()
        metrics.latency.labels(label, ref).observe(latency)
        if ttft_ms is not None:
            metrics.ttft.labels(label, ref).observe(ttft_ms / 1000)
        if meta.get("prompt_tokens"):
            metrics.tokens.labels("in", ref).inc(meta["prompt_tokens"])
        if meta.get("completion_tokens"):
            metrics.tokens.labels("out", ref).inc(meta["completion_tokens"])
        if status >= 400 or error:
            metrics.errors.labels(code or str(status)).inc()
        elif sample_rate < 1 and rng.random() >= sample_rate:
            return  # sampled out: successful requests only; errors are always logged
        entry = {
            "ts": time.time(), "request_id": rid, "response_id": meta.get("response_id") if status < 400 else None,
            "method": request.method, "path": path[:200], "status": status, "latency_ms": round(latency * 1000, 2),
            "ttft_ms": ttft_ms, "model": ref, "backend": backend.name,
            "prompt_tokens": meta.get("prompt_tokens"), "completion_tokens": meta.get("completion_tokens"),
            "finish_reason": meta.get("finish_reason"), "error": error,
        }
        if log_content and path in ("/v1/chat/completions", "/v1/completions"):
            entry["prompt"] = redact(prompt)
            entry["response"] = redact(meta.get("text"))
        log.write(entry)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load in the background so that /health answers at once and /ready reports progress.
        threading.Thread(target=_safe_start, args=(backend,), daemon=True).start()
        try:
            yield
        finally:
            await backend.aclose()
            backend.stop()
            log.close()
            feedback_log.close()

    app = FastAPI(title="llmops gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.backend = backend
    app.state.current = current

    def authorize(request: Request) -> None:
        if not keys:
            return
        given = request.headers.get("authorization", "")
        given = given[7:].strip() if given[:7].lower() == "bearer " else ""
        if not key_matches(given, keys):
            raise ApiError(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                           "authentication_error", "invalid_api_key")

    async def read_json(request: Request) -> Any:
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > max_body:
            raise ApiError(413, f"request body is larger than {max_body} bytes", code="request_too_large")
        try:
            # A client that stops sending mid-body must not hold a connection for ever.
            raw = await asyncio.wait_for(request.body(), timeout=body_timeout)
        except TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {body_timeout:g}s",
                           code="request_timeout") from None
        if len(raw) > max_body:
            raise ApiError(413, f"request body is larger than {max_body} bytes", code="request_too_large")
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ApiError(400, f"request body is not valid JSON: {exc}", code="invalid_json") from None
        except RecursionError:
            raise ApiError(400, "request body is nested too deeply", code="invalid_json") from None
        try:
            # A lone UTF-16 surrogate ("\ud800") is valid JSON but no text: the tokenizer and the log
            # writer would fail on it later, with a 500.
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise ApiError(400, "request body contains invalid Unicode (a lone surrogate)",
                           code="invalid_unicode") from None
        except RecursionError:
            raise ApiError(400, "request body is nested too deeply", code="invalid_json") from None
        return data

    def parse(model: type[BaseModel], data: Any) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ApiError(400, f"{where}: {first['msg']}", code="invalid_value") from None

    async def validated(request: Request, kind: str) -> dict[str, Any]:
        """The request as the backend gets it: parsed strictly, model checked, unsupported parameters
        refused, and unset sampling parameters and budget filled by the one rule (serving/sampling.py)."""
        body = parse(ChatRequest if kind == "chat" else CompletionRequest, await read_json(request))
        if body.model not in current["aliases"]:
            raise ApiError(404, f"model {body.model!r} does not exist; this server serves "
                                f"{sorted(current['aliases'])}", code="model_not_found")
        refused = backend.refusal(body.model_dump(exclude_none=True, exclude_defaults=True))
        if refused:
            raise ApiError(400, f"{refused} is not supported by the {backend.name} backend (it would be "
                                "ignored); leave it out, or serve with serve.backend=vllm",
                           code="unsupported_parameter", param=refused)
        payload = current["sampling"].apply(body.model_dump(exclude_none=True))
        if not (payload.get("max_tokens") or payload.get("max_completion_tokens")):
            payload["max_tokens"] = max_new_tokens
        return payload

    async def generate(request: Request, kind: str) -> Response:
        started = time.perf_counter()
        rid = f"req-{uuid.uuid4().hex[:16]}"
        prompt: str | None = None
        admitted = streaming = False
        try:
            authorize(request)
            admission.enter()  # 429 past serve.max_concurrent_requests
            admitted = True
            payload = await validated(request, kind)
            prompt = _logged_prompt(kind, payload)
            ref = current["ref"]  # the version this request is answered by, even if a reload happens meanwhile
            reply = await _unless_disconnected(request, backend.handle(kind, payload, rid))
            reply.meta.setdefault("model", ref)
            if reply.chunks is None:
                record(request, rid, reply.status, started, reply.meta, None, prompt=prompt)
                return JSONResponse(reply.body, status_code=reply.status)
            streaming = True  # the stream releases its admission when it ends
            return StreamingResponse(_logged_stream(reply, request, rid, started, prompt),
                                     media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        except ApiError as exc:
            record(request, rid, exc.status, started, {}, exc.message, exc.code, prompt=prompt)
            return _error(exc)
        except Exception as exc:  # noqa: BLE001 - a bug must still answer in OpenAI shape and be logged
            record(request, rid, 500, started, {}, f"{type(exc).__name__}: {exc}", "server_error", prompt=prompt)
            return _error(ApiError(500, "internal error", "server_error"))
        finally:
            if admitted and not streaming:
                admission.leave()

    async def _logged_stream(reply: Reply, request: Request, rid: str, started: float,
                             prompt: str | None) -> AsyncIterator[bytes]:
        ttft: float | None = None
        error: str | None = None
        try:
            async for chunk in reply.chunks:  # type: ignore[union-attr]
                if ttft is None:
                    ttft = round((time.perf_counter() - started) * 1000, 2)
                yield chunk
        except Exception as exc:  # noqa: BLE001 - the client sees the stream end; the log says why
            error = f"{type(exc).__name__}: {exc}"
        finally:
            admission.leave()
            error = error or reply.meta.get("error")
            if error is None and reply.meta.get("finish_reason") is None:
                error = "client disconnected"
            record(request, rid, reply.status, started, reply.meta, error, "stream_error" if error else None,
                   ttft_ms=ttft, prompt=prompt)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        state = backend.state
        info = {"backend": backend.name, "sampling_defaults": current["sampling"].to_dict(),
                "restarts": len(backend.restarts), "last_restart": backend.restarts[-1] if backend.restarts else None}
        if state == "ready":
            return JSONResponse({"status": "ready", "model": served, "model_ref": current["ref"], **info})
        headers = {"Retry-After": str(backend.retry_after_s())} if state == "restarting" else None
        return JSONResponse({"status": state, "error": backend.error, "hint": backend.hint, **info},
                            status_code=503, headers=headers)

    @app.get("/metrics")
    def metrics_route() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST

        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    def model_card() -> dict[str, Any]:
        return {"id": served, "object": "model", "created": spec.created,
                "owned_by": "llmops", "root": current["ref"]}

    @app.get("/v1/models")
    def models(request: Request) -> JSONResponse:
        started, rid = time.perf_counter(), f"req-{uuid.uuid4().hex[:16]}"
        try:
            authorize(request)
        except ApiError as exc:
            record(request, rid, exc.status, started, {}, exc.message, exc.code)
            return _error(exc)
        record(request, rid, 200, started, {}, None)
        return JSONResponse({"object": "list", "data": [model_card()]})

    @app.get("/v1/models/{model_id:path}")
    def model(request: Request, model_id: str) -> JSONResponse:
        started, rid = time.perf_counter(), f"req-{uuid.uuid4().hex[:16]}"
        try:
            authorize(request)
            if model_id not in current["aliases"]:
                raise ApiError(404, f"model {model_id[:200]!r} does not exist", code="model_not_found")
        except ApiError as exc:
            record(request, rid, exc.status, started, {}, exc.message, exc.code)
            return _error(exc)
        record(request, rid, 200, started, {}, None)
        return JSONResponse({**model_card(), "id": model_id})

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> Response:
        return await generate(request, "chat")

    @app.post("/v1/completions")
    async def completions(request: Request) -> Response:
        return await generate(request, "completion")

    @app.post("/v1/feedback")
    async def feedback(request: Request) -> Response:
        started, rid = time.perf_counter(), f"req-{uuid.uuid4().hex[:16]}"
        try:
            authorize(request)
            body = parse(FeedbackRequest, await read_json(request))
        except ApiError as exc:
            record(request, rid, exc.status, started, {}, exc.message, exc.code)
            return _error(exc)
        feedback_log.write({"ts": time.time(), "response_id": body.response_id, "rating": body.rating,
                            "comment": redact(body.comment), "correction": redact(body.correction),
                            "model": current["ref"]})
        metrics.feedback.labels(str(body.rating), current["ref"]).inc()
        record(request, rid, 200, started, {}, None)
        return JSONResponse({"object": "feedback", "response_id": body.response_id, "status": "recorded"})

    @app.post("/admin/reload")
    async def reload(request: Request) -> Response:
        from starlette.concurrency import run_in_threadpool

        from llmops_cli.errors import LlmopsError

        given = request.headers.get("x-llmops-admin-token", "")
        if not admin_token or not key_matches(given, [admin_token]):
            return _error(ApiError(403, "reload needs the admin token of this server", "authentication_error",
                                   "forbidden"))
        try:
            body = parse(ReloadRequest, await read_json(request))
        except ApiError as exc:
            return _error(exc)
        model = ModelSpec.of(body.model_dir, body.model_ref, body.model_name, body.lora_rank)
        try:
            await run_in_threadpool(backend.reload, model)
        except LlmopsError as exc:
            return _error(ApiError(409, str(exc), "server_error", "reload_failed"))
        # Runs on the event loop, as do the readers: a request sees the old identity or the new one.
        current.update(ref=model.model_ref, aliases={served, model.model_ref, *body.aliases},
                       sampling=sampling_defaults(model.model_dir, base_model))
        return JSONResponse({"status": "reloaded", "model": served, "model_ref": model.model_ref,
                             "backend": backend.name})

    @app.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
    async def unknown(request: Request, rest: str) -> Response:
        started, rid = time.perf_counter(), f"req-{uuid.uuid4().hex[:16]}"
        try:
            authorize(request)  # with keys configured, strangers learn nothing about the routes either
            raise ApiError(404, f"unknown endpoint {request.method} /v1/{rest[:200]}", code="unknown_url")
        except ApiError as exc:
            record(request, rid, exc.status, started, {}, exc.message, exc.code)
            return _error(exc)

    return app


def make_backend(spec: ServeSpec | dict[str, Any]) -> Backend:
    """The backend object named by spec.backend (selection itself happens in lifecycle.select_backend)."""
    from llmops_cli.serving.backends import TransformersBackend, VllmBackend

    spec = ServeSpec.of(spec)
    if spec.backend == "vllm":
        return VllmBackend(spec)
    return TransformersBackend(spec)


def _safe_start(backend: Backend) -> None:
    try:
        backend.start()
    except Exception:  # noqa: BLE001 - the error is kept on the backend and shown by /ready
        import traceback

        traceback.print_exc()


async def _unless_disconnected(request: Request, work: Any) -> Any:
    """Await `work`, cancelling it if the client goes away first: an abandoned request must not keep a
    model busy (ASGI servers do not cancel a handler when its client disconnects)."""
    import asyncio

    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.2)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise ApiError(499, "the client closed the connection before the answer was ready",
                           code="client_disconnected")


def _logged_prompt(kind: str, payload: dict[str, Any]) -> str | None:
    """What the request log keeps as the prompt: the last user message, or the (first) text prompt."""
    if kind == "chat":
        users = [m.get("content") for m in payload["messages"] if m["role"] == "user"]
        return users[-1] if users else payload["messages"][-1].get("content")
    prompt = payload["prompt"]
    if isinstance(prompt, str):
        return prompt
    return prompt[0] if isinstance(prompt[0], str) else None  # token ids are not logged as text


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}},
                        status_code=exc.status, headers=exc.headers or None)


def run_server(spec: ServeSpec) -> None:
    """Serve `spec` in this process until SIGINT/SIGTERM: the one start path of `llmops serve`, in the
    foreground and in the detached process alike (same keys, same uvicorn options)."""
    import uvicorn

    spec = spec.model_copy(update={"api_keys": load_api_keys(spec.api_keys_env, spec.api_keys_file)})
    uvicorn.run(create_app(spec), host=spec.host, port=spec.port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=int(spec.graceful_shutdown_s))


def main() -> None:
    import sys

    run_server(ServeSpec.model_validate_json(Path(sys.argv[1]).read_text(encoding="utf-8")))


if __name__ == "__main__":
    main()
