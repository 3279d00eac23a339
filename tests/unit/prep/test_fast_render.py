"""The fast rendering paths (format strings, cached BPE pieces) give exactly what Jinja + the tokenizer give."""

import pytest

from llmops_cli.prep.fast_render import ChatFormats, FastEncoder, span_mask
from llmops_cli.prep.render import load_renderer

TEXTS = ["my parcel is late", "hi  there\n\n", "café ünïcode ✓", "<|im_end|> inside <|im_start|>x",
         "tabs\t\tand\r\n  trailing   ", " lead space", "it's 12345 a--b 'LL 'll", "x" * 300, "\x00\x1f\x7f ctl"]


def _conversations() -> list[list[dict[str, str]]]:
    convs = [[{"role": "user", "content": p}, {"role": "assistant", "content": c}]
             for p in TEXTS for c in ("shipping", " billing\n", "ok<|im_end|>")]
    convs.append([{"role": "system", "content": "be brief"}, {"role": "user", "content": "q"},
                  {"role": "assistant", "content": "a"}, {"role": "user", "content": "q2 "},
                  {"role": "assistant", "content": " a2"}])
    return convs


@pytest.mark.parametrize("template", [None, "chatml"])
def test_fast_render_equals_jinja_and_tokenizer(tiny_model, template):
    renderer = load_renderer(str(tiny_model), template, None)
    assert renderer._encoder is not None  # the scaffolded byte-level BPE tokenizer is one it reproduces
    used = 0
    for messages in _conversations():
        fast = renderer._render_chat_fast(messages)
        exact = renderer._render_chat_exact(messages)
        if fast is not None:
            used += 1
            assert (fast.input_ids, fast.mask, fast.ends_with_eos) == (exact.input_ids, exact.mask,
                                                                      exact.ends_with_eos), messages
    assert used >= len(_conversations()) - 1


def test_fast_text_encoding_equals_the_tokenizer(tiny_model):
    renderer = load_renderer(str(tiny_model), None, None)
    for text in TEXTS:
        ids = renderer.tok(text, add_special_tokens=False)["input_ids"]
        mine = renderer._encoder.encode(text)
        assert mine is None or mine[0] == list(ids)
        assert renderer.render_text(text).input_ids == [*ids, renderer.eos_id]


def test_template_that_trims_content_is_rendered_with_jinja(tiny_model):
    renderer = load_renderer(str(tiny_model), None, None)
    trims = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | trim }}<|im_end|>\n{% endfor %}"
    formats = ChatFormats(trims, dict(renderer.tok.special_tokens_map), markers=False)
    assert formats.render([{"role": "user", "content": " a "}, {"role": "assistant", "content": "b"}]) is None


def test_content_holding_a_tested_string_is_rendered_with_jinja(tiny_model):
    renderer = load_renderer(str(tiny_model), None, None)
    think = ("{% for m in messages %}{% if '</think>' in m['content'] %}{{ m['content'].split('</think>')[-1] }}"
             "{% else %}{{ m['content'] }}{% endif %}{% endfor %}")
    formats = ChatFormats(think, dict(renderer.tok.special_tokens_map), markers=False)
    plain = [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]
    assert formats.render(plain) == ("qa", [])
    assert formats.render([plain[0], {"role": "assistant", "content": "x</think>a"}]) is None


def test_unsupported_tokenizer_has_no_fast_encoder(tiny_model):
    from tokenizers import normalizers

    renderer = load_renderer(str(tiny_model), None, None)
    renderer.tok.backend_tokenizer.normalizer = normalizers.Lowercase()
    assert FastEncoder.create(renderer.tok) is None


def test_span_mask_marks_tokens_overlapping_a_span():
    ends = [3, 5, 9, 10]  # tokens [0,3) [3,5) [5,9) [9,10)
    assert span_mask(ends, [(4, 9)]) == [0, 1, 1, 0]
    assert span_mask(ends, [(0, 3), (9, 10)]) == [1, 0, 0, 1]
