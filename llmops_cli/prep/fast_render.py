"""Fast paths for prep's rendering: the chat template as a format string, and tokenization with a
piece cache. Each one is used only where it gives the same result as the exact path (Jinja and the
`tokenizers` pipeline), and the renderer checks that on the first rows of every run.

Why: per example, a Jinja render costs ~0.2 ms and the byte-level tokenizer's regex pre-tokenizer
~0.4 ms (for ~1 KB of text), which capped `llmops prep` at ~1-2k rows/s with tokenization on.

- `ChatFormats`: a template that treats message contents as opaque strings renders to fixed literal
  text around each content. We render it once per conversation shape (roles, generation prompt) with
  sentinel contents, split it into literals and slots, and record where the `{% generation %}` spans
  sit. A second render with whitespace-padded sentinels must give the same literals (a template that
  trims or inspects content fails it), and a row whose content contains a string the template tests
  or calls with (e.g. '</think>' in content), is empty, or holds a sentinel character goes to Jinja.
- `FastEncoder`: for a byte-level BPE tokenizer with the GPT-2 pre-tokenizer and no normalizer, ASCII
  text splits into the same pieces with Python's `re` (the Unicode classes reduce to ASCII ones), and
  each piece's BPE comes from the tokenizer's own model, cached per piece (words repeat). Other text
  and other tokenizers use the tokenizer itself.
"""

from __future__ import annotations

import re
from bisect import bisect_left, bisect_right
from dataclasses import dataclass
from itertools import accumulate, chain
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# The GPT-2 pre-tokenizer pattern (tokenizers' ByteLevel use_regex=True) restricted to ASCII: \p{L} is
# [A-Za-z], \p{N} is [0-9] and Unicode \s is [\t\n\v\f\r ] there.
_GPT2_ASCII = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d| ?[A-Za-z]+| ?[0-9]+| ?[^\sA-Za-z0-9]+|\s+(?!\S)|\s+""", re.ASCII)
_CACHE_LIMIT = 1 << 19  # pieces kept before the cache starts over (bounded memory on any corpus)
_SENTINEL = re.compile("\ue000([0-9]+)\ue001")
_SENTINEL_CHARS = re.compile("[\ue000-\ue003]")
# Probe text of the self-check: every ASCII character and the whitespace runs the pattern treats apart.
_PROBE = ("".join(map(chr, range(128))) + " Hello  world\n\n  it's 12345 a--b 'LL 'll\t\tx \r\n y  \n"
          + "   end  ")


def _byte_map() -> dict[int, str]:
    """GPT-2's bytes_to_unicode table (the byte-level alphabet BPE vocabularies are written in)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), 256))
    out, n = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + n)
            n += 1
    return out


