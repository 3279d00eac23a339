"""Tool calls (#17) on the transformers backend: the bundled ChatML template's Hermes / Qwen2.5 tool
format, the parser of generated <tool_call> blocks, and the official `openai` client against the real
gateway on loopback: forced calls (tool_choice required / named), streaming deltas, 400s naming the
parameter, and a history with tool calls and tool results."""

from __future__ import annotations

import json
import shutil
from importlib.resources import files

import httpx
import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.serving import lifecycle
from llmops_cli.serving.backends import ApiError
from llmops_cli.serving.tools import ToolPlan, answer, parse_tool_calls, plan, supports_tools, template_messages
from tests.conftest import free_port, project_yaml

openai = pytest.importorskip("openai")
MODEL = "test-model"
USER = [{"role": "user", "content": "where is my package"}]
TOOLS = [
    {"type": "function", "function": {"name": "track_order", "description": "Track an order", "parameters": {
        "type": "object", "properties": {"order_id": {"type": "string"}}, "required": ["order_id"]}}},
    {"type": "function", "function": {"name": "refund", "parameters": {
        "type": "object", "properties": {"amount": {"type": "number"}}}}},
]
HISTORY = [*USER, {"role": "assistant", "content": None, "tool_calls": [
    {"id": "call_1", "type": "function", "function": {"name": "track_order", "arguments": "{\"order_id\": \"A1\"}"}}]},
    {"role": "tool", "tool_call_id": "call_1", "content": "in transit"}]

# The bundled template before tool support: conversations without tools must render exactly like this.
OLD_CHATML = """{%- for message in messages -%}
{%- if message['role'] == 'assistant' -%}
<|im_start|>assistant
{% generation %}{{ message['content'] }}<|im_end|>{% endgeneration %}
{% else -%}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endif -%}
{%- endfor -%}
{%- if add_generation_prompt -%}
<|im_start|>assistant
{% endif -%}"""
CHATML = files("llmops_cli.model").joinpath("templates/chatml.jinja").read_text(encoding="utf-8")


# ---- the template ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tokenizer(tool_model):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tool_model)


@pytest.mark.parametrize("conversation", [
    USER,
    [{"role": "system", "content": "be brief"}, *USER, {"role": "assistant", "content": "shipping"}],
    [{"role": "system", "content": "s"}, {"role": "user", "content": "a\nb"}, {"role": "assistant", "content": ""},
     {"role": "user", "content": "c"}, {"role": "assistant", "content": "d\n"}],
])
@pytest.mark.parametrize("generation_prompt", [False, True])
def test_conversations_without_tools_render_as_before(tokenizer, conversation, generation_prompt):
    def render(template: str) -> str:
        return tokenizer.apply_chat_template(conversation, chat_template=template, tokenize=False,
                                             add_generation_prompt=generation_prompt)

    assert render(CHATML) == render(OLD_CHATML)


def test_tools_and_tool_turns_render_in_the_hermes_format(tokenizer):
    conversation = [{"role": "system", "content": "be brief"}, *template_messages(HISTORY),
                    {"role": "tool", "tool_call_id": "call_2", "content": "late"}]
    text = tokenizer.apply_chat_template(conversation, tools=TOOLS, chat_template=CHATML, tokenize=False,
                                         add_generation_prompt=True)
    assert text.startswith("<|im_start|>system\nbe brief\n\n# Tools\n")
    assert "<tools>\n" + "\n".join(json.dumps(t) for t in TOOLS) + "\n</tools>" in text
    assert text.count("be brief") == 1  # the system message is not repeated as a turn of its own
    assert ('<|im_start|>assistant\n<tool_call>\n{"name": "track_order", "arguments": {"order_id": "A1"}}\n'
            "</tool_call><|im_end|>") in text
    # consecutive tool results share one user turn
    assert ("<|im_start|>user\n<tool_response>\nin transit\n</tool_response>\n<tool_response>\nlate\n"
            "</tool_response><|im_end|>\n<|im_start|>assistant\n") in text


