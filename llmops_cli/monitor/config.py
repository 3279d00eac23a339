"""Config of `llmops monitor`."""

from __future__ import annotations

from pydantic import Field

from llmops_cli.config.base import Section


class MonitorSection(Section):
    request_log: str = Field("serve/requests.jsonl", description="Request log written by the server.")
    output: str = Field("reports/monitor.json", description="Summary written here.")
    max_error_rate: float | None = Field(None, ge=0, le=1, description="`monitor` exits 1 above this.")
    max_latency_p95_ms: float | None = Field(None, gt=0, description="`monitor` exits 1 above this.")
