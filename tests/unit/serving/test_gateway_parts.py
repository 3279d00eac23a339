"""Gateway parts without a model: the rotating JSONL log, sampling, API keys."""

import json

from fastapi.testclient import TestClient

from llmops_cli.serving.app import create_app
from llmops_cli.serving.auth import key_matches, load_api_keys
from llmops_cli.serving.backends import Backend, Reply
from llmops_cli.serving.telemetry import JsonlLog


def test_log_rotates_by_size_and_keeps_n_backups(tmp_path):
    path = tmp_path / "requests.jsonl"
    log = JsonlLog(str(path), max_bytes=1024, backups=2)
    for i in range(100):
        log.write({"i": i, "pad": "x" * 40})
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["requests.jsonl", "requests.jsonl.1", "requests.jsonl.2"]
    sizes = [p.stat().st_size for p in tmp_path.iterdir()]
    assert max(sizes) <= 1024
    live = [json.loads(line)["i"] for line in path.read_text().splitlines()]
    newest_rotated = [json.loads(line)["i"] for line in (tmp_path / "requests.jsonl.1").read_text().splitlines()]
    older = [json.loads(line)["i"] for line in (tmp_path / "requests.jsonl.2").read_text().splitlines()]
    assert live[-1] == 99 and older[-1] + 1 == newest_rotated[0] and newest_rotated[-1] + 1 == live[0]


def test_api_keys_from_env_and_file(tmp_path, monkeypatch):
    keys_file = tmp_path / "keys"
    keys_file.write_text("# team keys\nfilekey1\n\nfilekey2  # ci\n")
    monkeypatch.setenv("MY_KEYS", "envkey, other ,")
    assert load_api_keys("MY_KEYS", str(keys_file)) == ["envkey", "other", "filekey1", "filekey2"]
    assert key_matches("filekey2", ["envkey", "filekey2"]) and not key_matches("filekey", ["filekey2"])
    assert not key_matches("", ["k"])


class _Echo(Backend):
    """A backend with no model: answers instantly, so the gateway's own behaviour is what is tested."""

    name = "echo"

    @property
    def state(self) -> str:
        return "ready"

    def start(self) -> None:
        pass

    async def handle(self, kind, body, request_id):
        return Reply(200, {"id": f"x-{request_id}", "model": "m"}, meta={"response_id": f"x-{request_id}"})


def test_sampling_drops_successes_but_keeps_errors(tmp_path):
    log = tmp_path / "requests.jsonl"
    spec = {"model_dir": str(tmp_path), "model_name": "m", "request_log": str(log), "log_sample_rate": 0.0}
    with TestClient(create_app(spec, backend=_Echo(spec))) as client:
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        for _ in range(5):
            assert client.post("/v1/chat/completions", json=chat).status_code == 200
        assert client.post("/v1/chat/completions", json={**chat, "model": "zzz"}).status_code == 404
        metrics = client.get("/metrics").text
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in records] == [404]
    assert 'llmops_requests_total{model="m",path="/v1/chat/completions",status="200"} 5.0' in metrics


def test_unknown_paths_leave_metrics_flat_and_need_a_key(tmp_path):
    log = tmp_path / "requests.jsonl"
    spec = {"model_dir": str(tmp_path), "model_name": "m", "request_log": str(log), "api_keys": ["k"]}
    with TestClient(create_app(spec, backend=_Echo(spec))) as client:
        auth = {"Authorization": "Bearer k"}
        assert client.get("/v1/made-up-0", headers=auth).status_code == 404
        # Without a key, an unknown path is a 401 like any other /v1 path: nothing about routes leaks.
        stranger = client.post("/v1/whatever-0", json={})
        assert stranger.status_code == 401 and stranger.json()["error"]["code"] == "invalid_api_key"
        before = len(client.get("/metrics").text)
        for i in range(1, 1000):
            assert client.get(f"/v1/made-up-{i}", headers=auth).status_code == 404
            assert client.post(f"/v1/whatever-{i}", json={}).status_code == 401
        metrics = client.get("/metrics").text
    assert len(metrics) - before < 100, "one label per path would grow /metrics by ~100 bytes a path"
    assert 'llmops_requests_total{model="m",path="other",status="404"} 1000.0' in metrics
    assert 'llmops_requests_total{model="m",path="other",status="401"} 1000.0' in metrics


def test_invalid_unicode_and_absurd_nesting_are_400_and_logged(tmp_path):
    log = tmp_path / "requests.jsonl"
    spec = {"model_dir": str(tmp_path), "model_name": "m", "request_log": str(log)}
    with TestClient(create_app(spec, backend=_Echo(spec))) as client:
        surrogate = b'{"model": "m", "messages": [{"role": "user", "content": "hi \\ud800"}]}'
        response = client.post("/v1/chat/completions", content=surrogate,
                               headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_unicode"
        deep = b'{"model": "m", "messages": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        response = client.post("/v1/chat/completions", content=deep, headers={"content-type": "application/json"})
        assert response.status_code == 400 and response.json()["error"]["code"] == "invalid_json"
    records = [json.loads(line) for line in log.read_text().splitlines()]
    assert [r["status"] for r in records] == [400, 400]


def test_get_one_model_by_any_of_its_names(tmp_path):
    spec = {"model_dir": str(tmp_path), "model_name": "m", "model_ref": "m:3", "model_aliases": ["m@production"],
            "request_log": str(tmp_path / "requests.jsonl")}
    with TestClient(create_app(spec, backend=_Echo(spec))) as client:
        for name in ("m", "m:3", "m@production"):
            body = client.get(f"/v1/models/{name}").json()
            assert body["id"] == name and body["object"] == "model" and body["root"] == "m:3"
        missing = client.get("/v1/models/other")
        assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


class _Slow(_Echo):
    async def handle(self, kind, body, request_id):
        import asyncio

        await asyncio.sleep(0.6)
        return await super().handle(kind, body, request_id)


def _serve_in_thread(app, port):
    import threading
    import time

    import httpx
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
            return server, thread
        except httpx.HTTPError:
            time.sleep(0.05)
    raise AssertionError("server did not start")


def test_slow_bodies_time_out_and_a_full_server_says_429(tmp_path):
    import concurrent.futures
    import socket

    import httpx

    from tests.conftest import free_port

    port = free_port()
    spec = {"model_dir": str(tmp_path), "model_name": "m", "request_log": str(tmp_path / "requests.jsonl"),
            "body_timeout_s": 0.5, "max_concurrent_requests": 1}
    server, thread = _serve_in_thread(create_app(spec, backend=_Slow(spec)), port)
    try:
        with socket.create_connection(("127.0.0.1", port)) as sock:  # promises 100 bytes, sends 10
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                         b"Content-Length: 100\r\n\r\n{\"model\": ")
            sock.settimeout(5)
            assert b" 408 " in sock.recv(4096).split(b"\r\n")[0]
        chat = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        with concurrent.futures.ThreadPoolExecutor(2) as pool:
            first = pool.submit(httpx.post, url, json=chat, timeout=10)
            import time

            time.sleep(0.2)
            second = httpx.post(url, json=chat, timeout=10)
            assert first.result().status_code == 200
        assert second.status_code == 429 and second.headers["retry-after"] == "1"
        assert second.json()["error"]["code"] == "too_many_requests"
        assert httpx.post(url, json=chat, timeout=10).status_code == 200  # the slot was released
    finally:
        server.should_exit = True
        thread.join(10)
