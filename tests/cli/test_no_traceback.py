"""The real `llmops` CLI, run as a user runs it (a subprocess, HF_HUB_OFFLINE=1), for each mistake of issue #15:
an exit code (2: the config names something that cannot work, 1: the run cannot go ahead here), an error of
one line with a hint that names the fix, and never a traceback. Nothing is trained: every mistake is caught
before a model is loaded, so each case takes the few seconds the CLI needs to import torch."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import project_yaml

LLMOPS = Path(sys.executable).with_name("llmops")


@pytest.fixture(scope="module")
def tiny_gpt2(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path) -> Path:
    """A random-initialised 2-layer GPT-2 (n_embd 64, n_inner unset) with the scaffolded tokenizer."""
    from transformers import AutoTokenizer, GPT2Config, GPT2LMHeadModel

    out = tmp_path_factory.mktemp("models") / "gpt2"
    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=2, n_positions=256,
                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    GPT2LMHeadModel(config).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def project(tmp_path: Path, tiny_model: Path, tiny_corpus: Path) -> Path:
    return project_yaml(tmp_path, tiny_model, tiny_corpus)


def llmops(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CI": "1", "NO_COLOR": "1"}
    return subprocess.run([str(LLMOPS), *args, "-c", str(config)], capture_output=True, text=True, env=env,
                          cwd=config.parent, timeout=120)


def assert_one_line_error(proc: subprocess.CompletedProcess[str], code: int, *words: str) -> str:
    out = proc.stdout + proc.stderr
    assert "Traceback" not in out, out
    assert proc.returncode == code, out
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    hints = [line for line in proc.stderr.splitlines() if line.strip().startswith("hint: ")]
    assert len(errors) == 1 and len(hints) == 1, out
    message = errors[0] + "\n" + hints[0]
    for word in words:
        assert word in message, message
    return message


def test_dry_run_on_a_gpt2_base_prints_the_estimate(tmp_path, tiny_gpt2, tiny_corpus):
    proc = llmops(project_yaml(tmp_path, tiny_gpt2, tiny_corpus), "tune", "--dry-run", "--json")
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stdout + proc.stderr
    result = json.loads(proc.stdout)
    assert result["estimate"]["basis"] == "meta-device model" and result["estimate"]["total_gib"] > 0
    # all-linear LoRA r=16 on GPT-2's c_attn, c_proj, c_fc and mlp.c_proj of 2 layers
    assert result["estimate"]["trainable_params"] == 2 * 16 * ((64 + 192) + (64 + 64) + (64 + 256) + (256 + 64))


def test_a_base_path_that_does_not_exist_fails_fast(project, tmp_path):
    proc = llmops(project, "tune", "--dry-run", "--set", f"model.base={tmp_path / 'no' / 'model'}")
    assert_one_line_error(proc, 2, "no such directory", "model.base", "llmops model scaffold")


def test_an_uncached_hub_id_under_hf_hub_offline_says_so(project):
    proc = llmops(project, "tune", "--dry-run", "--set", "model.base=nobody-llmops/no-such-model")
    assert_one_line_error(proc, 2, "HF_HUB_OFFLINE", "not in the local Hugging Face cache", "model.base")


def test_target_modules_that_name_no_module(project):
    proc = llmops(project, "tune", "--dry-run", "--set", "tune.lora.target_modules=[q_proj,qkv_proj]")
    message = assert_one_line_error(proc, 2, "tune.lora.target_modules", "qkv_proj")
    assert "q_proj" in message.split("hint:")[1]  # the hint lists the names the model has


def test_an_unknown_optimizer(project):
    proc = llmops(project, "tune", "--dry-run", "--set", "tune.optimizer=adamw_torchh")
    assert_one_line_error(proc, 2, "tune.optimizer", "adamw_torchh", "adamw_torch")


@pytest.mark.skipif(importlib.util.find_spec("wandb") is not None, reason="wandb is installed here")
def test_report_to_a_tracker_that_is_not_installed(project):
    proc = llmops(project, "tune", "--set", "tune.report_to=[wandb]")
    assert_one_line_error(proc, 1, "tune.report_to", "wandb", "pip install wandb")


def test_report_to_a_tracker_transformers_does_not_know(project):
    proc = llmops(project, "tune", "--dry-run", "--set", "tune.report_to=[tensorbored]")
    assert_one_line_error(proc, 2, "tune.report_to", "tensorbored")


def test_eval_before_tune_says_run_tune_first(project, tmp_path):
    data = tmp_path / "processed" / "test.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text(json.dumps({"id": "1", "prompt": "hi", "completion": "billing"}) + "\n", encoding="utf-8")
    proc = llmops(project, "eval")
    assert_one_line_error(proc, 1, f"no tuned model at {tmp_path / 'tune'}", "run llmops tune first")


def test_an_unreachable_hub_says_how_to_fail_fast():
    """Without HF_HUB_OFFLINE an unreachable hub costs ~35 s of retries; the one line says how to skip them."""
    from llmops_cli.model.loading import _not_found

    error = _not_found("org/name", OSError("We couldn't connect to 'https://huggingface.co' to load the files, "
                                           "and couldn't find them in the cached files.\nCheck your connection"))
    assert "\n" not in error.message and "couldn't connect" in error.message
    assert "HF_HUB_OFFLINE=1" in error.hint and "model.base" in error.hint


@pytest.fixture
def mystery_model(tmp_path: Path, tiny_model: Path) -> Path:
    """A model directory whose config.json names an architecture transformers does not know."""
    out = tmp_path / "mystery"
    out.mkdir()
    for f in tiny_model.iterdir():
        if f.name.startswith("tokenizer") or f.suffix == ".jinja":
            (out / f.name).write_bytes(f.read_bytes())
    (out / "config.json").write_text(json.dumps({"model_type": "mystery", "width": 3}), encoding="utf-8")
    return out


def test_an_unknown_architecture_dry_runs_with_a_warning(project, mystery_model):
    proc = llmops(project, "tune", "--dry-run", "--set", f"model.base={mystery_model}")
    assert proc.returncode == 0 and "Traceback" not in proc.stdout + proc.stderr, proc.stdout + proc.stderr
    assert "cannot estimate memory for mystery, running without pre-flight" in proc.stderr


def test_an_unknown_architecture_fails_to_load_in_one_line(mystery_model):
    from llmops_cli.errors import ConfigError
    from llmops_cli.model.config import ModelSection
    from llmops_cli.model.loading import load_causal_lm

    with pytest.raises(ConfigError, match="model type `mystery`") as info:
        load_causal_lm(ModelSection(base=str(mystery_model)), device="cpu")
    assert "\n" not in info.value.message and "trust_remote_code" in info.value.hint
