"""The embedded backend: a transformers model in the gateway's process (serving/engine.py), with
batching of concurrent requests (serving/batcher.py); adapters are merged at load."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import AsyncIterator
from typing import Any

from llmops_cli.errors import BackendUnavailable
from llmops_cli.serving.backends.base import ApiError, Backend, ModelSpec, Reply
from llmops_cli.serving.spec import ServeSpec


class TransformersBackend(Backend):
    """The embedded engine. Reload builds the new engine first and then swaps one reference:
    requests already running keep the engine they started with."""

    name = "transformers"

    def __init__(self, spec: ServeSpec | dict[str, Any], engine: Any = None) -> None:
        super().__init__(spec)
        self.engine = engine
        self._reload_lock = threading.Lock()

    @property
    def state(self) -> str:
        if self.engine is not None and self.engine.ready:
            return "ready"
        return "failed" if self.error else "loading"

    def start(self) -> None:

        if self.engine is None:
            self.engine = self._engine(self.model)
        if self.engine.ready:
            return
        try:
            self.engine.load()
        except Exception as exc:
            self.error = self.engine.load_error or f"{type(exc).__name__}: {exc}"
            raise

    def stop(self) -> None:
        self.engine = None

    def _engine(self, model: ModelSpec) -> Any:
        from llmops_cli.serving.engine import TransformersEngine

        return TransformersEngine(self.spec.base.model_dump(), model.model_dir, self.spec.device, self.spec.max_batch)

    def reload(self, model: ModelSpec) -> None:

        with self._reload_lock:
            fresh = self._engine(model)
            try:
                fresh.load()
            except Exception as exc:
                raise BackendUnavailable(f"cannot load {model.model_ref}: {fresh.load_error or exc}",
                                         hint="the previous model is still being served") from None
            self.engine, self.model = fresh, model

    def refusal(self, body: dict[str, Any]) -> str | None:
        from llmops_cli.serving.openai_schema import transformers_refusal

        refused = transformers_refusal(body)
        engine = self.engine
        if refused is None and (body.get("tools") or body.get("tool_choice")) and engine is not None and engine.ready:
            from llmops_cli.serving.tools import plan

            plan(body, engine.supports_tools)  # ApiError 400 naming tools or tool_choice
        return refused

    async def handle(self, kind: str, body: dict[str, Any], request_id: str) -> Reply:
        from starlette.concurrency import run_in_threadpool

        engine = self.engine  # pinned for the whole request: a reload swaps the attribute, not this engine
        if engine is None or not engine.ready:
            raise ApiError(503, "model is still loading", "server_error", "not_ready")
        from llmops_cli.serving.tools import ToolPlan, plan

        tool_plan = plan(body, engine.supports_tools) if kind == "chat" else ToolPlan()
        prompts = self._prompts(engine, kind, body, tool_plan.tools)
        max_tokens = (body.get("max_completion_tokens") or body.get("max_tokens") or self.spec.max_new_tokens)
        if tool_plan.mode == "forced":
            prompts = [await self._forced_prompt(engine, str(prompts[0]), tool_plan, max_tokens)]
        # Tokenized once, here: the length checks, usage and generation all use these ids.
        prompt_ids = [await run_in_threadpool(engine.prompt_ids, p) for p in prompts]
        counts = [len(ids) for ids in prompt_ids]
        for count in counts:
            self._check_length(engine, count, max_tokens)
        sampling = {"temperature": float(body.get("temperature") or 0.0), "top_p": float(body.get("top_p", 1.0)),
                    "top_k": int(body.get("top_k") or 0), "seed": body.get("seed"),
                    "presence_penalty": body.get("presence_penalty"),
                    "frequency_penalty": body.get("frequency_penalty"), "logprobs": _logprobs_wanted(kind, body)}
        stop = body.get("stop")
        stops = [stop] if isinstance(stop, str) else (stop or [])
        response_id = f"{'chatcmpl' if kind == 'chat' else 'cmpl'}-{request_id}"
        served = self.spec.model_name
        if body.get("stream"):
            if tool_plan.parses:
                return self._tool_stream(engine, prompt_ids[0], max_tokens, sampling, stops, response_id, served,
                                         tool_plan)
            return self._stream(engine, kind, prompt_ids[0], max_tokens, sampling, stops, response_id, served)
        # Every choice is queued at once so that they share a batch; a seed makes the first sample of each
        # prompt reproducible, the others sample on.
        results = await asyncio.gather(*(
            engine.complete(ids, max_tokens, sampling if i == 0 else {**sampling, "seed": None}, stops)
            for ids in prompt_ids for i in range(body.get("n") or 1)))
        if kind == "chat":
            choices = [_chat_choice(i, r, tool_plan) for i, r in enumerate(results)]
        else:
            choices = [{"index": i, "text": r.text, "logprobs": _completion_logprobs(r.logprobs),
                        "finish_reason": r.finish_reason} for i, r in enumerate(results)]
        usage = {"prompt_tokens": sum(counts), "completion_tokens": sum(r.completion_tokens for r in results)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        meta = {"response_id": response_id, **usage, "finish_reason": choices[0]["finish_reason"],
                "text": tool_plan.prefix() + results[0].text}
        return Reply(200, {"id": response_id, "object": "chat.completion" if kind == "chat" else "text_completion",
                           "created": int(time.time()), "model": served, "choices": choices, "usage": usage},
                     meta=meta)

    @staticmethod
    def _prompts(engine: Any, kind: str, body: dict[str, Any],
                 tools: list[dict[str, Any]] | None = None) -> list[str | list[int]]:
        """The prompts to answer: the rendered chat, or completions' string / strings / token ids."""
        if kind == "chat":
            from llmops_cli.serving.tools import template_messages

            try:
                return [engine.render_chat(template_messages(body["messages"]), tools)]
            except Exception as exc:  # noqa: BLE001 - a template that cannot render these messages
                raise ApiError(400, f"the model's chat template cannot render these messages "
                                    f"({type(exc).__name__}: {str(exc)[:200]})", code="invalid_messages") from None
        prompt = body["prompt"]
        if isinstance(prompt, str):
            return [prompt]
        if all(isinstance(p, int) for p in prompt):
            return [prompt]  # one prompt as token ids
        return list(prompt)

    async def _forced_prompt(self, engine: Any, prompt: str, tool_plan: Any, max_tokens: int) -> str:
        """The prompt followed by the start of a call (tool_choice required or named); for "required" with
        several tools, the tool is the one whose call the model finds likeliest."""
        from starlette.concurrency import run_in_threadpool

        from llmops_cli.serving.tools import ToolPlan

        if tool_plan.name is None:
            # Scoring runs the model on the prompt: a prompt too long to answer is refused first.
            self._check_length(engine, len(await run_in_threadpool(engine.prompt_ids, prompt)), max_tokens)
            names = tool_plan.names
            candidates = [ToolPlan(mode="forced", name=n).prefix() for n in names]
            tool_plan.name = names[await run_in_threadpool(engine.likeliest, prompt, candidates)]
        return prompt + tool_plan.prefix()

    def _check_length(self, engine: Any, prompt_tokens: int, max_tokens: int) -> None:
        limit = self.spec.max_prompt_tokens
        if prompt_tokens > limit:
            raise ApiError(400, f"prompt has {prompt_tokens} tokens; the limit is {limit}",
                           code="context_length_exceeded")
        context = engine.context_length
        if context is not None and prompt_tokens + max_tokens > context:
            # OpenAI's wording and code; generating past the model's positions gives garbage, not text.
            raise ApiError(400, f"This model's maximum context length is {context} tokens. However, you requested "
                                f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} "
                                "in the completion). Please reduce the length of the messages or completion.",
                           code="context_length_exceeded")

    def _tool_stream(self, engine: Any, prompt_ids: list[int], max_tokens: int, sampling: dict[str, Any],
                     stops: list[str], response_id: str, served: str, tool_plan: Any) -> Reply:
        """A chat stream with tools in play: the generation is buffered (a <tool_call> block can only be
        parsed whole), then sent as OpenAI's content and tool-call deltas, then the finish reason."""
        from llmops_cli.serving.tools import answer, stream_deltas

        meta: dict[str, Any] = {"response_id": response_id}
        created = int(time.time())

        def event(choices: list[dict[str, Any]], **extra: Any) -> bytes:
            chunk = {"id": response_id, "object": "chat.completion.chunk", "created": created, "model": served,
                     "choices": choices, **extra}
            return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

        async def chunks() -> AsyncIterator[bytes]:
            state: dict[str, Any] = {}
            pieces: list[str] = []
            scanner = StopScanner(stops)
            stream = engine.stream(prompt_ids, max_tokens, sampling, state)
            try:
                async for piece in stream:
                    pieces += scanner.feed(piece)
                    if scanner.stopped:
                        break
                pieces += scanner.flush()
                finished = state.get("finish_reason") is not None or scanner.stopped
            finally:
                await stream.aclose()
            text = "".join(pieces).strip()
            finish = "stop" if scanner.stopped else state.get("finish_reason")
            content, calls, finish = answer(tool_plan, text, finish) if finished else (text, [], None)
            meta.update(prompt_tokens=state.get("prompt_tokens"), completion_tokens=state.get("completion_tokens"),
                        finish_reason=finish, text=tool_plan.prefix() + text, error=state.get("error"))
            for delta in stream_deltas(content, calls):
                yield event([{"index": 0, "delta": delta, "logprobs": None, "finish_reason": None}])
            yield event([{"index": 0, "delta": {}, "logprobs": None, "finish_reason": finish}])
            usage = {"prompt_tokens": meta["prompt_tokens"], "completion_tokens": meta["completion_tokens"],
                     "total_tokens": (meta["prompt_tokens"] or 0) + (meta["completion_tokens"] or 0)}
            yield event([], usage=usage)
            yield b"data: [DONE]\n\n"

        return Reply(200, chunks=chunks(), meta=meta)

    def _stream(self, engine: Any, kind: str, prompt_ids: list[int], max_tokens: int, sampling: dict[str, Any],
                stops: list[str], response_id: str, served: str) -> Reply:
        meta: dict[str, Any] = {"response_id": response_id}
        obj = "chat.completion.chunk" if kind == "chat" else "text_completion"
        created = int(time.time())

        def event(delta: dict[str, Any] | None, text: str | None, finish: str | None) -> bytes:
            choice: dict[str, Any] = {"index": 0, "finish_reason": finish}
            if kind == "chat":
                choice["delta"] = delta or {}
            else:
                choice["text"] = text or ""
            chunk = {"id": response_id, "object": obj, "created": created, "model": served, "choices": [choice]}
            return f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n".encode()

        async def chunks() -> AsyncIterator[bytes]:
            state: dict[str, Any] = {}
            pieces: list[str] = []
            scanner = StopScanner(stops)
            stream = engine.stream(prompt_ids, max_tokens, sampling, state)
            try:
                async for piece in stream:
                    for text in scanner.feed(piece):
                        # The role rides on the first piece, so the first byte marks the first token (ttft).
                        delta = {"content": text} if pieces else {"role": "assistant", "content": text}
                        pieces.append(text)
                        yield event(delta, text, None)
                    if scanner.stopped:
                        break  # closing the stream below stops generation
                for text in scanner.flush():
                    pieces.append(text)
                    yield event({"content": text} if len(pieces) > 1 else {"role": "assistant", "content": text},
                                text, None)
            finally:
                await stream.aclose()  # stops generation now, not whenever the generator is collected
                meta.update(prompt_tokens=state.get("prompt_tokens"), completion_tokens=state.get("completion_tokens"),
                            finish_reason="stop" if scanner.stopped else state.get("finish_reason"),
                            text="".join(pieces).strip(), error=state.get("error"))
            yield event({} if pieces else {"role": "assistant", "content": ""}, "", meta["finish_reason"])
            usage = {"prompt_tokens": meta["prompt_tokens"], "completion_tokens": meta["completion_tokens"],
                     "total_tokens": (meta["prompt_tokens"] or 0) + (meta["completion_tokens"] or 0)}
            yield f"data: {json.dumps({'id': response_id, 'object': obj, 'created': created, 'model': served, 'choices': [], 'usage': usage})}\n\n".encode()  # noqa: E501
            yield b"data: [DONE]\n\n"

        return Reply(200, chunks=chunks(), meta=meta)


