"""Config of `llmops register`."""

from __future__ import annotations

from pydantic import Field

from llmops_cli.config.base import Section


class RegisterSection(Section):
    root: str = Field("registry", description="Registry root: SQLite index and content-addressed blobs.")
    model_dir: str = Field("artifacts/tune", description="Tuned model directory to register.")
    eval_metrics: str = Field("metrics/eval.json", description="Eval metrics whose gates must have passed.")
    prep_report: str = Field("reports/prep.json", description="Prep report recorded as data lineage.")
    output: str = Field("reports/register.json", description="Written after registering: the version made.")
