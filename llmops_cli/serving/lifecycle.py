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
from llmops_cli.serving.spec import ServeSpec
from llmops_cli.serving.vllm_env import VllmInfo, probe_vllm, vllm_python
from llmops_cli.utils import atomic_write_json, atomic_write_text

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass
class Served:
    model_dir: str
    model_ref: str
    model_name: str
    lora_rank: int | None = None
    requires_merge: bool = False
    aliases: tuple[str, ...] = ()


def resolve_source(cfg: ProjectConfig, source: str | None = None) -> Served:
    """A registry reference becomes a verified, materialised directory; a path is served as is."""
    source = source or cfg.serve.source
    if Path(source).is_dir():
        return Served(str(Path(source)), str(source), cfg.project.name, adapter_rank(Path(source)))
    from llmops_cli.registry.factory import open_registry

    if cfg.serve.registry_root is not None and Path(cfg.serve.registry_root) != Path(cfg.registry.root):
        raise ConfigError(f"serve.registry_root={cfg.serve.registry_root} differs from register.root="
                          f"{cfg.registry.root}", hint="serve reads the registry the register section names: "
                                                       "remove serve.registry_root")
    registry = open_registry(cfg)
    version = registry.resolve(source, default_name=cfg.project.name)
    model_dir = registry.materialize(version)  # re-hashed on every call: a modified copy is rebuilt
    readiness = version.manifest.get("serve_readiness") or {}
    rank = readiness.get("lora_rank") or adapter_rank(Path(model_dir))
    # Clients may keep using the name they asked for (support-assistant@production).
    aliases = (source,) if ("@" in source and not source.startswith("@")) else ()
    return Served(str(model_dir), version.ref, version.name, rank, bool(readiness.get("requires_merge")), aliases)


