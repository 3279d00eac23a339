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
    (AUTH, "{not json", 400, "invalid_json"),
    (AUTH, {**CHAT, "model": "other"}, 404, "model_not_found"),
    (AUTH, {**CHAT, "messages": []}, 400, "invalid_value"),
    (AUTH, {**CHAT, "messages": [{"role": "user", "content": "word " * 200}]}, 400, "context_length_exceeded"),
    (AUTH, {**CHAT, "max_tokens": -1}, 400, "invalid_value"),
    (AUTH, {**CHAT, "messages": [{"role": "user", "content": [{"type": "image_url"}]}]}, 400, "invalid_value"),
    (AUTH, [1, 2], 400, "invalid_value"),
    (AUTH, {**CHAT, "temperature": "hot"}, 400, "invalid_value"),
])
def test_bad_requests_get_openai_style_4xx(client_and_log, headers, body, status, code):
    client, _ = client_and_log
    kwargs = {"content": body} if isinstance(body, str) else {"json": body}
    response = client.post("/v1/chat/completions", headers=headers, **kwargs)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["message"] and error["type"]
    assert error["code"] == code


def _records(log):
    return [json.loads(line) for line in log.read_text().splitlines()]


def test_streaming_chat_sends_sse_events_and_logs_ttft(client_and_log):
    client, log = client_and_log
    with client.stream("POST", "/v1/chat/completions", json={**CHAT, "stream": True, "max_tokens": 4},
                       headers=AUTH) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
    assert chunks[-2]["choices"][0]["finish_reason"] in ("stop", "length")
    usage = chunks[-1]["usage"]
    assert 1 <= usage["completion_tokens"] <= 4 and usage["prompt_tokens"] > 0
    record = _records(log)[-1]
    assert record["ttft_ms"] is not None and record["ttft_ms"] <= record["latency_ms"]
    assert record["response_id"] == chunks[0]["id"] and record["completion_tokens"] == usage["completion_tokens"]
    assert record["error"] is None and record["backend"] == "transformers"
    # Greedy decoding: the streamed text is the non-streamed answer, piece by piece.
    whole = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4}, headers=AUTH).json()
    assert text.strip() == whole["choices"][0]["message"]["content"] == record["response"]


def test_log_record_follows_the_contract_and_redacts_pii(client_and_log):
    client, log = client_and_log
    message = "my email is jane.doe@example.com and phone +1 415-555-0132"
    body = client.post("/v1/chat/completions", headers=AUTH,
                       json={**CHAT, "messages": [{"role": "user", "content": message}]}).json()
    record = _records(log)[-1]
    for key in ("ts", "request_id", "response_id", "method", "path", "status", "latency_ms", "ttft_ms", "model",
                "backend", "prompt_tokens", "completion_tokens", "finish_reason", "error", "prompt", "response"):
        assert key in record, key
    assert record["response_id"] == body["id"] and record["model"] == "tiny:1" and record["ttft_ms"] is None
    assert "[EMAIL]" in record["prompt"] and "[PHONE]" in record["prompt"]
    assert "jane.doe" not in log.read_text()


def test_feedback_is_recorded_and_validated(client_and_log):
    client, log = client_and_log
    ok = client.post("/v1/feedback", headers=AUTH,
                     json={"response_id": "chatcmpl-req-1", "rating": 2, "comment": "wrong, mail x@y.io",
                           "correction": "billing"})
    assert ok.status_code == 200
    feedback = [json.loads(line) for line in (log.parent / "feedback.jsonl").read_text().splitlines()]
    assert feedback[-1]["rating"] == 2 and feedback[-1]["model"] == "tiny:1"
    assert feedback[-1]["correction"] == "billing" and "[EMAIL]" in feedback[-1]["comment"]
    for bad in ({"response_id": "x", "rating": 9}, {"rating": 3}, {"response_id": "x", "rating": 3, "extra": 1}):
        response = client.post("/v1/feedback", headers=AUTH, json=bad)
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_value"
    assert client.post("/v1/feedback", json={"response_id": "x", "rating": 3}).status_code == 401