def _chat_choice(index: int, result: Any, tool_plan: Any) -> dict[str, Any]:
    from llmops_cli.serving.tools import answer

    content, calls, finish = answer(tool_plan, result.text, result.finish_reason)
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if calls:
        message["tool_calls"] = calls
    return {"index": index, "message": message, "logprobs": _chat_logprobs(result.logprobs), "finish_reason": finish}


def _logprobs_wanted(kind: str, body: dict[str, Any]) -> int | None:
    """How many alternatives per token (0: the chosen token's only), or None: no logprobs."""
    if kind == "chat":
        return int(body.get("top_logprobs") or 0) if body.get("logprobs") else None
    return int(body["logprobs"]) if body.get("logprobs") is not None else None


def _chat_logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if entries is None:
        return None

    def item(token: str, logprob: float) -> dict[str, Any]:
        return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}

    return {"content": [{**item(e["token"], e["logprob"]), "top_logprobs": [item(t, lp) for t, lp in e["top"]]}
                        for e in entries]}


def _completion_logprobs(entries: list[dict[str, Any]] | None) -> dict[str, Any] | None:
    if entries is None:
        return None
    offsets, at = [], 0
    for e in entries:
        offsets.append(at)
        at += len(e["token"])
    return {"tokens": [e["token"] for e in entries], "token_logprobs": [e["logprob"] for e in entries],
            "top_logprobs": [dict(e["top"]) for e in entries], "text_offset": offsets}


class StopScanner:
    """Cuts a stream of text pieces at the first stop sequence, as non-streaming answers are cut.
    A tail that could be the start of a stop sequence is held back until the next piece decides."""

    def __init__(self, stops: list[str]) -> None:
        self.stops = [s for s in stops if s]
        self.hold = max((len(s) for s in self.stops), default=1) - 1
        self.buffer = ""
        self.stopped = False

    def feed(self, piece: str) -> list[str]:
        self.buffer += piece
        hits = [self.buffer.find(s) for s in self.stops if s in self.buffer]
        if hits:
            out, self.buffer, self.stopped = self.buffer[: min(hits)], "", True
            return [out] if out else []
        cut = max(0, len(self.buffer) - self.hold)
        out, self.buffer = self.buffer[:cut], self.buffer[cut:]
        return [out] if out else []

    def flush(self) -> list[str]:
        out, self.buffer = self.buffer, ""
        return [out] if out and not self.stopped else []