def adapter_rank(path: Path) -> int | None:
    try:
        data = json.loads((path / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    rank = data.get("r")
    ranks = [rank] if isinstance(rank, int) else []
    ranks += [r for r in (data.get("rank_pattern") or {}).values() if isinstance(r, int)]
    return max(ranks) if ranks else None


@dataclass(frozen=True)
class BackendChoice:
    """Which backend serves, why (printed by `llmops serve`), and the vLLM that was found."""

    name: str  # "transformers" | "vllm"
    why: str
    vllm: VllmInfo | None = None


def select_backend(requested: str, configured_python: str | None = None, requires_merge: bool = False
                   ) -> BackendChoice:
    """The one place that decides. `vllm` runs wherever the vLLM interpreter has a vLLM build (its
    CPU build included); `auto` picks vLLM only for a CUDA build that sees a GPU, since on a CPU the
    embedded backend starts in seconds rather than minutes."""
    if requested == "transformers":
        return BackendChoice("transformers", "requested in config (serve.backend=transformers)")
    if requested == "auto" and requires_merge:
        return BackendChoice("transformers", "auto: this version must be merged before serving (registry "
                                             "serve_readiness)")
    python = vllm_python(configured_python)
    info = probe_vllm(python)
    if requested == "vllm":
        if info is None:
            raise BackendUnavailable(f"serve.backend=vllm but {python} has no vllm",
                                     hint="run `make vllm` (creates .venv-vllm, used by default), set "
                                          "serve.vllm.python to an interpreter that has vllm, or use "
                                          "--set serve.backend=transformers")
        return BackendChoice("vllm", f"requested in config (serve.backend=vllm): {_describe(info)}", info)
    if info is None:
        return BackendChoice("transformers", f"auto: no vllm in {python} (the embedded backend)")
    if info.device != "cuda":
        return BackendChoice("transformers", f"auto: {_describe(info)} sees no CUDA GPU; set "
                                             "serve.backend=vllm to serve with it anyway")
    return BackendChoice("vllm", f"auto: {_describe(info)}", info)


def _describe(info: VllmInfo) -> str:
    return f"{info.distribution or 'vllm'} {info.version or '(version unknown)'} on {info.device} ({info.python})"


def build_spec(cfg: ProjectConfig, served: Served, choice: BackendChoice) -> ServeSpec:
    """Everything the server process needs, minus secrets (API keys stay in the environment or file).
    Derived values (absolute paths, the vLLM device and interpreter) are decided here and nowhere else."""
    import secrets

    from llmops_cli.serving.auth import load_api_keys

    scfg = cfg.serve
    if scfg.api_keys_file and not Path(scfg.api_keys_file).is_file():
        raise ConfigError(f"serve.api_keys_file={scfg.api_keys_file} does not exist",
                          hint="create it with one key per line, or unset serve.api_keys_file")
    api_keys = load_api_keys(scfg.api_keys_env, scfg.api_keys_file)
    if scfg.host not in LOOPBACK and not api_keys:
        raise ConfigError(
            f"serve.host={scfg.host} exposes the server beyond loopback but no API key is configured",
            hint=f"set {scfg.api_keys_env}=key1,key2 (or serve.api_keys_file) or keep serve.host=127.0.0.1",
        )
    backend = choice.name
    if backend == "vllm" and served.requires_merge:
        raise ConfigError(f"{served.model_ref} needs merging before vLLM can serve it (serve_readiness)",
                          hint="serve it with --set serve.backend=transformers, or register a merged model")
    base = cfg.model.model_dump()
    if Path(base["base"]).exists():
        base["base"] = os.path.abspath(base["base"])  # the server may run from another directory
    return ServeSpec.model_validate({
        "backend": backend,
        "base": base,
        "model_dir": os.path.abspath(served.model_dir),
        "model_name": served.model_name,
        "model_ref": served.model_ref,
        "model_aliases": [served.model_ref, *served.aliases],
        "device": scfg.device,  # the transformers backend's; vLLM's is what its interpreter reported
        "lora_rank": served.lora_rank,
        "host": scfg.host,
        "port": scfg.port,
        "api_keys_env": scfg.api_keys_env,  # the name only: keys stay in the environment
        "api_keys_file": os.path.abspath(scfg.api_keys_file) if scfg.api_keys_file else None,
        "admin_token": secrets.token_urlsafe(24),  # lets `serve reload` (same user) reach /admin/reload
        "max_new_tokens": scfg.max_new_tokens,
        "max_prompt_tokens": scfg.max_prompt_tokens,
        "max_batch": scfg.max_batch,
        "body_timeout_s": scfg.body_timeout_s,
        "max_concurrent_requests": scfg.max_concurrent_requests,
        "max_body_bytes": scfg.max_body_bytes,
        "request_log": os.path.abspath(scfg.request_log),
        "log_content": scfg.log_content,
        "log_redact": list(scfg.log_redact),
        "log_sample_rate": scfg.log_sample_rate,
        "log_max_bytes": scfg.log_max_bytes,
        "log_backups": scfg.log_backups,
        "feedback_log": os.path.abspath(scfg.feedback_log),
        "ready_timeout_s": scfg.ready_timeout_s,
        "vllm": {**scfg.vllm.model_dump(), "python": choice.vllm.python if choice.vllm else scfg.vllm.python,
                 "device": choice.vllm.device if choice.vllm else None},
        "vllm_log": os.path.abspath(Path(scfg.endpoint_file).with_name("vllm.log")),
        "created": int(time.time()),
    })


def check_port_free(host: str, port: int, what: str = "serve.port") -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        # As servers bind (uvicorn, vLLM): connections of a just-exited server in TIME_WAIT do not
        # count as "in use"; a live listener still does.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            raise BackendUnavailable(
                f"port {port} on {host} ({what}) is already in use",
                hint="stop the other server (`llmops serve stop`) or pass --set serve.port=N",
            ) from None


def url_of(spec: ServeSpec) -> str:
    host = "127.0.0.1" if spec.host in ("0.0.0.0", "localhost") else spec.host
    return f"http://{host}:{spec.port}"


def server_command(spec_path: str) -> list[str]:
    return [sys.executable, "-m", "llmops_cli.serving.app", spec_path]


def spec_path_for(endpoint_file: str) -> Path:
    return Path(endpoint_file).with_name("spec.json")


def write_spec(spec: ServeSpec, endpoint_file: str, suffix: str = "") -> str:
    """The server's spec file, readable by its owner only (it holds the admin token)."""
    path = spec_path_for(endpoint_file).with_name(f"spec{suffix}.json")
    atomic_write_text(path, spec.to_file())
    os.chmod(path, 0o600)
    return str(path)


def start_detached(spec: ServeSpec | dict[str, Any], endpoint_file: str, timeout_s: float) -> dict[str, Any]:
    """Start the server in its own session, wait until /ready, write the endpoint file.

    Replace, then switch: a server of this project that is already running keeps serving until the new
    one is ready (on a free port if it holds serve.port), and is stopped only then. If the new one fails,
    the old one is left serving and the error says so.
    """
    spec = ServeSpec.of(spec)
    old = read_endpoint(endpoint_file)
    old_alive = old is not None and _alive(int(old["pid"]))
    if not old_alive:
        stop_server(endpoint_file)  # a stale file, and any engine a killed gateway left behind
    spec = _ports_for_new_server(spec, old if old_alive else None)
    spec_path = write_spec(spec, endpoint_file, suffix=f".{spec.port}.next" if old_alive else "")
    log_path = Path(endpoint_file).with_name("server.log")
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(server_command(spec_path), stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    url = url_of(spec)
    try:
        wait_ready(url, proc, timeout_s, log_path)
    except BaseException as exc:
        _kill_group(proc.pid)
        _stop_vllm_group(endpoint_file, proc.pid)
        if old_alive:
            Path(spec_path).unlink(missing_ok=True)
        if old_alive and isinstance(exc, BackendUnavailable):
            raise BackendUnavailable(f"{exc.message} — {old['model_ref']} is still being served at {old['url']} "
                                     f"(pid {old['pid']})", hint=exc.hint) from None
        raise
    if old_alive:
        os.replace(spec_path, spec_path_for(endpoint_file))  # reload/stop now find the new server's token
    endpoint = _endpoint_record(spec, proc.pid, str(log_path))
    atomic_write_json(endpoint_file, endpoint)
    if old_alive:
        endpoint["replaced"] = {"pid": old["pid"], "url": old["url"], "model_ref": old.get("model_ref")}
        _stop_endpoint(old, endpoint_file)
    return endpoint


def _ports_for_new_server(spec: ServeSpec, old: dict[str, Any] | None) -> ServeSpec:
    """serve.port (and the vLLM port) when free; while the old server holds them, free ones instead.
    Without an old server, a port in use is an error, as before."""
    vllm_port = spec.vllm_port
    if old is None:
        check_port_free(spec.host, spec.port)
        if spec.backend == "vllm":
            check_port_free("127.0.0.1", vllm_port, "serve.vllm.port")
        return spec
    port = spec.port if _port_free(spec.host, spec.port) else _free_port(spec.host)
    if spec.backend == "vllm" and not _port_free("127.0.0.1", vllm_port):
        vllm_port = _free_port("127.0.0.1")
    return spec.model_copy(update={"port": port, "vllm": spec.vllm.model_copy(update={"port": vllm_port})})


def _port_free(host: str, port: int) -> bool:
    try:
        check_port_free(host, port)
    except BackendUnavailable:
        return False
    return True


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def announce_foreground(spec: ServeSpec, endpoint_file: str) -> dict[str, Any]:
    """Write the spec and endpoint files for a server running in this process, so that `serve
    status|ask|reload|stop` (and `register promote --reload`) find a foreground server too.
    A live server already recorded there is refused: overwriting its record would orphan it."""
    running = read_endpoint(endpoint_file)
    if running is not None and _alive(int(running["pid"])) and int(running["pid"]) != os.getpid():
        raise BackendUnavailable(f"a server of this project is already running: {running.get('model_ref')} at "
                                 f"{running.get('url')} (pid {running['pid']}, recorded in {endpoint_file})",
                                 hint="stop it with `llmops serve stop`, replace it with `llmops serve --detach`, or "
                                      "give this one its own --set serve.endpoint_file=... and serve.port")
    write_spec(spec, endpoint_file)
    endpoint = {**_endpoint_record(spec, os.getpid(), None), "foreground": True}
    atomic_write_json(endpoint_file, endpoint)
    return endpoint


def _endpoint_record(spec: ServeSpec, pid: int, log: str | None) -> dict[str, Any]:
    """What serve/endpoint.json says of a running server (read by status, ask, reload, stop)."""
    url = url_of(spec)
    return {"url": url, "pid": pid, "model": spec.model_name, "model_ref": spec.model_ref, "backend": spec.backend,
            "log": log, "request_log": spec.request_log, "feedback_log": spec.feedback_path,
            "metrics": f"{url}/metrics", "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def forget_endpoint(endpoint_file: str, pid: int) -> None:
    """Remove the endpoint file if it still names `pid` (a newer server may have replaced it)."""
    endpoint = read_endpoint(endpoint_file)
    if endpoint is not None and int(endpoint.get("pid", -1)) == pid:
        Path(endpoint_file).unlink(missing_ok=True)


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
            info = response.json()
            if info.get("status") == "failed":
                raise BackendUnavailable(f"the {info.get('backend') or 'model'} backend failed to start: "
                                         f"{info.get('error')}", hint=info.get("hint") or _tail(log_path))
        except (httpx.HTTPError, ValueError):
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
    ready, error, info = False, None, {}
    if alive:
        try:
            response = httpx.get(f"{endpoint['url']}/ready", timeout=2)
            ready = response.status_code == 200
            info = response.json()
            if not ready:
                error = info.get("error") or info.get("status")
        except (httpx.HTTPError, ValueError) as exc:
            error = f"/ready did not answer: {type(exc).__name__}"
    else:
        error = f"process {endpoint['pid']} is not running"
    extra = {k: info[k] for k in ("restarts", "last_restart", "sampling_defaults") if k in info}
    return {**endpoint, **extra, "running": alive, "ready": ready, "error": error}


def running_endpoint(endpoint_file: str) -> dict[str, Any]:
    """The endpoint record of the running detached server; BackendUnavailable when none runs."""
    endpoint = read_endpoint(endpoint_file)
    if endpoint is None or not _alive(int(endpoint["pid"])):
        raise BackendUnavailable(f"no server is running (endpoint file: {endpoint_file})",
                                 hint="start one with `llmops serve --detach`")
    return endpoint


def reload_server(cfg: ProjectConfig, source: str | None = None) -> dict[str, Any]:
    """Switch the running detached server to `source` (default serve.source) without failing
    requests in flight; return the updated endpoint info. BackendUnavailable when none runs."""
    import httpx

    endpoint_file = cfg.serve.endpoint_file
    endpoint = running_endpoint(endpoint_file)
    try:
        spec = ServeSpec.model_validate_json(spec_path_for(endpoint_file).read_text(encoding="utf-8"))
    except (OSError, ValueError):  # pydantic's ValidationError is a ValueError
        raise BackendUnavailable(f"cannot read the running server's spec next to {endpoint_file}",
                                 hint="restart it with `llmops serve --detach`") from None
    served = resolve_source(cfg, source)
    if served.model_name != endpoint["model"]:
        raise ConfigError(f"{served.model_ref} is a different model than the served {endpoint['model']!r}; "
                          "reload switches versions of one model", hint="restart with `llmops serve --detach`")
    if endpoint.get("backend") == "vllm" and served.requires_merge:
        raise BackendUnavailable(f"{served.model_ref} needs merging before vLLM can serve it",
                                 hint="restart with --set serve.backend=transformers")
    if served.model_ref == endpoint.get("model_ref"):
        return {**endpoint, "previous_model_ref": served.model_ref, "unchanged": True}
    body = {"model_dir": os.path.abspath(served.model_dir), "model_ref": served.model_ref,
            "model_name": served.model_name, "lora_rank": served.lora_rank, "aliases": list(served.aliases)}
    try:
        response = httpx.post(f"{endpoint['url']}/admin/reload", json=body, timeout=cfg.serve.ready_timeout_s,
                              headers={"X-Llmops-Admin-Token": spec.admin_token or ""})
    except httpx.HTTPError as exc:
        raise BackendUnavailable(f"cannot reach the server at {endpoint['url']}: {type(exc).__name__}",
                                 hint="`llmops serve status`") from None
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise BackendUnavailable(f"reload to {served.model_ref} failed: {message}",
                                 hint="the previous version is still being served")
    previous = endpoint.get("model_ref")
    endpoint.update(model_ref=served.model_ref, previous_model_ref=previous,
                    reloaded_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    atomic_write_json(endpoint_file, endpoint)
    return endpoint


def stop_server(endpoint_file: str, grace_s: float = 15) -> bool:
    """Stop the server named by the endpoint file (SIGTERM, then SIGKILL); True if one was running."""
    endpoint = read_endpoint(endpoint_file)
    if endpoint is None:
        return False
    was_running = _stop_endpoint(endpoint, endpoint_file, grace_s)
    Path(endpoint_file).unlink(missing_ok=True)
    return was_running


def _stop_endpoint(endpoint: dict[str, Any], endpoint_file: str, grace_s: float = 15) -> bool:
    pid = int(endpoint["pid"])
    was_running = _alive(pid)
    if was_running and endpoint.get("foreground"):
        _kill_one(pid, grace_s)  # not a session leader: signal the process, never a process group
    elif was_running:
        _kill_group(pid, grace_s)
    _stop_vllm_group(endpoint_file, pid)
    return was_running


def _stop_vllm_group(endpoint_file: str, gateway_pid: int) -> None:
    """The gateway stops its vLLM child on shutdown; this catches one left behind by a gateway that
    was killed before it could (its process group id is in vllm-<pid>.pgid next to the endpoint file)."""
    from llmops_cli.serving.backends import vllm_pgid_file

    path = vllm_pgid_file(Path(endpoint_file).with_name("vllm.log"), gateway_pid)
    try:
        pgid = int(path.read_text(encoding="utf-8").strip())
    except (OSError, ValueError):
        return
    try:  # a stale file must not kill an unrelated group that reuses the id
        members = [p for p in Path("/proc").iterdir() if p.name.isdigit() and _pgid_of(int(p.name)) == pgid]
        if any(b"vllm" in (m / "cmdline").read_bytes().lower() or b"VLLM" in (m / "comm").read_bytes()
               for m in members if (m / "cmdline").exists()):
            os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError, OSError):
        pass
    path.unlink(missing_ok=True)


def _pgid_of(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


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


def _kill_one(pid: int, grace_s: float = 15) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.1)
    if _alive(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


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
