"""The gateway driven by the official `openai` client (and raw HTTP where the client would refuse to
send a bad body) on the transformers backend: every parameter is honoured or refused with a 400 that
names it, never silently ignored."""

from __future__ import annotations

import httpx
import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.serving import lifecycle
from tests.conftest import free_port, project_yaml

openai = pytest.importorskip("openai")
MODEL = "test-model"
USER = [{"role": "user", "content": "where is my package"}]


@pytest.fixture(scope="module")
def server(tiny_model, tiny_corpus, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("conformance")
    cfg = load_config(project_yaml(tmp, tiny_model, tiny_corpus, serve={
        "source": str(tiny_model), "port": free_port(), "max_new_tokens": 4, "backend": "transformers"}))
    spec = lifecycle.build_spec(cfg, lifecycle.resolve_source(cfg), lifecycle.BackendChoice("transformers", "test"))
    endpoint = lifecycle.start_detached(spec, cfg.serve.endpoint_file, 120)
    yield endpoint["url"]
    lifecycle.stop_server(cfg.serve.endpoint_file)


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server}/v1", api_key="unused", max_retries=0, timeout=60)


def test_models_list_and_retrieve(client):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert client.models.retrieve(MODEL).id == MODEL


def test_n_choices_and_seeded_sampling(client):
    reply = client.chat.completions.create(model=MODEL, messages=USER, n=3, temperature=1.0, max_tokens=4)
    assert [c.index for c in reply.choices] == [0, 1, 2]
    seeded = [client.chat.completions.create(model=MODEL, messages=USER, temperature=1.0, seed=7, max_tokens=6)
              .choices[0].message.content for _ in range(2)]
    assert seeded[0] == seeded[1]


def test_chat_logprobs_are_the_models_own(client):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=6, temperature=0, logprobs=True,
                                           top_logprobs=3)
    content = reply.choices[0].logprobs.content
    assert content and len(content) <= reply.usage.completion_tokens
    for entry in content:
        assert entry.logprob <= 0 and len(entry.top_logprobs) == 3
        # greedy: the chosen token is the likeliest one
        assert entry.logprob == pytest.approx(max(t.logprob for t in entry.top_logprobs))
    assert "".join(e.token for e in content).strip() == reply.choices[0].message.content


def test_completion_logprobs_and_penalties(client):
    def tokens(**params):
        reply = client.completions.create(model=MODEL, prompt="where is my", max_tokens=24, temperature=0,
                                          logprobs=0, **params)
        lp = reply.choices[0].logprobs
        assert len(lp.tokens) == len(lp.token_logprobs) == len(lp.text_offset)
        return lp.tokens

    plain, penalised = tokens(), tokens(frequency_penalty=2.0, presence_penalty=2.0)
    # the random tiny model repeats itself greedily; penalties on repeats make it say more different things
    assert len(set(penalised)) / len(penalised) > len(set(plain)) / len(plain), (plain, penalised)


@pytest.mark.parametrize("params,param", [
    ({"logprobs": True, "stream": True}, "logprobs"),
    ({"response_format": {"type": "json_object"}}, "response_format"),
    ({"logit_bias": {"5": 10}}, "logit_bias"),
    ({"n": 2, "stream": True}, "n"),
])
def test_parameters_the_backend_cannot_honour_are_400_naming_them(client, params, param):
    with pytest.raises(openai.BadRequestError) as info:
        client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2, **params)
    error = info.value.body
    assert error["code"] == "unsupported_parameter" and error["param"] == param


def test_neutral_values_of_unsupported_parameters_are_accepted(client):
    reply = client.chat.completions.create(model=MODEL, messages=USER, max_tokens=2, n=1, logit_bias={},
                                           response_format={"type": "text"}, tool_choice="none")
    assert reply.choices[0].finish_reason in ("stop", "length")


@pytest.mark.parametrize("body", [
    {"stream": "yes"}, {"max_tokens": "5"}, {"top_p": 5}, {"temperature": "hot"},
    {"messages": [{"role": "wizard", "content": "hi"}]},
    {"messages": [{"role": "user", "content": None}]},
    {"messages": [{"role": "tool", "content": "42"}]},  # a tool message must name the call it answers
    {"stop": ["a", "b", "c", "d", "e"]},
])
def test_values_are_not_coerced(server, body):
    response = httpx.post(f"{server}/v1/chat/completions", json={"model": MODEL, "messages": USER, **body})
    assert response.status_code == 400, response.text
    assert response.json()["error"]["code"] == "invalid_value"


def test_a_tool_call_history_is_accepted_or_refused_by_the_template_never_a_500(client):
    history = [*USER, {"role": "assistant", "content": None, "tool_calls": [
        {"id": "call_1", "type": "function", "function": {"name": "track", "arguments": "{\"id\": 1}"}}]},
        {"role": "tool", "tool_call_id": "call_1", "content": "in transit"}]
    try:
        reply = client.chat.completions.create(model=MODEL, messages=history, max_tokens=2)
        assert reply.choices[0].message.role == "assistant"
    except openai.BadRequestError as exc:
        assert exc.body["code"] == "invalid_messages" and "chat template" in exc.body["message"]


def test_completion_prompt_forms(client):
    two = client.completions.create(model=MODEL, prompt=["hello", "where is"], max_tokens=2)
    assert [c.index for c in two.choices] == [0, 1]
    ids = client.completions.create(model=MODEL, prompt=[5, 6, 7], max_tokens=2)
    assert ids.usage.prompt_tokens == 3
    for params, param in (({"echo": True}, "echo"), ({"suffix": "end"}, "suffix")):
        with pytest.raises(openai.BadRequestError) as info:
            client.completions.create(model=MODEL, prompt="hello", max_tokens=2, **params)
        assert info.value.body["param"] == param


def test_streaming_with_stop_through_the_client(client):
    full = client.completions.create(model=MODEL, prompt="where is my", max_tokens=10, temperature=0)
    text = full.choices[0].text
    if len(text) < 4:
        pytest.skip(f"the tiny model's answer is too short to cut: {text!r}")
    stop = text[2:4]
    chunks = list(client.completions.create(model=MODEL, prompt="where is my", max_tokens=10, temperature=0,
                                            stop=stop, stream=True))
    streamed = "".join(c.choices[0].text for c in chunks if c.choices)
    assert stop not in streamed and streamed.strip() == text[: text.index(stop)].strip()
