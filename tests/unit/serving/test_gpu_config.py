"""configs/gpu.yaml and its `dvc exp run -S` overrides describe the same parameter set."""

import re
import shutil
from pathlib import Path

import yaml

from llmops_cli.config.loader import load_config

ROOT = Path(__file__).resolve().parents[3]


def test_dvc_overrides_of_demo_yaml_give_gpu_yaml(tmp_path):
    from dvc.utils.hydra import apply_overrides

    text = (ROOT / "configs/gpu.yaml").read_text()
    args = " ".join(line[3:] for line in text.splitlines() if line.startswith("#S ")).split()
    assert args[::2] == ["-S"] * (len(args) // 2)
    overrides = [a.split(":", 1)[1] for a in args[1::2]]
    assert all(re.match(r"^\+\+[a-z_.]+=", o) for o in overrides)  # ++: also adds keys demo.yaml lacks
    demo = tmp_path / "demo.yaml"
    shutil.copy(ROOT / "configs/demo.yaml", demo)
    apply_overrides(str(demo), overrides)
    from_dvc = load_config(demo).model_dump()
    from_file = load_config(ROOT / "configs/gpu.yaml").model_dump()
    assert from_dvc == from_file
    assert from_file["serve"]["backend"] == "vllm" and yaml.safe_load(text)["serve"]["vllm"]