def test_tool_calls_are_inside_the_generation_markers(tokenizer):
    conversation = [*USER, {"role": "assistant", "content": "checking", "tool_calls": [
        {"type": "function", "function": {"name": "refund", "arguments": {"amount": 5}}},
        {"type": "function", "function": {"name": "track_order", "arguments": "{\"order_id\": \"B\"}"}}]}]
    out = tokenizer.apply_chat_template(conversation, tools=TOOLS, chat_template=CHATML, tokenize=True,
                                        return_dict=True, return_assistant_tokens_mask=True)
    trained = [t for t, m in zip(out["input_ids"], out["assistant_masks"], strict=True) if m]
    assert tokenizer.decode(trained) == (
        'checking\n<tool_call>\n{"name": "refund", "arguments": {"amount": 5}}\n</tool_call>\n'
        '<tool_call>\n{"name": "track_order", "arguments": {"order_id": "B"}}\n</tool_call><|im_end|>')


def test_tool_support_is_detected_from_the_template():
    assert supports_tools(CHATML) and not supports_tools(OLD_CHATML) and not supports_tools(None)
    assert supports_tools({"default": OLD_CHATML, "tool_use": CHATML})
    # tools rendered in another format (Llama 3.1's JSON): shown to the model but never parsed back, so refused
    assert not supports_tools("{% for t in tools %}{{ t | tojson }}{% endfor %}{{ messages[0]['content'] }}")


# ---- parsing and validation ----------------------------------------------------------------------------

def test_parser_reads_one_or_several_calls_and_the_text_before():
    content, calls = parse_tool_calls('<tool_call>\n{"name": "refund", "arguments": {"amount": 5}}\n</tool_call>')
    assert content is None and len(calls) == 1
    assert calls[0]["type"] == "function" and calls[0]["id"].startswith("call_")
    assert calls[0]["function"] == {"name": "refund", "arguments": '{"amount": 5}'}
    content, calls = parse_tool_calls('Let me check.\n<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call>\n'
                                      '<tool_call>\n{"name": "b", "arguments": "{\\"x\\": 1}"}\n</tool_call>')
    assert content == "Let me check."
    assert [(c["function"]["name"], c["function"]["arguments"]) for c in calls] == [("a", "{}"), ("b", '{"x": 1}')]
    assert len({c["id"] for c in calls}) == 2
    # an unclosed last block (the budget ran out after the JSON) is still read, as vLLM's hermes parser does
    assert parse_tool_calls('<tool_call>\n{"name": "a", "arguments": {"k": "v"}}')[1][0]["function"]["name"] == "a"


@pytest.mark.parametrize("text", [
    '<tool_call>\n{"name": "refund", "arguments": {"amount": }\n</tool_call>',  # malformed JSON
    '<tool_call>\n{"arguments": {}}\n</tool_call>',  # no name
    '<tool_call>\n["refund"]\n</tool_call>',
    '<tool_call>\n{"name": "a", "arguments": {}}\n</tool_call><tool_call>oops</tool_call>',  # one bad block
    "no call here",
])
def test_text_that_is_not_a_valid_call_is_plain_content(text):
    assert parse_tool_calls(text) == (text, [])
    assert answer(ToolPlan(tools=TOOLS, mode="auto"), text, "stop") == (text, [], "stop")


def test_forced_answers_are_calls_of_the_forced_function():
    named = ToolPlan(tools=TOOLS, mode="forced", name="refund")
    content, calls, finish = answer(named, '{"amount": 3}}\n</tool_call> trailing', "stop")
    # a named choice finishes with "stop", as OpenAI and vLLM answer it
    assert (content, calls[0]["function"], finish) == (None, {"name": "refund", "arguments": '{"amount": 3}'},
                                                       "stop")
    # invalid JSON: the model's own words
    content, calls, finish = answer(named, '{"amount": 3', "length")
    assert (calls[0]["function"]["arguments"], finish) == ('{"amount": 3', "length")
    # no space after the colon: the model writes " {" as the one token a tokenizer would have made of it
    assert named.prefix() == '<tool_call>\n{"name": "refund", "arguments":'
    required = ToolPlan(tools=TOOLS, mode="forced", name="refund", required=True)
    assert answer(required, "junk", "stop")[2] == "tool_calls" and answer(required, "{", "length")[2] == "length"


