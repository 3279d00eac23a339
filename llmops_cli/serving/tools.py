"""Tool calls on the transformers backend, in the Hermes / Qwen2.5 convention that the bundled ChatML
template renders and vLLM's `hermes` parser reads: the model writes each call as

    <tool_call>
    {"name": "track", "arguments": {"id": 1}}
    </tool_call>

This module validates `tools` / `tool_choice`, shapes history messages for the template, decides
what the generation is forced to start with, and turns generated text into OpenAI's `tool_calls`.

tool_choice:
- "none": the tools are shown to the model (as OpenAI and vLLM do) but its output is plain text.
- "auto" (the default with tools): <tool_call> blocks in the output become `tool_calls`; if one block
  is not valid JSON with a name, the whole output is returned as plain content (never a 500).
- {"type": "function", "function": {"name": X}}: the generation is forced to start with
  `<tool_call>\\n{"name": "X", "arguments":` so the answer is always a call of X. (No space after the
  colon: byte-level BPE tokenizers merge it into the next token, ` {`, which the model then writes itself.)
- "required": as a named choice, with X the tool the model itself finds likeliest (scored by the
  engine: serving/engine.py `likeliest`).
A forced call's `arguments` is what the model wrote after `"arguments":` (re-serialised when it is
valid JSON). When it is not valid JSON the raw text is returned as is: OpenAI documents that arguments
may be invalid JSON and that clients must validate them, and a 200 with the model's own words is more
useful to a client than an invented "{}".
finish_reason as OpenAI and vLLM give it: "tool_calls" for calls under auto, and under required when
the model stopped by itself; a named choice keeps the generation's own ("stop", or "length").
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from typing import Any

from llmops_cli.serving.backends.base import ApiError

CALL_OPEN, CALL_CLOSE = "<tool_call>", "</tool_call>"
_BLOCK = re.compile(r"<tool_call>(.*?)(?:</tool_call>|$)", re.DOTALL)
_TOOLS_VAR = re.compile(r"\btools\b")


@dataclass
class ToolPlan:
    """How one chat request uses tools: what the template is given and how the output is read."""

    tools: list[dict[str, Any]] | None = None  # passed to the chat template
    mode: str = "off"  # off (no tools) | none | auto | forced
    name: str | None = None  # forced: the function called (None for "required" until chosen)
    required: bool = False  # forced by tool_choice "required" (not by a named function)

    @property
    def names(self) -> list[str]:
        return [t["function"]["name"] for t in self.tools or []]

    @property
    def parses(self) -> bool:
        return self.mode in ("auto", "forced")

    def prefix(self) -> str:
        """What the generation is forced to start with (it is part of the prompt and of the answer)."""
        if self.mode != "forced":
            return ""
        return f'{CALL_OPEN}\n{{"name": {json.dumps(self.name, ensure_ascii=False)}, "arguments":'


def supports_tools(template: str | dict[str, Any] | None) -> bool:
    """Whether a chat template renders tools (it references the `tools` variable) in the format this module
    parses (it writes <tool_call>): Hermes, Qwen2.5 and Qwen3 templates do; Llama 3.1's JSON or Mistral's
    [TOOL_CALLS] would be shown to the model but never read back, so they are refused instead."""
    if isinstance(template, dict):
        return any(supports_tools(t) for t in template.values())
    return bool(template) and bool(_TOOLS_VAR.search(str(template))) and CALL_OPEN in str(template)


def plan(body: dict[str, Any], template_has_tools: bool) -> ToolPlan:
    """The request's tool plan; ApiError 400 naming `tools` or `tool_choice` when it cannot be honoured."""
    tools, choice = body.get("tools") or None, body.get("tool_choice")
    if tools is None:
        if choice not in (None, "none"):
            raise ApiError(400, "tool_choice needs tools: the request sets no tools", param="tool_choice",
                           code="invalid_value")
        return ToolPlan()
    for i, tool in enumerate(tools):
        function = tool.get("function") if isinstance(tool, dict) else None
        if not isinstance(function, dict) or tool.get("type") != "function" or not isinstance(
                function.get("name"), str) or not function["name"]:
            raise ApiError(400, f"tools[{i}] must be {{'type': 'function', 'function': {{'name': ..., "
                                "'parameters': {...}}}}", param="tools", code="invalid_value")
    if not template_has_tools:
        raise ApiError(400, "tools: the model's chat template does not render tools in the <tool_call> (Hermes / "
                            "Qwen2.5) format this backend parses; serve a model whose template does (tune with "
                            "prep.tokenize.template: chatml), or serve.backend=vllm with serve.vllm.tool_call_parser "
                            "for its format", param="tools", code="unsupported_parameter")
    result = ToolPlan(tools=tools, mode="auto")
    if choice in (None, "auto", "none"):
        result.mode = choice or "auto"
    elif choice == "required":
        result.mode, result.required = "forced", True
        if len(result.names) == 1:
            result.name = result.names[0]
    elif isinstance(choice, dict) and choice.get("type") == "function" and isinstance(choice.get("function"), dict):
        name = choice["function"].get("name")
        if name not in result.names:
            raise ApiError(400, f"tool_choice names function {name!r}, which is not in tools {result.names}",
                           param="tool_choice", code="invalid_value")
        result.mode, result.name = "forced", name
    else:
        raise ApiError(400, "tool_choice must be 'none', 'auto', 'required' or "
                            "{'type': 'function', 'function': {'name': ...}}", param="tool_choice",
                       code="invalid_value")
    return result


