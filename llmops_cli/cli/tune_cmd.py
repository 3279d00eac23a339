"""`llmops tune`."""

from __future__ import annotations

import typer

from llmops_cli.cli.common import ConfigOpt, JsonOpt, SetOpt, command, load_project

app = typer.Typer(help="Fine-tune the base model (LoRA or full) on prep's splits.")


@app.callback(invoke_without_command=True)
def tune(ctx: typer.Context, config: ConfigOpt = None, set_: SetOpt = None, json_: JsonOpt = False) -> None:
    """Fine-tune the base model (LoRA or full) on prep's splits; saves the adapter and a run manifest."""
    if ctx.invoked_subcommand is not None:
        return
    with command(json_) as console:
        cfg = load_project(config, set_)
        from llmops_cli.tune.train import run_tune

        console.info(f"fine-tuning {cfg.model.base} ({cfg.tune.method}) on {cfg.tune.data_dir}")
        with console.progress("training", total=None) as bar:
            seen = {"step": 0}

            def on_progress(step: int, total: int, info: dict) -> None:
                if bar.total is None and total:
                    bar.set_total(total)
                bar.advance(step - seen["step"], **info)
                seen["step"] = step

            result = run_tune(cfg, on_progress=on_progress)
        console.table("validation loss", ["before", "after"], [[result.eval_loss_before, result.eval_loss_after]])
        console.result(result.to_dict(), f"{result.steps} steps in {result.seconds:.0f}s "
                                         f"({result.tokens_per_second:.0f} tok/s); saved to {result.output_dir}")
