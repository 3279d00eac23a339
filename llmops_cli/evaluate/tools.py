"""Tool-call evaluation (#17) on the test split's tool-calling conversations.

Each conversation is scored at every assistant step: a step that calls tools is a case of its own
(the prompt: everything before that turn, with the reference tool results of the earlier rounds), and
the final answer after the tool rounds is one too. The reference of a call step is the text the chat
template renders for that turn (so exact match compares what the model must literally write), and the
model's output is parsed in the Hermes `<tool_call>` convention (the bundled chatml template, Qwen2.5,
what vLLM's `hermes` parser reads) to score:

- tool_call_rate: call steps where the output holds at least one well-formed call;
- tool_name_accuracy: call steps whose called function names equal the reference's, in order;
- tool_args_accuracy: call steps with the right names and JSON-equal arguments for every call;
- tool_answer_exact_match: exact match of the final answer after the tool rounds (end to end, with
  the reference tool results fed back).
A template with another call format is scored by the text metrics only (its calls parse as none).
"""

from __future__ import annotations

import json
from typing import Any

from llmops_cli.evaluate.metrics import exact_match


def expand_tool_steps(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows with each earlier call step of a tool conversation added as a row of its own
    (`id#call<k>`), placed before the row it comes from."""
    out = []
    for row in rows:
        trace = row.get("trace") or []
        for k, turn in enumerate(trace):
            if turn.get("tool_calls"):
                step = {key: row[key] for key in ("system", "history", "prompt", "tools", "label") if key in row}
                out.append({**step, "id": f"{row.get('id')}#call{k}", "trace": trace[:k],
                            "completion": turn.get("content", ""), "tool_calls": turn["tool_calls"]})
        out.append(row)
    return out


def reference_text(tokenizer: Any, row: dict[str, Any], messages: list[dict[str, Any]]) -> str:
    """What the model should write for the row's last turn: its answer, or for a call the turn as the
    chat template renders it (special tokens such as the end-of-turn dropped, as generation decodes)."""
    if not row.get("tool_calls"):
        return row["completion"]
    from llmops_cli.prep.tools import template_messages

    shaped, tools = template_messages(messages), row.get("tools")
    full = tokenizer.apply_chat_template(shaped, tools=tools, tokenize=False)
    prompt = tokenizer.apply_chat_template(shaped[:-1], tools=tools, tokenize=False, add_generation_prompt=True)
    turn = full[len(prompt):] if full.startswith(prompt) else full
    ids = tokenizer(turn, add_special_tokens=False)["input_ids"]
    return tokenizer.decode(ids, skip_special_tokens=True).strip()


def _same_arguments(got: str, want: str) -> bool:
    try:
        return json.loads(got) == json.loads(want)
    except (TypeError, ValueError):
        return False


def tool_metrics(rows: list[dict[str, Any]], predictions: list[str]) -> dict[str, Any]:
    """Tool-call metrics over the rows that are tool steps (empty when there are none)."""
    from llmops_cli.serving.tools import parse_tool_calls

    calls = rates = names = args = 0
    answers, answered = 0, 0.0
    for row, pred in zip(rows, predictions, strict=True):
        if row.get("tool_calls"):
            calls += 1
            got = [(c["function"]["name"], c["function"]["arguments"]) for c in parse_tool_calls(pred)[1]]
            want = [(c["name"], c["arguments"]) for c in row["tool_calls"]]
            rates += bool(got)
            if [g[0] for g in got] == [w[0] for w in want]:
                names += 1
                args += all(_same_arguments(g[1], w[1]) for g, w in zip(got, want, strict=True))
        elif row.get("trace"):
            answers += 1
            answered += exact_match(pred, row["completion"])
    out: dict[str, Any] = {}
    if calls:
        out |= {"tool_call_rate": rates / calls, "tool_name_accuracy": names / calls,
                "tool_args_accuracy": args / calls, "tool_call_steps": calls}
    if answers:
        out |= {"tool_answer_exact_match": answered / answers, "tool_answer_steps": answers}
    return out
