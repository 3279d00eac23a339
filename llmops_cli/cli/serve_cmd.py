"""`llmops serve` (start; --detach for background), `serve status|stop|reload|ask`."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project, new_app

app = new_app(help="Serve a registered model behind an OpenAI-compatible API.")


@app.callback(invoke_without_command=True)
def serve(
    ctx: typer.Context,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
    detach: Annotated[bool, typer.Option("--detach", "-d", help="Run in the background; return when ready.")]
    = False,
) -> None:
    """Start the server for serve.source (a registry reference or a path)."""
    if ctx.invoked_subcommand is not None:
        return
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.serving import lifecycle

        served = lifecycle.resolve_source(cfg)
        choice = lifecycle.select_backend(cfg.serve.backend, cfg.serve.vllm.python, served.requires_merge)
        console.info(f"backend: {choice.name} ({choice.why})")
        spec = lifecycle.build_spec(cfg, served, choice)
        url = lifecycle.url_of(spec)
        if detach:
            console.info(f"starting {served.model_ref} at {url} (waiting up to {cfg.serve.ready_timeout_s:.0f}s)")
            endpoint = lifecycle.start_detached(spec, cfg.serve.endpoint_file, cfg.serve.ready_timeout_s)
            console.result(endpoint, f"serving {endpoint['model_ref']} at {endpoint['url']} "
                                     f"(pid {endpoint['pid']}; stop with `llmops serve stop`)")
            return
        import signal

        from llmops_cli.serving.app import run_server

        lifecycle.check_port_free(spec.host, spec.port)
        lifecycle.announce_foreground(spec, cfg.serve.endpoint_file)  # so that status/reload/stop find it
        console.info(f"serving {served.model_ref} at {url} (Ctrl-C to stop)")
        # uvicorn re-raises the SIGTERM it caught once it has shut down; with the default handler that
        # would end this process before the endpoint file is removed.
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
        try:
            run_server(spec)
        finally:
            lifecycle.forget_endpoint(cfg.serve.endpoint_file, os.getpid())


def _exit_on_sigterm(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


@app.command("status")
def status(
    ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Is the detached server running and ready? Exits 1 when it is not."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.serving.lifecycle import server_status

        info = server_status(cfg.serve.endpoint_file)
        ok = bool(info.get("running") and info.get("ready"))
        restarts = (f"; engine restarted {info['restarts']} time(s), last at {info['last_restart']['at']}: "
                    f"{info['last_restart']['reason']}" if info.get("restarts") else "")
        console.result(info, f"{info['model_ref']} ready at {info['url']} (pid {info['pid']}){restarts}"
                       if ok else None, ok=ok)
        if not ok:
            why = info.get("reason") or info.get("error")
            console.warn(("server not ready" if info.get("running") else "server not running")
                         + (f": {why}" if why else ""))
            raise typer.Exit(1)


@app.command("stop")
def stop(
    ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Stop the detached server gracefully (SIGTERM, then SIGKILL after a grace period)."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.serving.lifecycle import stop_server

        stopped = stop_server(cfg.serve.endpoint_file)
        console.result({"stopped": stopped}, "server stopped" if stopped else "no server was running")


@app.command("reload")
def reload(
    ctx: typer.Context, 
    source: Annotated[str | None, typer.Argument(help="Registry reference to serve (default: serve.source).")]
    = None,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """Switch the running server to another version without failing requests in flight."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.serving.lifecycle import reload_server

        endpoint = reload_server(cfg, source)
        if endpoint.get("unchanged"):
            console.result(endpoint, f"already serving {endpoint['model_ref']} at {endpoint['url']}")
        else:
            console.result(endpoint, f"now serving {endpoint['model_ref']} at {endpoint['url']} "
                                     f"(was {endpoint.get('previous_model_ref')})")


@app.command("ask")
def ask(
    ctx: typer.Context, 
    message: Annotated[str, typer.Argument(help="The user message to send.")],
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
    max_tokens: Annotated[int, typer.Option(help="Completion budget.")] = 16,
) -> None:
    """Send one chat request to the running server and print the answer (a smoke test)."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.serving.auth import load_api_keys
        from llmops_cli.serving.client import chat_once

        keys = load_api_keys(cfg.serve.api_keys_env, cfg.serve.api_keys_file) if (
            cfg.serve.api_keys_file is None or os.path.isfile(cfg.serve.api_keys_file)) else []
        reply = chat_once(cfg.serve.endpoint_file, message, max_tokens, api_key=keys[0] if keys else None)
        console.info(f"POST {reply['url']}/v1/chat/completions  model={reply['model']}")
        console.info(f"user: {message}")
        if not json_:
            typer.echo(f"assistant: {reply['content']}")
        console.result(reply)
