"""`llmops monitor`: summary (default), check, watch, report, export, export-rules."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project, new_app

if TYPE_CHECKING:
    from llmops_cli.config.schema import ProjectConfig
    from llmops_cli.console import Console
    from llmops_cli.monitor.summary import MonitorResult

app = new_app(help="Production health, quality, drift and alerts from the server's logs.")

_KEYS = ["requests", "error_rate", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms", "ttft_p50_ms",
         "tokens_in", "tokens_out", "flagged_rate", "mean_rating", "drift_length_psi"]


def _summary(cfg: ProjectConfig, write: bool = True) -> MonitorResult:
    from llmops_cli.monitor.summary import summarize

    return summarize(cfg.monitor, write=write)  # alert metrics were checked when the config loaded


def _render_health(console: Console, result: MonitorResult) -> None:
    rows = [["all", *(result.overall.get(k) for k in _KEYS)]]
    rows += [[name, *(s.get(k) for k in _KEYS)] for name, s in result.per_model.items()]
    console.table("requests per model version", ["model", *_KEYS], rows)
    if result.corrupt_lines:
        console.warn(f"{result.corrupt_lines} corrupt log line(s) skipped")
    for warning in result.warnings:
        console.warn(warning)


@app.callback(invoke_without_command=True)
def monitor(
    ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
    report_only: Annotated[bool, typer.Option(
        "--report-only", help="Report breached alerts but exit 0 (e.g. in `make demo`); CI jobs leave it off.")]
    = False,
) -> None:
    """Summarise the logs (health, quality, drift per model version); exit 1 when an alert rule is breached."""
    if ctx.invoked_subcommand is not None:
        return
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.errors import GateFailed

        result = _summary(cfg)
        _render_health(console, result)
        console.result(result.to_dict(), None if result.breaches else f"summary written to {result.output}",
                       ok=report_only or not result.breaches)
        if result.breaches and report_only:
            console.warn("alerts breached (reported only): " + "; ".join(result.breaches))
        elif result.breaches:
            raise GateFailed("monitor thresholds breached: " + "; ".join(result.breaches))


@app.command()
def check(ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Test every alert rule (monitor.alerts, legacy thresholds, drift limits); exit 1 listing the breached ones.

    Rules name a metric from the summary: requests, errors, error_rate, request_rate_per_s, latency_p50_ms,
    latency_p95_ms, latency_p99_ms, ttft_p50_ms, ttft_p95_ms, tokens_in, tokens_out, response_tokens_p50,
    response_tokens_p95, empty_rate, truncated_rate, refusal_rate, pii_rate, blocklist_rate, flagged_rate,
    feedback_count, mean_rating, low_rating_rate, drift_length_psi, drift_vocab_js, drift_bigram_js, drift_oov_rate.
    """
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.errors import GateFailed

        result = _summary(cfg)
        rows = [[a["rule"], a["scope"], a["value"], f"{a['op']} {a['threshold']:g}", a["severity"],
                 "FIRING" if a["breached"] else "ok"] for a in result.alerts]
        console.table("alert rules", ["rule", "scope", "value", "limit", "severity", "state"], rows)
        for warning in result.warnings:
            console.warn(warning)
        fired = [a for a in result.alerts if a["breached"]]
        console.result({"ok": not fired, "breaches": result.breaches, "alerts": result.alerts,
                        "corrupt_lines": result.corrupt_lines},
                       None if fired else f"{len(result.alerts)} rule check(s), none breached")
        if fired:
            raise GateFailed(f"{len(fired)} alert rule(s) breached:\n  " + "\n  ".join(result.breaches))


@app.command()
def watch(
    ctx: typer.Context,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    interval: Annotated[float, typer.Option(min=0.0, help="Seconds between refreshes.")] = 5.0,
    iterations: Annotated[int | None, typer.Option(min=1, help="Stop after N frames (default: until Ctrl-C).")] = None,
) -> None:
    """A live terminal dashboard: health per model version, latency trend, firing alerts."""
    with command(False):
        cfg = load_project(config, set_, ctx)
        import sys
        import time

        from rich.console import Console as RichConsole
        from rich.live import Live

        from llmops_cli.console import plain_wanted
        from llmops_cli.monitor.watch import render_lines
        from llmops_cli.monitor.watch import watch as run_watch

        if plain_wanted():  # CI, NO_COLOR, a pipe: plain lines, full numbers, no table cut to 80 columns
            run_watch(lambda: _summary(cfg, write=False), typer.echo, interval, iterations, time.sleep,
                      render=render_lines)
            return
        screen = RichConsole(file=sys.stdout)
        if iterations == 1:
            run_watch(lambda: _summary(cfg, write=False), screen.print, interval, iterations, time.sleep)
            return
        with Live(console=screen, refresh_per_second=4, screen=False) as live:
            run_watch(lambda: _summary(cfg, write=False), live.update, interval, iterations, time.sleep)


@app.command()
def report(
    ctx: typer.Context,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_: JsonOpt = False,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="HTML file (default: monitor.report).")] = None,
) -> None:
    """Write an HTML report (health tables, latency over time, drift, feedback plots) to open in a browser."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.monitor.report import write_report

        result = _summary(cfg)
        path = write_report(result, str(output or cfg.monitor.report), f"{cfg.project.name} — llmops monitor")
        console.result({"ok": True, "report": path, "breaches": result.breaches}, f"report written to {path}")


@app.command()
def export(ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Write low-rated and flagged interactions as a dataset for `llmops prep` (corrections become completions)."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.monitor.export import export_dataset

        out = export_dataset(cfg.monitor, _summary(cfg, write=False))
        if out.low_rated_without_prompt:
            console.warn(f"{out.low_rated_without_prompt} low rating(s) match no logged prompt "
                         "(turn on content logging in serve to export them)")
        console.result(out.to_dict(), f"{out.exported} example(s) with a correction -> {out.output}; "
                                      f"{out.for_review} to review -> {out.review_output}")


@app.command("export-rules")
def export_rules(
    ctx: typer.Context,
    config: ConfigOpt = None,
    set_: SetOpt = None,
    json_: JsonOpt = False,
    output_dir: Annotated[Path | None, typer.Option("--output-dir", "-o", help="Default: monitor.rules_dir.")] = None,
) -> None:
    """Generate Prometheus alerting rules and a Grafana dashboard JSON from the monitor config."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.monitor.alerts import export_rules as write_rules

        out = write_rules(cfg.monitor, cfg.project.name, output_dir)
        for skipped in out.skipped:
            console.warn(f"no PromQL for {skipped}")
        console.result(out.to_dict(), f"{out.rules} rule(s) -> {out.prometheus_rules}; dashboard -> "
                                      f"{out.grafana_dashboard}")
