"""Start, detach, check and stop the server process; resolve what it serves from the registry."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.errors import BackendUnavailable, ConfigError
from llmops_cli.utils import atomic_write_json

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Served:
    model_dir: str
    model_ref: str
    model_name: str


def resolve_source(cfg: ProjectConfig) -> Served:
    """A registry reference becomes a verified, materialised directory; a path is served as is."""
    source = cfg.serve.source
    if Path(source).is_dir():
        return Served(str(Path(source)), str(source), cfg.project.name)
    from llmops_cli.registry.store import LocalRegistry

    registry = LocalRegistry(cfg.serve.registry_root)
    version = registry.resolve(source, default_name=cfg.project.name)
    model_dir = registry.materialize(version)  # re-hashes every blob first: tampering is refused
    return Served(str(model_dir), version.ref, version.name)


def select_backend(requested: str) -> tuple[str, str]:
    """(backend, why). auto prefers vLLM only where it can actually run: importable and a CUDA GPU."""
    import importlib.util

    has_vllm = importlib.util.find_spec("vllm") is not None
    if requested == "transformers":
        return "transformers", "requested in config"
    if requested == "vllm" or (requested == "auto" and has_vllm):
        import torch

        if not has_vllm:
            raise BackendUnavailable("serve.backend=vllm but vllm is not installed",
                                     hint="pip install 'llmops-cli[gpu]' on a CUDA machine, or use transformers")
        if not torch.cuda.is_available():
            if requested == "auto":
                return "transformers", "vllm is installed but no CUDA GPU is visible"
            raise BackendUnavailable("serve.backend=vllm needs a CUDA GPU and none is visible",
                                     hint="use --set serve.backend=transformers on CPU machines")
        raise BackendUnavailable("the vllm backend is not available in this release yet",
                                 hint="use --set serve.backend=transformers")
    return "transformers", "vllm is not installed (CPU default)"


def build_spec(cfg: ProjectConfig, served: Served, backend: str) -> dict[str, Any]:
    scfg = cfg.serve
    api_keys = [k for k in os.environ.get(scfg.api_keys_env, "").split(",") if k.strip()]
    if scfg.host not in LOOPBACK and not api_keys:
        raise ConfigError(
            f"serve.host={scfg.host} exposes the server beyond loopback but ${scfg.api_keys_env} is empty",
            hint=f"set {scfg.api_keys_env}=key1,key2 or keep serve.host=127.0.0.1",
        )
    return {
        "backend": backend,
        "base": cfg.model.model_dump(),
        "model_dir": os.path.abspath(served.model_dir),
        "model_name": served.model_name,
        "model_ref": served.model_ref,
        "model_aliases": [served.model_ref],
        "host": scfg.host,
        "port": scfg.port,
        "api_keys_env": scfg.api_keys_env,  # the name only: keys stay in the environment
        "max_new_tokens": scfg.max_new_tokens,
        "max_prompt_tokens": scfg.max_prompt_tokens,
        "request_log": os.path.abspath(scfg.request_log),
        "created": int(time.time()),
    }


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((host, port))
        except OSError:
            raise BackendUnavailable(
                f"port {port} on {host} is already in use",
                hint="stop the other server (`llmops serve stop`) or pass --set serve.port=N",
            ) from None


def url_of(spec: dict[str, Any]) -> str:
    host = "127.0.0.1" if spec["host"] in ("0.0.0.0", "localhost") else spec["host"]
    return f"http://{host}:{spec['port']}"


def server_command(spec_path: str) -> list[str]:
    return [sys.executable, "-m", "llmops_cli.serving.app", spec_path]


def write_spec(spec: dict[str, Any], endpoint_file: str) -> str:
    path = Path(endpoint_file).with_name("spec.json")
    atomic_write_json(path, spec)
    return str(path)


def start_detached(spec: dict[str, Any], endpoint_file: str, timeout_s: float) -> dict[str, Any]:
    """Start the server in its own session, wait until /ready, write the endpoint file."""
    stop_server(endpoint_file)  # a previous server of this project is replaced, not orphaned
    check_port_free(spec["host"], spec["port"])
    spec_path = write_spec(spec, endpoint_file)
    log_path = Path(endpoint_file).with_name("server.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(server_command(spec_path), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = url_of(spec)
    try:
        wait_ready(url, proc, timeout_s, log_path)
    except BaseException:
        _kill_group(proc.pid)
        raise
    endpoint = {"url": url, "pid": proc.pid, "model": spec["model_name"], "model_ref": spec["model_ref"],
                "backend": spec["backend"], "log": str(log_path), "request_log": spec["request_log"],
                "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    atomic_write_json(endpoint_file, endpoint)
    return endpoint


def wait_ready(url: str, proc: subprocess.Popen[bytes] | None, timeout_s: float, log_path: Path | None) -> None:
    import httpx

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise BackendUnavailable(f"the server exited with code {proc.returncode} before it was ready",
                                     hint=_tail(log_path))
        try:
            response = httpx.get(f"{url}/ready", timeout=2)
            if response.status_code == 200:
                return
            if response.json().get("status") == "failed":
                raise BackendUnavailable(f"the model failed to load: {response.json().get('error')}",
                                         hint=_tail(log_path))
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise BackendUnavailable(f"the server was not ready after {timeout_s:.0f}s",
                             hint=f"raise serve.ready_timeout_s; {_tail(log_path)}")


def read_endpoint(endpoint_file: str) -> dict[str, Any] | None:
    path = Path(endpoint_file)
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError:
        return None


def server_status(endpoint_file: str) -> dict[str, Any]:
    endpoint = read_endpoint(endpoint_file)
    if endpoint is None:
        return {"running": False, "reason": f"no endpoint file at {endpoint_file}"}
    import httpx

    alive = _alive(endpoint["pid"])
    ready = False
    if alive:
        try:
            ready = httpx.get(f"{endpoint['url']}/ready", timeout=2).status_code == 200
        except httpx.HTTPError:
            ready = False
    return {**endpoint, "running": alive, "ready": ready}


def stop_server(endpoint_file: str, grace_s: float = 15) -> bool:
    """Stop the server named by the endpoint file (SIGTERM, then SIGKILL); True if one was running."""
    endpoint = read_endpoint(endpoint_file)
    if endpoint is None:
        return False
    pid = int(endpoint["pid"])
    was_running = _alive(pid)
    if was_running:
        _kill_group(pid, grace_s)
    Path(endpoint_file).unlink(missing_ok=True)
    return was_running


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child (possible when this process started it) is not a live server.
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return True


def _kill_group(pid: int, grace_s: float = 15) -> None:
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline:
        try:
            waited, _ = os.waitpid(pid, os.WNOHANG)
            if waited:
                return
        except ChildProcessError:
            if not _alive(pid):
                return
        time.sleep(0.1)
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _tail(log_path: Path | None, lines: int = 15) -> str:
    if log_path is None or not log_path.is_file():
        return "no server log"
    text = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:]
    return f"last lines of {log_path}:\n    " + "\n    ".join(text)
