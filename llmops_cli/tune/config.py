"""Config of `llmops tune`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from llmops_cli.config.base import Section


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
