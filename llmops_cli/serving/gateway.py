"""The gateway's state and its shared steps: one object per server that every route module reaches
through `request.app.state.gateway` (routes_openai.py, routes_ops.py; assembled by app.py)."""

from __future__ import annotations

import asyncio
import json
import random
import time
from typing import Any

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from llmops_cli.serving.backends import ApiError, Backend
from llmops_cli.serving.openai_schema import ChatRequest, CompletionRequest
from llmops_cli.serving.sampling import SamplingDefaults, sampling_defaults
from llmops_cli.serving.spec import ServeSpec
from llmops_cli.serving.telemetry import JsonlLog, Metrics

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


class Gateway:
    """What every route needs: the spec, the backend, the identity of what is served (switched by
    reload), the logs, the metrics and the admission count."""

    def __init__(self, spec: ServeSpec, backend: Backend) -> None:
        self.spec, self.backend = spec, backend
        self.keys = [k for k in spec.api_keys if k]
        self.log = JsonlLog(spec.request_log, spec.log_max_bytes, spec.log_backups)
        self.feedback_log = JsonlLog(spec.feedback_path, spec.log_max_bytes, spec.log_backups)
        self.metrics = Metrics()
        self.admission = Admission(spec.max_concurrent_requests)
        self.rng = random.Random()
        self.served = spec.model_name
        self.ref = spec.model_ref or self.served
        self.aliases = {self.served, self.ref, *spec.model_aliases}
        self.sampling: SamplingDefaults = sampling_defaults(spec.model_dir, spec.base.base,
                                                            revision=spec.base.revision)
        backend.on_restart = lambda event: self.metrics.restarts.labels(
            backend.name, "ok" if event.get("ok") else "failed").inc()

    def switch(self, model_ref: str, model_dir: str, aliases: list[str]) -> None:
        """The served identity after a reload (on the event loop: a request sees the old or the new)."""
        self.ref, self.aliases = model_ref, {self.served, model_ref, *aliases}
        self.sampling = sampling_defaults(model_dir, self.spec.base.base, revision=self.spec.base.revision)

    def model_card(self) -> dict[str, Any]:
        return {"id": self.served, "object": "model", "created": self.spec.created, "owned_by": "llmops",
                "root": self.ref}

    def redact(self, text: Any) -> str | None:
        from llmops_cli.prep.clean import redact_pii

        if not isinstance(text, str):
            return None
        return redact_pii(text[:MAX_LOGGED_CHARS], self.spec.log_redact)

    def record(self, request: Request, rid: str, status: int, started: float, meta: dict[str, Any],
               error: str | None, code: str | None = None, ttft_ms: float | None = None,
               prompt: str | None = None) -> None:
        """Metrics for every request; a log line for every error and for the sampled successes."""
        latency = time.perf_counter() - started
        path = request.scope["path"]  # cheaper than building request.url
        label = path if path in ROUTES else "other"
        ref = meta.get("model") or self.ref
        m = self.metrics
        m.requests.labels(label, str(status), ref).inc()
        m.latency.labels(label, ref).observe(latency)
        if ttft_ms is not None:
            m.ttft.labels(label, ref).observe(ttft_ms / 1000)
        if meta.get("prompt_tokens"):
            m.tokens.labels("in", ref).inc(meta["prompt_tokens"])
        if meta.get("completion_tokens"):
            m.tokens.labels("out", ref).inc(meta["completion_tokens"])
        if status >= 400 or error:
            m.errors.labels(code or str(status)).inc()
        elif self.spec.log_sample_rate < 1 and self.rng.random() >= self.spec.log_sample_rate:
            return  # sampled out: successful requests only; errors are always logged
        entry = {
            "ts": time.time(), "request_id": rid, "response_id": meta.get("response_id") if status < 400 else None,
            "method": request.method, "path": path[:200], "status": status, "latency_ms": round(latency * 1000, 2),
            "ttft_ms": ttft_ms, "model": ref, "backend": self.backend.name,
            "prompt_tokens": meta.get("prompt_tokens"), "completion_tokens": meta.get("completion_tokens"),
            "finish_reason": meta.get("finish_reason"), "error": error,
        }
        if self.spec.log_content and path in ("/v1/chat/completions", "/v1/completions"):
            entry["prompt"] = self.redact(prompt)
            entry["response"] = self.redact(meta.get("text"))
        self.log.write(entry)

    async def read_json(self, request: Request) -> Any:
        limit = self.spec.max_body_bytes
        too_large = ApiError(413, f"request body is larger than {limit} bytes", code="request_too_large")
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit:
            raise too_large
        try:
            # A client that stops sending mid-body must not hold a connection for ever.
            raw = await asyncio.wait_for(request.body(), timeout=self.spec.body_timeout_s)
        except TimeoutError:
            raise ApiError(408, f"the request body did not arrive within {self.spec.body_timeout_s:g}s",
                           code="request_timeout") from None
        if len(raw) > limit:
            raise too_large
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

    @staticmethod
    def parse(model: type[BaseModel], data: Any) -> Any:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "body"
            raise ApiError(400, f"{where}: {first['msg']}", code="invalid_value") from None

    async def validated(self, request: Request, kind: str) -> dict[str, Any]:
        """The request as the backend gets it: parsed strictly, model checked, unsupported parameters
        refused, and unset sampling parameters and budget filled by the one rule (serving/sampling.py)."""
        body = self.parse(ChatRequest if kind == "chat" else CompletionRequest, await self.read_json(request))
        if body.model not in self.aliases:
            raise ApiError(404, f"model {body.model!r} does not exist; this server serves {sorted(self.aliases)}",
                           code="model_not_found")
        refused = self.backend.refusal(body.model_dump(exclude_none=True, exclude_defaults=True))
        if refused:
            raise ApiError(400, f"{refused} is not supported by the {self.backend.name} backend (it would be "
                                "ignored); leave it out, or serve with serve.backend=vllm",
                           code="unsupported_parameter", param=refused)
        payload = self.sampling.apply(body.model_dump(exclude_none=True))
        if not (payload.get("max_tokens") or payload.get("max_completion_tokens")):
            payload["max_tokens"] = self.spec.max_new_tokens
        return payload


def gateway_of(request: Request) -> Gateway:
    return request.app.state.gateway


def error_response(exc: ApiError) -> JSONResponse:
    return JSONResponse({"error": {"message": exc.message, "type": exc.kind, "param": exc.param, "code": exc.code}},
                        status_code=exc.status, headers=exc.headers or None)


async def unless_disconnected(request: Request, work: Any) -> Any:
    """Await `work`, cancelling it if the client goes away first: an abandoned request must not keep a
    model busy (ASGI servers do not cancel a handler when its client disconnects)."""
    task = asyncio.ensure_future(work)
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.2)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()
            raise ApiError(499, "the client closed the connection before the answer was ready",
                           code="client_disconnected")


def logged_prompt(kind: str, payload: dict[str, Any]) -> str | None:
    """What the request log keeps as the prompt: the last user message, or the (first) text prompt."""
    if kind == "chat":
        users = [m.get("content") for m in payload["messages"] if m["role"] == "user"]
        return users[-1] if users else payload["messages"][-1].get("content")
    prompt = payload["prompt"]
    if isinstance(prompt, str):
        return prompt
    return prompt[0] if isinstance(prompt[0], str) else None  # token ids are not logged as text
