"""The HTML report (structure checked with html.parser: no headless browser here) and the watch frames."""

from html.parser import HTMLParser

from llmops_cli.monitor.config import MonitorSection
from llmops_cli.monitor.report import render_html, write_report
from llmops_cli.monitor.summary import summarize
from llmops_cli.monitor.watch import render_frame, watch
from tests.unit.monitor.logdata import PROMPTS, T0, request, train_file, write_log


class _Tags(HTMLParser):
    def __init__(self):
        super().__init__()
        self.stack, self.counts, self.ids, self.text, self.errors = [], {}, set(), [], []

    def handle_starttag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1
        self.ids.update(v for k, v in attrs if k == "id")
        if tag not in ("meta", "br", "wbr", "img", "input", "link") and not tag.startswith("svg:"):
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        self.counts[tag] = self.counts.get(tag, 0) + 1

    def handle_endtag(self, tag):
        if tag in ("meta", "br", "wbr", "img", "input", "link"):
            return
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"unbalanced </{tag}> (open: {self.stack[-3:]})")
            return
        self.stack.pop()

    def handle_data(self, data):
        self.text.append(data)


def _result(tmp_path):
    train = train_file(tmp_path / "train.jsonl")
    recs = [request(i, "good:1", ts=T0 + 600 * i, latency_ms=20 + i, prompt=PROMPTS[i % 5], response="billing")
            for i in range(60)]
    recs += [request(100 + i, "<script>alert(1)</script>", ts=T0 + 600 * i, latency_ms=900,
                     status=500 if i % 3 else 200, prompt="ganz andere Sprache hier " * 5,
                     response="I'm sorry, I cannot help") for i in range(60)]
    write_log(tmp_path / "requests.jsonl", recs)
    write_log(tmp_path / "feedback.jsonl",
              [{"response_id": f"chatcmpl-req-{i}", "rating": 1 + i % 5} for i in range(20)])
    cfg = MonitorSection(request_log=str(tmp_path / "requests.jsonl"), feedback_log=str(tmp_path / "feedback.jsonl"),
                         output=str(tmp_path / "m.json"), drift={"train_data": str(train)},
                         alerts=["error_rate > 0.1"])
    return summarize(cfg)


def test_html_report_is_well_formed_with_plots_and_escaped_user_data(tmp_path):
    result = _result(tmp_path)
    path = write_report(result, str(tmp_path / "out/report.html"), title="demo & co")
    page = (tmp_path / "out/report.html").read_text()
    assert path.endswith("report.html") and page.startswith("<!DOCTYPE html>")
    parser = _Tags()
    parser.feed(page)
    assert parser.errors == [] and parser.stack == []
    assert {"alerts", "health", "drift"} <= parser.ids
    assert parser.counts["svg"] == 3  # latency over time, prompt-length drift, feedback ratings
    assert parser.counts["table"] == 3
    assert "<script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page
    text = " ".join(parser.text)
    assert "FIRING" in text and "demo & co" in text
    assert "<?xml" not in page  # SVG prolog stripped: invalid inside HTML


def test_report_without_drift_or_feedback_still_renders(tmp_path):
    write_log(tmp_path / "requests.jsonl", [request(i) for i in range(3)])
    cfg = MonitorSection(request_log=str(tmp_path / "requests.jsonl"), feedback_log=str(tmp_path / "none.jsonl"),
                         output=str(tmp_path / "m.json"), drift={"train_data": str(tmp_path / "none.jsonl")})
    page = render_html(summarize(cfg))
    assert page.count("<svg") == 1 and "drift skipped" in page


def test_watch_renders_frames_and_stops_after_iterations(tmp_path):
    from rich.console import Console

    result = _result(tmp_path)
    screen = Console(record=True, width=200, file=open(tmp_path / "screen.txt", "w"))  # noqa: SIM115
    screen.print(render_frame(result))
    text = screen.export_text()
    assert "good:1" in text and "<script>alert(1)</script>" in text  # rich Text: no markup interpretation
    assert "alerts (" in text and "error_rate" in text and "p95 ms" in text
    calls, sleeps = [], []
    last = watch(lambda: result, calls.append, interval_s=2.0, iterations=3, sleep=sleeps.append)
    assert len(calls) == 3 and sleeps == [2.0, 2.0] and last is result


