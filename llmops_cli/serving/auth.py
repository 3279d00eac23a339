"""API keys and the admin token: where they come from and how they are compared."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from fastapi import Request

from llmops_cli.serving.backends import ApiError


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


def authorize(request: Request, keys: list[str]) -> None:
    """401 unless the request carries one of `keys` as a bearer token (no keys: loopback-only server)."""
    if not keys:
        return
    given = request.headers.get("authorization", "")
    given = given[7:].strip() if given[:7].lower() == "bearer " else ""
    if not key_matches(given, keys):
        raise ApiError(401, "invalid or missing API key (send Authorization: Bearer KEY)",
                       "authentication_error", "invalid_api_key")
