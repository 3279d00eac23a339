"""Turn prep's rows into TRL conversational prompt-completion examples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from llmops_cli.errors import DataError


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"missing data file: {path}", hint="run `llmops prep` first (or `dvc repro prep`)")
    with path.open(encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def prompt_messages(row: dict[str, Any]) -> list[dict[str, str]]:
    """The chat messages that precede the answer: optional system prompt, then the user's prompt."""
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    # Earlier turns of a multi-turn chat (prep keeps them as `history`) come before the last user turn.
    history = [{"role": m["role"], "content": m["content"]} for m in row.get("history") or []]
    return [*messages, *history, {"role": "user", "content": row["prompt"]}]


def to_sft_example(row: dict[str, Any]) -> dict[str, list[dict[str, str]]]:
    """Prompt-completion form: TRL puts the loss on the completion (assistant) tokens only."""
    return {
        "prompt": prompt_messages(row),
        "completion": [{"role": "assistant", "content": row["completion"]}],
    }
