"""Ask the served tool-calling demo model a question with `tools`, through the official openai client,
and print the tool calls it makes (`make demo-tools` runs it last).

    python scripts/ask_tools.py [ENDPOINT_FILE] [QUESTION]
"""

import json
import sys
from pathlib import Path

from openai import OpenAI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data/raw"))
from generate_tools import TOOLS  # noqa: E402 - the functions the demo model was trained to call

endpoint = json.loads(Path(sys.argv[1] if len(sys.argv) > 1 else "demo-tools/serve/endpoint.json").read_text())
question = sys.argv[2] if len(sys.argv) > 2 else "Where is my DHL parcel?"
client = OpenAI(base_url=f"{endpoint['url']}/v1", api_key="unused")
reply = client.chat.completions.create(
    model=endpoint["model"], tools=TOOLS, max_tokens=48,
    messages=[{"role": "system", "content": "You are a support assistant. Use the tools to answer."},
              {"role": "user", "content": question}])
choice = reply.choices[0]
print(f"Q: {question}")  # noqa: T201
for call in choice.message.tool_calls or []:
    print(f"tool call: {call.function.name}({call.function.arguments})")  # noqa: T201
print(f"content: {choice.message.content!r}; finish_reason: {choice.finish_reason}")  # noqa: T201
