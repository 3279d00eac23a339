"""`llmops tune` (train), `tune merge`."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, config_path, load_project, new_app

if TYPE_CHECKING:
    from llmops_cli.console import Console
    from llmops_cli.tune.dataset import TrainingData

app = new_app(help="Fine-tune the base model (LoRA, QLoRA or full) on prep's splits.")


@app.callback(invoke_without_command=True)
def tune(
    ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
    resume: Annotated[bool, typer.Option("--resume", help="Continue from the latest checkpoint.")] = False,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the memory estimate and exit.")] = False,
    nproc: Annotated[int, typer.Option("--nproc", min=1, help="Processes (GPUs): wraps torchrun.")] = 1,
) -> None:
    """Fine-tune the base model on prep's splits; saves the adapter and a run manifest."""
    if ctx.invoked_subcommand is not None:
        return
    with command(json_) as console:
        cfg = load_project(config, set_)
        if nproc > 1:
            from llmops_cli.tune.launch import relaunch

            raise typer.Exit(relaunch(nproc, sys.argv[1:]))
        from llmops_cli.tune.train import TrainingInterrupted, preflight, run_tune

        estimate, budget = preflight(cfg, for_training=not dry_run)
        if estimate.warning:  # an architecture whose sizes cannot be read: no numbers, no check
            console.warn(estimate.warning)
        rows = [[k.removesuffix("_gib"), f"{v:.2f} GiB" if v >= 1 else f"{v * 1024:.1f} MiB"]
                for k, v in estimate.to_dict().items() if k.endswith("_gib") and not estimate.warning]
        console.table("memory pre-flight (estimated peak)", ["part", "size"],
                      [*rows, ["budget", f"{budget:.1f} GiB" if budget else "no GPU visible"]])
        if dry_run:
            console.result({"estimate": estimate.to_dict(), "budget_gib": budget},
                           f"estimated peak {estimate.total_gib:.2f} GiB; "
                           f"{estimate.trainable_params:,} of {estimate.total_params:,} parameters trained")
            return
        console.info(f"fine-tuning {cfg.model.base} ({cfg.tune.method}) on {cfg.tune.data_dir}"
                     + (" (resuming)" if resume else ""))
        with console.progress("training", total=None) as bar:
            seen = {"step": 0}

            def on_progress(step: int, total: int, info: dict) -> None:
                if bar.total is None and total:
                    bar.set_total(total)
                bar.advance(step - seen["step"], **info)
                seen["step"] = step

            try:
                result = run_tune(cfg, on_progress=on_progress, resume=resume,
                                  on_data=lambda data: _report_data(console, data))
            except TrainingInterrupted as exc:
                exc.hint = f"continue with: {resume_command(config_path(config), set_ or [])}"
                raise
        console.table("validation loss", ["before", "after"], [[result.eval_loss_before, result.eval_loss_after]])
        console.result(result.to_dict(), f"{result.steps} steps in {result.seconds:.0f}s "
                                         f"({result.tokens_per_second:.0f} tok/s); saved to {result.output_dir}")


def resume_command(config: Path | None, overrides: list[str]) -> str:
    """The exact command that resumes this run: the same config file and overrides, plus --resume."""
    args = ["llmops", "tune", *(["-c", str(config)] if config else []),
            *(a for o in overrides for a in ("--set", o)), "--resume"]
    return shlex.join(args)


def _report_data(console: Console, data: TrainingData) -> None:
    console.info(f"token ids: {data.source}; chat template: {data.template_source}")
    for split, t in data.truncation.items():
        if t.over_limit:
            what = {"drop": f"{t.dropped} left out", "truncate": f"{t.truncated} cut (their answers lose their end), "
                    f"{t.dropped} left out"}.get(t.policy, "")
            console.warn(f"{t.over_limit} of {t.examples} {split} examples are longer than tune.max_seq_length="
                         f"{t.max_seq_length} tokens: {what} (tune.truncation={t.policy})")


@app.command("merge")
def merge(
    ctx: typer.Context, 
    output: Annotated[str | None, typer.Option(
        "--output", "-o", help="Default: <tune.output_dir>-merged (outside tune's DVC output).")] = None,
    config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False,
) -> None:
    """Merge the trained adapter into the base weights (a QLoRA base is dequantised correctly)."""
    with command(json_, ctx) as console:
        cfg = load_project(config, set_, ctx)
        from llmops_cli.tune.train import merge_adapter

        result = merge_adapter(cfg, output)
        console.result(result, f"merged model written to {result['output']}")
