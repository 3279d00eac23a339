from pathlib import Path

import pytest

from llmops_cli.config.loader import load_config, redact
from llmops_cli.errors import ConfigError
from tests.conftest import ROOT


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cfg.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_unknown_key_names_file_path_and_suggestion(tmp_path):
    path = _write(tmp_path, "tune:\n  epocs: 2\n  lora:\n    alpah: 3\n")
    with pytest.raises(ConfigError) as err:
        load_config(path)
    text = str(err.value)
    assert f"{path}: tune.epocs: unknown key — did you mean 'epochs'?" in text
    assert "tune.lora.alpah: unknown key — did you mean 'alpha'?" in text


def test_unknown_section_suggests_the_right_one(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'register'"):
        load_config(_write(tmp_path, "registr:\n  root: x\n"))


def test_wrong_type_names_field_and_expected_type(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "tune:\n  batch_size: lots\n"))
    assert "tune.batch_size: Input should be a valid integer" in str(err.value)
    assert "(got 'lots'); expected int" in str(err.value)


def test_all_problems_are_collected(tmp_path):
    with pytest.raises(ConfigError) as err:
        load_config(_write(tmp_path, "tune:\n  batch_size: x\n  epochs: y\nserve:\n  port: 0\n"))
    assert len(err.value.problems) == 3


def test_set_overrides_are_typed_and_validated(tmp_path):
    cfg = load_config(_write(tmp_path, "tune:\n  epochs: 1\n"),
                      ["tune.epochs=4", "tune.lora.target_modules=[q_proj,v_proj]", "eval.limit=null"])
    assert cfg.tune.epochs == 4
    assert cfg.tune.lora.target_modules == ["q_proj", "v_proj"]
    assert cfg.eval.limit is None
    with pytest.raises(ConfigError, match="--set serve.port=99999: serve.port"):
        load_config(None, ["serve.port=99999"])
    with pytest.raises(ConfigError, match="did you mean 'learning_rate'"):
        load_config(None, ["tune.learning_rat=0.1"])


def test_malformed_set_is_a_config_error():
    with pytest.raises(ConfigError, match="expected key.path=value"):
        load_config(None, ["tune.epochs"])


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="invalid YAML at line 3"):
        load_config(_write(tmp_path, "tune:\n  epochs: [1\n"))
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_cross_field_validation(tmp_path):
    with pytest.raises(ConfigError, match="validation \\+ test must be below 1"):
        load_config(None, ["prep.splits.validation=0.6", "prep.splits.test=0.5"])
    with pytest.raises(ConfigError, match="not of the form"):
        load_config(None, ["eval.gates=[accuracy is great]"])


def test_safe_defaults():
    cfg = load_config(None)
    assert cfg.model.trust_remote_code is False
    assert cfg.serve.host == "127.0.0.1"


def test_redact_hides_secret_values_but_not_env_names():
    data = {"model": {"token_env": "HF_TOKEN", "hub_token": "hf_abc"}, "x": [{"api_key": "sk-1"}]}
    assert redact(data) == {"model": {"token_env": "HF_TOKEN", "hub_token": "***"}, "x": [{"api_key": "***"}]}


@pytest.mark.parametrize("path", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_validates(path):
    if path.name.startswith("accelerate"):
        pytest.skip("accelerate's own config format")
    load_config(path)
