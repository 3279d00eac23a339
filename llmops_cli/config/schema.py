"""Typed config schemas: one per stage, composed into a project config with one section each.

A project config (for example configs/demo.yaml) holds a section per stage, so that each DVC stage
can track exactly its own section as `params` and re-run only when that section changes.
Every field has a description: it feeds `llmops config reference` and the README's reference.
Secrets never live here: fields name the *environment variable* that holds them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    """Base for every config section: unknown keys are errors, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class ProjectSection(Section):
    name: str = Field(
        "llmops-model",
        description="Model name in the registry and the served model id.",
        pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$",
    )


class ModelSection(Section):
    base: str = Field(
        "models/base",
        description="Base model: a Hugging Face hub id (e.g. Qwen/Qwen2.5-0.5B) or a local directory.",
    )
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit) to pin the base model.")
    trust_remote_code: bool = Field(
        False, description="Run model code shipped with the checkpoint. Off by default: it executes remote code."
    )
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="Weight dtype; auto picks bfloat16 on a capable GPU and float32 on CPU."
    )
    token_env: str = Field("HF_TOKEN", description="Environment variable holding a hub token for gated models.")


class ScaffoldSection(Section):
    output: str = Field("models/base", description="Directory the scaffolded base model is written to.")
    corpus: list[str] = Field(
        default_factory=lambda: ["data/raw/*.jsonl", "data/raw/*.csv"],
        description="Text files (globs allowed) the BPE tokenizer is trained on.",
    )
    vocab_size: int = Field(2048, ge=256, description="Tokenizer vocabulary size.")
    hidden_size: int = Field(128, ge=16, description="Hidden size of the random-initialised Llama.")
    num_layers: int = Field(2, ge=1, description="Number of decoder layers.")
    num_heads: int = Field(2, ge=1, description="Attention heads (head_dim = hidden_size / num_heads).")
    intermediate_size: int = Field(256, ge=16, description="MLP intermediate size.")
    max_position_embeddings: int = Field(1024, ge=64, description="Context length of the scaffolded model.")
    seed: int = Field(0, description="Seed for the random weights.")

    @model_validator(mode="after")
    def _heads_divide_hidden(self) -> ScaffoldSection:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads ({self.num_heads})"
            )
        return self


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


class LoraSpec(Section):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or all-linear."
    )


class TuneSection(Section):
    method: Literal["lora", "full"] = Field("lora", description="Fine-tuning method.")
    data_dir: str = Field("data/processed", description="Directory with train.jsonl and validation.jsonl.")
    output_dir: str = Field("artifacts/tune", description="Adapter, tokenizer and run manifest go here.")
    metrics_file: str = Field("metrics/tune.json", description="Final training metrics (DVC metrics).")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA hyper-parameters.")
    epochs: float = Field(3, gt=0, description="Training epochs (ignored when max_steps > 0).")
    max_steps: int = Field(-1, description="Stop after this many optimiser steps; -1 trains for `epochs`.")
    batch_size: int = Field(16, ge=1, description="Per-device batch size.")
    grad_accum: int = Field(1, ge=1, description="Gradient accumulation steps.")
    learning_rate: float = Field(2e-4, gt=0, description="Peak learning rate.")
    lr_scheduler: Literal["linear", "cosine", "constant", "constant_with_warmup"] = Field(
        "cosine", description="Learning-rate schedule."
    )
    warmup_ratio: float = Field(0.05, ge=0, lt=1, description="Fraction of steps used for warmup.")
    weight_decay: float = Field(0.0, ge=0, description="Weight decay.")
    max_seq_length: int = Field(512, ge=8, description="Examples are truncated to this many tokens.")
    seed: int = Field(0, description="Seed for weights init of adapters and data order.")
    logging_steps: int = Field(10, ge=1, description="Log the loss every N steps.")
    report_to: list[str] = Field(
        default_factory=list, description="Trackers for transformers' report_to (tensorboard, mlflow, wandb)."
    )


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


class RegisterSection(Section):
    root: str = Field("registry", description="Registry root: SQLite index and content-addressed blobs.")
    model_dir: str = Field("artifacts/tune", description="Tuned model directory to register.")
    eval_metrics: str = Field("metrics/eval.json", description="Eval metrics whose gates must have passed.")
    prep_report: str = Field("reports/prep.json", description="Prep report recorded as data lineage.")
    output: str = Field("reports/register.json", description="Written after registering: the version made.")


class ServeSection(Section):
    source: str = Field(
        "latest",
        description="What to serve: NAME@alias, NAME:version, latest (the project's newest version) or a path.",
    )
    registry_root: str = Field("registry", description="Registry root used to resolve `source`.")
    backend: Literal["auto", "transformers", "vllm"] = Field(
        "auto", description="auto picks vllm when it is importable and a CUDA GPU is visible."
    )
    host: str = Field("127.0.0.1", description="Interface to bind; keep loopback unless API keys are set.")
    port: int = Field(8321, ge=1, le=65535, description="Port to listen on.")
    api_keys_env: str = Field(
        "LLMOPS_API_KEYS", description="Env var with comma-separated API keys; unset means loopback only."
    )
    max_new_tokens: int = Field(128, ge=1, description="Default completion budget when a request sets none.")
    max_prompt_tokens: int = Field(1024, ge=1, description="Longer prompts are refused with 400.")
    request_log: str = Field("serve/requests.jsonl", description="JSONL request log read by `llmops monitor`.")
    endpoint_file: str = Field("serve/endpoint.json", description="Written by --detach: url, pid, model.")
    ready_timeout_s: float = Field(180, gt=0, description="How long --detach waits for readiness.")


class MonitorSection(Section):
    request_log: str = Field("serve/requests.jsonl", description="Request log written by the server.")
    output: str = Field("reports/monitor.json", description="Summary written here.")
    max_error_rate: float | None = Field(None, ge=0, le=1, description="`monitor` exits 1 above this.")
    max_latency_p95_ms: float | None = Field(None, gt=0, description="`monitor` exits 1 above this.")


class ProjectConfig(Section):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, populate_by_name=True)

    project: ProjectSection = Field(default_factory=ProjectSection, description="Project identity.")
    model: ModelSection = Field(default_factory=ModelSection, description="Base model and how to load it.")
    scaffold: ScaffoldSection = Field(default_factory=ScaffoldSection, description="`llmops model scaffold`.")
    prep: PrepSection = Field(default_factory=PrepSection, description="`llmops prep`.")
    tune: TuneSection = Field(default_factory=TuneSection, description="`llmops tune`.")
    eval: EvalSection = Field(default_factory=EvalSection, description="`llmops eval`.")
    # `register` would shadow a BaseModel (ABC) attribute, so the attribute is `registry` and the
    # YAML key stays `register`.
    registry: RegisterSection = Field(
        default_factory=RegisterSection, alias="register", description="`llmops register`."
    )
    serve: ServeSection = Field(default_factory=ServeSection, description="`llmops serve`.")
    monitor: MonitorSection = Field(default_factory=MonitorSection, description="`llmops monitor`.")
