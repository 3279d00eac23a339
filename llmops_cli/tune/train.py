"""Fine-tune the base model on prep's splits and save the adapter with a run manifest."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmops_cli.config.schema import ProjectConfig
from llmops_cli.errors import BackendUnavailable, DataError, LlmopsError
from llmops_cli.model.identity import base_model_identity
from llmops_cli.tune.dataset import TrainingData, load_training_data
from llmops_cli.tune.memory import MemoryEstimate, estimate_for, gpu_budget_gib
from llmops_cli.utils import (
    atomic_write_json,
    atomic_write_text,
    git_commit,
    hash_tree,
    package_versions,
    sha256_file,
)

ProgressFn = Callable[[int, int, dict[str, Any]], None]


class TrainingInterrupted(LlmopsError):
    """Training was stopped by a signal after saving a checkpoint (exit 130)."""

    exit_code = 130


@dataclass
class TuneResult:
    output_dir: str
    method: str
    steps: int
    train_loss: float | None
    eval_loss_before: float | None
    eval_loss_after: float | None
    trainable_params: int
    total_params: int
    train_examples: int  # examples trained on, after the truncation policy
    too_long: int  # train examples over tune.max_seq_length (dropped or cut, per tune.truncation)
    seconds: float
    tokens_per_second: float
    resumed_from_step: int | None = None
    data: dict[str, Any] = field(default_factory=dict)  # where the token ids came from; truncation counts

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def check_method_supported(tcfg: Any, device: str) -> None:
    """QLoRA needs CUDA and bitsandbytes: say so before anything is loaded."""
    if tcfg.method != "qlora":
        return
    if device != "cuda":
        raise BackendUnavailable(
            "tune.method=qlora needs a CUDA GPU: bitsandbytes' 4-bit (NF4) kernels run only on CUDA",
            hint="on this machine use --set tune.method=lora (same adapters on a full-precision base), "
                 "or run on a GPU machine",
        )
    import importlib.util

    if importlib.util.find_spec("bitsandbytes") is None:
        raise BackendUnavailable("tune.method=qlora needs bitsandbytes", hint="pip install 'llmops-cli[gpu]'")


def quantization_config(tcfg: Any) -> Any:
    """BitsAndBytesConfig for QLoRA, else None."""
    if tcfg.method != "qlora":
        return None
    import torch
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True, bnb_4bit_quant_type=tcfg.quant.quant_type,
        bnb_4bit_use_double_quant=tcfg.quant.double_quant,
        bnb_4bit_compute_dtype=getattr(torch, tcfg.quant.compute_dtype),
    )


def weights_dtype(cfg: ProjectConfig, device: str) -> str | None:
    """Full fine-tuning on a GPU keeps fp32 master weights (bf16/fp16 autocast does the matmuls): pure
    bf16 weights lose small updates to rounding. An explicit model.dtype is obeyed; adapters train in fp32
    whatever the base's dtype, so LoRA keeps the 16-bit base that saves the memory."""
    if cfg.tune.method == "full" and cfg.model.dtype == "auto" and device != "cpu":
        return "float32"
    return None


def _precision(tcfg: Any, device: str) -> dict[str, bool]:
    import torch

    if device != "cuda" or tcfg.precision == "fp32":
        return {"bf16": False, "fp16": False}
    if tcfg.precision == "bf16" or (tcfg.precision == "auto" and torch.cuda.is_bf16_supported()):
        return {"bf16": True, "fp16": False}
    return {"bf16": False, "fp16": True}


