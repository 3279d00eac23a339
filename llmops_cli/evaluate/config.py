"""Config of `llmops eval`."""

from __future__ import annotations

from pydantic import Field, field_validator

from llmops_cli.config.base import Section


class EvalSection(Section):
    data: str = Field("data/processed/test.jsonl", description="Examples to evaluate (prep's test split).")
    adapter: str = Field("artifacts/tune", description="Tuned model directory written by `llmops tune`.")
    compare_base: bool = Field(True, description="Also evaluate the base model on the same examples.")
    max_new_tokens: int = Field(16, ge=1, description="Generation budget per example (greedy).")
    batch_size: int = Field(32, ge=1, description="Generation batch size.")
    limit: int | None = Field(None, ge=1, description="Evaluate only the first N examples.")
    gates: list[str] = Field(
        default_factory=list,
        description='Gates such as "tuned.exact_match >= 0.6" or "delta.exact_match > 0"; a failure exits 1.',
    )
    metrics_file: str = Field("metrics/eval.json", description="Metrics and gate results (DVC metrics).")
    predictions_file: str = Field("reports/eval_predictions.jsonl", description="Per-example predictions.")

    @field_validator("gates")
    @classmethod
    def _gates_parse(cls, gates: list[str]) -> list[str]:
        from llmops_cli.evaluate.gates import parse_gate

        for gate in gates:
            parse_gate(gate)  # raises ValueError with the expected form
        return gates
