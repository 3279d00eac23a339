"""The gateway: one OpenAI-compatible front door over any backend.

It owns what every backend needs and vLLM alone does not give: API keys (auth.py), strict request
validation with OpenAI-style 4xx errors (openai_schema.py), a JSONL request log for `monitor`
(PII-redacted, sampled, size-bounded with rotation) and Prometheus metrics (telemetry.py),
POST /v1/feedback, /health and /ready, admission control, and an authenticated /admin/reload that
swaps the served model without failing requests in flight. This module only assembles them: the
state lives in gateway.py, the routes in routes_openai.py and routes_ops.py.

Run as `python -m llmops_cli.serving.app SPEC.json` (that is what `llmops serve --detach` starts).
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from llmops_cli.serving.auth import load_api_keys
from llmops_cli.serving.backends import Backend
from llmops_cli.serving.gateway import Gateway
from llmops_cli.serving.spec import ServeSpec


def create_app(spec: ServeSpec | dict[str, Any], backend: Backend | None = None) -> FastAPI:
    """Build the gateway for a serve spec (lifecycle.build_spec makes it from the config)."""
    from llmops_cli.serving import routes_openai, routes_ops

    spec = ServeSpec.of(spec)
    gateway = Gateway(spec, backend if backend is not None else make_backend(spec))

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Load in the background so that /health answers at once and /ready reports progress.
        threading.Thread(target=_safe_start, args=(gateway.backend,), daemon=True).start()
        try:
            yield
        finally:
            await gateway.backend.aclose()
            gateway.backend.stop()
            gateway.log.close()
            gateway.feedback_log.close()

    app = FastAPI(title="llmops gateway", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.gateway = gateway
    app.include_router(routes_ops.router)
    app.include_router(routes_openai.router)
    app.include_router(routes_openai.unknown_router)  # last: it matches every other /v1 path
    return app


def make_backend(spec: ServeSpec | dict[str, Any]) -> Backend:
    """The backend object named by spec.backend (selection itself happens in lifecycle.select_backend)."""
    from llmops_cli.serving.backends import TransformersBackend, VllmBackend

    spec = ServeSpec.of(spec)
    return VllmBackend(spec) if spec.backend == "vllm" else TransformersBackend(spec)


def _safe_start(backend: Backend) -> None:
    try:
        backend.start()
    except Exception:  # noqa: BLE001 - the error is kept on the backend and shown by /ready
        import traceback

        traceback.print_exc()


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