def build_trainer(cfg: ProjectConfig, data: TrainingData, tokenizer: Any,
                  on_progress: ProgressFn | None = None, interrupt: Any = None) -> Any:
    """An SFTTrainer for cfg: model loaded, adapters attached, and `data` (token ids with completion
    masks, rendered by prep's renderer) given as it is, so TRL applies no template of its own."""
    import torch
    from datasets import Dataset
    from peft import LoraConfig
    from transformers import EarlyStoppingCallback, PrinterCallback
    from trl import SFTConfig, SFTTrainer

    from llmops_cli.model.loading import default_device, load_causal_lm

    tcfg = cfg.tune
    torch.manual_seed(tcfg.seed)
    device = default_device()
    check_method_supported(tcfg, device)
    model = load_causal_lm(cfg.model, device=device, quantization_config=quantization_config(tcfg),
                           dtype=weights_dtype(cfg, device))
    if tcfg.method == "qlora":
        from peft import prepare_model_for_kbit_training

        model = prepare_model_for_kbit_training(model, use_gradient_checkpointing=tcfg.gradient_checkpointing)
    model.train()
    peft_config = None
    if tcfg.method in ("lora", "qlora"):
        from llmops_cli.tune.memory import check_target_modules, linear_layers

        # The pre-flight checked the model built from its config; this covers architectures it could not build.
        check_target_modules(linear_layers(model), tcfg.lora.target_modules)
        peft_config = LoraConfig(
            r=tcfg.lora.r,
            lora_alpha=tcfg.lora.alpha,
            lora_dropout=tcfg.lora.dropout,
            target_modules=tcfg.lora.target_modules,
            use_rslora=tcfg.lora.rslora,
            use_dora=tcfg.lora.dora,
            task_type="CAUSAL_LM",
        )
    evaluating = bool(tcfg.eval_steps and data.validation)
    optimizer = tcfg.optimizer
    if tcfg.method == "qlora" and optimizer == "adamw_torch":
        optimizer = "paged_adamw_8bit"  # the QLoRA recipe: optimizer state paged out under pressure
    args = SFTConfig(
        output_dir=str(Path(tcfg.output_dir) / "checkpoints"),
        num_train_epochs=tcfg.epochs,
        max_steps=tcfg.max_steps,
        per_device_train_batch_size=tcfg.batch_size,
        per_device_eval_batch_size=tcfg.batch_size,
        gradient_accumulation_steps=tcfg.grad_accum,
        gradient_checkpointing=tcfg.gradient_checkpointing,
        learning_rate=tcfg.learning_rate,
        lr_scheduler_type=tcfg.lr_scheduler,
        warmup_steps=tcfg.warmup_ratio,  # a float below 1 is a ratio of the total steps
        weight_decay=tcfg.weight_decay,
        optim=optimizer,
        logging_steps=tcfg.logging_steps,
        eval_strategy="steps" if evaluating else "no",
        eval_steps=tcfg.eval_steps or None,
        save_strategy="steps" if tcfg.save_steps else "no",
        save_steps=tcfg.save_steps or 500,
        save_total_limit=tcfg.save_total_limit,
        load_best_model_at_end=tcfg.load_best_at_end and evaluating,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        seed=tcfg.seed,
        data_seed=tcfg.seed,
        report_to=tcfg.report_to or "none",
        max_length=tcfg.max_seq_length,
        completion_only_loss=True,
        # Padding-free packing: examples share a row but position ids restart per example, so attention
        # never crosses example boundaries.
        packing=tcfg.packing,
        packing_strategy="bfd",
        use_cpu=device == "cpu",
        disable_tqdm=True,
        include_num_input_tokens_seen="non_padding",
        **_precision(tcfg, device),
    )
    callbacks = [_progress_callback(on_progress)] if on_progress else []
    if interrupt is not None:
        callbacks.append(interrupt.callback())
    if tcfg.early_stopping_patience and evaluating:
        callbacks.append(EarlyStoppingCallback(early_stopping_patience=tcfg.early_stopping_patience))
    trainer = SFTTrainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list(data.train),
        eval_dataset=Dataset.from_list(data.validation) if data.validation else None,
        processing_class=tokenizer,
        peft_config=peft_config,
        callbacks=callbacks or None,
    )
    # The Trainer prints raw log dicts to stdout when tqdm is off; stdout belongs to --json output.
    trainer.remove_callback(PrinterCallback)
    _check_completion_mask(trainer)
    return trainer


class Interrupt:
    """SIGINT/SIGTERM during training: save a checkpoint at the end of the current step, then stop."""

    def __init__(self) -> None:
        self.requested: str | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interrupt:
        import signal

        for sig in (signal.SIGINT, signal.SIGTERM):
            self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        import signal

        for sig, handler in self._previous.items():
            signal.signal(sig, handler)

    def _handle(self, signum: int, frame: object) -> None:
        import signal

        if self.requested:  # a second signal: stop now
            signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
            raise KeyboardInterrupt
        self.requested = signal.Signals(signum).name

    def callback(self) -> Any:
        from transformers import TrainerCallback

        outer = self

        class OnInterrupt(TrainerCallback):
            def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
                if outer.requested:
                    control.should_save = True
                    control.should_training_stop = True

        return OnInterrupt()


