"""What tune trains on (#15): the truncation policy, prep's chat template and tokenization cache."""

import json
import shutil

import pytest

from llmops_cli.config.loader import load_config
from llmops_cli.errors import ConfigError, DataError
from llmops_cli.model.loading import load_tokenizer
from llmops_cli.prep.pipeline import run_prep
from llmops_cli.prep.render import ChatRenderer, resolve_template
from llmops_cli.tune.dataset import _render, load_training_data
from llmops_cli.tune.train import run_tune
from tests.conftest import make_rows, project_yaml, write_jsonl

QUICK = ["tune.max_steps=2", "tune.batch_size=8", "tune.logging_steps=1"]


def _rows() -> list[dict]:
    rows = make_rows(160)
    for row in rows[::4]:  # a quarter are long tickets
        row["message"] = " ".join([row["message"]] * 6)
    return rows


@pytest.fixture(scope="module")
def project(tmp_path_factory, tiny_model):
    tmp = tmp_path_factory.mktemp("dataset")
    config = project_yaml(tmp, tiny_model, write_jsonl(tmp / "rows.jsonl", _rows()))
    cfg = load_config(config)
    run_prep(cfg.prep, cfg.model)  # with the tokenizer: writes the tokenization cache and the template
    return tmp, config


def _eos_ends_answer(example, eos_id):
    trained = [t for t, m in zip(example["input_ids"], example["completion_mask"], strict=True) if m]
    return trained[-1] == eos_id


def test_drop_policy_trains_only_whole_examples_and_reports_the_count(project):
    tmp, config = project
    cfg = load_config(config, ["tune.max_seq_length=40", f"tune.output_dir={tmp}/drop", *QUICK])
    tok = load_tokenizer(cfg.model)
    data = load_training_data(cfg, tok)
    train = data.truncation["train"]
    assert train.policy == "drop" and 0 < train.over_limit == train.dropped < train.examples
    assert len(data.train) == train.kept
    assert all(len(ex["input_ids"]) <= 40 and _eos_ends_answer(ex, tok.eos_token_id) for ex in data.train)

    result = run_tune(cfg)
    assert result.train_examples == train.kept and result.too_long == train.over_limit  # not the file's row count
    manifest = json.loads((tmp / "drop/run_manifest.json").read_text())
    assert manifest["metrics"]["data"]["truncation"]["train"]["dropped"] == train.over_limit
    assert json.loads((tmp / "metrics/tune.json").read_text())["too_long"] == train.over_limit


def test_refuse_fails_and_truncate_cuts_only_when_asked(project):
    tmp, config = project
    refuse = load_config(config, ["tune.max_seq_length=40", "tune.truncation=refuse"])
    with pytest.raises(DataError, match="longer than tune.max_seq_length=40"):
        load_training_data(refuse, load_tokenizer(refuse.model))
    tok = load_tokenizer(refuse.model)
    everything = load_training_data(load_config(config, ["tune.max_seq_length=4096"]), tok)
    longest = max(len(ex["input_ids"]) for ex in everything.train)
    # One token short of the longest example: its prompt fits, the end of its answer does not.
    cut = load_config(config, [f"tune.max_seq_length={longest - 1}", "tune.truncation=truncate"])
    data = load_training_data(cut, tok)
    assert data.truncation["train"].truncated > 0 and data.truncation["train"].dropped == 0
    assert any(not _eos_ends_answer(ex, tok.eos_token_id) for ex in data.train)  # what `truncate` means


def test_tune_reads_prep_tokenization_cache_and_it_matches_rendering(project):
    tmp, config = project
    cfg = load_config(config, ["tune.max_seq_length=4096"])
    tok = load_tokenizer(cfg.model)
    data = load_training_data(cfg, tok)
    assert data.source.startswith("prep tokenization cache ")
    renderer = ChatRenderer(tok, data.template, "test", str(cfg.model.base))
    rows = [json.loads(line) for line in (tmp / "processed/train.jsonl").read_text().splitlines()]
    assert data.train == [_render(renderer, row) for row in rows]
    # A tune config whose rendering differs from prep's (another system prompt) cannot use the cache.
    other = load_config(config, ["prep.system_prompt=Be brief.", "tune.max_seq_length=4096"])
    assert load_training_data(other, tok).source.startswith("rendered by tune")


def test_template_chosen_in_prep_travels_to_the_tuned_model(tmp_path, tiny_model):
    bare = tmp_path / "bare"
    shutil.copytree(tiny_model, bare)
    (bare / "chat_template.jinja").unlink(missing_ok=True)
    tok_cfg = json.loads((bare / "tokenizer_config.json").read_text())
    tok_cfg.pop("chat_template", None)
    (bare / "tokenizer_config.json").write_text(json.dumps(tok_cfg))
    assert not load_tokenizer(load_config(None, [f"model.base={bare}"]).model).chat_template

    config = project_yaml(tmp_path, bare, write_jsonl(tmp_path / "rows.jsonl", make_rows(60)))
    cfg = load_config(config, [*QUICK])
    with pytest.raises(ConfigError, match="no chat template") as err:  # not transformers' traceback
        load_training_data(cfg, load_tokenizer(cfg.model))
    assert "prep.tokenize.template: chatml" in err.value.hint

    cfg = load_config(config, ["prep.tokenize.template=chatml", *QUICK])
    run_prep(cfg.prep, cfg.model)
    chatml, _ = resolve_template(load_tokenizer(cfg.model), "chatml")
    assert (tmp_path / "processed/chat_template.jinja").read_text() == chatml
    # tune's own config does not name the template: it comes with the data
    run_tune(load_config(config, [*QUICK]))
    tuned = load_tokenizer(cfg.model, path=str(tmp_path / "tune"))
    assert tuned.chat_template == chatml  # what eval and serve load
