"""`llmops monitor`."""

from __future__ import annotations

import typer

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project

app = typer.Typer(help="Production health from the server's request log.")


@app.callback(invoke_without_command=True)
def monitor(ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Summarise the server's request log (requests, errors, latency p50/p95, tokens); exit 1 on a breach."""
    if ctx.invoked_subcommand is not None:
        return
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.errors import GateFailed
        from llmops_cli.monitor.summary import summarize

        result = summarize(cfg.monitor)
        keys = ["requests", "errors", "error_rate", "latency_p50_ms", "latency_p95_ms", "tokens_in", "tokens_out"]
        rows = [["all", *(result.overall[k] for k in keys)]]
        rows += [[name, *(s[k] for k in keys)] for name, s in result.per_model.items()]
        console.table("requests", ["model", *keys], rows)
        if result.corrupt_lines:
            console.warn(f"{result.corrupt_lines} corrupt log line(s) skipped")
        console.result(result.to_dict(), None if result.breaches else f"summary written to {result.output}")
        if result.breaches:
            raise GateFailed("monitor thresholds breached: " + "; ".join(result.breaches))