def preflight(cfg: ProjectConfig, for_training: bool = True) -> tuple[MemoryEstimate, float | None]:
    """Estimate peak memory from the model config alone; refuse when it will not fit the GPU.
    `for_training=False` (--dry-run) estimates even where the method cannot run, e.g. QLoRA on a laptop."""
    from llmops_cli.model.loading import default_device
    from llmops_cli.tune.config import check_optimizer, check_report_to

    device = default_device()
    if for_training:
        check_method_supported(cfg.tune, device)
    else:
        device = "cuda" if cfg.tune.method == "qlora" else device  # estimate what a GPU run would need
    # Config mistakes the Trainer would only find after loading the model, each as one error with its fix;
    # trackers need to be installed only where training runs.
    check_optimizer(cfg.tune.optimizer)
    check_report_to(cfg.tune.report_to, installed_too=for_training)
    est = estimate_for(cfg.model, cfg.tune, device)  # also checks tune.lora.target_modules against the model
    budget = gpu_budget_gib(cfg.tune) if device == "cuda" or cfg.tune.gpu_memory_gib else None
    if budget is not None and est.warning is None and est.total_gib > budget * 0.95:
        raise BackendUnavailable(
            f"estimated peak memory {est.total_gib:.1f} GiB exceeds the {budget:.1f} GiB available",
            hint="enable tune.gradient_checkpointing, lower tune.batch_size or tune.max_seq_length, "
                 "or use tune.method=qlora",
        )
    return est, budget


