"""Operations routes: /health (the process is up), /ready (the model answers), /metrics (Prometheus)
and the admin-token /admin/reload that `llmops serve reload` calls."""

from __future__ import annotations

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse, Response

from llmops_cli.serving.auth import key_matches
from llmops_cli.serving.backends import ApiError, ModelSpec
from llmops_cli.serving.gateway import ReloadRequest, error_response, gateway_of

router = APIRouter()


@router.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/ready")
def ready(request: Request) -> JSONResponse:
    gw = gateway_of(request)
    backend = gw.backend
    state = backend.state
    info = {"backend": backend.name, "sampling_defaults": gw.sampling.to_dict(), "restarts": len(backend.restarts),
            "last_restart": backend.restarts[-1] if backend.restarts else None}
    if state == "ready":
        return JSONResponse({"status": "ready", "model": gw.served, "model_ref": gw.ref, **info})
    headers = {"Retry-After": str(backend.retry_after_s())} if state == "restarting" else None
    return JSONResponse({"status": state, "error": backend.error, "hint": backend.hint, **info},
                        status_code=503, headers=headers)


@router.get("/metrics")
def metrics(request: Request) -> Response:
    from prometheus_client import CONTENT_TYPE_LATEST

    return Response(gateway_of(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.post("/admin/reload")
async def reload(request: Request) -> Response:
    from starlette.concurrency import run_in_threadpool

    from llmops_cli.errors import LlmopsError

    gw = gateway_of(request)
    given = request.headers.get("x-llmops-admin-token", "")
    if not gw.spec.admin_token or not key_matches(given, [gw.spec.admin_token]):
        return error_response(ApiError(403, "reload needs the admin token of this server", "authentication_error",
                                       "forbidden"))
    try:
        body = gw.parse(ReloadRequest, await gw.read_json(request))
    except ApiError as exc:
        return error_response(exc)
    model = ModelSpec.of(body.model_dir, body.model_ref, body.model_name, body.lora_rank)
    try:
        await run_in_threadpool(gw.backend.reload, model)
    except LlmopsError as exc:
        return error_response(ApiError(409, str(exc), "server_error", "reload_failed"))
    gw.switch(model.model_ref, model.model_dir, body.aliases)
    return JSONResponse({"status": "reloaded", "model": gw.served, "model_ref": model.model_ref,
                         "backend": gw.backend.name})
