"""Tool-call metrics (#17): every call step scored on names and JSON-equal arguments, the final answer
end to end; references are what the template renders for the turn."""

import json

import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.evaluate.tools import expand_tool_steps, reference_text, tool_metrics
from llmops_cli.model.loading import load_tokenizer
from llmops_cli.tune.data import prompt_messages, render_prompt

TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "", "parameters": {}}}]
CALL = {"id": "call_0", "name": "get_weather", "arguments": '{"city": "Oslo"}'}
ROW = {"id": "r1", "prompt": "Weather in Oslo?", "tools": TOOLS, "completion": "It is 3 degrees in Oslo.",
       "trace": [{"role": "assistant", "content": "", "tool_calls": [CALL]},
                 {"role": "tool", "content": '{"temp_c": 3}', "tool_call_id": "call_0"}]}


def test_each_call_step_becomes_a_case_before_its_conversation():
    rows = expand_tool_steps([ROW, {"id": "plain", "prompt": "hi", "completion": "hello"}])
    assert [r["id"] for r in rows] == ["r1#call0", "r1", "plain"]
    step = rows[0]
    assert step["tool_calls"] == [CALL] and step["trace"] == [] and step["tools"] == TOOLS
    assert [m["role"] for m in prompt_messages(rows[1])] == ["user", "assistant", "tool"]


def test_metrics_parse_calls_and_compare_arguments_as_json():
    rows = expand_tool_steps([ROW]) * 2
    preds = ['<tool_call>\n{"name": "get_weather", "arguments": {"city":"Oslo"}}\n</tool_call>',
             "It is 3 degrees in Oslo.",
             '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Bergen"}}\n</tool_call>',
             "No idea."]
    m = tool_metrics(rows, preds)
    assert m == {"tool_call_rate": 1.0, "tool_name_accuracy": 1.0, "tool_args_accuracy": 0.5, "tool_call_steps": 2,
                 "tool_answer_exact_match": 0.5, "tool_answer_steps": 2}
    assert tool_metrics(rows, ["plain text", "x", '<tool_call>{"name": "other"}</tool_call>', "y"])[
        "tool_call_rate"] == 0.5
    assert tool_metrics([{"prompt": "p", "completion": "c"}], ["c"]) == {}  # no tool rows: no tool metrics


def test_reference_of_a_call_step_is_the_turn_the_template_renders(tiny_model):
    tok = load_tokenizer(load_config(None, [f"model.base={tiny_model}"]).model)
    step = expand_tool_steps([ROW])[0]
    from llmops_cli.prep.schemas import example_messages

    ref = reference_text(tok, step, example_messages(step))
    assert ref.startswith("<tool_call>") and json.loads(ref.split("\n")[1]) == {
        "name": "get_weather", "arguments": {"city": "Oslo"}}
    assert "<|im_end|>" not in ref
    prompt = render_prompt(tok, ROW)
    assert "<tools>" in prompt and "<tool_response>" in prompt and prompt.endswith("<|im_start|>assistant\n")
    assert reference_text(tok, ROW, example_messages(ROW)) == ROW["completion"]


@pytest.mark.parametrize("bad", ["<tool_call>not json</tool_call>", "<tool_call>{\"args\": 1}</tool_call>"])
def test_malformed_calls_count_as_no_call(bad):
    rows = expand_tool_steps([ROW])[:1]
    assert tool_metrics(rows, [bad])["tool_call_rate"] == 0.0
