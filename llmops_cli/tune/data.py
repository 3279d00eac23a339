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


def prompt_messages(row: dict[str, Any]) -> list[dict[str, Any]]:
    """The chat messages that precede the answer: optional system prompt, earlier turns, the user's
    prompt, and the tool rounds after it (calls and their results) in a tool-calling conversation."""
    messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
    # Earlier turns of a multi-turn chat (prep keeps them as `history`) come before the last user turn.
    return [*messages, *(row.get("history") or []), {"role": "user", "content": row["prompt"]},
            *(row.get("trace") or [])]


def render_prompt(tokenizer: Any, row: dict[str, Any]) -> str:
    """The row's prompt as the model sees it: its template, with the row's tools when it has them."""
    from llmops_cli.prep.tools import template_messages

    tools = {"tools": row["tools"]} if row.get("tools") else {}
    return tokenizer.apply_chat_template(template_messages(prompt_messages(row)), tokenize=False,
                                         add_generation_prompt=True, **tools)
