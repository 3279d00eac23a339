"""Chat-template rendering with the base model's tokenizer: token ids, the trainable-token mask,
the EOS check and the fingerprints (template and tokenizer hashes) that tune, the tokenization cache
and serve compare against.

Models that "never stop generating" after fine-tuning almost always saw answers that did not end
with the EOS token the server stops on; prep refuses such data instead of letting tune learn it.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_cli.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from llmops_cli.model.config import ModelSection

NAMED_TEMPLATES = {"chatml": "templates/chatml.jinja"}
CHECK_ROWS = 64  # rows of each conversation shape rendered both ways (fast and exact) and compared


def template_sha256(template: str) -> str:
    """The fingerprint of a chat template (the same function register/serve use to compare)."""
    return hashlib.sha256(template.encode("utf-8")).hexdigest()


def resolve_template(tok: PreTrainedTokenizerBase, name: str | None) -> tuple[str, str]:
    """(template text, where it came from): the tokenizer's own, a bundled name, or a .jinja file."""
    if name is None:
        template = tok.chat_template
        if isinstance(template, dict):  # tokenizers with several named templates: the default one
            template = template.get("default")
        if not template:
            raise ConfigError("the tokenizer has no chat template",
                              hint="set prep.tokenize.template to `chatml` or to a .jinja file")
        return str(template), "tokenizer"
    if name in NAMED_TEMPLATES:
        return files("llmops_cli.model").joinpath(NAMED_TEMPLATES[name]).read_text(encoding="utf-8"), name
    path = Path(name)
    if not path.is_file():
        raise ConfigError(f"chat template not found: {name}",
                          hint=f"use a .jinja file or one of: {', '.join(NAMED_TEMPLATES)}")
    return path.read_text(encoding="utf-8"), str(path)


def tokenizer_fingerprint(tok: PreTrainedTokenizerBase) -> str:
    """A content hash of the tokenizer (vocabulary, merges, special tokens), wherever it came from."""
    digest = hashlib.sha256()
    backend = getattr(tok, "backend_tokenizer", None)
    if backend is not None:
        digest.update(backend.to_str().encode("utf-8"))
    else:  # slow tokenizers: the vocabulary is what decides the ids
        digest.update(json.dumps(tok.get_vocab(), sort_keys=True).encode("utf-8"))
    specials = {k: str(v) for k, v in sorted(tok.special_tokens_map.items())}
    digest.update(json.dumps(specials, sort_keys=True).encode("utf-8"))
    return digest.hexdigest()


@dataclass
class Rendered:
    input_ids: list[int]
    mask: list[int]  # 1 = trainable (assistant answer and its end-of-turn token)
    ends_with_eos: bool

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)