def latest_checkpoint(output_dir: str) -> str | None:
    ckpts = sorted(Path(output_dir, "checkpoints").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    return str(ckpts[-1]) if ckpts else None


def run_tune(cfg: ProjectConfig, on_progress: ProgressFn | None = None, resume: bool = False,
             on_data: Callable[[TrainingData], None] | None = None) -> TuneResult:
    """Train per cfg.tune; writes the adapter (or full weights), tokenizer (with the chat template the
    data was rendered with), manifest and metrics.

    SIGINT/SIGTERM save a checkpoint and raise TrainingInterrupted; `resume=True` continues from the
    latest checkpoint (mid-epoch, same data order), with the run's totals carried over from it."""
    from llmops_cli.model.loading import load_tokenizer
    from llmops_cli.tune.resume import Before, bookkeeping_callback, read_checkpoint

    tcfg = cfg.tune
    started = time.time()
    tokenizer = load_tokenizer(cfg.model)
    data = load_training_data(cfg, tokenizer)
    tokenizer.chat_template = data.template  # saved with the model: eval and serve render with it
    if on_data is not None:
        on_data(data)
    estimate_, budget = preflight(cfg)
    checkpoint = latest_checkpoint(tcfg.output_dir) if resume else None
    if resume and checkpoint is None:
        raise DataError(f"--resume: no checkpoint under {Path(tcfg.output_dir) / 'checkpoints'}",
                        hint="start without --resume, or set tune.save_steps to checkpoint during training")
    before = read_checkpoint(checkpoint) if checkpoint else Before()
    with Interrupt() as interrupt:
        trainer = build_trainer(cfg, data, tokenizer, on_progress, interrupt=interrupt)
        trainer.add_callback(bookkeeping_callback(before))
        out = Path(tcfg.output_dir)
        if data.validation and not checkpoint:
            before.eval_loss_before = trainer.evaluate()["eval_loss"]
        train_out = trainer.train(resume_from_checkpoint=checkpoint)
        if interrupt.requested:
            saved = latest_checkpoint(tcfg.output_dir)
            raise TrainingInterrupted(
                f"training stopped by {interrupt.requested} at step {trainer.state.global_step}; "
                f"checkpoint saved at {saved}", hint="continue with `llmops tune --resume` and the same config")
        eval_after = trainer.evaluate()["eval_loss"] if data.validation else None

    trainer.save_model(str(out))
    tokenizer.save_pretrained(str(out))
    sort_adapter_config(out)
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    seconds = time.time() - started
    # Non-padding tokens trained on in this call (counted by the Trainer, which restores the count of the
    # earlier calls from a checkpoint), over this call's training time.
    tokens = trainer.state.num_input_tokens_seen - before.tokens
    loss = before.train_loss(train_out.global_step, float(train_out.training_loss))
    result = TuneResult(
        output_dir=str(out),
        method=tcfg.method,
        steps=train_out.global_step,
        train_loss=None if math.isnan(loss) else loss,
        eval_loss_before=before.eval_loss_before,
        eval_loss_after=eval_after,
        trainable_params=trainable,
        total_params=total,
        train_examples=len(data.train),
        too_long=data.truncation["train"].over_limit,
        seconds=round(seconds, 2),
        tokens_per_second=round(tokens / max(train_out.metrics.get("train_runtime", seconds), 1e-9), 1),
        resumed_from_step=before.step or None,
        data=data.describe(),
    )
    if trainer.is_world_process_zero():  # under DDP/FSDP only one process writes
        _write_manifest(cfg, result, Path(tcfg.data_dir), estimate_, budget)
        _write_loss_curve(tcfg.plots_file, trainer.state.log_history)
    return result


def sort_adapter_config(out: Path) -> None:
    """PEFT writes target_modules from a set, in a different order each run: identical trainings would
    hash differently (and register as different versions). Sorted, they are byte-identical."""
    path = Path(out) / "adapter_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(config.get("target_modules"), list):
        config["target_modules"] = sorted(config["target_modules"])
        atomic_write_text(path, json.dumps(config, indent=2, sort_keys=True) + "\n")


def _write_loss_curve(path: str, history: list[dict[str, Any]]) -> None:
    """step,loss,eval_loss rows for `dvc plots` (one per logged step)."""
    rows: dict[int, dict[str, Any]] = {}
    for entry in history:
        step = entry.get("step")
        if step is None:
            continue
        row = rows.setdefault(step, {"step": step, "loss": "", "eval_loss": ""})
        if "loss" in entry:
            row["loss"] = round(float(entry["loss"]), 6)
        if "eval_loss" in entry:
            row["eval_loss"] = round(float(entry["eval_loss"]), 6)
    # Only steps with a training loss: a row without one (the final evaluation, the run summary) is
    # drawn by `dvc plots` as a drop to zero.
    lines = ["step,loss,eval_loss"] + [f"{r['step']},{r['loss']},{r['eval_loss']}" for r in rows.values()
                                       if r["loss"] != ""]
    atomic_write_text(path, "\n".join(lines) + "\n")


def _check_completion_mask(trainer: Any) -> None:
    """Fail fast if the collator would train on prompt tokens (a silent quality bug otherwise)."""
    example = trainer.train_dataset[0]
    labels = example.get("labels")
    if labels is None and "completion_mask" in example:  # older TRL: mask applied by the collator
        labels = [t if m else -100 for t, m in zip(example["input_ids"], example["completion_mask"], strict=True)]
    if labels is None or all(t == -100 for t in labels) or -100 not in labels:
        raise RuntimeError("completion-only loss is not in effect: prompt tokens would be trained on")


def _write_manifest(cfg: ProjectConfig, result: TuneResult, data_dir: Path, estimate_: MemoryEstimate,
                    budget: float | None) -> None:
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
        "memory_preflight": {**estimate_.to_dict(), "budget_gib": budget},
        "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    manifest["files"] = {k: v for k, v in hash_tree(out).items()
                         if not k.startswith("checkpoints/") and k != "run_manifest.json"}
    atomic_write_json(out / "run_manifest.json", manifest)
    metrics = {k: v for k, v in result.to_dict().items()
               if isinstance(v, int | float) and v is not None and k != "resumed_from_step"}
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


def merge_adapter(cfg: ProjectConfig, output: str | None = None) -> dict[str, Any]:
    """Write base + adapter merged into full weights. A QLoRA adapter is merged into the base loaded at
    16/32-bit, not into the 4-bit weights, so the result is a plain dequantised model."""
    from llmops_cli.model.loading import is_adapter_dir, load_causal_lm, load_tokenizer

    source = cfg.tune.output_dir
    if not is_adapter_dir(source):
        raise DataError(f"{source} holds no LoRA adapter to merge", hint="run `llmops tune` with a lora/qlora method")
    # Beside the adapter, never inside it: tune.output_dir is a DVC output, and writing into it would
    # mark tune and every later stage as changed.
    out = Path(output or f"{Path(source)}-merged")
    model = load_causal_lm(cfg.model, device="cpu", adapter=source, merge=True)
    model.save_pretrained(out, safe_serialization=True)
    load_tokenizer(cfg.model, path=source).save_pretrained(out)
    return {"output": str(out), "parameters": sum(p.numel() for p in model.parameters()),
            "dequantized_from_4bit": cfg.tune.method == "qlora"}
