"""The tool-calling demo (#17) end to end on CPU: a tiny model learns to call tools in prep -> tune ->
eval (tool-call gates) -> register -> serve, and the official openai client gets parsed tool_calls."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from tests.conftest import ROOT, free_port
from tests.e2e.conftest import demo_copy, run

pytestmark = [pytest.mark.e2e, pytest.mark.tools_demo]
CONFIG = "configs/tools-demo.yaml"


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory):
    work, env = demo_copy(tmp_path_factory.mktemp("tools"), free_port())
    config = work / CONFIG
    config.write_text(config.read_text().replace("port: 8322", f"port: {free_port()}"))
    for step in (["model", "scaffold"], ["prep"], ["tune"], ["eval"], ["register"],
                 ["register", "promote", "latest", "--to", "staging"], ["serve", "--detach"]):
        run(["llmops", *step, "-c", CONFIG], work, env)
    yield work, json.loads((work / "demo-tools/serve/endpoint.json").read_text()), env
    subprocess.run(["llmops", "serve", "stop", "-c", CONFIG], cwd=work, env=env, timeout=60)


def test_the_tuned_model_learned_to_call_the_tools(served):
    work, _, _ = served
    metrics = json.loads((work / "demo-tools/metrics/eval.json").read_text())
    assert metrics["gates_passed"] is True, metrics
    tuned, base = metrics["tuned"], metrics["base"]
    assert tuned["tool_name_accuracy"] >= 0.9 > base["tool_name_accuracy"], metrics
    assert tuned["tool_args_accuracy"] >= 0.7 > base["tool_args_accuracy"], metrics  # it copies the argument
    prep = json.loads((work / "demo-tools/reports/prep.json").read_text())
    assert prep["reasons"].keys() <= {"duplicate", "near_duplicate"}, prep["reasons"]  # none malformed


@pytest.fixture(scope="module")
def vllm_served(served):
    """The same registered version served by vLLM (its hermes tool-call parser), beside the first server."""
    work, _, env = served
    python = Path(os.environ.get("LLMOPS_VLLM_PYTHON", ROOT / ".venv-vllm/bin/python"))
    if not python.exists():
        pytest.skip("no .venv-vllm here (`make vllm`); .ci/run builds it before make test-tools")
    sets = ["serve.backend=vllm", f"serve.vllm.python={python}", f"serve.port={free_port()}",
            "serve.endpoint_file=demo-tools/serve/endpoint-vllm.json",
            "serve.request_log=demo-tools/serve/requests-vllm.jsonl"]
    args = [a for s in sets for a in ("--set", s)]
    run(["llmops", "serve", "--detach", "-c", CONFIG, *args], work, env)
    yield json.loads((work / "demo-tools/serve/endpoint-vllm.json").read_text())
    subprocess.run(["llmops", "serve", "stop", "-c", CONFIG, *args], cwd=work, env=env, timeout=60)


@pytest.mark.parametrize("backend", ["transformers", "vllm"])
def test_openai_client_gets_parsed_tool_calls_from_the_served_model(served, backend, request):
    import runpy

    from openai import OpenAI

    work, endpoint, _ = served
    if backend == "vllm":
        endpoint = request.getfixturevalue("vllm_served")
    generator = runpy.run_path(str(work / "data/raw/generate_tools.py"))  # the functions the model learned
    SYSTEM, TOOLS = generator["SYSTEM"], generator["TOOLS"]  # noqa: N806
    client = OpenAI(base_url=f"{endpoint['url']}/v1", api_key="unused")
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Where is my DHL parcel?"}]
    reply = client.chat.completions.create(model=endpoint["model"], messages=messages, tools=TOOLS,
                                           max_tokens=48)
    choice = reply.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.tool_calls, choice
    call = choice.message.tool_calls[0]
    assert call.function.name == "track_parcel" and json.loads(call.function.arguments) == {"carrier": "DHL"}

    stream = client.chat.completions.create(model=endpoint["model"], messages=messages, tools=TOOLS,
                                            max_tokens=48, stream=True)
    names = [d.function.name for chunk in stream if chunk.choices  # the last chunk carries usage only
             for d in (chunk.choices[0].delta.tool_calls or []) if d.function and d.function.name]
    assert names == ["track_parcel"]

    named = client.chat.completions.create(
        model=endpoint["model"], tools=TOOLS, max_tokens=48, tool_choice={"type": "function", "function": {
            "name": "track_parcel"}}, messages=[messages[0], {"role": "user", "content": "Where is my UPS parcel?"}])
    assert named.choices[0].message.tool_calls[0].function.name == "track_parcel", named.choices[0]

    # The conversation goes on with the tool's result: the model answers from it.
    result = {"carrier": "DHL", "status": "delayed", "day": "Friday"}
    follow = client.chat.completions.create(
        model=endpoint["model"], tools=TOOLS, max_tokens=48,
        messages=[*messages, choice.message.model_dump(exclude_none=True),
                  {"role": "tool", "tool_call_id": call.id, "content": json.dumps(result)}])
    assert follow.choices[0].message.content and not follow.choices[0].message.tool_calls
