"""Builders of request / feedback logs in the serve contract's format, shared by the monitor tests."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

T0 = 1_700_000_000.0  # a fixed epoch: windows are deterministic


def request(i: int, model: str = "m:1", ts: float | None = None, status: int = 200, latency_ms: float = 50.0,
            **extra: Any) -> dict[str, Any]:
    rec = {"ts": T0 + i if ts is None else ts, "request_id": f"req-{i}",
           "response_id": f"chatcmpl-req-{i}" if status < 400 else None, "method": "POST",
           "path": "/v1/chat/completions", "status": status, "latency_ms": latency_ms, "ttft_ms": None,
           "model": model, "backend": "embedded", "prompt_tokens": 10, "completion_tokens": 4,
           "finish_reason": "stop" if status < 400 else None, "error": None if status < 400 else "boom"}
    rec.update(extra)
    return rec


def write_log(path: Path, records: list[dict[str, Any]], tail: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail, encoding="utf-8")
    return path


PROMPTS = ["I was charged twice for my shoes", "my package has not arrived yet", "I forgot my password again",
           "the delivery of my laptop is late", "please change the email on my account"]


def train_file(path: Path, n: int = 200) -> Path:
    rows = [{"id": f"T{i}", "prompt": f"{PROMPTS[i % 5]} (ref {i})", "completion": "billing"} for i in range(n)]
    return write_log(path, rows)
