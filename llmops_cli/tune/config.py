"""Config of `llmops tune`."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from llmops_cli.config.base import Section
from llmops_cli.errors import BackendUnavailable, ConfigError


class LoraSpec(Section):
    r: int = Field(16, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r, or alpha / sqrt(r) with rslora).")
    dropout: float = Field(0.0, ge=0, lt=1, description="LoRA dropout.")
    target_modules: list[str] | Literal["all-linear"] = Field(
        "all-linear", description="Module names to adapt, or all-linear."
    )
    rslora: bool = Field(False, description="Rank-stabilised LoRA scaling (alpha / sqrt(r)).")
    dora: bool = Field(False, description="Weight-decomposed LoRA (DoRA).")


class QuantSpec(Section):
    """bitsandbytes 4-bit loading of the base model for QLoRA."""

    quant_type: Literal["nf4", "fp4"] = Field("nf4", description="4-bit quantisation type.")
    double_quant: bool = Field(True, description="Quantise the quantisation constants too (saves ~0.4 bit/param).")
    compute_dtype: Literal["bfloat16", "float16", "float32"] = Field(
        "bfloat16", description="dtype of the matmuls on dequantised weights."
    )


class TuneSection(Section):
    method: Literal["lora", "qlora", "full"] = Field(
        "lora", description="lora: adapters on a full-precision base; qlora: adapters on a 4-bit base (CUDA); "
                            "full: all weights."
    )
    data_dir: str = Field("data/processed", description="Directory with train.jsonl and validation.jsonl.")
    output_dir: str = Field("artifacts/tune", description="Adapter, tokenizer and run manifest go here.")
    metrics_file: str = Field("metrics/tune.json", description="Final training metrics (DVC metrics).")
    plots_file: str = Field("metrics/tune_loss.csv", description="Loss curve, one row per logging step (DVC plots).")
    lora: LoraSpec = Field(default_factory=LoraSpec, description="LoRA hyper-parameters.")
    quant: QuantSpec = Field(default_factory=QuantSpec, description="4-bit settings for method=qlora.")
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
    optimizer: str = Field(
        "adamw_torch", description="transformers optimizer name; qlora defaults to paged_adamw_8bit when left as is."
    )
    max_seq_length: int = Field(512, ge=8, description="Longest example trained, in tokens (see truncation).")
    truncation: Literal["drop", "refuse", "truncate"] = Field(
        "drop", description="Examples longer than max_seq_length: drop (leave out, counted in the run manifest "
                            "and on the terminal), refuse (fail the run), truncate (cut: the answer loses its "
                            "end-of-turn token, which teaches the model not to stop)."
    )
    packing: bool = Field(
        False, description="Pack examples padding-free (TRL bfd, position ids keep examples apart)."
    )
    gradient_checkpointing: bool = Field(False, description="Recompute activations to save memory.")
    precision: Literal["auto", "bf16", "fp16", "fp32"] = Field(
        "auto", description="Mixed precision; auto: bf16 where the GPU supports it, else fp16 on GPU, fp32 on CPU."
    )
    seed: int = Field(0, description="Seed for weights init of adapters and data order.")
    logging_steps: int = Field(10, ge=1, description="Log the loss every N steps.")
    eval_steps: int = Field(0, ge=0, description="Evaluate on the validation split every N steps (0: only at the end).")
    save_steps: int = Field(0, ge=0, description="Checkpoint every N steps (0: no intermediate checkpoints).")
    save_total_limit: int = Field(2, ge=1, description="Checkpoints kept (older ones are rotated out).")
    early_stopping_patience: int = Field(
        0, ge=0, description="Stop after N evaluations without improvement (needs eval_steps; 0: off)."
    )
    load_best_at_end: bool = Field(False, description="Keep the checkpoint with the lowest validation loss.")
    report_to: list[str] = Field(
        default_factory=list, description="Trackers for transformers' report_to (tensorboard, mlflow, wandb)."
    )
    gpu_memory_gib: float | None = Field(
        None, gt=0, description="Memory budget for the pre-flight check (default: the visible GPU's memory)."
    )

    @model_validator(mode="after")
    def _consistent(self) -> TuneSection:
        if (self.early_stopping_patience or self.load_best_at_end) and not self.eval_steps:
            raise ValueError("early_stopping_patience and load_best_at_end need eval_steps > 0")
        if self.load_best_at_end and self.save_steps and self.save_steps % self.eval_steps:
            raise ValueError("with load_best_at_end, save_steps must be a multiple of eval_steps")
        return self


# Checks that need the ML stack run in tune's pre-flight (before any model is loaded), not at config load:
# importing transformers costs seconds, and `llmops config validate` must stay fast.
_PIP_NAME = {"azure_ml": "azureml-core", "comet_ml": "comet-ml", "kubeflow": "kfp"}


def check_optimizer(name: str) -> None:
    """tune.optimizer must be one of transformers' OptimizerNames (ConfigError naming the closest ones)."""
    if name == "adamw_torch":
        return
    import difflib

    from transformers.training_args import OptimizerNames

    known = sorted(o.value for o in OptimizerNames)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.6)
        raise ConfigError(
            f"tune.optimizer: unknown optimizer {name!r}",
            hint=(f"did you mean {' or '.join(close)}? " if close else "") + "one of: " + ", ".join(known),
        )


def check_report_to(names: list[str], installed_too: bool = True) -> None:
    """tune.report_to names trackers transformers knows (ConfigError) and, with `installed_too`, that are
    installed here (BackendUnavailable: the same config is fine on a machine that has them)."""
    if not names or set(names) <= {"none", "all"}:
        return
    from transformers.integrations.integration_utils import (
        INTEGRATION_TO_CALLBACK,
        get_available_reporting_integrations,
    )

    unknown = [n for n in names if n not in INTEGRATION_TO_CALLBACK and n not in ("none", "all")]
    if unknown:
        raise ConfigError(f"tune.report_to: unknown tracker {', '.join(map(repr, unknown))}",
                          hint="one of: " + ", ".join(sorted(INTEGRATION_TO_CALLBACK)))
    missing = [n for n in names if n in INTEGRATION_TO_CALLBACK and n not in get_available_reporting_integrations()]
    if installed_too and missing:
        raise BackendUnavailable(
            f"tune.report_to: {', '.join(missing)} is not installed",
            hint=f"pip install {' '.join(_PIP_NAME.get(n, n) for n in missing)}, or remove it from tune.report_to",
        )