class FastEncoder:
    """Token ids and char offsets identical to the tokenizer's on ASCII text (None for other text)."""

    def __init__(self, backend: Any, added: dict[str, int]) -> None:
        self.backend = backend
        self.model = backend.model
        self.added = added
        longest_first = sorted(added, key=len, reverse=True)  # the tokenizer matches leftmost-longest
        self._special = re.compile("(" + "|".join(map(re.escape, longest_first)) + ")") if added else None
        self._table = str.maketrans({chr(b): c for b, c in _byte_map().items() if b < 128})
        # piece -> its token ids / their lengths in chars; added tokens are pieces of their own
        self._ids: dict[str, tuple[int, ...]] = {}
        self._lens: dict[str, tuple[int, ...]] = {}
        self._reset_cache()

    def _reset_cache(self) -> None:
        self._ids.clear()
        self._lens.clear()
        for content, token_id in self.added.items():
            self._ids[content] = (token_id,)
            self._lens[content] = (len(content),)

    @classmethod
    def create(cls, tok: PreTrainedTokenizerBase) -> FastEncoder | None:
        """An encoder for tokenizers whose pipeline it reproduces (checked on a probe), else None."""
        import json

        backend = getattr(tok, "backend_tokenizer", None)
        if backend is None or getattr(tok, "split_special_tokens", False):
            return None
        spec = json.loads(backend.to_str())
        pre, model, post = spec.get("pre_tokenizer") or {}, spec.get("model") or {}, spec.get("post_processor")
        added = spec.get("added_tokens") or []
        if (spec.get("normalizer") is not None or pre.get("type") != "ByteLevel" or not pre.get("use_regex", True)
                or pre.get("add_prefix_space") or model.get("type") != "BPE" or model.get("dropout")
                or model.get("continuing_subword_prefix") or model.get("end_of_word_suffix")
                or (post is not None and post.get("type") != "TemplateProcessing")
                or spec.get("truncation") is not None or spec.get("padding") is not None
                or any(a.get("lstrip") or a.get("rstrip") or a.get("single_word") for a in added)):
            return None
        enc = cls(backend, {a["content"]: a["id"] for a in added})
        probes = [_PROBE, *(f"x{s}y {s}\n{s}{s} z" for s in enc.added)]
        return enc if all(enc.matches(p) for p in probes) else None

    def matches(self, text: str) -> bool:
        """Same ids and offsets as the tokenizer on this text (or not ASCII: the tokenizer is used)."""
        mine = self.encode(text)
        if mine is None:
            return True
        ref = self.backend.encode(text, add_special_tokens=False)
        ends = [e for _, e in ref.offsets]
        return mine[0] == ref.ids and mine[1] == ends

    def encode(self, text: str) -> tuple[list[int], list[int]] | None:
        """(ids, end char offset of each token); None when the text is not ASCII."""
        if not text.isascii():
            return None
        if self._special is None:
            pieces = _GPT2_ASCII.findall(text)
        else:
            pieces = []
            for k, segment in enumerate(self._special.split(text)):
                if k % 2:
                    pieces.append(segment)  # an added token (cached as itself)
                else:
                    pieces.extend(_GPT2_ASCII.findall(segment))
        # Lookups and joins over the cache run in C: no per-piece Python code when every piece is a hit.
        found = list(map(self._ids.get, pieces))
        if None in found:
            if len(self._ids) > _CACHE_LIMIT:
                self._reset_cache()
            for piece in pieces:
                if piece not in self._ids:
                    self._bpe(piece)
            found = list(map(self._ids.__getitem__, pieces))
        ids = list(chain.from_iterable(found))
        ends = list(accumulate(chain.from_iterable(map(self._lens.__getitem__, pieces))))
        return ids, ends

    def _bpe(self, piece: str) -> None:
        tokens = self.model.tokenize(piece.translate(self._table))
        self._ids[piece] = tuple(t.id for t in tokens)
        # On ASCII every byte is one character of the byte-level alphabet: a token's length in chars.
        self._lens[piece] = tuple(len(t.value) for t in tokens)


def span_mask(ends: list[int], spans: list[tuple[int, int]]) -> list[int]:
    """1 for every token overlapping a span (what transformers' assistant mask marks), from token ends."""
    mask = [0] * len(ends)
    for start, end in spans:
        first = bisect_right(ends, start)  # the first token ending after the span starts
        stop = min(len(ends), bisect_left(ends, end) + 1)  # tokens starting before the span ends
        if first < stop:
            mask[first:stop] = [1] * (stop - first)
    return mask


@dataclass
class _Format:
    parts: list[str | int]  # literal text, or the index of the message whose content goes there
    spans: list[tuple[int, int, int, int]]  # generation spans: (part, offset) of start and of end


