"""Config of `llmops prep`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmops_cli.config.base import Section


class SourceSpec(Section):
    path: str = Field(description="A jsonl, json or csv file, or a glob of them.")
    prompt_field: str | None = Field(None, description="Override prep.fields.prompt for this source.")
    completion_field: str | None = Field(None, description="Override prep.fields.completion for this source.")


class FieldMap(Section):
    id: str | None = Field("id", description="Row id field (optional; a content hash is used when absent).")
    prompt: str = Field("prompt", description="Field holding the user prompt.")
    completion: str = Field("completion", description="Field holding the target completion.")
    label: str | None = Field(None, description="Optional label field, reported as a distribution.")


class SplitSpec(Section):
    validation: float = Field(0.1, ge=0, lt=1, description="Fraction of rows in the validation split.")
    test: float = Field(0.1, ge=0, lt=1, description="Fraction of rows in the test split.")
    salt: str = Field(
        "llmops", description="Salt of the hash that assigns rows to splits; change it to reshuffle."
    )

    @model_validator(mode="after")
    def _fractions_leave_train(self) -> SplitSpec:
        if self.validation + self.test >= 1:
            raise ValueError("validation + test must be below 1 so that some rows are left for train")
        return self


PiiAction = Literal["redact", "drop", "keep"]


class PiiSpec(Section):
    email: PiiAction = Field("redact", description="What to do with email addresses: redact, drop the row, keep.")
    phone: PiiAction = Field("redact", description="What to do with phone numbers: redact, drop the row, keep.")


class PrepSection(Section):
    sources: list[SourceSpec] = Field(
        default_factory=lambda: [SourceSpec(path="data/raw/*.jsonl")],
        description="Input files; each row ends in a split or in the quarantine file.",
    )
    fields: FieldMap = Field(default_factory=FieldMap, description="Which input fields hold what.")
    system_prompt: str | None = Field(None, description="System prompt put before every example.")
    min_chars: int = Field(1, ge=0, description="Rows whose prompt is shorter (after cleaning) are quarantined.")
    max_chars: int = Field(8000, ge=1, description="Rows whose prompt is longer are quarantined.")
    dedup: bool = Field(True, description="Quarantine exact duplicates (after normalising case and spaces).")
    pii: PiiSpec = Field(default_factory=PiiSpec, description="PII policy per type.")
    splits: SplitSpec = Field(default_factory=SplitSpec, description="Deterministic hash-based splits.")
    output_dir: str = Field("data/processed", description="Where train/validation/test/quarantine jsonl go.")
    report: str = Field("reports/prep.json", description="Prep report (counts per source, filter and split).")
