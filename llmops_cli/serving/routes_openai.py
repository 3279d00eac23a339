"""The OpenAI-compatible routes: /v1/models, /v1/chat/completions, /v1/completions, /v1/feedback, and
a catch-all that answers unknown /v1 paths (registered last)."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse

from llmops_cli.serving.auth import authorize
from llmops_cli.serving.backends import ApiError, Reply
from llmops_cli.serving.gateway import (
    FeedbackRequest,
    Gateway,
    error_response,
    gateway_of,
    logged_prompt,
    unless_disconnected,
)

router = APIRouter()


def _request_id() -> str:
    return f"req-{uuid.uuid4().hex[:16]}"


@router.get("/v1/models")
def models(request: Request) -> Response:
    gw, started, rid = gateway_of(request), time.perf_counter(), _request_id()
    try:
        authorize(request, gw.keys)
    except ApiError as exc:
        gw.record(request, rid, exc.status, started, {}, exc.message, exc.code)
        return error_response(exc)
    gw.record(request, rid, 200, started, {}, None)
    return JSONResponse({"object": "list", "data": [gw.model_card()]})


@router.get("/v1/models/{model_id:path}")
def model(request: Request, model_id: str) -> Response:
    gw, started, rid = gateway_of(request), time.perf_counter(), _request_id()
    try:
        authorize(request, gw.keys)
        if model_id not in gw.aliases:
            raise ApiError(404, f"model {model_id[:200]!r} does not exist", code="model_not_found")
    except ApiError as exc:
        gw.record(request, rid, exc.status, started, {}, exc.message, exc.code)
        return error_response(exc)
    gw.record(request, rid, 200, started, {}, None)
    return JSONResponse({**gw.model_card(), "id": model_id})


@router.post("/v1/chat/completions")
async def chat(request: Request) -> Response:
    return await _generate(gateway_of(request), request, "chat")


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await _generate(gateway_of(request), request, "completion")


async def _generate(gw: Gateway, request: Request, kind: str) -> Response:
    started, rid = time.perf_counter(), _request_id()
    prompt: str | None = None
    admitted = streaming = False
    try:
        authorize(request, gw.keys)
        gw.admission.enter()  # 429 past serve.max_concurrent_requests
        admitted = True
        payload = await gw.validated(request, kind)
        prompt = logged_prompt(kind, payload)
        ref = gw.ref  # the version this request is answered by, even if a reload happens meanwhile
        reply = await unless_disconnected(request, gw.backend.handle(kind, payload, rid))
        reply.meta.setdefault("model", ref)
        if reply.chunks is None:
            gw.record(request, rid, reply.status, started, reply.meta, None, prompt=prompt)
            return JSONResponse(reply.body, status_code=reply.status)
        streaming = True  # the stream releases its admission when it ends
        return StreamingResponse(_logged_stream(gw, reply, request, rid, started, prompt),
                                 media_type="text/event-stream",
                                 headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
    except ApiError as exc:
        gw.record(request, rid, exc.status, started, {}, exc.message, exc.code, prompt=prompt)
        return error_response(exc)
    except Exception as exc:  # noqa: BLE001 - a bug must still answer in OpenAI shape and be logged
        gw.record(request, rid, 500, started, {}, f"{type(exc).__name__}: {exc}", "server_error", prompt=prompt)
        return error_response(ApiError(500, "internal error", "server_error"))
    finally:
        if admitted and not streaming:
            gw.admission.leave()


async def _logged_stream(gw: Gateway, reply: Reply, request: Request, rid: str, started: float,
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
        gw.admission.leave()
        error = error or reply.meta.get("error")
        if error is None and reply.meta.get("finish_reason") is None:
            error = "client disconnected"
        gw.record(request, rid, reply.status, started, reply.meta, error, "stream_error" if error else None,
                  ttft_ms=ttft, prompt=prompt)


@router.post("/v1/feedback")
async def feedback(request: Request) -> Response:
    gw, started, rid = gateway_of(request), time.perf_counter(), _request_id()
    try:
        authorize(request, gw.keys)
        body = gw.parse(FeedbackRequest, await gw.read_json(request))
    except ApiError as exc:
        gw.record(request, rid, exc.status, started, {}, exc.message, exc.code)
        return error_response(exc)
    gw.feedback_log.write({"ts": time.time(), "response_id": body.response_id, "rating": body.rating,
                           "comment": gw.redact(body.comment), "correction": gw.redact(body.correction),
                           "model": gw.ref})
    gw.metrics.feedback.labels(str(body.rating), gw.ref).inc()
    gw.record(request, rid, 200, started, {}, None)
    return JSONResponse({"object": "feedback", "response_id": body.response_id, "status": "recorded"})


# Registered after the routes above: FastAPI matches in order.
unknown_router = APIRouter()


@unknown_router.api_route("/v1/{rest:path}", methods=["GET", "POST", "PUT", "DELETE", "PATCH"])
async def unknown(request: Request, rest: str) -> Response:
    gw, started, rid = gateway_of(request), time.perf_counter(), _request_id()
    try:
        authorize(request, gw.keys)  # with keys configured, strangers learn nothing about the routes either
        raise ApiError(404, f"unknown endpoint {request.method} /v1/{rest[:200]}", code="unknown_url")
    except ApiError as exc:
        gw.record(request, rid, exc.status, started, {}, exc.message, exc.code)
        return error_response(exc)
