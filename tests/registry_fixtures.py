"""A registered-looking project: a real (untrained) LoRA adapter on the tiny model, with eval metrics."""

import json
from pathlib import Path

import pytest

from tests.conftest import project_yaml, write_jsonl


@pytest.fixture
def adapter_project(tmp_path: Path, tiny_model: Path):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tune = tmp_path / "tune"
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model),
                           LoraConfig(r=4, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"))
    model.save_pretrained(tune)
    AutoTokenizer.from_pretrained(tiny_model).save_pretrained(tune)
    (tune / "run_manifest.json").write_text(json.dumps({
        "base_model": {"id": str(tiny_model), "local": True, "content_sha256": "ab" * 32},
        "config": {"model": {"base": str(tiny_model)}, "tune": {"method": "lora", "epochs": 1, "learning_rate": 0.1}},
        "metrics": {"train_loss": 1.0}, "data": {"train": "00" * 32},
    }))
    (tmp_path / "metrics").mkdir()
    (tmp_path / "metrics/eval.json").write_text(json.dumps({
        "n": 10, "tuned": {"exact_match": 0.8}, "base": {"exact_match": 0.1}, "delta": {"exact_match": 0.7},
        "gates": [{"gate": "tuned.exact_match >= 0.5", "passed": True}], "gates_passed": True}))
    data = write_jsonl(tmp_path / "data.jsonl", [{"id": "1", "message": "hi", "category": "billing"}])
    config = project_yaml(tmp_path, tiny_model, data)
    return tmp_path, config
