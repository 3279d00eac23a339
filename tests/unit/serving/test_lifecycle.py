"""A real detached server on the tiny model: load, reload under traffic, port in use, stop."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import threading
import time

import httpx
import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.errors import BackendUnavailable
from llmops_cli.serving import lifecycle
from tests.conftest import free_port, project_yaml

TRANSFORMERS = lifecycle.BackendChoice("transformers", "test")



@pytest.fixture(scope="module")
def running(tiny_model, tiny_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lifecycle")
    port = free_port()
    cfg = load_config(project_yaml(tmp, tiny_model, tiny_corpus,
                                   serve={"source": str(tiny_model), "port": port, "max_new_tokens": 2,
                                          "backend": "transformers"}))
    served = lifecycle.resolve_source(cfg)
    spec = lifecycle.build_spec(cfg, served, TRANSFORMERS)
    endpoint = lifecycle.start_detached(spec, cfg.serve.endpoint_file, 120)
    yield cfg, endpoint, tmp
    lifecycle.stop_server(cfg.serve.endpoint_file)


def _chat(n: int = 2) -> dict:
    return {"model": "test-model", "messages": [{"role": "user", "content": "my parcel is late"}], "max_tokens": n}


def test_200_concurrent_requests_complete_without_errors(running):
    cfg, endpoint, _ = running

    async def fire() -> list[int]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=endpoint["url"], limits=limits, timeout=120) as client:
            responses = await asyncio.gather(*(client.post("/v1/chat/completions", json=_chat())
                                               for _ in range(200)))
        return [r.status_code for r in responses]

    statuses = asyncio.run(fire())
    assert statuses == [200] * 200
    records = [json.loads(line) for line in open(cfg.serve.request_log)]
    assert sum(1 for r in records if r["status"] == 200 and r["path"] == "/v1/chat/completions") >= 200
    assert len({r["response_id"] for r in records if r["response_id"]}) == len([r for r in records if r["response_id"]])


def test_reload_switches_version_without_failing_requests_in_flight(running):
    cfg, endpoint, tmp = running
    copy = tmp / "model-v2"
    shutil.copytree(cfg.serve.source, copy)
    statuses: list[int] = []
    stop = threading.Event()

    def traffic() -> None:
        with httpx.Client(base_url=endpoint["url"], timeout=60) as client:
            while not stop.is_set():
                statuses.append(client.post("/v1/chat/completions", json=_chat()).status_code)

    workers = [threading.Thread(target=traffic) for _ in range(4)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    try:
        updated = lifecycle.reload_server(cfg, str(copy))
    finally:
        time.sleep(0.5)
        stop.set()
        for w in workers:
            w.join()
    assert updated["model_ref"] == str(copy) and updated["previous_model_ref"] == str(cfg.serve.source)
    assert len(statuses) > 4 and set(statuses) == {200}
    models = httpx.get(f"{endpoint['url']}/v1/models").json()
    assert models["data"][0]["root"] == str(copy)
    assert lifecycle.read_endpoint(cfg.serve.endpoint_file)["model_ref"] == str(copy)
    assert lifecycle.reload_server(cfg, str(copy))["unchanged"] is True
    # A later request is logged against the new version.
    httpx.post(f"{endpoint['url']}/v1/chat/completions", json=_chat())
    last = json.loads(open(cfg.serve.request_log).read().splitlines()[-1])
    assert last["model"] == str(copy)


def test_reload_to_a_broken_model_keeps_serving_the_old_one(running):
    cfg, endpoint, tmp = running
    broken = tmp / "broken"
    broken.mkdir(exist_ok=True)
    (broken / "config.json").write_text("{}")
    before = lifecycle.read_endpoint(cfg.serve.endpoint_file)["model_ref"]
    with pytest.raises(BackendUnavailable, match="reload to .* failed"):
        lifecycle.reload_server(cfg, str(broken))
    assert httpx.post(f"{endpoint['url']}/v1/chat/completions", json=_chat()).status_code == 200
    assert lifecycle.read_endpoint(cfg.serve.endpoint_file)["model_ref"] == before


def test_a_client_that_leaves_a_stream_stops_generation_and_is_logged(running):
    cfg, endpoint, _ = running
    body = {**_chat(200), "stream": True, "temperature": 1.0}
    with httpx.stream("POST", f"{endpoint['url']}/v1/chat/completions", json=body, timeout=30) as response:
        next(line for line in response.iter_lines() if line.startswith("data:"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        last = json.loads(open(cfg.serve.request_log).read().splitlines()[-1])
        if last["ttft_ms"] is not None:
            break
        time.sleep(0.1)
    assert last["ttft_ms"] is not None
    # Random weights may (rarely) end the answer with EOS first; otherwise the disconnect is recorded.
    assert last["error"] == "client disconnected" or last["finish_reason"] == "stop"
    assert last["completion_tokens"] < 200
    assert httpx.post(f"{endpoint['url']}/v1/chat/completions", json=_chat(), timeout=30).status_code == 200


def test_port_in_use_is_a_clear_error(running):
    cfg, endpoint, _ = running
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(BackendUnavailable, match=f"port {port} .* already in use"):
            lifecycle.check_port_free("127.0.0.1", port)


def test_concurrent_requests_are_batched_with_the_same_answers(running):
    cfg, endpoint, _ = running
    prompts = [f"my parcel {i} is late" + " please" * (i % 4) for i in range(8)]

    def body(p: str) -> dict:
        return {"model": "test-model", "messages": [{"role": "user", "content": p}], "max_tokens": 12,
                "temperature": 0}

    alone = [httpx.post(f"{endpoint['url']}/v1/chat/completions", json=body(p), timeout=60).json()["choices"][0]
             for p in prompts]

    async def together() -> list[dict]:
        async with httpx.AsyncClient(base_url=endpoint["url"], timeout=60) as client:
            replies = await asyncio.gather(*(client.post("/v1/chat/completions", json=body(p))
                                             for p in prompts * 2))
        return [r.json()["choices"][0] for r in replies]

    # Left padding in a shared batch must not change a greedy answer (or where it stops).
    assert asyncio.run(together()) == alone * 2


def test_an_abandoned_request_is_cancelled_and_logged(running):
    cfg, endpoint, _ = running
    host, port = endpoint["url"].removeprefix("http://").split(":")
    payload = json.dumps({"model": "test-model", "messages": [{"role": "user", "content": "hi"}],
                          "max_tokens": 200}).encode()
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(payload)}\r\n\r\n".encode() + payload)
        time.sleep(0.05)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        records = [json.loads(line) for line in open(cfg.serve.request_log)]
        if any(r["status"] == 499 for r in records):
            break
        time.sleep(0.2)
    last = [r for r in records if r["status"] == 499][-1]
    assert "closed the connection" in last["error"]
    assert httpx.post(f"{endpoint['url']}/v1/chat/completions", json=_chat(), timeout=30).status_code == 200


def test_a_failed_deploy_leaves_the_old_server_serving(running, tmp_path):
    cfg, endpoint, _ = running
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    spec = lifecycle.build_spec(cfg, lifecycle.Served(str(broken), "test-model:9", "test-model"), TRANSFORMERS)
    with pytest.raises(BackendUnavailable, match="is still being served at") as info:
        lifecycle.start_detached(spec, cfg.serve.endpoint_file, 120)
    assert endpoint["url"] in info.value.message
    assert lifecycle.read_endpoint(cfg.serve.endpoint_file)["pid"] == endpoint["pid"]
    assert httpx.post(f"{endpoint['url']}/v1/chat/completions", json=_chat(), timeout=30).status_code == 200
    assert lifecycle.server_status(cfg.serve.endpoint_file)["ready"]
    assert not list(lifecycle.spec_path_for(cfg.serve.endpoint_file).parent.glob("spec.*.next.json"))


def test_a_new_deploy_replaces_the_old_server_once_ready(running):
    cfg, endpoint, _ = running
    spec = lifecycle.build_spec(cfg, lifecycle.resolve_source(cfg), TRANSFORMERS)
    new = lifecycle.start_detached(spec, cfg.serve.endpoint_file, 120)
    try:
        assert new["pid"] != endpoint["pid"] and new["url"] != endpoint["url"]  # serve.port was held
        assert new["replaced"]["pid"] == endpoint["pid"]
        assert not lifecycle._alive(endpoint["pid"])
        assert httpx.post(f"{new['url']}/v1/chat/completions", json=_chat(), timeout=30).status_code == 200
        assert lifecycle.read_endpoint(cfg.serve.endpoint_file)["pid"] == new["pid"]
        # the spec file now holds the new server's admin token: `serve reload` is authorised there
        token = json.loads(lifecycle.spec_path_for(cfg.serve.endpoint_file).read_text())["admin_token"]
        answer = httpx.post(f"{new['url']}/admin/reload", json={}, headers={"X-Llmops-Admin-Token": token})
        assert answer.status_code == 400  # past the token check: the empty body is what is refused
    finally:
        endpoint.update(new)  # the module's teardown and the last test act on the live server


def test_a_foreground_server_does_not_orphan_a_detached_one(running):
    cfg, endpoint, _ = running
    spec = lifecycle.build_spec(cfg, lifecycle.resolve_source(cfg), TRANSFORMERS)
    assert spec.device == "auto"  # the transformers backend is told where to run
    with pytest.raises(BackendUnavailable, match="already running"):
        lifecycle.announce_foreground(spec.model_copy(update={"port": free_port()}), cfg.serve.endpoint_file)
    assert lifecycle.read_endpoint(cfg.serve.endpoint_file)["pid"] == endpoint["pid"]


def test_sigterm_on_a_foreground_server_removes_its_endpoint_file(tiny_model, tiny_corpus, tmp_path):
    import os
    import signal
    import subprocess
    import sys

    port = free_port()
    config = project_yaml(tmp_path, tiny_model, tiny_corpus, serve={"source": str(tiny_model), "port": port,
                                                                    "backend": "transformers"})
    endpoint_file = tmp_path / "serve/endpoint.json"
    proc = subprocess.Popen([sys.executable, "-m", "llmops_cli", "serve", "-c", str(config)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        lifecycle.wait_ready(f"http://127.0.0.1:{port}", proc, 120, None)
        assert json.loads(endpoint_file.read_text())["foreground"] is True
        os.kill(proc.pid, signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    assert not endpoint_file.exists()


def test_stop_leaves_no_process(running):
    """Last in this module: it stops the shared server."""
    cfg, endpoint, _ = running
    assert lifecycle.server_status(cfg.serve.endpoint_file)["ready"]
    assert lifecycle.stop_server(cfg.serve.endpoint_file)
    assert not lifecycle._alive(endpoint["pid"])
    assert lifecycle.server_status(cfg.serve.endpoint_file)["running"] is False
    with pytest.raises(BackendUnavailable, match="no server is running"):
        lifecycle.reload_server(cfg)
