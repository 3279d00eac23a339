"""Read the monitor's inputs: rotated JSONL logs and Prometheus text, from files or URLs.

Logs are read leniently: a line that is not a JSON object (truncated by a crash, binary noise) is
counted in `corrupt` and skipped, never fatal. A missing rotated file is fine; a missing live log is not.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from llmops_cli.errors import DataError

_ROTATED = re.compile(r"\.(\d+)$")


def is_url(source: str) -> bool:
    return source.startswith(("http://", "https://"))


def rotated_files(path: str | Path) -> list[Path]:
    """The live log and its rotations, oldest first (`<log>.2`, `<log>.1`, `<log>`)."""
    path = Path(path)
    rotated: list[tuple[int, Path]] = []
    if path.parent.is_dir():
        for candidate in path.parent.glob(path.name + ".*"):
            match = _ROTATED.search(candidate.name)
            if match and candidate.name == f"{path.name}.{match.group(1)}" and candidate.is_file():
                rotated.append((int(match.group(1)), candidate))
    files = [p for _, p in sorted(rotated, reverse=True)]
    if path.is_file():
        files.append(path)
    return files


def _fetch(url: str, timeout: float = 30.0) -> bytes:
    import httpx

    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise DataError(f"cannot read {url}: {exc}", hint="check the URL and that the server is up") from None
    return response.content


class JsonlReader:
    """Iterate the JSON objects of a log (all rotations, or a URL); counts corrupt lines in `corrupt`."""

    def __init__(self, source: str, required: bool = True) -> None:
        self.source = source
        self.corrupt = 0
        self.lines = 0
        self.files: list[str] = []
        if is_url(source):
            self.files = [source]
        else:
            self.files = [str(p) for p in rotated_files(source)]
            if required and not self.files:
                raise DataError(f"no log at {source}", hint="serve some requests first, or set the log path")

    def _raw_lines(self) -> Iterator[str]:
        # Undecodable bytes become U+FFFD, so such a line fails json.loads and is counted as corrupt.
        if is_url(self.source):
            yield from _fetch(self.source).decode("utf-8", errors="replace").splitlines()
            return
        for name in self.files:
            try:
                with open(name, encoding="utf-8", errors="replace") as fh:
                    yield from fh
            except FileNotFoundError:
                continue  # rotated away between listing and opening: the data moved to <log>.1, read already

    def __iter__(self) -> Iterator[dict[str, Any]]:
        loads = json.loads
        for line in self._raw_lines():
            if not line.strip():
                continue
            self.lines += 1
            try:
                record = loads(line)
            except ValueError:  # JSONDecodeError
                self.corrupt += 1
                continue
            if not isinstance(record, dict):
                self.corrupt += 1
                continue
            yield record


def read_text(source: str) -> str:
    """A whole file or URL as text (used for /metrics)."""
    if is_url(source):
        return _fetch(source).decode("utf-8", errors="replace")
    path = Path(source)
    if not path.is_file():
        raise DataError(f"no metrics file at {source}", hint="set monitor.metrics_url to the gateway's /metrics")
    return path.read_text(encoding="utf-8", errors="replace")


# Not traffic: feedback posts (counted by their own metrics), admin calls and probes. Request counts,
# latency, error rate and tokens leave them out, in the log and in Prometheus alike.
NOT_TRAFFIC_PATHS = frozenset({"/v1/feedback", "/health", "/ready", "/metrics"})
NOT_TRAFFIC_PREFIX = "/admin/"
NOT_TRAFFIC_PROMQL = 'path!~"/v1/feedback|/health|/ready|/metrics|/admin/.*"'


def is_traffic(path: Any) -> bool:
    """Whether a logged or labelled path is a client's model request (no path: an older log, counted)."""
    if not isinstance(path, str):
        return True
    return path not in NOT_TRAFFIC_PATHS and not path.startswith(NOT_TRAFFIC_PREFIX)


