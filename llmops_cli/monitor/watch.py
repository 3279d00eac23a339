"""`monitor watch`: a live terminal dashboard built from repeated summaries (rich renderables only)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from llmops_cli.monitor.summary import MonitorResult

_COLUMNS = [("requests", "req"), ("request_rate_per_s", "req/s"), ("error_rate", "err%"), ("latency_p50_ms", "p50 ms"),
            ("latency_p95_ms", "p95 ms"), ("latency_p99_ms", "p99 ms"), ("ttft_p50_ms", "ttft ms"),
            ("flagged_rate", "flagged"), ("mean_rating", "rating"),
            ("drift_length_psi", "psi")]


def _fmt(key: str, value: Any) -> str:
    if value is None:
        return "—"
    if key in ("error_rate", "flagged_rate"):
        return f"{100 * value:.1f}%"
    if isinstance(value, float):
        return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _spark(values: list[float | None], width: int = 24) -> str:
    ticks = "▁▂▃▄▅▆▇█"
    values = [v for v in values if v is not None][-width:]
    if not values:
        return ""
    hi = max(values) or 1.0
    return "".join(ticks[min(7, int(7 * v / hi))] for v in values)


def render_frame(result: MonitorResult, title: str = "llmops monitor") -> Any:
    """One dashboard frame: per-version health, recent p95 latency per window, and firing alerts."""
    from rich.console import Group
    from rich.panel import Panel
    from rich.table import Table
    from rich.text import Text

    table = Table(title="health per model version", expand=True)
    table.add_column("model", no_wrap=True, min_width=8)
    for _, label in _COLUMNS:
        table.add_column(label, justify="right")
    for name, summary in [("all", result.overall), *result.per_model.items()]:
        # Text, not str: rich would read "[...]" in a model name as markup.
        table.add_row(Text(name), *(_fmt(k, summary.get(k)) for k, _ in _COLUMNS))
    trends = Table(title=f"p95 latency / error rate per {result.window_s}s window", expand=True)
    trends.add_column("model")
    trends.add_column("p95 latency")
    trends.add_column("errors")
    for model, windows in result.per_model_windows.items():
        trends.add_row(Text(model), _spark([w["latency_p95_ms"] for w in windows]),
                       _spark([w["error_rate"] for w in windows]))
    fired = [a for a in result.alerts if a["breached"]]
    alerts = Text("\n".join(f"● {a['severity']}: {a['message']}" for a in fired) or "no alert firing",
                  style="bold red" if fired else "green")
    footer = Text(f"{result.lines} lines, {result.corrupt_lines} corrupt; " + "; ".join(result.warnings), style="dim")
    return Panel(Group(table, trends, Panel(alerts, title=f"alerts ({len(fired)})"), footer), title=title)


def render_lines(result: MonitorResult) -> str:
    """One frame as plain lines (CI, NO_COLOR, a pipe): every number whole, nothing cut to a width."""
    lines = [f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} {result.lines} lines, "
             f"{result.corrupt_lines} corrupt"]
    for name, summary in [("all", result.overall), *result.per_model.items()]:
        cells = " ".join(f"{key}={_plain(summary.get(key))}" for key, _ in _COLUMNS)
        lines.append(f"{name} {cells}")
    fired = [a for a in result.alerts if a["breached"]]
    lines += [f"alert {a['severity']}: {a['message']}" for a in fired] or ["no alert firing"]
    lines += [f"warning: {w}" for w in result.warnings]
    return "\n".join(lines)


def _plain(value: Any) -> str:
    if value is None:
        return "-"
    if not isinstance(value, float):
        return str(value)
    text = f"{value:.6g}"
    return f"{value:.0f}" if "e+" in text else text  # .6g writes a million as 1e+06: print those whole


def watch(summarize_once: Callable[[], MonitorResult], show: Callable[[Any], None], interval_s: float,
          iterations: int | None, sleep: Callable[[float], None],
          render: Callable[[MonitorResult], Any] = render_frame) -> MonitorResult:
    """Call `summarize_once` every interval and hand each rendered frame to `show`; `iterations` bounds
    it (tests)."""
    done = 0
    while True:
        result = summarize_once()
        show(render(result))
        done += 1
        if iterations is not None and done >= iterations:
            return result
        sleep(interval_s)
