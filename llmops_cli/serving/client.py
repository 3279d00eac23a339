"""A minimal client for the running server (used by `llmops serve ask` and the demo)."""

from __future__ import annotations

from typing import Any

from llmops_cli.errors import BackendUnavailable
from llmops_cli.serving.lifecycle import read_endpoint


def chat_once(endpoint_file: str, message: str, max_tokens: int, api_key: str | None = None) -> dict[str, Any]:
    import httpx

    endpoint = read_endpoint(endpoint_file)
    if endpoint is None:
        raise BackendUnavailable(f"no running server ({endpoint_file} is missing)",
                                 hint="start one with `llmops serve --detach`")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    body = {"model": endpoint["model"], "messages": [{"role": "user", "content": message}],
            "max_tokens": max_tokens}
    try:
        response = httpx.post(f"{endpoint['url']}/v1/chat/completions", json=body, headers=headers, timeout=120)
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"cannot reach {endpoint['url']}: {exc}", hint="`llmops serve status`") from None
    data = response.json()
    if response.status_code != 200:
        raise BackendUnavailable(f"server answered {response.status_code}: {data.get('error', {}).get('message')}")
    return {"url": endpoint["url"], "model": data["model"], "content": data["choices"][0]["message"]["content"],
            "usage": data["usage"], "id": data["id"]}
