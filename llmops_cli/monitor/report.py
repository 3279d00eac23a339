"""`monitor report`: one self-contained HTML file (inline SVG plots, no scripts, no network)."""

from __future__ import annotations

import html
import io
from datetime import UTC, datetime, timedelta
from typing import Any

from llmops_cli.monitor.summary import MonitorResult
from llmops_cli.utils import atomic_write_text

_STYLE = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1100px;color:#222}
table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #ccc;padding:3px 5px;text-align:right}
th{background:#f3f3f3}td:first-child{text-align:left}.bad{background:#fdd}.ok{background:#dfd}
figure{margin:1em 0}figcaption{color:#555}.scroll{overflow-x:auto;width:max-content;max-width:calc(100vw - 4em)}
td{white-space:nowrap}th{white-space:normal;vertical-align:bottom}svg{max-width:100%;height:auto}
@media print{.scroll{overflow:visible}}"""

_HEALTH = ["requests", "error_rate", "request_rate_per_s", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms",
           "ttft_p50_ms", "tokens_in", "tokens_out", "flagged_rate", "mean_rating"]
_DRIFT = ["prompts", "drift_length_psi", "drift_vocab_js", "drift_bigram_js", "drift_oov_rate"]


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(columns: list[str], rows: list[list[Any]], classes: list[str] | None = None) -> str:
    # Metric names are long and the numbers short: a header may break after an underscore, so the
    # health table's twelve columns fit the page instead of pushing the last ones out of sight.
    head = "".join(f"<th>{html.escape(c).replace('_', '_<wbr>')}</th>" for c in columns)
    body = []
    for i, row in enumerate(rows):
        cls = f' class="{classes[i]}"' if classes and classes[i] else ""
        body.append(f"<tr{cls}>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    # In a scrolling box: a wide table scrolls sideways instead of being cut at the page's width.
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            "</div>")


def _svg(fig: Any) -> str:
    import matplotlib.pyplot as plt

    buf = io.StringIO()
    fig.savefig(buf, format="svg", bbox_inches="tight")
    plt.close(fig)
    text = buf.getvalue()
    return text[text.index("<svg"):]  # drop the XML prolog and doctype: invalid inside HTML


def time_axis_limits(starts: list[float], window_s: int) -> tuple[datetime, datetime]:
    """The data's span plus half a window either side: one window gets a one-window-wide axis (matplotlib
    alone spread a single point over 2025-2029)."""
    half = timedelta(seconds=window_s / 2)
    return (datetime.fromtimestamp(min(starts), UTC) - half, datetime.fromtimestamp(max(starts), UTC) + half)


def _plots(result: MonitorResult) -> list[tuple[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = []
    if result.per_model_windows:
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(9, 5.5), sharex=True)
        for model, windows in result.per_model_windows.items():
            xs = [datetime.fromtimestamp(w["start"], UTC) for w in windows]
            (line,) = ax1.plot(xs, [w["latency_p95_ms"] for w in windows], marker="o", label=f"{model} p95")
            colour = line.get_color()  # one colour per version across both panels
            # Markers on every series: one window is one point, and a line alone draws nothing there.
            ax1.plot(xs, [w["latency_p50_ms"] for w in windows], linestyle="--", marker="x", color=colour,
                     label=f"{model} p50")
            ax2.plot(xs, [w["error_rate"] for w in windows], marker="o", color=colour, label=model)
        import matplotlib.dates as mdates

        ax1.set_xlim(*time_axis_limits([w["start"] for ws in result.per_model_windows.values() for w in ws],
                                       result.window_s))
        locator = mdates.AutoDateLocator()
        ax2.xaxis.set_major_locator(locator)
        ax2.xaxis.set_major_formatter(mdates.ConciseDateFormatter(locator))
        # From zero: latency and error rate cannot be negative (one value alone was centred on -0.04..0.04).
        ax1.set_ylim(0, ax1.get_ylim()[1] * 1.08)  # and headroom: the highest marker is not cut in half
        ax2.set_ylim(0, max(ax2.get_ylim()[1], 0.05) * 1.05)
        ax1.set_ylabel("latency (ms)")
        ax2.set_ylabel("error rate")
        ax1.legend(fontsize=7)
        ax2.legend(fontsize=7)
        plots.append(("Latency and errors over time", _svg(fig)))
    ref = result.drift.get("reference_lengths")
    current = result.drift.get("current_lengths") or {}
    if ref and current:
        fig, ax = plt.subplots(figsize=(9, 3.5))
        buckets = sorted(set(ref) | {b for c in current.values() for b in c}, key=lambda b: int(b.split("-")[0]))
        width = 0.8 / (1 + len(current))
        xs = range(len(buckets))
        ax.bar([x - 0.4 + width / 2 for x in xs], [ref.get(b, 0) for b in buckets], width, label="train")
        for i, (model, shares) in enumerate(current.items(), start=1):
            ax.bar([x - 0.4 + width * (i + 0.5) for x in xs], [shares.get(b, 0) for b in buckets], width, label=model)
        ax.set_xticks(list(xs), buckets)
        ax.set_xlabel("prompt length (tokens)")
        ax.set_ylabel("share")
        ax.legend(fontsize=7)
        plots.append(("Prompt length: production vs training data", _svg(fig)))
    ratings = {m: h for m, h in result.feedback.get("ratings", {}).items() if h and m != "all"}
    if ratings:
        fig, ax = plt.subplots(figsize=(9, 3))
        width = 0.8 / len(ratings)
        for i, (model, hist) in enumerate(ratings.items()):
            ax.bar([r - 0.4 + width * (i + 0.5) for r in range(1, 6)], [hist.get(str(r), 0) for r in range(1, 6)],
                   width, label=model)
        ax.set_xlabel("rating")
        ax.set_ylabel("feedback")
        ax.legend(fontsize=7)
        plots.append(("Feedback ratings", _svg(fig)))
    return plots


def render_html(result: MonitorResult, title: str = "llmops monitor") -> str:
    """The report as an HTML string."""
    parts = [f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
             f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>",
             f"<p>{result.lines} log lines from {len(result.files)} file(s); {result.corrupt_lines} corrupt "
             f"line(s) skipped; generated {datetime.now(UTC).isoformat(timespec='seconds')}.</p>"]
    fired = [a for a in result.alerts if a["breached"]]
    parts.append(f'<h2 id="alerts">Alerts ({len(fired)} firing)</h2>')
    if result.alerts:
        parts.append(_table(["rule", "scope", "value", "op", "threshold", "state"],
                            [[a["rule"], a["scope"], a["value"], a["op"], a["threshold"],
                              "FIRING" if a["breached"] else "ok"] for a in result.alerts],
                            ["bad" if a["breached"] else "ok" for a in result.alerts]))
    parts.append('<h2 id="health">Health per model version</h2>')
    rows = [["all", *(result.overall.get(k) for k in _HEALTH)]]
    rows += [[m, *(s.get(k) for k in _HEALTH)] for m, s in result.per_model.items()]
    parts.append(_table(["model", *_HEALTH], rows))
    drift_rows = [[m, *(d.get(k) for k in _DRIFT)] for m, d in result.drift.get("per_model", {}).items()]
    parts.append('<h2 id="drift">Drift vs training data</h2>')
    parts.append(_table(["model", *_DRIFT], drift_rows) if drift_rows else "<p>No drift scores (see warnings).</p>")
    for caption, svg in _plots(result):
        parts.append(f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>")
    if result.warnings:
        parts.append('<h2 id="warnings">Warnings</h2><ul>'
                     + "".join(f"<li>{html.escape(w)}</li>" for w in result.warnings) + "</ul>")
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(result: MonitorResult, path: str, title: str = "llmops monitor") -> str:
    atomic_write_text(path, render_html(result, title))
    return path
