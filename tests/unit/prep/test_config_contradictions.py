"""Prep settings that contradict each other are refused by the real loader and by `llmops config validate`
(exit 2), with a message naming the file, the key and the fix."""

from pathlib import Path

import pytest
from typer.testing import CliRunner

from llmops_cli.cli.app import app
from llmops_cli.config.loader import load_config
from llmops_cli.errors import ConfigError

CASES = {
    "no sources": ("prep:\n  sources: []\n", "prep.sources", "list at least one input"),
    "min above max chars": ("prep:\n  min_chars: 500\n  max_chars: 100\n", "prep.max_chars",
                            "min_chars (500) is above prep.max_chars (100)"),
    "min above max tokens": ("prep:\n  tokenize:\n    min_tokens: 300\n    max_tokens: 200\n",
                             "prep.tokenize.max_tokens", "min_tokens (300) is above prep.tokenize.max_tokens (200)"),
    "empty language list": ("prep:\n  language:\n    keep: []\n", "prep.language.keep",
                            "null turns the language filter off"),
    "source listed twice": ("prep:\n  sources:\n    - path: a.jsonl\n    - path: a.jsonl\n", "prep.sources",
                            "a.jsonl is listed twice"),
    "splits leave no train": ("prep:\n  splits:\n    validation: 0.5\n    test: 0.5\n", "prep.splits",
                              "validation + test must be below 1"),
}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "llmops.yaml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(CASES))
def test_contradiction_is_a_config_error_naming_file_key_and_fix(tmp_path, name):
    text, key, fix = CASES[name]
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    message = str(err.value)
    assert f"{path}: {key}" in message
    assert fix in message


@pytest.mark.parametrize("name", ["no sources", "min above max chars"])
def test_config_validate_exits_2(tmp_path, name):
    path = _write(tmp_path, CASES[name][0])
    result = CliRunner().invoke(app, ["config", "validate", str(path)])
    assert result.exit_code == 2
    assert CASES[name][2] in result.output
    assert "Traceback" not in result.output


def test_consistent_limits_still_load(tmp_path):
    cfg = load_config(_write(tmp_path, "prep:\n  min_chars: 100\n  max_chars: 100\n  tokenize:\n"
                                       "    min_tokens: 5\n    max_tokens: 5\n"))
    assert cfg.prep.min_chars == cfg.prep.max_chars == 100