def test_one_window_gets_a_one_window_time_axis_and_tables_scroll(tmp_path, monkeypatch):
    """A single window used to be drawn on a 2025-2029 axis, and wide tables were cut at the page width."""
    import matplotlib.axes

    from llmops_cli.monitor import report

    write_log(tmp_path / "requests.jsonl", [request(i) for i in range(3)])  # all within one window
    cfg = MonitorSection(request_log=str(tmp_path / "requests.jsonl"), feedback_log=str(tmp_path / "none.jsonl"),
                         output=str(tmp_path / "m.json"), drift={"enabled": False}, window_s=3600)
    result = summarize(cfg)
    limits = []
    original = matplotlib.axes.Axes.set_xlim
    monkeypatch.setattr(matplotlib.axes.Axes, "set_xlim",
                        lambda self, *a, **k: limits.append(a) or original(self, *a, **k))
    page = render_html(result)
    from datetime import datetime

    low, high = next(a for a in limits if len(a) == 2 and isinstance(a[0], datetime))  # ours, not matplotlib's
    assert (high - low).total_seconds() == 3600  # half a window either side of the one window
    assert report.time_axis_limits([T0, T0 + 7200], 3600)[1].timestamp() == T0 + 7200 + 1800
    assert '<div class="scroll"><table>' in page and "overflow-x:auto" in page


def test_one_window_plot_shows_both_percentiles_on_axes_from_zero(tmp_path, monkeypatch):
    """One window: the p50 line (a line needs two points) was invisible and the error-rate axis ran from -0.04."""
    import matplotlib.pyplot as plt

    from llmops_cli.monitor import report

    figures = []
    monkeypatch.setattr(report, "_svg", lambda fig: figures.append(fig) or "<svg></svg>")
    write_log(tmp_path / "requests.jsonl", [request(i, latency_ms=40.0 + i) for i in range(3)])
    cfg = MonitorSection(request_log=str(tmp_path / "requests.jsonl"), feedback_log=str(tmp_path / "none.jsonl"),
                         output=str(tmp_path / "m.json"), drift={"enabled": False})
    render_html(summarize(cfg))
    try:
        latency, errors = figures[0].axes
        assert len(latency.get_lines()) == 2  # p95 and p50 of the one version
        assert all(line.get_marker() not in (None, "", " ", "None") for line in latency.get_lines())
        assert latency.get_ylim()[0] == 0 and latency.get_ylim()[1] > 41.9  # p95 of 40, 41, 42
        assert errors.get_ylim()[0] == 0 and errors.get_ylim()[1] > 0
    finally:
        for fig in figures:
            plt.close(fig)


def test_wide_table_headers_wrap_at_underscores(tmp_path):
    """The health table's 12 nowrap columns were wider than the page: the last five were cut off."""
    page = render_html(_result(tmp_path))
    assert "<th>latency_<wbr>p95_<wbr>ms</th>" in page and "<th>request_<wbr>rate_<wbr>per_<wbr>s</th>" in page
    assert "th{white-space:normal" in page.replace(" ", "")


def test_plain_watch_lines_print_large_numbers_whole(tmp_path):
    """Piped `monitor watch` printed 1.23457e+06 for a latency of 1234567.8 ms: digits lost, not whole."""
    from llmops_cli.monitor.watch import render_lines

    write_log(tmp_path / "requests.jsonl", [request(0, "m:1", latency_ms=1234567.8)])
    cfg = MonitorSection(request_log=str(tmp_path / "requests.jsonl"), feedback_log=str(tmp_path / "none.jsonl"),
                         output=str(tmp_path / "m.json"), drift={"enabled": False})
    line = next(x for x in render_lines(summarize(cfg)).splitlines() if x.startswith("m:1 "))
    assert "latency_p95_ms=1234568 " in line and "e+" not in line
    assert "requests=1 " in line and "error_rate=0 " in line
