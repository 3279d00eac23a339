"""Input schemas -> one example shape.

Supported: prompt/completion, Alpaca (instruction/input/output), OpenAI `messages`, ShareGPT
`conversations` ({from, value}) and raw text for continued pre-training. `auto` detects the schema
per file from the first row that matches one. A record that does not fit its file's schema is
quarantined with a reason (`missing_field`, `wrong_type`, `empty`, `bad_conversation`).

Example (SFT): {"prompt", "completion", "system"?, "history"?}; history holds earlier turns of a
multi-turn conversation as [{"role", "content"}]. Example (text): {"text"}.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property
from typing import Any

from llmops_cli.prep.clean import normalize_text
from llmops_cli.prep.config import FieldMap, template_fields
from llmops_cli.prep.tools import (
    ToolReject,
    check_calls_answered,
    openai_tool_calls,
    parse_tools,
    sharegpt_tool_calls,
    tool_result_turn,
)

CHAT_SCHEMAS = ("prompt_completion", "alpaca", "messages", "sharegpt")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                  "chatgpt": "assistant", "bot": "assistant", "model": "assistant", "system": "system"}


class Reject(Exception):  # noqa: N818 - control flow, not an error the user sees
    """A record that cannot become an example: quarantine reason and detail."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class FieldNames:
    """FieldMap with a source's overrides applied."""

    prompt: str
    completion: str
    fields: FieldMap
    # prep.fields.completion_template, unless the source names its own completion field.
    template: str | None = None
    tools: tuple[dict[str, Any], ...] = ()  # the source's tools (prep.sources[].tools), for rows without their own

    @cached_property  # read for every row
    def template_fields(self) -> list[str]:
        return template_fields(self.template) if self.template else []


def detect_schema(record: dict[str, Any], f: FieldNames) -> str | None:
    """The schema a record looks like, or None."""
    for key in (f.fields.messages, "messages", "conversations"):
        turns = record.get(key)
        if isinstance(turns, list) and turns and isinstance(turns[0], dict):
            return "sharegpt" if "from" in turns[0] or "value" in turns[0] else "messages"
    if f.prompt in record and all(n in record for n in f.template_fields or [f.completion]):
        return "prompt_completion"
    if f.fields.instruction in record and f.fields.output in record:
        return "alpaca"
    if f.fields.text in record:
        return "text"
    return None


def kind_of(schema: str) -> str:
    """`chat` for supervised schemas, `text` for pre-training text (the two cannot be mixed)."""
    return "text" if schema == "text" else "chat"


def _text(record: dict[str, Any], name: str, required: bool = True) -> str:
    if name not in record or record[name] is None:
        if required:
            raise Reject("missing_field", f"no {name!r} field")
        return ""
    value = record[name]
    if not isinstance(value, str):
        raise Reject("wrong_type", f"{name!r} is a {type(value).__name__}, expected a string")
    return normalize_text(value)


def _nonempty(value: str, name: str) -> str:
    if not value:
        raise Reject("empty", f"{name!r} is empty after cleaning")
    return value


def _completion(record: dict[str, Any], f: FieldNames) -> str:
    if not f.template:
        return _nonempty(_text(record, f.completion), f.completion)
    # Each field is cleaned and checked on its own, so a quarantined row names the field at fault.
    values = {n: _nonempty(_text(record, n), n) for n in f.template_fields}
    return f.template.format(**values)


def _content(value: Any, where: str) -> str:
    if isinstance(value, str):
        return normalize_text(value)
    if isinstance(value, list):  # OpenAI content parts: only text parts can be trained on
        parts = []
        for part in value:
            if not (isinstance(part, dict) and part.get("type") == "text" and isinstance(part.get("text"), str)):
                raise Reject("wrong_type", f"{where}: only text content parts are supported")
            parts.append(part["text"])
        return normalize_text("\n".join(parts))
    raise Reject("wrong_type", f"{where}: content is a {type(value).__name__}, expected a string")


