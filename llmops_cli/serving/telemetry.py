"""What the gateway records: the rotating JSONL request and feedback logs, and Prometheus metrics."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any


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
