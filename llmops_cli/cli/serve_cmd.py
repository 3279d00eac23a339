"""`llmops serve` (start; --detach for background), `serve status`, `serve stop`."""

from __future__ import annotations

from typing import Annotated

import typer

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project

app = typer.Typer(help="Serve a registered model behind an OpenAI-compatible API.")


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

        backend, why = lifecycle.select_backend(cfg.serve.backend)
        console.info(f"backend: {backend} ({why})")
        served = lifecycle.resolve_source(cfg)
        spec = lifecycle.build_spec(cfg, served, backend)
        url = lifecycle.url_of(spec)
        if detach:
            console.info(f"starting {served.model_ref} at {url} (waiting up to {cfg.serve.ready_timeout_s:.0f}s)")
            endpoint = lifecycle.start_detached(spec, cfg.serve.endpoint_file, cfg.serve.ready_timeout_s)
            console.result(endpoint, f"serving {endpoint['model_ref']} at {endpoint['url']} "
                                     f"(pid {endpoint['pid']}; stop with `llmops serve stop`)")
            return
        import uvicorn

        from llmops_cli.serving.app import _keys_from_env, create_app

        lifecycle.check_port_free(spec["host"], spec["port"])
        spec["api_keys"] = _keys_from_env(spec["api_keys_env"])
        console.info(f"serving {served.model_ref} at {url} (Ctrl-C to stop)")
        uvicorn.run(create_app(spec), host=spec["host"], port=spec["port"], log_level="warning")


@app.command("status")
def status(config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Is the detached server running and ready? Exits 1 when it is not."""
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.serving.lifecycle import server_status

        info = server_status(cfg.serve.endpoint_file)
        ok = info.get("running") and info.get("ready")
        console.result(info, f"{info['model_ref']} ready at {info['url']} (pid {info['pid']})" if ok else None)
        if not ok:
            console.warn("server not running" + (f": {info['reason']}" if "reason" in info else ""))
            raise typer.Exit(1)


@app.command("stop")
def stop(config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Stop the detached server gracefully (SIGTERM, then SIGKILL after a grace period)."""
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.serving.lifecycle import stop_server

        stopped = stop_server(cfg.serve.endpoint_file)
        console.result({"stopped": stopped}, "server stopped" if stopped else "no server was running")


@app.command("ask")
def ask(
    message: Annotated[str, typer.Argument(help="The user message to send.")],
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
    max_tokens: Annotated[int, typer.Option(help="Completion budget.")] = 16,
) -> None:
    """Send one chat request to the running server and print the answer (a smoke test)."""
    import os

    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.serving.client import chat_once

        reply = chat_once(cfg.serve.endpoint_file, message, max_tokens,
                          api_key=(os.environ.get(cfg.serve.api_keys_env, "").split(",")[0] or None))
        console.info(f"POST {reply['url']}/v1/chat/completions  model={reply['model']}")
        console.info(f"user: {message}")
        if not json_:
            typer.echo(f"assistant: {reply['content']}")
        console.result(reply)
