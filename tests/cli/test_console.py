"""The one place that talks to the terminal: when it goes plain, and what every JSON result says."""

import io
import json

import pytest

from llmops_cli import console as console_mod
from llmops_cli.console import Console


class _Stream(io.StringIO):
    def __init__(self, tty: bool) -> None:
        super().__init__()
        self._tty = tty

    def isatty(self) -> bool:
        return self._tty


@pytest.mark.parametrize("stdout_tty, stderr_tty, plain", [
    (True, True, False), (False, True, True), (True, False, True), (False, False, True)])
def test_plain_unless_both_streams_are_a_terminal(monkeypatch, stdout_tty, stderr_tty, plain):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(console_mod.sys, "stdout", _Stream(stdout_tty))
    monkeypatch.setattr(console_mod.sys, "stderr", _Stream(stderr_tty))
    assert console_mod.plain_wanted() is plain


@pytest.mark.parametrize("env", ["CI", "NO_COLOR"])
def test_ci_and_no_color_force_plain(monkeypatch, env):
    monkeypatch.setenv(env, "1")
    monkeypatch.setattr(console_mod.sys, "stdout", _Stream(True))
    monkeypatch.setattr(console_mod.sys, "stderr", _Stream(True))
    assert console_mod.plain_wanted() is True


def test_json_results_say_ok(monkeypatch):
    out = _Stream(False)
    monkeypatch.setattr(console_mod.sys, "stdout", out)
    Console(json_mode=True, plain=True).result({"n": 1})
    Console(json_mode=True, plain=True).result({"n": 2}, ok=False)
    first, second = (json.loads(part) for part in out.getvalue().replace("}\n{", "}\0{").split("\0"))
    assert first == {"ok": True, "n": 1} and second == {"ok": False, "n": 2}


def test_ci_false_is_not_ci(monkeypatch):
    monkeypatch.setenv("CI", "false")
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setattr(console_mod.sys, "stdout", _Stream(True))
    monkeypatch.setattr(console_mod.sys, "stderr", _Stream(True))
    assert console_mod.plain_wanted() is False
