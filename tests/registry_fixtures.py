"""A registered-looking project: a real (untrained) LoRA adapter on the tiny model, with eval metrics
bound to its content (as `llmops eval` writes them)."""

import json
from pathlib import Path

import pytest

from tests.conftest import project_yaml, write_jsonl

EVAL = {"n": 10, "tuned": {"exact_match": 0.8}, "base": {"exact_match": 0.1}, "delta": {"exact_match": 0.7},
        "gates": [{"gate": "tuned.exact_match >= 0.5", "passed": True}], "gates_passed": True}


def bind_eval(tmp: Path, **changes) -> dict:
    """Write metrics/eval.json for what tmp/tune holds now (its model identity, as eval records it)."""
    from llmops_cli.model.config import ModelSection
    from llmops_cli.model.identity import evaluated_model_identity

    base = json.loads((tmp / "tune/run_manifest.json").read_text())["base_model"]["id"]
    metrics = {**EVAL, **changes, "model": evaluated_model_identity(tmp / "tune", ModelSection(base=base))}
    (tmp / "metrics").mkdir(exist_ok=True)
    (tmp / "metrics/eval.json").write_text(json.dumps(metrics))
    return metrics


def new_weights(tmp: Path, scale: float, **eval_changes) -> None:
    """Different (still loadable) adapter weights in tmp/tune, evaluated: the next register is a new version."""
    from safetensors.torch import load_file, save_file

    path = tmp / "tune/adapter_model.safetensors"
    tensors = load_file(path)
    save_file({k: v + scale for k, v in tensors.items()}, path)
    bind_eval(tmp, **eval_changes)


@pytest.fixture
def adapter_project(tmp_path: Path, tiny_model: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmops_cli.model.identity import base_model_identity

    tune = tmp_path / "tune"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(tune)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tune)
    (tune / "run_manifest.json").write_text(json.dumps({
        "base_model": base_model_identity(str(tiny_model), None),
        "config": {"model": {"base": str(tiny_model)}, "tune": {"method": "lora", "epochs": 1, "learning_rate": 0.1}},
        "metrics": {"train_loss": 1.0}, "data": {"train": "00" * 32},
    }))
    bind_eval(tmp_path)
    data = write_jsonl(tmp_path / "data.jsonl", [{"id": "1", "message": "hi", "category": "billing"}])
    config = project_yaml(tmp_path, tiny_model, data)
    return tmp_path, config
