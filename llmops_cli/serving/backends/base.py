"""The interface every serving backend implements, and what crosses it: the OpenAI-style error,
the reply, and the model being served."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from llmops_cli.errors import BackendUnavailable
from llmops_cli.serving.spec import ServeSpec


class ApiError(Exception):
    """An OpenAI-style error answer: status, message, type and code."""

    def __init__(self, status: int, message: str, kind: str = "invalid_request_error", code: str | None = None,
                 headers: dict[str, str] | None = None, param: str | None = None):
        super().__init__(message)
        self.status, self.message, self.kind, self.code = status, message, kind, code
        self.headers, self.param = headers or {}, param


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
    def of(cls, model_dir: str, model_ref: str, model_name: str, lora_rank: int | None = None) -> ModelSpec:
        return cls(model_dir, model_ref or model_name, model_name, lora_rank,
                   is_adapter=(Path(model_dir) / "adapter_config.json").is_file())


class Backend:
    """The interface every backend implements. `state` is loading | ready | failed."""

    name = "base"

    def __init__(self, spec: ServeSpec | dict[str, Any]) -> None:
        self.spec = ServeSpec.of(spec)
        self.model = ModelSpec.of(self.spec.model_dir, self.spec.model_ref, self.spec.model_name, self.spec.lora_rank)
        self.error: str | None = None
        self.hint: str | None = None
        self.restarts: list[dict[str, Any]] = []  # one event per restart of a dead engine (shown by /ready)
        self.on_restart: Any = None  # called with each such event (the gateway counts them in /metrics)

    def retry_after_s(self) -> int:
        """Seconds a client should wait before retrying while the backend is unavailable."""
        return 1

    def refusal(self, body: dict[str, Any]) -> str | None:
        """A parameter of this (validated) request that the backend cannot honour, or None."""
        return None

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
