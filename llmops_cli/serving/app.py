"""The HTTP server: OpenAI-compatible routes, API keys, JSONL request log, health and readiness.

Run as `python -m llmops_cli.serving.app SPEC.json` (that is what `llmops serve` starts).
"""

from __future__ import annotations

import hmac
import json
import threading
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops_cli.serving.engine import TransformersEngine, now


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: str
    content: str


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    stop: str | list[str] | None = None
    stream: bool = False


class CompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: str
    prompt: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float = Field(0.0, ge=0, le=2)
    stop: str | list[str] | None = None
    stream: bool = False


class ApiError(Exception):
    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None):
        self.status, self.message, self.kind, self.code = status, message, kind, code


class RequestLog:
    """Append-only JSONL log, one line per request; the lock keeps lines whole under concurrency."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    def write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record, ensure_ascii=False) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)


def create_app(spec: dict[str, Any], engine: TransformersEngine | None = None) -> FastAPI:
    """Build the app for a serve spec (see serving/lifecycle.py for its fields)."""
    engine = engine or TransformersEngine(spec["base"], spec["model_dir"])
    served = spec["model_name"]
    aliases = {served, *spec.get("model_aliases", [])}
    keys = [k for k in spec.get("api_keys", []) if k]
    log = RequestLog(spec["request_log"])
    ref = spec.get("model_ref", served)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load in the background so that /health answers at once and /ready reports progress.
        threading.Thread(target=_safe_load, args=(engine,), daemon=True).start()
        yield

    app = FastAPI(title="llmops", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.engine = engine

    @app.middleware("http")
    async def _observe(request: Request, call_next: Any) -> Any:
        started = time.perf_counter()
        request.state.info = {}
        rid = f"req-{uuid.uuid4().hex[:16]}"
        request.state.request_id = rid
        if keys and request.url.path.startswith("/v1/"):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not any(hmac.compare_digest(given.encode(), k.encode()) for k in keys):
                response = _error(ApiError(401, "invalid or missing API key", "authentication_error",
                                           "invalid_api_key"))
                _log(log, request, rid, response.status_code, started, ref)
                return response
        response = await call_next(request)
        if request.url.path.startswith("/v1/"):
            _log(log, request, rid, response.status_code, started, ref)
        return response

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        request.state.info["error"] = exc.message
        return _error(exc)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        request.state.info["error"] = f"{type(exc).__name__}"
        return _error(ApiError(500, "internal error", "server_error"))

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready")
    def ready() -> JSONResponse:
        if engine.ready:
            return JSONResponse({"status": "ready", "model": served})
        status = "failed" if engine.load_error else "loading"
        return JSONResponse({"status": status, "error": engine.load_error}, status_code=503)

    @app.get("/v1/models")
    def models() -> dict[str, Any]:
        return {"object": "list", "data": [
            {"id": served, "object": "model", "created": spec.get("created", now()), "owned_by": "llmops",
             "root": spec.get("model_ref", served)}
        ]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request) -> JSONResponse:
        body = _parse(ChatRequest, await _json(request))
        _check_model(body.model, aliases, engine)
        prompt = engine.render_chat([m.model_dump() for m in body.messages])
        result = await _run_completion(request, engine, spec, prompt, body.max_completion_tokens or body.max_tokens,
                                       body.temperature, body.stop, body.stream)
        return JSONResponse({
            "id": f"chatcmpl-{request.state.request_id}", "object": "chat.completion", "created": now(),
            "model": served,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": result.text},
                         "finish_reason": result.finish_reason}],
            "usage": _usage(result),
        })

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        body = _parse(CompletionRequest, await _json(request))
        _check_model(body.model, aliases, engine)
        result = await _run_completion(request, engine, spec, body.prompt, body.max_tokens, body.temperature,
                                       body.stop, body.stream)
        return JSONResponse({
            "id": f"cmpl-{request.state.request_id}", "object": "text_completion", "created": now(),
            "model": served,
            "choices": [{"index": 0, "text": result.text, "finish_reason": result.finish_reason}],
            "usage": _usage(result),
        })

    return app


def _safe_load(engine: TransformersEngine) -> None:
    try:
        engine.load()
    except Exception:  # noqa: BLE001 - the error is kept on the engine and shown by /ready
        import traceback

        traceback.print_exc()


async def _json(request: Request) -> Any:
    try:
        return json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}") from None


def _parse(model: type[BaseModel], data: Any) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        raise ApiError(400, f"{where}: {first['msg']}", code="invalid_value") from None


def _check_model(name: str, aliases: set[str], engine: TransformersEngine) -> None:
    if name not in aliases:
        raise ApiError(404, f"model {name!r} does not exist; this server serves {sorted(aliases)}",
                       code="model_not_found")
    if not engine.ready:
        raise ApiError(503, "model is still loading", "server_error", "not_ready")


async def _run_completion(request: Request, engine: TransformersEngine, spec: dict[str, Any], prompt: str,
                          max_tokens: int | None, temperature: float, stop: str | list[str] | None,
                          stream: bool) -> Any:
    from starlette.concurrency import run_in_threadpool

    if stream:
        raise ApiError(400, "stream=true is not supported by the transformers backend yet", code="unsupported")
    prompt_tokens = engine.count_tokens(prompt)
    if prompt_tokens > spec["max_prompt_tokens"]:
        raise ApiError(400, f"prompt has {prompt_tokens} tokens; the limit is {spec['max_prompt_tokens']}",
                       code="context_length_exceeded")
    stops = [stop] if isinstance(stop, str) else (stop or [])
    result = await run_in_threadpool(engine.complete, prompt, max_tokens or spec["max_new_tokens"],
                                     temperature, stops)
    request.state.info.update(prompt_tokens=result.prompt_tokens, completion_tokens=result.completion_tokens)
    return result


def _usage(result: Any) -> dict[str, int]:
    return {"prompt_tokens": result.prompt_tokens, "completion_tokens": result.completion_tokens,
            "total_tokens": result.prompt_tokens + result.completion_tokens}


def _error(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": {"message": exc.message, "type": exc.kind, "code": exc.code}},
                        status_code=exc.status)


def _log(log: RequestLog, request: Request, rid: str, status: int, started: float, model_ref: str) -> None:
    info = getattr(request.state, "info", {})
    log.write({
        "ts": time.time(), "request_id": rid, "method": request.method, "path": request.url.path,
        "status": status, "latency_ms": round((time.perf_counter() - started) * 1000, 2),
        "model": model_ref, **info,
    })


def main() -> None:
    import sys

    import uvicorn

    spec = json.loads(Path(sys.argv[1]).read_text(encoding="utf-8"))
    spec["api_keys"] = _keys_from_env(spec.get("api_keys_env"))
    app = create_app(spec)
    uvicorn.run(app, host=spec["host"], port=spec["port"], log_level="warning", access_log=False)


def _keys_from_env(env_name: str | None) -> list[str]:
    import os

    raw = os.environ.get(env_name or "", "")
    return [k.strip() for k in raw.split(",") if k.strip()]


if __name__ == "__main__":
    main()
