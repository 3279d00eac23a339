"""Bookkeeping that survives `--resume`: what a run had done before its checkpoint is read from the
checkpoint itself, never from whatever metrics file happens to lie around.

The Trainer restores its step and token counters from a checkpoint, but its `training_loss` averages
only the steps of the current call, its tokens/s divides every token ever seen by the current call's
time, and the validation loss before training is not in the checkpoint at all. So:
- every checkpoint is preceded by a log entry, which makes the log history inside it cover every step
  up to it (the sum of the loss over those steps is then exact);
- a small file beside the Trainer's own state records the loss before training.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SIDECAR = "llmops_run.json"


@dataclass
class Before:
    """What the run had done up to the checkpoint it resumes from (zeros for a fresh run)."""

    step: int = 0
    loss_sum: float = 0.0  # sum of per-step training losses over steps 1..step
    tokens: int = 0
    eval_loss_before: float | None = None

    def train_loss(self, total_steps: int, session_loss: float) -> float:
        """Mean training loss over the whole run, this call's steps and the earlier ones."""
        session_steps = total_steps - self.step
        return (self.loss_sum + session_loss * session_steps) / max(total_steps, 1)


def read_checkpoint(checkpoint: str | Path) -> Before:
    """The earlier part of the run, from the Trainer's state and our sidecar in the checkpoint."""
    folder = Path(checkpoint)
    state = json.loads((folder / "trainer_state.json").read_text(encoding="utf-8"))
    step = int(state.get("global_step", 0))
    loss_sum, last = 0.0, 0
    for entry in state.get("log_history", []):
        if "loss" in entry and entry.get("step", 0) <= step:
            loss_sum += float(entry["loss"]) * (entry["step"] - last)
            last = entry["step"]
    try:
        sidecar = json.loads((folder / SIDECAR).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        sidecar = {}  # a checkpoint from an older llmops: the loss before training is unknown, not guessed
    if last != step:  # logged losses do not reach the checkpoint (older llmops): the mean would be wrong
        loss_sum = float("nan")
    return Before(step=step, loss_sum=loss_sum, tokens=int(state.get("num_input_tokens_seen", 0) or 0),
                  eval_loss_before=sidecar.get("eval_loss_before"))


def bookkeeping_callback(before: Before) -> Any:
    """Log at every save (so the checkpoint's log history covers all its steps) and write the sidecar
    with `before.eval_loss_before` as it is when the checkpoint is written. Add it after the callbacks
    that decide to save (the Trainer's own, the interrupt handler): `trainer.add_callback` appends."""
    from transformers import TrainerCallback

    class Bookkeeping(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):  # noqa: ANN001
            if control.should_save:
                control.should_log = True
            return control

        def on_save(self, args, state, control, **kwargs):  # noqa: ANN001
            folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
            if state.is_world_process_zero and folder.is_dir():
                record = {"eval_loss_before": before.eval_loss_before}
                (folder / SIDECAR).write_text(json.dumps(record), encoding="utf-8")
            return control

    return Bookkeeping()
