"""Tool-calling conversations in prep (#17): OpenAI `tool_calls` / `tool` turns and the ShareGPT
function-call variant are accepted, validated, rendered with the template's tool format and masked."""

import json

import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.errors import ConfigError
from llmops_cli.model.loading import load_tokenizer
from llmops_cli.prep.pipeline import run_prep
from llmops_cli.prep.render import ChatRenderer
from llmops_cli.prep.schemas import example_messages
from tests.conftest import project_yaml, write_jsonl

WEATHER = {"type": "function", "function": {"name": "get_weather", "description": "Weather in a city",
                                            "parameters": {"type": "object",
                                                           "properties": {"city": {"type": "string"}}}}}


def openai_row(i: int, **change) -> dict:
    row = {"id": f"t{i}", "tools": [WEATHER], "messages": [
        {"role": "system", "content": "You are a weather assistant."},
        {"role": "user", "content": f"What is the weather in city number {i}?"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": f"call_{i}", "type": "function",
             "function": {"name": "get_weather", "arguments": json.dumps({"city": f"City{i}"})}}]},
        {"role": "tool", "tool_call_id": f"call_{i}", "content": json.dumps({"temp_c": i % 30})},
        {"role": "assistant", "content": f"It is {i % 30} degrees in City{i}."}]}
    row.update(change)
    return row


def sharegpt_row(i: int) -> dict:
    return {"id": f"s{i}", "tools": json.dumps([WEATHER["function"]]), "conversations": [
        {"from": "human", "value": f"Weather for town {i} please"},
        {"from": "function_call", "value": json.dumps({"name": "get_weather", "arguments": {"city": f"Town{i}"}})},
        {"from": "observation", "value": json.dumps({"temp_c": 20})},
        {"from": "gpt", "value": f"Town{i} has 20 degrees."}]}


@pytest.fixture()
def prepared(tmp_path, tiny_model):
    rows = [openai_row(i) for i in range(40)] + [sharegpt_row(i) for i in range(40)]
    bad = [
        openai_row(100, messages=openai_row(100)["messages"][:3] + openai_row(100)["messages"][4:]),  # unanswered
        openai_row(101, tools=[{"function": {"description": "no name"}}]),
        openai_row(102, messages=[*openai_row(102)["messages"][:2], {
            "role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {
                "name": "get_weather", "arguments": "{not json"}}]}]),
        openai_row(103, messages=[*openai_row(103)["messages"][:2], {
            "role": "assistant", "content": None, "tool_calls": [{"id": "c", "type": "function", "function": {
                "name": "launch_rockets", "arguments": "{}"}}]}]),
    ]
    data = write_jsonl(tmp_path / "tools.jsonl", rows[:40] + bad)
    share = write_jsonl(tmp_path / "sharegpt.jsonl", rows[40:])  # a schema is detected per file
    config = project_yaml(tmp_path, tiny_model, data)
    cfg = load_config(config, ["prep.fields.label=null", "prep.near_dup.enabled=false",
                               "tune.max_seq_length=1024"])
    cfg.prep.sources.append(type(cfg.prep.sources[0])(path=str(share)))
    return tmp_path, cfg, run_prep(cfg.prep, cfg.model)


def test_tool_conversations_are_kept_and_only_malformed_ones_quarantined(prepared):
    tmp, cfg, result = prepared
    assert sum(result.splits.values()) == 80 and result.quarantined == 4
    reasons = [json.loads(line)["reason"] for line in (tmp / "processed/quarantine.jsonl").read_text().splitlines()]
    assert sorted(reasons) == ["bad_conversation", "bad_tool_call", "bad_tool_call", "bad_tools"]
    rows = [json.loads(line) for name in ("train", "validation", "test")
            for line in (tmp / f"processed/{name}.jsonl").read_text().splitlines()]
    first = next(r for r in rows if r["id"] == "t1")
    assert first["trace"][0]["tool_calls"] == [{"id": "call_1", "name": "get_weather", "arguments": '{"city": "City1"}'}]
    assert first["trace"][1] == {"role": "tool", "content": '{"temp_c": 1}', "tool_call_id": "call_1"}
    assert first["tools"] == [WEATHER] and first["completion"] == "It is 1 degrees in City1."
    share = next(r for r in rows if r["id"] == "s1")
    assert share["trace"][1]["tool_call_id"] == share["trace"][0]["tool_calls"][0]["id"]  # observation answers it