def _turns(record: dict[str, Any], schema: str, f: FieldNames) -> list[dict[str, Any]]:
    names = (f.fields.messages, "messages") if schema == "messages" else (f.fields.messages, "conversations")
    key = next((n for n in names if n in record), None)
    if key is None or record[key] is None:
        raise Reject("missing_field", f"no {names[0]!r} field")
    turns = record[key]
    if not isinstance(turns, list):
        raise Reject("wrong_type", f"{key!r} is a {type(turns).__name__}, expected a list of turns")
    out: list[dict[str, Any]] = []
    calls = 0  # ids for calls that come without one (ShareGPT), in order
    try:
        for i, turn in enumerate(turns):
            if not isinstance(turn, dict):
                raise Reject("wrong_type", f"{key}[{i}] is a {type(turn).__name__}, expected an object")
            where = f"{key}[{i}]"
            if schema == "messages":
                out.append(_openai_turn(turn, where, calls))
            else:
                out.append(_sharegpt_turn(turn, where, calls, out))
            calls += len(out[-1].get("tool_calls", ()))
    except ToolReject as exc:
        raise Reject(exc.reason, exc.detail) from None
    return out


def _openai_turn(turn: dict[str, Any], where: str, calls: int) -> dict[str, Any]:
    role, content = turn.get("role"), turn.get("content")
    if role == "assistant" and turn.get("tool_calls"):
        text = _content(content, where) if content is not None else ""
        return {"role": "assistant", "content": text, "tool_calls": openai_tool_calls(turn["tool_calls"],
                                                                                      f"{where}.tool_calls", calls)}
    if role == "tool":
        return tool_result_turn(content, turn.get("tool_call_id"), where)
    if role not in ("system", "user", "assistant"):
        raise Reject("bad_conversation", f"{where}: unknown role {role!r}")
    return {"role": role, "content": _content(content, where)}


def _sharegpt_turn(turn: dict[str, Any], where: str, calls: int, before: list[dict[str, Any]]) -> dict[str, Any]:
    source = str(turn.get("from", "")).lower()
    if source == "function_call":
        return {"role": "assistant", "content": "", "tool_calls": sharegpt_tool_calls(turn.get("value"), where, calls)}
    if source == "observation":  # answers the last call not yet answered, in order
        answered = {t["tool_call_id"] for t in before if t["role"] == "tool"}
        open_ids = [c["id"] for t in before for c in t.get("tool_calls", ()) if c["id"] not in answered]
        return tool_result_turn(turn.get("value"), open_ids[0] if open_ids else None, where)
    role = SHAREGPT_ROLES.get(source)
    if role is None:
        raise Reject("bad_conversation", f"{where}: unknown role {turn.get('from')!r}")
    return {"role": role, "content": _content(turn.get("value"), where)}


def to_example(record: dict[str, Any], schema: str, f: FieldNames) -> dict[str, Any]:
    """Map one record to an example (raises Reject)."""
    if schema == "text":
        return {"text": _nonempty(_text(record, f.fields.text), f.fields.text)}
    system = _text(record, f.fields.system, required=False) if f.fields.system else ""
    if schema == "prompt_completion":
        ex = {"prompt": _nonempty(_text(record, f.prompt), f.prompt), "completion": _completion(record, f)}
    elif schema == "alpaca":
        instruction = _nonempty(_text(record, f.fields.instruction), f.fields.instruction)
        context = _text(record, f.fields.input, required=False)
        ex = {"prompt": f"{instruction}\n\n{context}" if context else instruction,
              "completion": _nonempty(_text(record, f.fields.output), f.fields.output)}
    else:
        turns = _turns(record, schema, f)
        if turns and turns[0]["role"] == "system":
            system = system or turns[0]["content"]
            turns = turns[1:]
        tools = _row_tools(record, f)
        if tools or any(t["role"] == "tool" or t.get("tool_calls") for t in turns):
            ex = _tool_example(turns, tools)
        else:
            ex = _chat_example(turns)
    if system:
        ex["system"] = system
    return ex