def parse_prometheus(text: str, prefix: str = "llmops") -> dict[str, dict[str, Any]]:
    """Per-model health from the gateway's Prometheus text (the metric names of serving/app.py).

    Reads `<prefix>_requests_total{model,status}`, the histograms `<prefix>_request_latency_seconds` and
    `<prefix>_time_to_first_token_seconds`, `<prefix>_tokens_total{model,direction=in|out}` and
    `<prefix>_feedback_total{rating,model}`. Series without a `model` label (other exporters)
    are reported under "all". Absent families are left out; malformed text raises DataError.
    """
    from prometheus_client.parser import text_string_to_metric_families

    per_model: dict[str, dict[str, Any]] = {}
    # model -> histogram -> le -> cumulative count, summed over the other labels (path, ...)
    hist: dict[str, dict[str, dict[float, float]]] = {}
    histograms = {f"{prefix}_request_latency_seconds_bucket": "latency", f"{prefix}_time_to_first_token_seconds_bucket":
                  "ttft"}

    def slot(labels: dict[str, str]) -> dict[str, Any]:
        return per_model.setdefault(labels.get("model", "all"), {})

    def add(stats: dict[str, Any], key: str, value: float) -> None:
        stats[key] = stats.get(key, 0) + value

    try:
        families = list(text_string_to_metric_families(text))
    except (ValueError, TypeError) as exc:
        raise DataError(f"cannot parse Prometheus text: {exc}", hint="point monitor.metrics_url at /metrics") from None
    for family in families:
        for sample in family.samples:
            name, labels, value = sample.name, sample.labels, float(sample.value)
            if name != f"{prefix}_feedback_total" and not is_traffic(labels.get("path")):
                continue
            if name == f"{prefix}_requests_total":
                add(slot(labels), "requests", value)
                if labels.get("status", "200")[:1] in ("4", "5"):
                    add(slot(labels), "errors", value)
            elif name in histograms:
                series = hist.setdefault(labels.get("model", "all"), {}).setdefault(histograms[name], {})
                le = float(labels.get("le", "+Inf"))
                series[le] = series.get(le, 0.0) + value
            elif name == f"{prefix}_tokens_total":
                direction = labels.get("direction", labels.get("kind"))
                add(slot(labels), "tokens_in" if direction in ("in", "prompt") else "tokens_out", value)
            elif name == f"{prefix}_feedback_total":
                try:
                    rating = float(labels.get("rating", ""))
                except ValueError:
                    continue
                add(slot(labels), "feedback_count", value)
                add(slot(labels), "_rating_sum", value * rating)
    for model, series_by_name in hist.items():
        stats = per_model.setdefault(model, {})
        for hname, series in series_by_name.items():
            cumulative = sorted(series.items())
            for q in (0.5, 0.95, 0.99) if hname == "latency" else (0.5, 0.95):
                value = histogram_quantile(cumulative, q)
                if value is not None:
                    stats[f"{hname}_p{round(q * 100)}_ms"] = value * 1000
    for stats in per_model.values():
        if stats.get("requests"):
            stats.setdefault("errors", 0)
            stats["error_rate"] = stats["errors"] / stats["requests"]
        rating_sum = stats.pop("_rating_sum", None)
        if stats.get("feedback_count"):
            stats["mean_rating"] = rating_sum / stats["feedback_count"]
    return per_model


def histogram_quantile(cumulative: list[tuple[float, float]], q: float) -> float | None:
    """PromQL's histogram_quantile over (le, cumulative count) pairs sorted by le."""
    if not cumulative or cumulative[-1][1] <= 0:
        return None
    total = cumulative[-1][1]
    rank = q * total
    prev_le, prev_count = 0.0, 0.0
    for le, count in cumulative:
        if count >= rank:
            if le == float("inf"):
                return prev_le  # as PromQL: the highest finite bucket bound
            if count == prev_count:
                return le
            return prev_le + (le - prev_le) * (rank - prev_count) / (count - prev_count)
        prev_le, prev_count = le, count
    return prev_le