class ChatFormats:
    """Chat-template renders as format strings, one per conversation shape, or None where unsafe."""

    def __init__(self, template: str, special_tokens: dict[str, Any], markers: bool) -> None:
        self.template = template
        self.special_tokens = special_tokens
        self.markers = markers  # the template has {% generation %} spans (else no span is tracked)
        self._formats: dict[tuple[tuple[str, ...], bool], _Format | None] = {}
        self._risky = _content_literals(template)

    def render(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False
               ) -> tuple[str, list[tuple[int, int]]] | None:
        """(text, generation spans) as Jinja would render them, or None: render with Jinja."""
        if self._risky is None:
            return None
        contents = []
        for m in messages:
            content = m.get("content")
            if (len(m) != 2 or not isinstance(content, str) or not content or _SENTINEL_CHARS.search(content)
                    or any(s in content for s in self._risky)):
                return None
            contents.append(content)
        key = (tuple(str(m.get("role")) for m in messages), add_generation_prompt)
        if key not in self._formats:
            self._formats[key] = self._build(key[0], add_generation_prompt)
        fmt = self._formats[key]
        if fmt is None:
            return None
        pieces = [p if isinstance(p, str) else contents[p] for p in fmt.parts]
        starts = [0, *accumulate(map(len, pieces))]
        spans = [(starts[a] + oa, starts[b] + ob) for a, oa, b, ob in fmt.spans]
        return "".join(pieces), spans

    def forget(self, messages: list[dict[str, Any]], add_generation_prompt: bool = False) -> None:
        """Render this shape with Jinja from now on (its format string disagreed with Jinja on a row)."""
        self._formats[(tuple(str(m.get("role")) for m in messages), add_generation_prompt)] = None

    def jinja(self, messages: list[dict[str, Any]], add_generation_prompt: bool) -> tuple[str, list[tuple[int, int]]]:
        from transformers.utils.chat_template_utils import render_jinja_template

        texts, spans = render_jinja_template(conversations=[messages], chat_template=self.template,
                                             return_assistant_tokens_mask=self.markers,
                                             add_generation_prompt=add_generation_prompt, **self.special_tokens)
        return texts[0], [tuple(s) for s in spans[0]] if self.markers else []  # type: ignore[misc]

    def _build(self, roles: tuple[str, ...], add_generation_prompt: bool) -> _Format | None:
        try:
            plain = [{"role": r, "content": f"\ue000{i}\ue001"} for i, r in enumerate(roles)]
            padded = [{"role": r, "content": f"\n \ue002{i}\ue003 \n"} for i, r in enumerate(roles)]
            text, spans = self.jinja(plain, add_generation_prompt)
            text_b, _ = self.jinja(padded, add_generation_prompt)
        except Exception:  # noqa: BLE001 - e.g. raise_exception on this role order: Jinja gives the real error
            return None
        split = _SENTINEL.split(text)
        slots = [int(s) for s in split[1::2]]
        if sorted(slots) != list(range(len(roles))):
            return None  # a content dropped or repeated: not a plain substitution
        literals = split[0::2]
        padded_split = re.split("\n \ue002([0-9]+)\ue003 \n", text_b)
        if padded_split[0::2] != literals or padded_split[1::2] != split[1::2]:
            return None  # the template trims or inspects the content
        parts: list[str | int] = []
        bounds: list[tuple[int, int, int]] = []  # (literal's part index, its start, its end) in `text`
        pos = 0
        for k, literal in enumerate(literals):
            bounds.append((len(parts), pos, pos + len(literal)))
            parts.append(literal)
            pos += len(literal)
            if k < len(slots):
                parts.append(slots[k])
                pos += len(f"\ue000{slots[k]}\ue001")
        located = []
        for start, end in spans:
            a, b = _locate(bounds, start), _locate(bounds, end)
            if a is None or b is None:
                return None  # a span edge inside a content: not expressible as a format
            located.append((*a, *b))
        return _Format(parts, located)


def _locate(bounds: list[tuple[int, int, int]], pos: int) -> tuple[int, int] | None:
    for part, start, end in bounds:
        if start <= pos <= end:
            return part, pos - start
    return None


def _content_literals(template: str) -> list[str] | None:
    """Strings the template compares, tests or calls with (e.g. '</think>' in content): a content holding
    one may render differently, so such rows go to Jinja. Role names (identifiers) are left out. None when
    the template cannot be parsed here (then every row goes to Jinja)."""
    from jinja2 import nodes
    from transformers.utils.chat_template_utils import _compile_jinja_template

    found: set[str] = set()

    def walk(node: Any, inside: bool) -> None:
        if isinstance(node, nodes.Const) and isinstance(node.value, str) and inside:
            if not node.value.isidentifier():
                found.add(node.value)
        hot = inside or isinstance(node, (nodes.Compare, nodes.Call, nodes.Filter, nodes.Test, nodes.Getitem))
        for child in node.iter_child_nodes():
            walk(child, hot and not isinstance(child, (nodes.Output,)))

    try:  # transformers' own environment: it knows the {% generation %} tag
        tree = _compile_jinja_template(template).environment.parse(template)
    except Exception:  # noqa: BLE001 - any failure here only turns the fast path off
        return None
    walk(tree, False)
    return sorted(found - {""})
