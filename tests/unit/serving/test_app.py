"""The HTTP layer on the real tiny model (in-process client); the detached server is covered in e2e."""

import json
import time

import pytest
from fastapi.testclient import TestClient

from llmops_cli.serving.app import create_app


@pytest.fixture(scope="module")
def client_and_log(tiny_model, tmp_path_factory):
    log = tmp_path_factory.mktemp("serve") / "requests.jsonl"
    spec = {"base": {"base": str(tiny_model)}, "model_dir": str(tiny_model), "model_name": "tiny",
            "model_ref": "tiny:1", "model_aliases": ["tiny:1"], "max_new_tokens": 4, "max_prompt_tokens": 64,
            "request_log": str(log), "api_keys": ["k1", "k2"]}
    with TestClient(create_app(spec)) as client:
        deadline = time.monotonic() + 60
        while client.get("/ready").status_code != 200:
            assert time.monotonic() < deadline, client.get("/ready").json()
            time.sleep(0.1)
        yield client, log


AUTH = {"Authorization": "Bearer k2"}
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "where is my package"}], "max_tokens": 3}


def test_health_models_and_chat(client_and_log):
    client, log = client_and_log
    assert client.get("/health").json() == {"status": "ok"}
    models = client.get("/v1/models", headers=AUTH).json()
    assert [m["id"] for m in models["data"]] == ["tiny"]
    body = client.post("/v1/chat/completions", json=CHAT, headers=AUTH).json()
    assert body["object"] == "chat.completion"
    assert body["usage"]["completion_tokens"] <= 3
    assert body["choices"][0]["finish_reason"] in ("stop", "length")
    completion = client.post("/v1/completions", json={"model": "tiny:1", "prompt": "hello", "max_tokens": 2},
                             headers=AUTH).json()
    assert completion["object"] == "text_completion"
    record = json.loads(log.read_text().splitlines()[-1])
    assert record["path"] == "/v1/completions" and record["status"] == 200 and record["model"] == "tiny:1"


@pytest.mark.parametrize("headers,body,status,code", [
    ({}, CHAT, 401, "invalid_api_key"),
    ({"Authorization": "Bearer wrong"}, CHAT, 401, "invalid_api_key"),
    (AUTH, "{not json", 400, None),
    (AUTH, {**CHAT, "model": "other"}, 404, "model_not_found"),
    (AUTH, {**CHAT, "messages": []}, 400, "invalid_value"),
    (AUTH, {**CHAT, "messages": [{"role": "user", "content": "word " * 200}]}, 400, "context_length_exceeded"),
    (AUTH, {**CHAT, "max_tokens": -1}, 400, "invalid_value"),
])
def test_bad_requests_get_openai_style_4xx(client_and_log, headers, body, status, code):
    client, _ = client_and_log
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    response = client.post("/v1/chat/completions", headers=headers, **kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] and error["type"]
    assert error["code"] == code
