"""Fine-tune the base model on prep's splits and save the adapter with a run manifest."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.errors import DataError
from llmops_cli.tune.data import read_jsonl, to_sft_example
from llmops_cli.utils import (
    atomic_write_json,
    git_commit,
    hash_tree,
    package_versions,
    sha256_file,
    tree_digest,
)

ProgressFn = Callable[[int, int, dict[str, Any]], None]


@dataclass
class TuneResult:
    output_dir: str
    method: str
    steps: int
    train_loss: float
    eval_loss_before: float | None
    eval_loss_after: float | None
    trainable_params: int
    total_params: int
    train_examples: int
    seconds: float
    tokens_per_second: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def base_model_identity(base: str, revision: str | None) -> dict[str, Any]:
    """What exactly the base model is: a content hash for a local directory, id + revision for the hub."""
    path = Path(base)
    if path.is_dir():
        files = {k: v for k, v in hash_tree(path).items() if k != "scaffold.json"}
        return {"id": base, "local": True, "content_sha256": tree_digest(files)}
    return {"id": base, "local": False, "revision": revision}


def build_trainer(cfg: ProjectConfig, train_rows: list[dict[str, Any]], val_rows: list[dict[str, Any]],
                  on_progress: ProgressFn | None = None) -> Any:
    """An SFTTrainer for cfg (model loaded, adapters attached, data tokenised with label masks)."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from llmops_cli.model.loading import default_device, load_causal_lm, load_tokenizer

    tcfg = cfg.tune
    torch.manual_seed(tcfg.seed)
    device = default_device()
    tokenizer = load_tokenizer(cfg.model)
    model = load_causal_lm(cfg.model, device=device)
    model.train()
    peft_config = None
    if tcfg.method == "lora":
        peft_config = LoraConfig(
            r=tcfg.lora.r,
            lora_alpha=tcfg.lora.alpha,
            lora_dropout=tcfg.lora.dropout,
            target_modules=tcfg.lora.target_modules,
            task_type="CAUSAL_LM",
        )
    args = SFTConfig(
        output_dir=str(Path(tcfg.output_dir) / "checkpoints"),
        num_train_epochs=tcfg.epochs,
        max_steps=tcfg.max_steps,
        per_device_train_batch_size=tcfg.batch_size,
        per_device_eval_batch_size=tcfg.batch_size,
        gradient_accumulation_steps=tcfg.grad_accum,
        learning_rate=tcfg.learning_rate,
        lr_scheduler_type=tcfg.lr_scheduler,
        warmup_steps=tcfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=tcfg.weight_decay,
        logging_steps=tcfg.logging_steps,
        eval_strategy="no",
        save_strategy="no",
        seed=tcfg.seed,
        data_seed=tcfg.seed,
        report_to=tcfg.report_to or "none",
        max_length=tcfg.max_seq_length,
        completion_only_loss=True,
        use_cpu=device == "cpu",
        bf16=device == "cuda" and torch.cuda.is_bf16_supported(),
        disable_tqdm=True,
    )
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([to_sft_example(r) for r in train_rows]),
        eval_dataset=Dataset.from_list([to_sft_example(r) for r in val_rows]) if val_rows else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=[_progress_callback(on_progress)] if on_progress else None,
    )
    # The Trainer prints raw log dicts to stdout when tqdm is off; stdout belongs to --json output.
    trainer.remove_callback(PrinterCallback)
    _check_completion_mask(trainer)
    return trainer


def run_tune(cfg: ProjectConfig, on_progress: ProgressFn | None = None) -> TuneResult:
    """Train per cfg.tune; writes the adapter (or full weights), tokenizer, manifest and metrics."""
    tcfg = cfg.tune
    started = time.time()
    data_dir = Path(tcfg.data_dir)
    train_rows = read_jsonl(data_dir / "train.jsonl")
    val_rows = read_jsonl(data_dir / "validation.jsonl")
    if not train_rows:
        raise DataError(f"{data_dir / 'train.jsonl'} is empty", hint="check the prep report for what was removed")
    trainer = build_trainer(cfg, train_rows, val_rows, on_progress)
    tokenizer = trainer.processing_class
    out = Path(tcfg.output_dir)
    eval_before = trainer.evaluate()["eval_loss"] if val_rows else None
    train_out = trainer.train()
    eval_after = trainer.evaluate()["eval_loss"] if val_rows else None

    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    seconds = time.time() - started
    tokens = sum(len(ex["input_ids"]) for ex in trainer.train_dataset) * max(tcfg.epochs, 1)
    result = TuneResult(
        output_dir=str(out),
        method=tcfg.method,
        steps=train_out.global_step,
        train_loss=float(train_out.training_loss),
        eval_loss_before=eval_before,
        eval_loss_after=eval_after,
        trainable_params=trainable,
        total_params=total,
        train_examples=len(train_rows),
        seconds=round(seconds, 2),
        tokens_per_second=round(tokens / max(train_out.metrics.get("train_runtime", seconds), 1e-9), 1),
    )
    _write_manifest(cfg, result, data_dir)
    return result


def _check_completion_mask(trainer: Any) -> None:
    """Fail fast if the collator would train on prompt tokens (a silent quality bug otherwise)."""
    example = trainer.train_dataset[0]
    labels = example.get("labels")
    if labels is None and "completion_mask" in example:  # older TRL: mask applied by the collator
        labels = [t if m else -100 for t, m in zip(example["input_ids"], example["completion_mask"], strict=True)]
    if labels is None or all(t == -100 for t in labels) or -100 not in labels:
        raise RuntimeError("completion-only loss is not in effect: prompt tokens would be trained on")


def _write_manifest(cfg: ProjectConfig, result: TuneResult, data_dir: Path) -> None:
    out = Path(result.output_dir)
    manifest = {
        "kind": "llmops.tune",
        "base_model": base_model_identity(cfg.model.base, cfg.model.revision),
        "data": {
            name: sha256_file(data_dir / f"{name}.jsonl")
            for name in ("train", "validation")
            if (data_dir / f"{name}.jsonl").is_file()
        },
        "config": {"model": cfg.model.model_dump(), "tune": cfg.tune.model_dump()},
        "git_commit": git_commit(),
        "packages": package_versions(),
        "metrics": result.to_dict(),
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest["files"] = {k: v for k, v in hash_tree(out).items()
                         if not k.startswith("checkpoints/") and k != "run_manifest.json"}
    atomic_write_json(out / "run_manifest.json", manifest)
    metrics = {k: v for k, v in result.to_dict().items() if isinstance(v, int | float) and v is not None}
    if result.eval_loss_before and result.eval_loss_after:
        metrics["eval_ppl_after"] = math.exp(min(result.eval_loss_after, 50))
    atomic_write_json(cfg.tune.metrics_file, metrics)


def _progress_callback(on_progress: ProgressFn) -> Any:
    """Adapt Trainer events to the CLI's progress function (the core never prints)."""
    from transformers import TrainerCallback

    class Callback(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            on_progress(state.global_step, state.max_steps, {})

        def on_log(self, args, state, control, logs=None, **kwargs):  # noqa: ANN001
            if logs and "loss" in logs:
                on_progress(state.global_step, state.max_steps, {"loss": round(logs["loss"], 4)})

    return Callback()