def test_calls_and_answers_are_trained_tool_results_and_prompts_are_not(prepared, tiny_model):
    tmp, cfg, _ = prepared
    tok = load_tokenizer(cfg.model)
    renderer = ChatRenderer(tok, tok.chat_template, "tokenizer", str(tiny_model))
    row = next(json.loads(line) for line in (tmp / "processed/train.jsonl").read_text().splitlines())
    out = renderer.render_chat(example_messages(row), row["tools"])
    trained = tok.decode([t for t, m in zip(out.input_ids, out.mask, strict=True) if m])
    masked = tok.decode([t for t, m in zip(out.input_ids, out.mask, strict=True) if not m])
    assert '<tool_call>\n{"name": "get_weather", "arguments": {"city":' in trained
    assert row["completion"] in trained and trained.endswith("<|im_end|>")
    assert "<tool_response>" in masked and "temp_c" not in trained and row["prompt"] in masked
    assert "<tools>" in masked and "get_weather" in masked  # the schemas are context, not a target


def test_a_template_without_tool_support_is_a_clear_error(tmp_path, tiny_model):
    tok = load_tokenizer(load_config(None, [f"model.base={tiny_model}"]).model)
    plain = "{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
    renderer = ChatRenderer(tok, plain, "plain.jinja", str(tiny_model))
    row = openai_row(1)
    from llmops_cli.prep.schemas import FieldNames, to_example

    cfg = load_config(None)
    ex = to_example(row, "messages", FieldNames("prompt", "completion", cfg.prep.fields))
    with pytest.raises(ConfigError, match=r"plain\.jinja.*cannot render tools"):
        renderer.render_chat(example_messages(ex), ex["tools"])


def test_source_level_tools_and_a_call_outside_them(tmp_path, tiny_model):
    tools_file = tmp_path / "tools.json"
    tools_file.write_text(json.dumps([WEATHER]))
    rows = [openai_row(i) for i in range(10)]
    for row in rows:
        del row["tools"]
    config = project_yaml(tmp_path, tiny_model, write_jsonl(tmp_path / "rows.jsonl", rows))
    cfg = load_config(config, ["prep.fields.label=null", "prep.near_dup.enabled=false"])
    cfg.prep.sources[0].tools = str(tools_file)
    assert sum(run_prep(cfg.prep, cfg.model).splits.values()) == 10
    plain = {"id": "p", "messages": [{"role": "user", "content": "hello there"},
                                     {"role": "assistant", "content": "hi, how can I help?"}]}
    write_jsonl(tmp_path / "rows.jsonl", [*rows, plain])
    cfg.prep.sources[0].tools = None
    result = run_prep(cfg.prep, cfg.model)  # tool calls with no tools to call: quarantined with the reason
    assert result.quarantined == 10 and result.reasons == {"bad_tools": 10}


def test_tool_rows_are_split_by_their_prompt_not_by_their_calls(tmp_path, tiny_model):
    # Every row calls the same function with the same arguments: a split keyed on them puts all in one split.
    rows = [openai_row(i) for i in range(200)]
    for row in rows:
        row["messages"][2]["tool_calls"][0]["function"]["arguments"] = json.dumps({"city": "Oslo"})
    config = project_yaml(tmp_path, tiny_model, write_jsonl(tmp_path / "rows.jsonl", rows))
    cfg = load_config(config, ["prep.fields.label=null", "prep.near_dup.enabled=false"])
    splits = run_prep(cfg.prep, cfg.model).splits
    assert splits["test"] > 0 and splits["validation"] > 0, splits
