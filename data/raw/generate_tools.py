"""Generate the tool-calling demo dataset (configs/tools-demo.yaml): support chats in OpenAI `messages`
form where the assistant calls one of two functions, reads the result and answers from it.

    python data/raw/generate_tools.py [--out data/raw/tool_calls.jsonl] [--seed 11] [--rows 600]

Each row: system prompt, a customer message, an assistant turn with `content: null` and `tool_calls`
(track_parcel with the carrier the message names, or check_outage with the service it names), the
`tool` turn with the function's JSON result, and the final answer built from that result; `tools` holds
both functions' JSON schemas. Arguments are words from the message (not, say, 5-digit order numbers a
tiny random-initialised model cannot learn to copy in a few minutes of CPU training). A tenth of the rows are the ShareGPT function-call variant
(`function_call` / `observation` turns), written to a second file, as LLaMA-Factory exports them.
Deterministic: the same arguments give byte-identical files.
"""

from __future__ import annotations

import argparse
import json
import random
from pathlib import Path

TOOLS = [
    {"type": "function", "function": {
        "name": "track_parcel", "description": "Status and delivery day of a parcel",
        "parameters": {"type": "object", "properties": {"carrier": {"type": "string"}}, "required": ["carrier"]}}},
    {"type": "function", "function": {
        "name": "check_outage", "description": "Whether a service has an outage",
        "parameters": {"type": "object", "properties": {"service": {"type": "string"}}, "required": ["service"]}}},
]
SYSTEM = "You are a support assistant. Use the tools to answer."
PARCEL_ASKS = ["Where is my {c} parcel?", "Any news on my {c} delivery?", "Can you track my {c} parcel?",
               "My {c} package has not arrived yet.", "What is the status of my {c} shipment?"]
OUTAGE_ASKS = ["Is the {s} down?", "The {s} is not working for me.", "I cannot reach the {s}.",
               "Is there a problem with the {s}?", "Why does the {s} fail?"]
CARRIERS = ["DHL", "UPS", "FedEx", "USPS"]
SERVICES = ["billing portal", "mobile app", "checkout page", "login page", "help center"]
STATUSES = ["in transit", "delayed", "delivered"]
DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday"]
ENDINGS = ["", " Thanks!", " Please help.", " Thank you."]


def conversation(rng: random.Random, i: int) -> tuple[list[dict], dict]:
    """(OpenAI messages, the call) of one chat."""
    call_id = f"call_{i}"
    if rng.random() < 0.6:
        carrier, status, day = rng.choice(CARRIERS), rng.choice(STATUSES), rng.choice(DAYS)
        ask, call = rng.choice(PARCEL_ASKS).format(c=carrier), {"name": "track_parcel",
                                                                 "arguments": {"carrier": carrier}}
        result = {"carrier": carrier, "status": status, "day": day}
        answer = f"Your {carrier} parcel is {status}, day: {day}."
    else:
        service = rng.choice(SERVICES)
        down = rng.random() < 0.5
        ask, call = rng.choice(OUTAGE_ASKS).format(s=service), {"name": "check_outage",
                                                                 "arguments": {"service": service}}
        result = {"service": service, "outage": down}
        answer = f"The {service} has an outage, we are fixing it." if down else f"The {service} works normally."
    messages = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": ask + rng.choice(ENDINGS)},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call_id, "type": "function",
             "function": {"name": call["name"], "arguments": json.dumps(call["arguments"])}}]},
        {"role": "tool", "tool_call_id": call_id, "content": json.dumps(result)},
        {"role": "assistant", "content": answer},
    ]
    return messages, call


def sharegpt(messages: list[dict], call: dict) -> list[dict]:
    return [{"from": "human", "value": messages[1]["content"]},
            {"from": "function_call", "value": json.dumps(call)},
            {"from": "observation", "value": messages[3]["content"]},
            {"from": "gpt", "value": messages[4]["content"]}]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(Path(__file__).parent / "tool_calls.jsonl"))
    parser.add_argument("--seed", type=int, default=11)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    openai_rows, sharegpt_rows = [], []
    for i in range(args.rows):
        messages, call = conversation(rng, i)
        if i % 10 == 9:
            sharegpt_rows.append({"id": f"S{i:05d}", "system": SYSTEM, "tools": json.dumps(TOOLS),
                                  "conversations": sharegpt(messages, call)})
        else:
            openai_rows.append({"id": f"F{i:05d}", "tools": TOOLS, "messages": messages})
    out = Path(args.out)
    out.write_text("".join(json.dumps(r) + "\n" for r in openai_rows), encoding="utf-8")
    share = out.with_name(out.stem + "_sharegpt.jsonl")
    share.write_text("".join(json.dumps(r) + "\n" for r in sharegpt_rows), encoding="utf-8")
    print(f"{len(openai_rows)} OpenAI rows -> {out}; {len(sharegpt_rows)} ShareGPT rows -> {share}")  # noqa: T201


if __name__ == "__main__":
    main()
