"""The OpenAI request bodies the gateway accepts, validated strictly (no "stream": "yes", no
"max_tokens": "5", no role "wizard"), and which parameters a backend cannot honour.

Every backend gets the validated body. vLLM implements the whole OpenAI surface (and its own
extras), so it receives every parameter; the embedded transformers backend implements a subset and
answers 400 naming a parameter it would otherwise ignore: a silent 200 that ignored `logprobs` or
`response_format` is the worst answer a client can get.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class _Strict(BaseModel):
    # extra="allow": vLLM's own parameters (top_k, min_p, ...) pass through to it.
    model_config = ConfigDict(extra="allow", strict=True)


class ToolFunction(_Strict):
    name: str
    arguments: str


class ToolCall(_Strict):
    id: str
    type: Literal["function"] = "function"
    function: ToolFunction


class ChatMessage(_Strict):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None

    @field_validator("content", mode="before")
    @classmethod
    def _text_parts(cls, value: Any) -> Any:
        """OpenAI's list-of-parts form is accepted for text parts (joined); other parts are refused."""
        if isinstance(value, list):
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in value):
                raise ValueError("only text content parts ({'type': 'text', 'text': ...}) are supported")
            return "".join(p["text"] for p in value)
        return value

    @model_validator(mode="after")
    def _content_or_tool_calls(self) -> ChatMessage:
        if self.content is None and not (self.role == "assistant" and self.tool_calls):
            raise ValueError("content is required (it may be null only on an assistant message with tool_calls)")
        if self.role == "tool" and not self.tool_call_id:
            raise ValueError("a tool message needs the tool_call_id it answers")
        return self


class _Sampling(_Strict):
    model: str
    max_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    stop: str | list[str] | None = None
    stream: bool = False
    stream_options: dict[str, Any] | None = None
    seed: int | None = None
    n: int | None = Field(None, ge=1, le=16)
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logit_bias: dict[str, float] | None = None
    user: str | None = None

    @field_validator("stop")
    @classmethod
    def _at_most_four(cls, value: Any) -> Any:
        if isinstance(value, list) and len(value) > 4:
            raise ValueError("at most 4 stop sequences")
        return value


class ChatRequest(_Sampling):
    messages: list[ChatMessage] = Field(min_length=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    response_format: dict[str, Any] | None = None
    tools: list[dict[str, Any]] | None = None
    tool_choice: str | dict[str, Any] | None = None


class CompletionRequest(_Sampling):
    # A string, a list of strings, token ids, or a list of token-id lists (OpenAI's four forms).
    prompt: str | list[str] | list[int] | list[list[int]]
    echo: bool | None = None
    suffix: str | None = None
    logprobs: int | None = Field(None, ge=0, le=5)

    @field_validator("prompt")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if isinstance(value, list) and not value:
            raise ValueError("prompt must not be an empty list")
        return value


# Parameters the transformers backend does not implement, with the value that means "not used"
# (clients such as LangChain send these explicitly); anything else is refused with 400.
TRANSFORMERS_UNSUPPORTED: dict[str, tuple[Any, ...]] = {
    "logit_bias": (None, {}),
    "response_format": (None, {"type": "text"}),
    "echo": (None, False),
    "suffix": (None, ""),
}
# Parameters it implements (besides the messages/prompt and these, only vLLM extras could be sent).
TRANSFORMERS_SUPPORTED = frozenset({
    "model", "messages", "prompt", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k", "stop",
    "stream", "stream_options", "seed", "n", "user", "presence_penalty", "frequency_penalty", "logprobs",
    "top_logprobs", "tools", "tool_choice",  # tools: checked against the model's template (serving/tools.py)
})


def transformers_refusal(body: dict[str, Any]) -> str | None:
    """The first parameter in `body` that the transformers backend would have to ignore, or None."""
    for name, value in body.items():
        if name in TRANSFORMERS_UNSUPPORTED:
            if value not in TRANSFORMERS_UNSUPPORTED[name]:
                return name
        elif name not in TRANSFORMERS_SUPPORTED:
            return name
    if body.get("stream") and (body.get("n") or 1) > 1:
        return "n"
    if body.get("stream") and body.get("logprobs"):
        return "logprobs"  # streamed answers come from the one-at-a-time path, which does not score tokens
    return None
