"""dvc.yaml lists only the params that change a stage's result. This keeps that list honest: every
key of configs/demo.yaml is either tracked by the stages that read it or named here as not a result."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[3]
# Paths (DVC tracks the files themselves as deps/outs), logging, and sections no stage reads.
NOT_RESULTS = {
    "scaffold.output", "prep.output_dir", "prep.report", "prep.metrics_file",
    "tune.data_dir", "tune.output_dir", "tune.logging_steps",
    "eval.data", "eval.adapter", "eval.metrics_file", "eval.results_file", "eval.predictions_file",
    "register.model_dir", "register.eval_metrics", "register.prep_report", "register.output",
}
UNSTAGED_SECTIONS = {"serve", "monitor"}  # served and monitored outside the pipeline (make demo)


def _leaves(obj, prefix=""):
    if isinstance(obj, dict):
        return [leaf for k, v in obj.items() for leaf in _leaves(v, f"{prefix}{k}.")]
    return [prefix[:-1]]


def test_every_result_key_of_the_demo_config_is_a_dvc_param():
    config = yaml.safe_load((ROOT / "configs/demo.yaml").read_text())
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    tracked = [p for stage in stages.values() for group in stage.get("params", [])
               for p in group.get("configs/demo.yaml", [])]
    keys = [k for k in _leaves(config) if k.split(".")[0] not in UNSTAGED_SECTIONS]
    untracked = [k for k in keys if k not in NOT_RESULTS and not any(k == t or k.startswith(t + ".") for t in tracked)]
    assert untracked == [], f"add these to dvc.yaml params (or to NOT_RESULTS if they change no result): {untracked}"
    stale = [t for t in tracked if not any(k == t or k.startswith(t + ".") for k in keys)]
    assert stale == [], f"dvc.yaml tracks keys configs/demo.yaml does not have (dvc would fail): {stale}"


def test_no_stage_serves_or_moves_an_alias():
    """`dvc exp run` must not change what is served: serving and promotion stay outside the pipeline."""
    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    commands = " ".join(stage["cmd"] for stage in stages.values())
    assert "serve" not in commands and "promote" not in commands and "rollback" not in commands