@pytest.mark.parametrize("body,param", [
    ({"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
    ({"tools": TOOLS, "tool_choice": "sometimes"}, "tool_choice"),
    ({"tool_choice": "required"}, "tool_choice"),
    ({"tools": [{"type": "function", "function": {"description": "no name"}}]}, "tools"),
    ({"tools": [{"type": "retrieval"}]}, "tools"),
    ({"tools": ["track_order"]}, "tools"),
])
def test_plan_refuses_naming_the_parameter(body, param):
    with pytest.raises(ApiError) as info:
        plan(body, template_has_tools=True)
    assert info.value.status == 400 and info.value.param == param


def test_plan_modes():
    assert plan({}, False).mode == "off" and plan({"tool_choice": "none"}, False).mode == "off"
    assert plan({"tools": TOOLS}, True).mode == "auto"
    assert plan({"tools": TOOLS, "tool_choice": "none"}, True).parses is False
    assert plan({"tools": TOOLS, "tool_choice": "required"}, True).name is None  # chosen by the model
    assert plan({"tools": TOOLS[:1], "tool_choice": "required"}, True).name == "track_order"
    with pytest.raises(ApiError) as info:
        plan({"tools": TOOLS}, template_has_tools=False)
    assert info.value.param == "tools"


# ---- through the gateway, with the official client ----------------------------------------------------------

@pytest.fixture(scope="module")
def tool_model(tiny_corpus, tmp_path_factory):
    """The tiny scaffolded model with room for the tool prompt (the tiny tokenizer spends ~600 tokens on it)."""
    from llmops_cli.model.config import ScaffoldSection
    from llmops_cli.model.scaffold import scaffold_model

    out = tmp_path_factory.mktemp("tools") / "model"
    scaffold_model(ScaffoldSection(output=str(out), corpus=[str(tiny_corpus)], vocab_size=512,
                                   max_position_embeddings=1024))
    return out


def _serve(tmp, model, tiny_corpus):
    cfg = load_config(project_yaml(tmp, model, tiny_corpus, serve={
        "source": str(model), "port": free_port(), "max_new_tokens": 12, "max_prompt_tokens": 1000,
        "backend": "transformers"}))
    spec = lifecycle.build_spec(cfg, lifecycle.resolve_source(cfg), lifecycle.BackendChoice("transformers", "test"))
    return cfg, lifecycle.start_detached(spec, cfg.serve.endpoint_file, 120)


@pytest.fixture(scope="module")
def server(tool_model, tiny_corpus, tmp_path_factory):
    cfg, endpoint = _serve(tmp_path_factory.mktemp("tools-serve"), tool_model, tiny_corpus)
    yield endpoint["url"]
    lifecycle.stop_server(cfg.serve.endpoint_file)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


def _call(client, **params):
    return client.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, temperature=0, **params)


def test_named_tool_choice_returns_a_call_of_that_function(client):
    reply = _call(client, tool_choice={"type": "function", "function": {"name": "refund"}})
    choice = reply.choices[0]
    assert choice.message.content is None and len(choice.message.tool_calls) == 1
    call = choice.message.tool_calls[0]
    assert call.type == "function" and call.id.startswith("call_") and call.function.name == "refund"
    assert choice.finish_reason in ("stop", "length")


def test_required_tool_choice_calls_the_tool_the_model_finds_likeliest(client, tool_model):
    from llmops_cli.serving.engine import TransformersEngine

    reply = _call(client, tool_choice="required")
    name = reply.choices[0].message.tool_calls[0].function.name
    assert reply.choices[0].finish_reason in ("tool_calls", "length")
    # the same choice, computed independently: the probability of each whole prompt + call prefix
    import torch

    engine = TransformersEngine({"base": str(tool_model)}, str(tool_model))
    engine.load()
    prompt = engine.render_chat(USER, TOOLS)
    totals = {}
    for tool in ("track_order", "refund"):
        ids = torch.tensor([engine.prompt_ids(prompt + ToolPlan(mode="forced", name=tool).prefix())])
        with torch.inference_mode():
            logprobs = torch.log_softmax(engine.model(input_ids=ids).logits[0, :-1].float(), dim=-1)
        totals[tool] = float(logprobs.gather(1, ids[0, 1:, None]).sum())
    assert name == max(totals, key=totals.__getitem__), totals


def test_streamed_tool_calls_accumulate_to_the_non_streamed_answer(client):
    choice = {"type": "function", "function": {"name": "track_order"}}
    whole = _call(client, tool_choice=choice).choices[0]
    calls: dict[int, dict] = {}
    finish = []
    for chunk in _call(client, tool_choice=choice, stream=True):
        for c in chunk.choices:
            for delta in c.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = delta.id or entry["id"]
                entry["name"] += (delta.function.name or "") if delta.function else ""
                entry["arguments"] += (delta.function.arguments or "") if delta.function else ""
            finish.append(c.finish_reason)
    assert list(calls) == [0] and calls[0]["id"].startswith("call_")
    assert (calls[0]["name"], calls[0]["arguments"]) == (whole.message.tool_calls[0].function.name,
                                                         whole.message.tool_calls[0].function.arguments)
    assert [f for f in finish if f] == [whole.finish_reason]


def test_auto_without_a_call_is_plain_text_streamed_or_not(client):
    whole = _call(client).choices[0]  # the untrained model writes no <tool_call> block
    assert whole.message.tool_calls is None and whole.finish_reason in ("stop", "length")
    chunks = list(_call(client, stream=True))
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.message.content
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == whole.finish_reason


@pytest.mark.parametrize("params", [
    {"tools": TOOLS, "tool_choice": {"type": "function", "function": {"name": "cancel"}}},
    {"tool_choice": "required"},
])
def test_bad_tool_choice_is_400_naming_it(client, params):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2, **params)
    assert info.value.body["param"] == "tool_choice"


