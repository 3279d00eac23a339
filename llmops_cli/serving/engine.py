"""The embedded CPU engine: a transformers model (adapter merged) generating in-process."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any


@dataclass
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str
    # per generated token, when asked: {"id", "token", "logprob", "top": [(token, logprob), ...]}
    logprobs: list[dict[str, Any]] | None = None


class _Penalties:
    """OpenAI's presence and frequency penalties on the tokens generated so far (a logits processor):
    logit -= presence * [count > 0] + frequency * count."""

    def __init__(self, presence: float, frequency: float, prompt_width: int) -> None:
        self.presence, self.frequency, self.width = presence, frequency, prompt_width

    def __call__(self, input_ids: Any, scores: Any) -> Any:
        import torch

        generated = input_ids[:, self.width:]
        if generated.shape[1] == 0:
            return scores
        counts = torch.zeros_like(scores).scatter_add_(1, generated, torch.ones_like(generated, dtype=scores.dtype))
        return scores - self.presence * (counts > 0).to(scores.dtype) - self.frequency * counts


class TransformersEngine:
    """Loads once, then generates under one lock (HF generate is not re-entrant): non-streaming requests
    in batches (serving/batcher.py), streams one at a time."""

    def __init__(self, base_spec: dict[str, Any], model_dir: str, device: str = "cpu", max_batch: int = 32) -> None:
        self.base_spec = base_spec
        self.model_dir = model_dir
        self.device = device
        self.max_batch = max_batch
        self.model: Any = None
        self.tokenizer: Any = None
        self.load_error: str | None = None
        self._lock = threading.Lock()
        self.batcher: Any = None  # non-streaming requests, batched (serving/batcher.py); started by load()

    @property
    def ready(self) -> bool:
        return self.model is not None

    def load(self) -> None:
        from llmops_cli.model.config import ModelSection
        from llmops_cli.model.loading import default_device, is_adapter_dir, load_causal_lm, load_tokenizer

        try:
            base = ModelSection(**self.base_spec)
            device = default_device() if self.device == "auto" else self.device
            if is_adapter_dir(self.model_dir):
                model = load_causal_lm(base, device=device, adapter=self.model_dir, merge=True)
            else:
                model = load_causal_lm(base.model_copy(update={"base": self.model_dir}), device=device)
            self.tokenizer = load_tokenizer(base, path=self.model_dir)
            from llmops_cli.serving.batcher import Batcher

            self.batcher = Batcher(self, self.max_batch)
            self.model = model
        except Exception as exc:  # reported through /ready and the server log, never swallowed
            self.load_error = f"{type(exc).__name__}: {exc}"
            raise

    @property
    def context_length(self) -> int | None:
        """Positions the model has (prompt + completion must fit); None where the config does not say."""
        config = getattr(self.model, "config", None)
        for key in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
            value = getattr(config, key, None)
            if isinstance(value, int) and value > 0:
                return value
        return None

    def prompt_ids(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a text prompt (no special tokens added: the template has them), or the ids given."""
        return list(prompt) if isinstance(prompt, list) else self.tokenizer(prompt, add_special_tokens=False)[
            "input_ids"]

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> str:
        if tools:  # only then: a template without tool support must render exactly as it always has
            return self.tokenizer.apply_chat_template(messages, tools=tools, tokenize=False, add_generation_prompt=True)
        return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    @property
    def supports_tools(self) -> bool:
        from llmops_cli.serving.tools import supports_tools

        return supports_tools(getattr(self.tokenizer, "chat_template", None))

    def likeliest(self, prompt: str, continuations: list[str]) -> int:
        """Index of the continuation of `prompt` the model finds likeliest (the sum of its tokens' log-
        probabilities, i.e. the probability of the whole string); used to pick the tool of tool_choice
        "required". Texts are tokenized whole, so a token that spans prompt and continuation counts."""
        import torch

        rows = [self.prompt_ids(prompt + c) for c in continuations]
        shared = 0  # tokens every candidate starts with: their probability is the same for all
        while all(len(r) > shared + 1 for r in rows) and len({r[shared] for r in rows}) == 1:
            shared += 1
        width = max(len(r) for r in rows)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        ids = torch.tensor([r + [pad] * (width - len(r)) for r in rows], dtype=torch.long, device=self.model.device)
        mask = torch.tensor([[1] * len(r) + [0] * (width - len(r)) for r in rows], dtype=torch.long,
                            device=self.model.device)
        with self._lock, torch.inference_mode():
            logits = self.model(input_ids=ids, attention_mask=mask).logits.float()
        logprobs = torch.log_softmax(logits[:, :-1], dim=-1).gather(2, ids[:, 1:, None])[..., 0]
        first = max(shared, 1)  # the very first token has no prediction to score
        scores = [float(logprobs[i, first - 1: len(r) - 1].sum()) for i, r in enumerate(rows)]
        return max(range(len(rows)), key=scores.__getitem__)

    @staticmethod
    def _seed(sampling: dict[str, Any] | None) -> None:
        """A request's seed, set under the engine lock right before its generation (one at a time)."""
        if sampling and sampling.get("seed") is not None:
            import torch

            torch.manual_seed(int(sampling["seed"]))

    def _generate_kwargs(self, max_tokens: int, sampling: dict[str, Any] | None,
                         prompt_width: int | None = None) -> dict[str, Any]:
        """Every sampling parameter explicit, so that the model's generation_config (and transformers'
        own top_k=50 default) cannot differ from what the gateway decided (serving/sampling.py)."""
        sampling = sampling or {}
        kwargs: dict[str, Any] = {"max_new_tokens": max_tokens, "eos_token_id": self.tokenizer.eos_token_id,
                                  "pad_token_id": self.tokenizer.pad_token_id}
        presence = float(sampling.get("presence_penalty") or 0)
        frequency = float(sampling.get("frequency_penalty") or 0)
        if (presence or frequency) and prompt_width is not None:
            from transformers import LogitsProcessorList

            kwargs["logits_processor"] = LogitsProcessorList([_Penalties(presence, frequency, prompt_width)])
        temperature = float(sampling.get("temperature") or 0.0)
        if temperature > 0:
            kwargs.update(do_sample=True, temperature=temperature, top_p=float(sampling.get("top_p", 1.0)),
                          top_k=int(sampling.get("top_k") or 0))
        else:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return kwargs

    async def complete(self, prompt_ids: list[int], max_tokens: int, sampling: dict[str, Any] | None = None,
                       stop: list[str] | None = None) -> Completion:
        """One answer, generated in a batch with whatever else is waiting (serving/batcher.py)."""
        ids, logprobs = await self.batcher.submit(prompt_ids, max_tokens, sampling or {})
        completion = self._completion(ids, len(prompt_ids), stop)
        if logprobs is not None:  # one entry per generated token but the EOS, which is no text
            completion.logprobs = logprobs[: len(ids) - (ids[-1:] == [self.tokenizer.eos_token_id])]
        return completion

    def generate_batch(self, jobs: list[Any]) -> list[tuple[list[int], list[dict[str, Any]] | None]]:
        """Generated ids of each job (and their logprobs when asked), in one left-padded generate; each row
        stops at its EOS, its own max_tokens, or when its client has gone (called by the batcher's worker)."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        width = max(len(j.ids) for j in jobs)
        ids = torch.tensor([[pad] * (width - len(j.ids)) + j.ids for j in jobs], dtype=torch.long)
        mask = torch.tensor([[0] * (width - len(j.ids)) + [1] * len(j.ids) for j in jobs], dtype=torch.long)
        budgets = torch.tensor([j.max_tokens for j in jobs])

        class _RowDone(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                gone = torch.tensor([j.cancelled.is_set() or j.future.cancelled() for j in jobs])
                return (input_ids.shape[1] - width >= budgets) | gone

        sampling = jobs[0].sampling  # the batcher groups jobs with equal sampling parameters
        want_logprobs = sampling.get("logprobs") is not None
        with self._lock, torch.inference_mode():
            self._seed(sampling)
            out = self.model.generate(input_ids=ids.to(self.model.device), attention_mask=mask.to(self.model.device),
                                      stopping_criteria=StoppingCriteriaList([_RowDone()]),
                                      return_dict_in_generate=True, output_logits=want_logprobs,
                                      **self._generate_kwargs(int(budgets.max()), sampling, width))
        rows = []
        for i, (job, row) in enumerate(zip(jobs, out.sequences[:, width:].tolist(), strict=True)):
            row = row[: job.max_tokens]
            if self.tokenizer.eos_token_id in row:
                row = row[: row.index(self.tokenizer.eos_token_id) + 1]
            rows.append((row, self._logprobs(out.logits, i, row, int(sampling["logprobs"])) if want_logprobs
                         else None))
        return rows

    def _logprobs(self, logits: Any, row: int, ids: list[int], top: int) -> list[dict[str, Any]]:
        """Log-probabilities of the model's own distribution (before temperature and penalties) for each
        generated token, with the `top` likeliest alternatives."""
        import torch

        entries = []
        for step, token in enumerate(ids):
            lp = torch.log_softmax(logits[step][row].float(), dim=-1)
            best = torch.topk(lp, top) if top else None
            entries.append({"id": token, "token": self.tokenizer.decode([token]), "logprob": float(lp[token]),
                            "top": [] if best is None else [(self.tokenizer.decode([int(t)]), float(v))
                                                            for v, t in zip(best.values, best.indices, strict=True)]})
        return entries

    def _completion(self, ids: list[int], prompt_tokens: int, stop: list[str] | None) -> Completion:
        finish, generated = "length", len(ids)
        if self.tokenizer.eos_token_id in ids:
            ids = ids[: ids.index(self.tokenizer.eos_token_id)]
            finish, generated = "stop", len(ids) + 1  # the EOS token was generated too: vLLM counts it
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        for marker in stop or []:
            if marker and marker in text:
                text, finish = text[: text.index(marker)], "stop"
        return Completion(text.strip(), prompt_tokens, generated, finish)

    async def stream(self, prompt_ids: list[int], max_tokens: int, sampling: dict[str, Any] | None,
                     state: dict[str, Any]) -> AsyncIterator[str]:
        """Yield text pieces as they are generated; fills state with token counts and finish_reason.

        Generation runs in its own thread (it holds the engine lock); pieces reach the event loop
        through an asyncio queue, so waiting clients hold no worker threads. A client that goes
        away stops generation at the next token.
        """
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[str | None] = asyncio.Queue()
        cancelled = threading.Event()
        counted = {"tokens": 0}
        eos = self.tokenizer.eos_token_id

        def post(item: str | None) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, item)
            except RuntimeError:  # the loop is gone (server shutting down): nobody is listening
                cancelled.set()

        class _Streamer(TextIteratorStreamer):
            def put(self, value: Any) -> None:  # called with the prompt first, then one token at a time
                if not self.next_tokens_are_prompt:
                    counted["tokens"] += int(value.numel())
                    if eos is not None and int(value.reshape(-1)[-1]) == eos:
                        state["finish_reason"] = "stop"
                super().put(value)

            def on_finalized_text(self, text: str, stream_end: bool = False) -> None:
                if text:
                    post(text)
                if stream_end:
                    post(None)

        class _Cancel(StoppingCriteria):
            def __call__(self, input_ids: Any, scores: Any, **kwargs: Any) -> Any:
                return torch.full((input_ids.shape[0],), cancelled.is_set(), dtype=torch.bool)

        input_ids = torch.tensor([prompt_ids], dtype=torch.long, device=self.model.device)
        enc = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        state.update(prompt_tokens=len(prompt_ids), completion_tokens=0, finish_reason="length")
        streamer = _Streamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True)

        def run() -> None:
            try:
                with self._lock, torch.inference_mode():
                    self._seed(sampling)
                    self.model.generate(**enc, **self._generate_kwargs(max_tokens, sampling, enc["input_ids"].shape[1]),
                                        streamer=streamer,
                                        stopping_criteria=StoppingCriteriaList([_Cancel()]))
            except Exception as exc:  # surfaced to the client as the end of the stream, and logged
                state["error"] = f"{type(exc).__name__}: {exc}"
                post(None)

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        finished = False
        try:
            while (piece := await queue.get()) is not None:
                yield piece
            finished = True
        finally:
            cancelled.set()
            if not finished:  # the client went away: no finish_reason, so the log records why
                state["finish_reason"] = None
            # Every generated token counts, the EOS included (not returned as text): as vLLM counts them,
            # so usage and tokens/s compare across backends.
            state["completion_tokens"] = counted["tokens"]


def now() -> int:
    return int(time.time())
