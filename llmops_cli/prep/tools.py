"""Tool-calling conversations: OpenAI `messages` with `tool_calls` / `tool` turns and the ShareGPT
function-call variant (LLaMA-Factory's `function_call` / `observation` turns), validated and
normalised to one turn shape.

Normalised turns (what prep writes and every later stage reads):
- assistant tool call: {"role": "assistant", "content": "", "tool_calls": [{"id", "name", "arguments"}]}
  where `arguments` is the JSON text of an object (OpenAI's shape: a string);
- tool result: {"role": "tool", "content": "...", "tool_call_id": "..."}.
`tools` is OpenAI's list: [{"type": "function", "function": {"name", "description", "parameters"}}].

Chat templates want the call's arguments as a mapping (they `tojson` them): `template_messages`
converts for rendering, so the stored form stays OpenAI's.
"""

from __future__ import annotations

import json
from typing import Any

from llmops_cli.prep.clean import normalize_text

SHAREGPT_TOOL_ROLES = {"function_call": "tool_call", "observation": "tool"}


class ToolReject(Exception):  # noqa: N818 - control flow: schemas turns it into a quarantine Reject
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def parse_tools(value: Any, where: str) -> list[dict[str, Any]]:
    """OpenAI's tools list from a list (OpenAI or bare {name, parameters} entries) or its JSON text."""
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else []
        except json.JSONDecodeError as exc:
            raise ToolReject("bad_tools", f"{where}: not JSON ({exc.msg})") from None
    if not isinstance(value, list):
        raise ToolReject("bad_tools", f"{where}: a {type(value).__name__}, expected a list of functions")
    tools = []
    for i, entry in enumerate(value):
        fn = entry.get("function", entry) if isinstance(entry, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ToolReject("bad_tools", f"{where}[{i}]: a function needs a name")
        params = fn.get("parameters", {"type": "object", "properties": {}})
        if not isinstance(params, dict):
            raise ToolReject("bad_tools", f"{where}[{i}]: parameters must be a JSON schema object")
        tools.append({"type": "function", "function": {"name": fn["name"], "description": fn.get("description", ""),
                                                       "parameters": params}})
    return tools


def _arguments(value: Any, where: str) -> str:
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise ToolReject("bad_tool_call", f"{where}: arguments are not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise ToolReject("bad_tool_call", f"{where}: arguments must be a JSON object")
    return json.dumps(value, ensure_ascii=False)


def openai_tool_calls(calls: Any, where: str, next_id: int) -> list[dict[str, str]]:
    """An assistant turn's `tool_calls` (OpenAI shape) normalised; ids made up where absent."""
    if not isinstance(calls, list) or not calls:
        raise ToolReject("bad_tool_call", f"{where}: tool_calls must be a non-empty list")
    out = []
    for i, call in enumerate(calls):
        fn = call.get("function") if isinstance(call, dict) else None
        if not isinstance(fn, dict) or not isinstance(fn.get("name"), str) or not fn["name"]:
            raise ToolReject("bad_tool_call", f"{where}[{i}]: a call needs function.name")
        call_id = call.get("id") or f"call_{next_id + i}"
        out.append({"id": str(call_id), "name": fn["name"], "arguments": _arguments(fn.get("arguments", {}),
                                                                                    f"{where}[{i}]")})
    return out


def sharegpt_tool_calls(value: Any, where: str, next_id: int) -> list[dict[str, str]]:
    """A `function_call` turn's value: JSON text of {name, arguments} or a list of them."""
    try:
        parsed = json.loads(value) if isinstance(value, str) else value
    except json.JSONDecodeError as exc:
        raise ToolReject("bad_tool_call", f"{where}: not JSON ({exc.msg})") from None
    calls = parsed if isinstance(parsed, list) else [parsed]
    return openai_tool_calls([{"function": c} if isinstance(c, dict) else c for c in calls], where, next_id)


def check_calls_answered(turns: list[dict[str, Any]], tools: list[dict[str, Any]]) -> None:
    """Every tool turn answers a call made before it and not yet answered; every call names a tool
    from `tools` (when given); a call left unanswered may only be the conversation's last turn."""
    known = {t["function"]["name"] for t in tools}
    pending: dict[str, str] = {}
    for i, turn in enumerate(turns):
        if turn["role"] == "tool":
            if turn["tool_call_id"] not in pending:
                raise ToolReject("bad_conversation", f"turn {i}: a tool result answers no open call "
                                                     f"(tool_call_id {turn['tool_call_id']!r})")
            del pending[turn["tool_call_id"]]
            continue
        if pending:
            raise ToolReject("bad_conversation", f"turn {i}: calls {sorted(pending)} were not answered")
        for call in turn.get("tool_calls", []):
            if known and call["name"] not in known:
                raise ToolReject("bad_tool_call", f"turn {i}: calls {call['name']!r}, which is not in tools")
            pending[call["id"]] = call["name"]
    if pending and not turns[-1].get("tool_calls"):
        raise ToolReject("bad_conversation", f"calls {sorted(pending)} were not answered")


def tool_result_turn(content: Any, call_id: str | None, where: str) -> dict[str, str]:
    if content is None or not isinstance(content, str | dict | list):
        raise ToolReject("wrong_type", f"{where}: a tool result must be text or JSON")
    text = content if isinstance(content, str) else json.dumps(content, ensure_ascii=False)
    if not call_id:
        raise ToolReject("bad_conversation", f"{where}: a tool result needs the tool_call_id it answers")
    return {"role": "tool", "content": normalize_text(text), "tool_call_id": str(call_id)}


def source_tools(value: list[dict[str, Any]] | str | None, source: str) -> list[dict[str, Any]]:
    """prep.sources[].tools: inline, or read from the JSON file it names (a config error if unusable)."""
    from pathlib import Path

    from llmops_cli.errors import ConfigError

    if value is None:
        return []
    where = f"prep.sources[{source}].tools"
    if isinstance(value, str):
        try:
            value = Path(value).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"{where}: cannot read {value}: {exc.strerror}",
                              hint="point it at a JSON file holding an OpenAI tools list") from None
    try:
        return parse_tools(value, where)
    except ToolReject as exc:
        raise ConfigError(exc.detail, hint="an OpenAI tools list: [{type: function, function: {name, "
                                           "description, parameters}}]") from None


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as chat templates read them: tool calls as {type, id, function{name, arguments: dict}}."""
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [{"type": "function", "id": c["id"],
                      "function": {"name": c["name"], "arguments": json.loads(c["arguments"])}}
                     for c in m["tool_calls"]]
            out.append({"role": "assistant", "content": m.get("content") or None, "tool_calls": calls})
        else:
            out.append(m)
    return out


def renders_tools(template: str) -> bool:
    """Whether a chat template renders a tools list and tool calls (it reads both variables): what training
    needs. Serving also needs the calls in a format it parses back (serving/tools.py supports_tools)."""
    return "tools" in template and "tool_calls" in template