def test_history_with_tool_calls_and_results_is_rendered(client, tokenizer):
    reply = client.chat.completions.create(model=MODEL, messages=HISTORY, tools=TOOLS, max_tokens=2, temperature=0)
    expected = tokenizer.apply_chat_template(template_messages(HISTORY), tools=TOOLS, tokenize=False,
                                             add_generation_prompt=True)
    assert '"arguments": {"order_id": "A1"}}' in expected  # the JSON string became an object, not re-quoted
    assert reply.usage.prompt_tokens == len(tokenizer(expected, add_special_tokens=False)["input_ids"])


def test_a_template_without_tools_is_400_naming_tools(tool_model, tiny_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("no-tools")
    model = tmp / "model"
    shutil.copytree(tool_model, model)
    (model / "chat_template.jinja").write_text(OLD_CHATML, encoding="utf-8")
    config = json.loads((model / "tokenizer_config.json").read_text())
    config.pop("chat_template", None)
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    cfg, endpoint = _serve(tmp, model, tiny_corpus)
    try:
        api = openai.OpenAI(base_url=f"{endpoint['url']}/v1", api_key="unused", max_retries=0, timeout=60)
        with pytest.raises(openai.BadRequestError) as info:
            api.chat.completions.create(model=MODEL, messages=USER, max_tokens=2, tools=TOOLS)
        assert info.value.body["param"] == "tools" and "chat template" in info.value.body["message"]
        # without tools the same server answers
        plain = httpx.post(f"{endpoint['url']}/v1/chat/completions",
                           json={"model": MODEL, "messages": USER, "max_tokens": 2, "tool_choice": "none"})
        assert plain.status_code == 200, plain.text
    finally:
        lifecycle.stop_server(cfg.serve.endpoint_file)


# ---- auto: a model that does write calls (scripted), through the real gateway app ---------------------------

class _Scripted:
    """An engine that answers every prompt with the same text (piece by piece when streaming), so that the
    gateway's handling of a model that does write <tool_call> blocks can be checked without training one."""

    ready, supports_tools, context_length, load_error = True, True, None, None

    def __init__(self, text: str) -> None:
        self.text = text
        self.prompts: list[str] = []
        self.scored: list[list[str]] = []  # the tool names of each likeliest() call

    def render_chat(self, messages, tools=None):
        return json.dumps({"messages": messages, "tools": tools})

    def prompt_ids(self, prompt):
        self.prompts.append(prompt)
        return [1] * max(3, len(prompt) // 4)  # about as many tokens as a real tokenizer makes of it

    def likeliest(self, prompt, continuations):
        self.scored.append([json.loads(c.split("\n", 1)[1] + ' ""}')["name"] for c in continuations])
        return 0

    async def complete(self, prompt_ids, max_tokens, sampling=None, stop=None):
        from llmops_cli.serving.engine import Completion

        return Completion(self.text, len(prompt_ids), 9, "stop")

    async def stream(self, prompt_ids, max_tokens, sampling, state):
        state.update(prompt_tokens=len(prompt_ids), completion_tokens=9, finish_reason="stop")
        for i in range(0, len(self.text), 5):
            yield self.text[i: i + 5]


@pytest.fixture
def scripted(tmp_path):
    from fastapi.testclient import TestClient

    from llmops_cli.serving.app import create_app
    from llmops_cli.serving.backends.transformers import TransformersBackend

    def make(text: str):
        spec = {"model_dir": str(tmp_path), "model_name": MODEL, "request_log": str(tmp_path / "requests.jsonl")}
        engine = _Scripted(text)
        http = TestClient(create_app(spec, backend=TransformersBackend(spec, engine=engine)))
        http.__enter__()
        api = openai.OpenAI(base_url="http://testserver/v1", api_key="unused", http_client=http, max_retries=0)
        made.append(http)
        return api, engine

    made: list = []
    yield make
    for http in made:
        http.__exit__(None, None, None)


CALLS_TEXT = ('Checking both.\n<tool_call>\n{"name": "track_order", "arguments": {"order_id": "A1"}}\n</tool_call>\n'
              '<tool_call>\n{"name": "refund", "arguments": {"amount": 5}}\n</tool_call>')


def test_auto_returns_the_calls_the_model_wrote(scripted):
    api, engine = scripted(CALLS_TEXT)
    choice = api.chat.completions.create(model=MODEL, messages=HISTORY, tools=TOOLS).choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content == "Checking both."
    assert [(c.function.name, json.loads(c.function.arguments)) for c in choice.message.tool_calls] == [
        ("track_order", {"order_id": "A1"}), ("refund", {"amount": 5})]
    # the template got the tools, and the history's arguments as an object
    rendered = json.loads(engine.prompts[-1])
    assert rendered["tools"] == TOOLS
    assert rendered["messages"][1]["tool_calls"][0]["function"]["arguments"] == {"order_id": "A1"}
    # tool_choice none: the same words come back as text
    plain = api.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, tool_choice="none").choices[0]
    assert (plain.message.content, plain.message.tool_calls, plain.finish_reason) == (CALLS_TEXT, None, "stop")


def test_auto_streams_calls_as_openai_deltas(scripted):
    api, _ = scripted(CALLS_TEXT)
    content, calls, finish = "", {}, []
    for chunk in api.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, stream=True):
        for c in chunk.choices:
            content += c.delta.content or ""
            for delta in c.delta.tool_calls or []:
                entry = calls.setdefault(delta.index, {"id": None, "name": "", "arguments": ""})
                entry["id"] = delta.id or entry["id"]
                entry["name"] += delta.function.name or ""
                entry["arguments"] += delta.function.arguments or ""
            finish.append(c.finish_reason)
    assert content == "Checking both."
    assert [(c["name"], json.loads(c["arguments"])) for c in calls.values()] == [
        ("track_order", {"order_id": "A1"}), ("refund", {"amount": 5})]
    assert all(c["id"].startswith("call_") for c in calls.values())
    assert [f for f in finish if f] == ["tool_calls"]


def test_malformed_calls_come_back_as_text_streamed_or_not(scripted):
    text = 'Sure <tool_call>\n{"name": "refund", "arguments": {"amount": }\n</tool_call>'
    api, _ = scripted(text)
    choice = api.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS).choices[0]
    assert (choice.message.content, choice.message.tool_calls, choice.finish_reason) == (text, None, "stop")
    chunks = list(api.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == text


def test_required_with_a_prompt_too_long_is_refused_before_scoring(scripted):
    api, engine = scripted(CALLS_TEXT)
    long = [{"role": "user", "content": "where is my package " * 300}]  # over serve.max_prompt_tokens (1024)
    with pytest.raises(openai.BadRequestError) as info:
        api.chat.completions.create(model=MODEL, messages=long, tools=TOOLS, tool_choice="required")
    assert info.value.body["code"] == "context_length_exceeded" and engine.scored == []
    reply = api.chat.completions.create(model=MODEL, messages=USER, tools=TOOLS, tool_choice="required")
    assert engine.scored == [["track_order", "refund"]]  # scored once, over every tool
    assert reply.choices[0].message.tool_calls[0].function.name == "track_order"  # the scripted engine's pick