def template_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """History as chat templates expect it: a call's `arguments` as a mapping (OpenAI sends a JSON string;
    templates write it with `tojson`). Arguments that are not a JSON object stay the string they are."""
    shaped = []
    for message in messages:
        if message.get("tool_calls"):
            calls = []
            for call in message["tool_calls"]:
                function = dict(call["function"])
                try:
                    arguments = json.loads(function["arguments"])
                except (TypeError, ValueError):
                    arguments = None
                if isinstance(arguments, dict):
                    function["arguments"] = arguments
                calls.append({**call, "function": function})
            message = {**message, "tool_calls": calls}
        shaped.append(message)
    return shaped


def _call(name: str, arguments: str) -> dict[str, Any]:
    return {"id": f"call_{uuid.uuid4().hex[:24]}", "type": "function",
            "function": {"name": name, "arguments": arguments}}


def parse_tool_calls(text: str) -> tuple[str | None, list[dict[str, Any]]]:
    """(content, tool_calls) of generated text: the text before the first <tool_call> (None when empty) and
    one call per block. Any block that is not a JSON object with a name: (the whole text, no calls)."""
    start = text.find(CALL_OPEN)
    if start < 0:
        return text, []
    calls = []
    for block in _BLOCK.findall(text[start:]):
        try:
            parsed = json.loads(block.strip())
        except ValueError:
            return text, []
        if not (isinstance(parsed, dict) and isinstance(parsed.get("name"), str) and parsed["name"]):
            return text, []
        arguments = parsed.get("arguments", {})
        calls.append(_call(parsed["name"], arguments if isinstance(arguments, str)
                           else json.dumps(arguments, ensure_ascii=False)))
    content = text[:start].strip()
    return content or None, calls


def forced_call(name: str, generated: str) -> tuple[dict[str, Any], bool]:
    """The call of `name` whose arguments the model wrote after the forced prefix, and whether they are
    valid JSON. The model closes the call with `}` and </tool_call>; whatever follows is dropped."""
    text = generated.split(CALL_CLOSE, 1)[0].strip()
    try:
        arguments, _ = json.JSONDecoder().raw_decode(text)
        return _call(name, json.dumps(arguments, ensure_ascii=False)), True
    except ValueError:
        return _call(name, text), False


def answer(tool_plan: ToolPlan, text: str, finish_reason: str) -> tuple[str | None, list[dict[str, Any]], str]:
    """(content, tool_calls, finish_reason) of one generated answer under `tool_plan`."""
    if tool_plan.mode == "forced":
        call, _ = forced_call(str(tool_plan.name), text)
        return None, [call], "tool_calls" if tool_plan.required and finish_reason == "stop" else finish_reason
    if tool_plan.mode != "auto":
        return text, [], finish_reason
    content, calls = parse_tool_calls(text)
    return (content, calls, "tool_calls") if calls else (text, [], finish_reason)


def stream_deltas(content: str | None, calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deltas of a buffered answer in OpenAI's streaming shape: the role and content first, then per
    call one delta with its id, type and name (arguments "") and one with the arguments."""
    deltas: list[dict[str, Any]] = [{"role": "assistant", "content": content}]
    for i, call in enumerate(calls):
        deltas.append({"tool_calls": [{"index": i, "id": call["id"], "type": "function",
                                       "function": {"name": call["function"]["name"], "arguments": ""}}]})
        deltas.append({"tool_calls": [{"index": i, "function": {"arguments": call["function"]["arguments"]}}]})
    return deltas
