"""Eval gates: `<metric path> <op> <number>` checked against the metrics dict."""

from __future__ import annotations

import operator
import re
from dataclasses import asdict, dataclass
from typing import Any

_OPS = {">=": operator.ge, "<=": operator.le, ">": operator.gt, "<": operator.lt, "==": operator.eq}
_GATE = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*(>=|<=|==|>|<)\s*(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)\s*$")


@dataclass(frozen=True)
class Gate:
    metric: str
    op: str
    threshold: float


@dataclass(frozen=True)
class GateResult:
    gate: str
    metric: str
    value: float | None
    passed: bool
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_gate(text: str) -> Gate:
    match = _GATE.match(text)
    if not match:
        raise ValueError(
            f"gate {text!r} is not of the form '<metric> <op> <number>', e.g. 'tuned.exact_match >= 0.6'"
        )
    return Gate(match[1], match[2], float(match[3]))


def check_gates(gates: list[str], metrics: dict[str, Any], skipped: dict[str, str] | None = None
                ) -> list[GateResult]:
    """Check each gate; a metric that does not exist fails its gate, unless its first component is a
    comparison that was skipped for a stated reason (`skipped`, e.g. no production version yet on the
    first release): that gate passes with the reason recorded, never silently."""
    results = []
    for text in gates:
        gate = parse_gate(text)
        reason = (skipped or {}).get(gate.metric.split(".")[0])
        if reason is not None:
            results.append(GateResult(text, gate.metric, None, True, f"skipped: {reason}"))
            continue
        value: Any = metrics
        for part in gate.metric.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        if not isinstance(value, int | float):
            results.append(GateResult(text, gate.metric, None, False, "metric not found"))
            continue
        passed = bool(_OPS[gate.op](float(value), gate.threshold))
        results.append(GateResult(text, gate.metric, float(value), passed))
    return results
