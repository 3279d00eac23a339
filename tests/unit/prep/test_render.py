"""Chat-template rendering, trainable-token mask, EOS check and the tokenization cache (tiny real model)."""

import json
from pathlib import Path

import pytest

from llmops_cli.errors import DataError
from llmops_cli.model.config import ModelSection
from llmops_cli.prep.cache import find_cache, load_cached_split, verify_cache
from llmops_cli.prep.config import PrepSection
from llmops_cli.prep.pipeline import render_config, run_prep
from llmops_cli.prep.render import load_renderer, template_sha256
from tests.conftest import make_rows, write_jsonl

FIELDS = {"prompt": "message", "completion": "category", "label": "category"}


def _cfg(tmp_path: Path, data: Path, **kw) -> PrepSection:
    return PrepSection(sources=[{"path": str(data)}], fields=FIELDS, output_dir=str(tmp_path / "out"),
                       report=str(tmp_path / "prep.json"), metrics_file=str(tmp_path / "prep_metrics.json"), **kw)


@pytest.fixture
def data(tmp_path) -> Path:
    return write_jsonl(tmp_path / "rows.jsonl", make_rows(120))


def test_mask_covers_the_answer_and_eos_only(tiny_model):
    renderer = load_renderer(str(tiny_model), None, None)
    out = renderer.render_chat([{"role": "user", "content": "my parcel is late"},
                                {"role": "assistant", "content": "shipping"}])
    tok = renderer.tok
    trained = [i for i, m in zip(out.input_ids, out.mask, strict=True) if m]
    assert tok.decode(trained) == "shipping" + tok.eos_token
    assert out.ends_with_eos and out.input_ids[len(out.mask) - 1] == tok.eos_token_id
    assert renderer.info()["chat_template_sha256"] == template_sha256(tok.chat_template)


def test_template_without_generation_markers_uses_the_prompt_prefix(tiny_model, tmp_path):
    plain = tmp_path / "plain.jinja"
    plain.write_text("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
                     "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
    renderer = load_renderer(str(tiny_model), str(plain), None)
    out = renderer.render_chat([{"role": "user", "content": "hello"}, {"role": "assistant", "content": "billing"}])
    trained = renderer.tok.decode([i for i, m in zip(out.input_ids, out.mask, strict=True) if m])
    assert trained.startswith("billing" + renderer.tok.eos_token)
    assert out.ends_with_eos  # the trailing newline after EOS is tolerated


def test_template_that_never_emits_eos_is_refused(tiny_model, tmp_path, data):
    bad = tmp_path / "bad.jinja"
    bad.write_text("{% for m in messages %}{{ m['role'] }}: {% if m['role'] == 'assistant' %}{% generation %}"
                   "{{ m['content'] }}{% endgeneration %}{% else %}{{ m['content'] }}{% endif %}\n{% endfor %}")
    cfg = _cfg(tmp_path, data, tokenize={"template": str(bad)})
    with pytest.raises(DataError, match="does not end with the EOS token"):
        run_prep(cfg, model=ModelSection(base=str(tiny_model)))
    assert not (tmp_path / "out/train.jsonl").exists()  # nothing half-written


def test_token_filters_percentiles_and_template_record(tiny_model, tmp_path, data):
    result = run_prep(_cfg(tmp_path, data, tokenize={"min_tokens": 12, "max_tokens": 30}),
                      model=ModelSection(base=str(tiny_model)))
    tokens = result.tokens
    assert tokens["count"] > 0 and tokens["p50"] <= tokens["p95"] <= tokens["max"]
    kept_max = max(v.get("max", 0) for v in tokens["kept"].values())
    assert 12 <= kept_max <= 30
    assert result.reasons.get("too_many_tokens", 0) + result.reasons.get("too_few_tokens", 0) > 0
    report = json.loads((tmp_path / "prep.json").read_text())
    assert report["chat_template"]["chat_template_sha256"] == template_sha256(
        (Path(tiny_model) / "chat_template.jinja").read_text())
    assert report["chat_template"]["eos_token"] == "<|im_end|>"


def test_tokenization_cache_is_keyed_by_content(tiny_model, tmp_path, data):
    model = ModelSection(base=str(tiny_model))
    cfg = _cfg(tmp_path, data)
    first = run_prep(cfg, model=model)
    cache = first.tokenized_cache
    assert cache["hit"] is False and verify_cache(cache["dir"]) == []
    rows = load_cached_split(cache["dir"], "train")
    assert len(rows) == first.splits["train"] and all(sum(r["mask"]) > 0 for r in rows)
    again = run_prep(cfg, model=model)
    assert again.tokenized_cache == {**cache, "hit": True}
    info = first.chat_template
    found = find_cache(cfg.output_dir, ("train", "validation", "test"), info["tokenizer_sha256"],
                       info["chat_template_sha256"], render_config(cfg))
    assert found == Path(cache["dir"])
    # any component changing gives another key, and the old folder is gone
    other = run_prep(cfg.model_copy(update={"system_prompt": "Classify the ticket."}), model=model)
    assert other.tokenized_cache["key"] != cache["key"] and not Path(cache["dir"]).exists()
    assert find_cache(cfg.output_dir, ("train", "validation", "test"), info["tokenizer_sha256"],
                      info["chat_template_sha256"], render_config(cfg)) is None
    write_jsonl(data, make_rows(121))  # the data changed
    changed = run_prep(cfg, model=model)
    assert changed.tokenized_cache["key"] not in (cache["key"], other.tokenized_cache["key"])
    parquet = Path(changed.tokenized_cache["dir"]) / "train.parquet"
    parquet.write_bytes(parquet.read_bytes() + b"x")
    assert verify_cache(changed.tokenized_cache["dir"]) == ["train.parquet: content does not match its sha256"]
    with pytest.raises(DataError, match="damaged"):
        load_cached_split(changed.tokenized_cache["dir"], "train")


def test_missing_tokenizer_is_a_config_error_after_sources_are_checked(tmp_path, data):
    from llmops_cli.errors import ConfigError

    with pytest.raises(ConfigError, match="cannot load model"):
        run_prep(_cfg(tmp_path, data), model=ModelSection(base=str(tmp_path / "no-model")))
    with pytest.raises(DataError, match="source not found"):
        run_prep(_cfg(tmp_path, tmp_path / "nope.jsonl"), model=ModelSection(base=str(tmp_path / "no-model")))