def test_metrics_count_requests_tokens_errors_and_feedback(client_and_log):
    client, _ = client_and_log
    client.post("/v1/chat/completions", headers=AUTH, json=CHAT)
    client.post("/v1/chat/completions", headers={}, json=CHAT)
    text = client.get("/metrics").text
    assert 'llmops_requests_total{model="tiny:1",path="/v1/chat/completions",status="200"}' in text
    assert 'llmops_tokens_total{direction="out",model="tiny:1"}' in text
    assert 'llmops_errors_total{code="invalid_api_key"}' in text
    assert "llmops_request_latency_seconds_bucket" in text and "llmops_feedback_total" in text


def test_oversize_body_unknown_route_and_bad_admin_token(client_and_log):
    client, log = client_and_log
    big = client.post("/v1/chat/completions", headers=AUTH, content=b"x" * 1_100_000)
    assert big.status_code == 413 and big.json()["error"]["code"] == "request_too_large"
    missing = client.get("/v1/nothing-here", headers=AUTH)
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "unknown_url"
    assert _records(log)[-1]["path"] == "/v1/nothing-here"
    assert client.post("/admin/reload", json={}).status_code == 403


def test_text_parts_are_accepted(client_and_log):
    client, _ = client_and_log
    parts = [{"type": "text", "text": "where is "}, {"type": "text", "text": "my package"}]
    response = client.post("/v1/chat/completions", headers=AUTH,
                           json={**CHAT, "messages": [{"role": "user", "content": parts}]})
    assert response.status_code == 200


def test_completion_stream_and_stop(client_and_log):
    client, _ = client_and_log
    with client.stream("POST", "/v1/completions", headers=AUTH,
                       json={"model": "tiny", "prompt": "hello", "max_tokens": 3, "stream": True}) as response:
        events = [line[6:] for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and json.loads(events[0])["object"] == "text_completion"


def test_prompt_plus_max_tokens_must_fit_the_models_context(client_and_log):
    client, _ = client_and_log  # the tiny model has 256 positions
    response = client.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4215}, headers=AUTH)
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "context_length_exceeded" and "maximum context length is 256 tokens" in error["message"]
    assert client.post("/v1/completions", json={"model": "tiny", "prompt": "hi", "max_tokens": 256},
                       headers=AUTH).status_code == 400


def test_streaming_honours_stop_as_non_streaming_does(client_and_log):
    client, log = client_and_log
    body = {"model": "tiny", "prompt": "where is my package", "max_tokens": 12, "temperature": 0}
    full = client.post("/v1/completions", json=body, headers=AUTH).json()["choices"][0]["text"]
    assert len(full) > 6
    stop = full[4:6]
    cut = client.post("/v1/completions", json={**body, "stop": [stop]}, headers=AUTH).json()["choices"][0]
    with client.stream("POST", "/v1/completions", headers=AUTH, json={**body, "stop": stop, "stream": True}) as r:
        events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: {")]
    streamed = "".join(c["text"] for e in events for c in e["choices"])
    assert streamed.strip() == cut["text"] and stop not in streamed
    assert [c["finish_reason"] for e in events for c in e["choices"]][-1] == "stop" == cut["finish_reason"]
    assert _records(log)[-1]["error"] is None  # a stop is a finish, not a disconnect


def test_stop_scanner_cuts_across_piece_boundaries():
    from llmops_cli.serving.backends import StopScanner

    scanner = StopScanner(["END"])
    out = [*scanner.feed("hello E"), *scanner.feed("N"), *scanner.feed("D and more")]
    assert "".join(out) == "hello " and scanner.stopped and scanner.flush() == []
    plain = StopScanner(["END"])
    assert "".join([*plain.feed("a E"), *plain.feed("x"), *plain.flush()]) == "a Ex" and not plain.stopped
    assert StopScanner([]).feed("abc") == ["abc"]