def _chat_example(turns: list[dict[str, Any]]) -> dict[str, Any]:
    if len(turns) < 2 or turns[-1]["role"] != "assistant" or turns[-2]["role"] != "user":
        raise Reject("bad_conversation", "a conversation must end with a user turn and then an assistant turn")
    if any(t["role"] == "system" for t in turns):
        raise Reject("bad_conversation", "a system turn is only allowed first")
    for i, t in enumerate(turns):
        _nonempty(t["content"], f"turn {i}")
    ex: dict[str, Any] = {"prompt": turns[-2]["content"], "completion": turns[-1]["content"]}
    if len(turns) > 2:
        ex["history"] = turns[:-2]
    return ex


def _tool_example(turns: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
    """A tool-calling conversation: history, the last user prompt, the tool rounds after it (`trace`:
    assistant calls and tool results), and the final assistant turn (an answer, or calls of its own)."""
    if not tools:
        raise Reject("bad_tools", "a conversation with tool calls needs the tools it may call (a `tools` field "
                                  "or the source's prep.sources[].tools)")
    if any(t["role"] == "system" for t in turns):
        raise Reject("bad_conversation", "a system turn is only allowed first")
    users = [i for i, t in enumerate(turns) if t["role"] == "user"]
    if not users or turns[-1]["role"] != "assistant" or users[-1] == len(turns) - 1:
        raise Reject("bad_conversation", "a conversation must end with an assistant turn after a user turn")
    try:
        check_calls_answered(turns, tools)
    except ToolReject as exc:
        raise Reject(exc.reason, exc.detail) from None
    for i, t in enumerate(turns):
        if not t.get("tool_calls"):
            _nonempty(t["content"], f"turn {i}")
    last_user, final = users[-1], turns[-1]
    ex: dict[str, Any] = {"prompt": turns[last_user]["content"], "completion": final["content"]}
    if final.get("tool_calls"):
        ex["tool_calls"] = final["tool_calls"]
    if last_user:
        ex["history"] = turns[:last_user]
    if len(turns) - last_user > 2:
        ex["trace"] = turns[last_user + 1:-1]
    ex["tools"] = tools
    return ex


def _row_tools(record: dict[str, Any], f: FieldNames) -> list[dict[str, Any]]:
    """The row's own `tools`, else the source's (prep.sources[].tools), else none."""
    value = record.get(f.fields.tools)
    if value is None:
        return list(f.tools)
    try:
        return parse_tools(value, f.fields.tools)
    except ToolReject as exc:
        raise Reject(exc.reason, exc.detail) from None


def example_messages(ex: dict[str, Any], system_prompt: str | None = None) -> list[dict[str, Any]]:
    """The conversation an SFT example trains on: system, history, prompt, tool rounds, answer."""
    system = ex.get("system") or system_prompt
    head = [{"role": "system", "content": system}] if system else []
    final: dict[str, Any] = {"role": "assistant", "content": ex["completion"]}
    if ex.get("tool_calls"):
        final["tool_calls"] = ex["tool_calls"]
    return [*head, *ex.get("history", []), {"role": "user", "content": ex["prompt"]}, *ex.get("trace", []), final]


def example_texts(ex: dict[str, Any]) -> list[str]:
    """Every text field of an example (what PII detection and dedup look at): tool results and call
    arguments included, since both carry user data. The prompt and the completion stay last: the
    pipeline keys a row's split on the prompt (texts[-2])."""
    if "text" in ex:
        return [ex["text"]]
    turns = [*ex.get("history", []), *ex.get("trace", [])]
    calls = [c["arguments"] for t in [*turns, ex] for c in t.get("tool_calls", ())]
    return [ex.get("system", ""), *(t["content"] for t in ex.get("history", [])),
            *(t["content"] for t in ex.get("trace", [])), *calls, ex["prompt"], ex["completion"]]
