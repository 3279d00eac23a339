"""Config of `llmops register`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from llmops_cli.config.base import Section


class RegisterSection(Section):
    backend: Literal["local", "mlflow"] = Field(
        "local", description="local: SQLite index + blob store under `root`; mlflow: an MLflow Model Registry."
    )
    root: str = Field("registry", description="Registry root: SQLite index and content-addressed blobs.")
    mlflow_tracking_uri: str | None = Field(
        None, description="MLflow tracking/registry URI for backend=mlflow (e.g. sqlite:///mlflow.db or http://host)."
    )
    mlflow_artifact_location: str | None = Field(
        None, description="Artifact location for the registry's MLflow experiment (default: the server's)."
    )
    model_dir: str = Field("artifacts/tune", description="Tuned model directory to register.")
    eval_metrics: str = Field(
        "reports/eval.json", description="Eval results (eval.results_file) whose gates must have passed and whose "
                                         "model hash must match; a metrics summary is followed to its results file.")
    prep_report: str = Field("reports/prep.json", description="Prep report recorded as data lineage.")
    output: str = Field("reports/register.json", description="Written after registering: the version made.")
    license: str | None = Field(
        None,
        description="SPDX id recorded on the card; default: the `license:` in the base model's README front "
                    "matter when the base is a local directory, else \"unknown\".",
    )
    aliases: list[str] = Field(
        default_factory=lambda: ["staging", "production"], description="Aliases (stages) versions can be promoted to."
    )
    protected_aliases: list[str] = Field(
        default_factory=lambda: ["production"],
        description="Aliases whose promotion needs --approve --by NAME --reason TEXT (the manual gate).",
    )

    @field_validator("aliases", "protected_aliases")
    @classmethod
    def _alias_names(cls, values: list[str]) -> list[str]:
        from llmops_cli.registry.store import ALIAS_RE

        bad = [v for v in values if not ALIAS_RE.match(v) or v == "latest"]
        if bad:
            raise ValueError(f"invalid alias name(s) {bad}: use lower-case words such as staging, production")
        return values