class ChatRenderer:
    """Renders examples with one tokenizer and one template; records what tune needs to trust them."""

    def __init__(self, tok: PreTrainedTokenizerBase, template: str, template_source: str,
                 tokenizer_source: str) -> None:
        self.tok = tok
        self.template = template
        self.template_source = template_source
        self.tokenizer_source = tokenizer_source
        self.eos_id = tok.eos_token_id
        self._has_generation_markers = "{% generation %}" in template or "{%- generation %}" in template
        if self.eos_id is None:
            raise ConfigError(f"tokenizer {tokenizer_source!r} has no EOS token",
                              hint="use a tokenizer that defines eos_token")
        from llmops_cli.prep.fast_render import ChatFormats, FastEncoder

        # Fast paths (format strings, cached BPE pieces), each checked against the exact path on the first
        # rows of every conversation shape; one disagreement turns the fast path off for the run.
        self._formats = ChatFormats(template, dict(tok.special_tokens_map), self._has_generation_markers)
        self._encoder = FastEncoder.create(tok)
        self._fast = True
        self._checks: dict[tuple[str, ...], int] = {}

    def info(self) -> dict[str, Any]:
        """What the report and the tokenization cache record about the rendering."""
        return {
            "tokenizer": self.tokenizer_source,
            "tokenizer_sha256": tokenizer_fingerprint(self.tok),
            "chat_template_source": self.template_source,
            "chat_template_sha256": template_sha256(self.template),
            "eos_token": self.tok.eos_token,
            "assistant_mask": "generation markers" if self._has_generation_markers else "prompt prefix",
        }

    def render_chat(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None) -> Rendered:
        """Token ids and trainable mask of a conversation whose last turn is the assistant's answer
        (text, or tool calls); `tools` are the functions it may call (the template lists them)."""
        if tools or any(m.get("tool_calls") or m.get("role") == "tool" for m in messages):
            return self._render_tools(messages, tools or [])
        if not self._fast:
            return self._render_chat_exact(messages)
        shape = tuple(str(m.get("role")) for m in messages)
        checked = self._checks.get(shape, 0)
        if checked < CHECK_ROWS:  # the first rows of each shape: render both ways and compare
            self._checks[shape] = checked + 1
            exact = self._render_chat_exact(messages)
            fast = self._render_chat_fast(messages)
            if fast is not None and (fast.input_ids, fast.mask) != (exact.input_ids, exact.mask):
                self._fast = False
            return exact
        return self._render_chat_fast(messages) or self._render_chat_exact(messages)

    def _encode(self, text: str) -> tuple[list[int], list[int]]:
        """(ids, end offset of each token) as `tok(text, add_special_tokens=False)` gives them."""
        fast = self._encoder.encode(text) if self._encoder is not None else None
        if fast is not None:
            return fast
        out = self.tok(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(out["input_ids"]), [end for _, end in out["offset_mapping"]]

    def _render_chat_fast(self, messages: list[dict[str, str]]) -> Rendered | None:
        """The same Rendered as `_render_chat_exact`, or None where the fast path does not apply."""
        from llmops_cli.prep.fast_render import span_mask

        full = self._formats.render(messages)
        if full is None:
            return None
        ids, ends = self._encode(full[0])
        if self._has_generation_markers:
            mask = span_mask(ends, full[1])
        else:
            prompt = self._formats.render(messages[:-1], add_generation_prompt=True)
            if prompt is None:
                return None
            prefix = self._encode(prompt[0])[0]
            if ids[: len(prefix)] != prefix:
                return None  # the exact path raises its error
            mask = [0] * len(prefix) + [1] * (len(ids) - len(prefix))
        return Rendered(ids, mask, self._answer_ends_with_eos(ids, mask))

    def _render_tools(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> Rendered:
        """Tool-calling conversations always take Jinja: the template decides how calls and results look."""
        from llmops_cli.prep.tools import renders_tools, template_messages

        if not renders_tools(self.template):
            raise ConfigError(f"the chat template ({self.template_source}) cannot render tools or tool calls: "
                              "the data has tool-calling conversations",
                              hint="use a model whose template supports tools (Qwen2.5, Llama 3.1, ...) or set "
                                   "prep.tokenize.template: chatml (the bundled template renders them)")
        return self._render_chat_exact(template_messages(messages), tools)

    def _render_chat_exact(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]] | None = None
                           ) -> Rendered:
        extra = {"tools": tools} if tools else {}
        if self._has_generation_markers:
            out = self.tok.apply_chat_template(messages, chat_template=self.template, tokenize=True,
                                               return_dict=True, return_assistant_tokens_mask=True, **extra)
            ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
        else:
            # No {% generation %} markers (most hub templates): the answer is whatever the full
            # conversation adds after the prompt rendered with the generation prompt.
            ids = list(self.tok.apply_chat_template(messages, chat_template=self.template, tokenize=True,
                                                    return_dict=True, **extra)["input_ids"])
            prefix = list(self.tok.apply_chat_template(messages[:-1], chat_template=self.template, tokenize=True,
                                                       add_generation_prompt=True, return_dict=True,
                                                       **extra)["input_ids"])
            if ids[: len(prefix)] != prefix:
                raise DataError("the chat template renders the prompt differently with and without the answer",
                                hint="set prep.tokenize.template to a template with {% generation %} markers")
            mask = [0] * len(prefix) + [1] * (len(ids) - len(prefix))
        return Rendered(ids, mask, self._answer_ends_with_eos(ids, mask))

    def render_text(self, text: str) -> Rendered:
        """Continued pre-training: the whole text is trainable, and EOS closes the document."""
        fast = self._encoder.encode(text) if self._encoder is not None and self._fast else None
        checked = self._checks.get(("text",), 0)
        if fast is None or checked < CHECK_ROWS:
            exact = list(self.tok(text, add_special_tokens=False)["input_ids"])
            if fast is not None:
                self._checks[("text",)] = checked + 1
                self._fast = self._fast and fast[0] == exact
            ids = exact + [self.eos_id]
        else:
            ids = fast[0] + [self.eos_id]
        return Rendered(ids, [1] * len(ids), True)

    def _answer_ends_with_eos(self, ids: list[int], mask: list[int]) -> bool:
        if 1 not in mask:
            return False
        last = len(mask) - 1 - mask[::-1].index(1)
        # Some templates mark the newline after the end-of-turn token as part of the answer.
        while last > 0 and mask[last - 1] and ids[last] != self.eos_id and not self.tok.decode([ids[last]]).strip():
            last -= 1
        return ids[last] == self.eos_id


def load_renderer(source: str, template_name: str | None, model: ModelSection | None) -> ChatRenderer:
    """The base model's tokenizer (through the shared loader) wrapped with the chosen template."""
    from llmops_cli.model.config import ModelSection
    from llmops_cli.model.loading import load_tokenizer

    model_cfg = model or ModelSection(base=source)
    tok = load_tokenizer(model_cfg, path=source)
    template, where = resolve_template(tok, template_name)
    return ChatRenderer(tok, template, where, source)
