"""Closing the loop: turn low-rated and flagged interactions into a dataset that `llmops prep` reads.

Rows with the user's correction go to `export.output` as {id, <prompt_field>, <completion_field>, ...}:
the correction is the target the model should have produced. Rows without one have no trustworthy
target (training on the bad response would teach it), so they go to `export.review_output` for a person
to label; nothing is dropped silently.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from llmops_cli.monitor.config import MonitorSection
from llmops_cli.monitor.summary import MonitorResult
from llmops_cli.utils import atomic_write_jsonl


@dataclass
class ExportResult:
    output: str
    review_output: str
    exported: int
    for_review: int
    low_rated_without_prompt: int
    reasons: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def export_dataset(cfg: MonitorSection, summary: MonitorResult) -> ExportResult:
    """Write the prep-ready and the to-review files from a summary's interactions."""
    spec = cfg.export
    low = cfg.quality.low_rating
    exported: list[dict[str, Any]] = []
    review: list[dict[str, Any]] = []
    reasons: dict[str, int] = {}
    seen: set[str] = set()
    for item in summary.interactions:
        rating = item.get("rating")
        low_rated = rating is not None and rating <= low
        if not low_rated and not (spec.include_flagged and item["flags"]):
            continue
        key = item.get("response_id") or hashlib.sha256(f"{item['ts']}\0{item['prompt']}".encode()).hexdigest()[:16]
        if key in seen:
            continue
        seen.add(key)
        why = (["low_rating"] if low_rated else []) + item["flags"]
        for reason in why:
            reasons[reason] = reasons.get(reason, 0) + 1
        meta = {"model": item["model"], "response": item["response"], "rating": rating, "reasons": why,
                "comment": item.get("comment"), "source": "llmops-monitor"}
        correction = item.get("correction")
        if isinstance(correction, str) and correction.strip():
            exported.append({"id": f"fb-{key}", spec.prompt_field: item["prompt"],
                             spec.completion_field: correction, **meta})
        else:
            review.append({"id": f"fb-{key}", spec.prompt_field: item["prompt"], **meta})
    # Low ratings whose request was logged without content cannot become examples: say how many.
    missing = int(summary.feedback.get("low_rated_without_content", 0))
    atomic_write_jsonl(spec.output, exported)
    atomic_write_jsonl(spec.review_output, review)
    return ExportResult(spec.output, spec.review_output, len(exported), len(review), missing, reasons)
