"""Interrupting training (SIGINT) saves a checkpoint; resuming ends where an uninterrupted run ends."""

import os
import signal

import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.errors import BackendUnavailable
from llmops_cli.prep.pipeline import run_prep
from llmops_cli.tune.launch import launcher_command
from llmops_cli.tune.train import TrainingInterrupted, merge_adapter, run_tune
from tests.conftest import make_rows, project_yaml, write_jsonl

STEPS = ["tune.max_steps=10", "tune.batch_size=8", "tune.logging_steps=2", "tune.warmup_ratio=0.0",
         "tune.lr_scheduler=linear"]


@pytest.fixture(scope="module")
def prepared(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("tune")
    config = project_yaml(tmp, tiny_model, write_jsonl(tmp / "rows.jsonl", make_rows(200)))
    run_prep(load_config(config).prep)
    return tmp, config


def _cfg(config, out, *extra):
    return load_config(config, [*STEPS, f"tune.output_dir={out}", f"tune.metrics_file={out}/m.json",
                                f"tune.plots_file={out}/loss.csv", *extra])


def test_interrupt_then_resume_matches_an_uninterrupted_run(prepared):
    tmp, config = prepared
    straight = run_tune(_cfg(config, tmp / "straight"))
    assert straight.eval_loss_after < straight.eval_loss_before  # it learns: tuned beats base on validation

    def interrupt_at_4(step, total, info):
        if step == 4 and not info:
            os.kill(os.getpid(), signal.SIGINT)

    cfg = _cfg(config, tmp / "resumed")
    with pytest.raises(TrainingInterrupted, match="--resume"):
        run_tune(cfg, on_progress=interrupt_at_4)
    assert (tmp / "resumed/checkpoints/checkpoint-4").is_dir()
    # An unrelated earlier run's metrics lying where this run writes its own: resume must not read them.
    (tmp / "resumed/m.json").write_text('{"eval_loss_before": 123.0, "train_loss": 9.0}')
    resumed = run_tune(cfg, resume=True)
    assert resumed.steps == straight.steps == 10 and resumed.resumed_from_step == 4
    assert resumed.eval_loss_after == pytest.approx(straight.eval_loss_after, rel=1e-5)
    assert resumed.eval_loss_before == pytest.approx(straight.eval_loss_before, rel=1e-6)  # from the checkpoint
    assert resumed.train_loss == pytest.approx(straight.train_loss, rel=1e-4)  # all 10 steps, not the last 6
    assert (tmp / "resumed/loss.csv").read_text().startswith("step,loss,eval_loss\n")


def test_resume_counts_only_this_calls_tokens_and_the_whole_runs_loss(tmp_path):
    import json

    from llmops_cli.tune.resume import read_checkpoint

    (tmp_path / "trainer_state.json").write_text(json.dumps({
        "global_step": 4, "num_input_tokens_seen": 800,
        "log_history": [{"loss": 2.0, "step": 2}, {"loss": 1.0, "step": 4}, {"eval_loss": 1.5, "step": 4}]}))
    before = read_checkpoint(tmp_path)
    assert (before.step, before.loss_sum, before.tokens, before.eval_loss_before) == (4, 6.0, 800, None)
    assert before.train_loss(10, session_loss=0.5) == pytest.approx((6.0 + 3.0) / 10)


def test_resume_without_checkpoint_and_qlora_on_cpu_are_clear_errors(prepared):
    tmp, config = prepared
    from llmops_cli.errors import DataError

    with pytest.raises(DataError, match="no checkpoint"):
        run_tune(_cfg(config, tmp / "none"), resume=True)
    with pytest.raises(BackendUnavailable, match="needs a CUDA GPU"):
        run_tune(_cfg(config, tmp / "q", "tune.method=qlora"))


def test_merge_writes_plain_full_weights(prepared):
    tmp, config = prepared
    cfg = _cfg(config, tmp / "m", "tune.max_steps=2", "tune.lora.dora=true")
    run_tune(cfg)
    merged = merge_adapter(cfg)
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(merged["output"])
    assert merged["output"] == str(tmp / "m-merged") and not (tmp / "m/merged").exists()  # outside tune's output
    assert not (tmp / "m-merged/adapter_config.json").exists()
    assert sum(p.numel() for p in model.parameters()) == merged["parameters"]


def test_nproc_relaunches_the_same_command_under_torchrun():
    cmd = launcher_command(4, ["tune", "-c", "configs/gpu.yaml", "--nproc", "4", "--set", "tune.epochs=1"])
    assert cmd[1:6] == ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=4", "-m"]
    assert cmd[6:] == ["llmops_cli", "tune", "-c", "configs/gpu.yaml", "--set", "tune.epochs=1"]


def test_loss_curve_has_a_loss_on_every_row(tmp_path):
    """`dvc plots` draws a row without a loss as a drop to zero (the final eval / summary rows)."""
    from llmops_cli.tune.train import _write_loss_curve

    history = [{"step": 2, "loss": 1.5}, {"step": 4, "loss": 1.0, "eval_loss": 1.2},
               {"step": 5, "eval_loss": 0.9}, {"step": 5, "train_loss": 1.1, "train_runtime": 3.0}]
    _write_loss_curve(str(tmp_path / "loss.csv"), history)
    rows = (tmp_path / "loss.csv").read_text().splitlines()
    assert rows == ["step,loss,eval_loss", "2,1.5,", "4,1.0,1.2"]


def test_adapter_config_lists_target_modules_in_one_order(tmp_path):
    """PEFT saves target_modules from a set: without sorting, identical trainings hash differently."""
    import json

    from llmops_cli.tune.train import sort_adapter_config

    config = tmp_path / "adapter_config.json"
    config.write_text(json.dumps({"r": 8, "target_modules": ["v_proj", "q_proj", "o_proj"]}))
    sort_adapter_config(tmp_path)
    first = (tmp_path / "adapter_config.json").read_bytes()
    assert json.loads(first)["target_modules"] == ["o_proj", "q_proj", "v_proj"]
    config.write_text(json.dumps({"target_modules": ["o_proj", "v_proj", "q_proj"], "r": 8}))
    sort_adapter_config(tmp_path)
    assert (tmp_path / "adapter_config.json").read_bytes() == first
