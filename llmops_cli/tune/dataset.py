"""What tune trains on: prep's splits as token ids and trainable masks, rendered with the chat template
prep chose, with examples longer than tune.max_seq_length handled by an explicit policy.

One rendering path: prep's ChatRenderer. When prep's tokenization cache matches (same split files,
tokenizer, template and rendering config) its ids are used as they are; otherwise tune renders the rows
with the same renderer. TRL then receives `input_ids` + `completion_mask` and never applies a template of
its own, so the template prep checked (EOS at the end of every answer) is the one trained, and the one
saved with the tuned model for eval and serve.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_cli.errors import ConfigError, DataError

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

    from llmops_cli.config.schema import ProjectConfig
    from llmops_cli.prep.render import ChatRenderer


@dataclass
class Truncation:
    """What the truncation policy did to one split."""

    policy: str
    max_seq_length: int
    examples: int = 0
    over_limit: int = 0
    dropped: int = 0
    truncated: int = 0

    @property
    def kept(self) -> int:
        return self.examples - self.dropped

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "kept": self.kept}


@dataclass
class TrainingData:
    train: list[dict[str, list[int]]]
    validation: list[dict[str, list[int]]]
    template: str
    template_source: str
    source: str  # where the token ids came from, for the terminal and the run manifest
    truncation: dict[str, Truncation] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {"token_ids": self.source, "chat_template_source": self.template_source,
                "truncation": {name: t.to_dict() for name, t in self.truncation.items()}}


def read_template(cfg: ProjectConfig, tok: PreTrainedTokenizerBase) -> tuple[str, str]:
    """The chat template the data was prepared with: prep's copy beside the splits, else the one
    prep.tokenize.template names (or the tokenizer's own). A base model without any is a config error."""
    from llmops_cli.prep.pipeline import TEMPLATE_FILE
    from llmops_cli.prep.render import resolve_template

    saved = Path(cfg.tune.data_dir) / TEMPLATE_FILE
    if saved.is_file():
        return saved.read_text(encoding="utf-8"), str(saved)
    try:
        return resolve_template(tok, cfg.prep.tokenize.template)
    except ConfigError as exc:
        raise ConfigError(f"{cfg.model.base}: {exc.message}; tune needs one to render the conversations",
                          hint="set prep.tokenize.template: chatml (or a .jinja file) and re-run `llmops prep`, "
                               "so prep, tune, eval and serve all use that template") from None


def load_training_data(cfg: ProjectConfig, tok: PreTrainedTokenizerBase) -> TrainingData:
    """Token ids + completion masks of the train and validation splits, after the truncation policy."""
    from llmops_cli.prep.render import ChatRenderer
    from llmops_cli.tune.data import read_jsonl

    template, template_source = read_template(cfg, tok)
    renderer = ChatRenderer(tok, template, template_source, cfg.prep.tokenize.tokenizer or cfg.model.base)
    data_dir = Path(cfg.tune.data_dir)
    splits = {name: read_jsonl(data_dir / f"{name}.jsonl") for name in ("train", "validation")}
    if not splits["train"]:
        raise DataError(f"{data_dir / 'train.jsonl'} is empty", hint="check the prep report for what was removed")
    cached = _from_cache(cfg, renderer, splits)
    if cached is not None:
        encoded, source = cached
    else:
        encoded = {name: [_render(renderer, row) for row in rows] for name, rows in splits.items()}
        source = "rendered by tune (no matching prep tokenization cache)"
    data = TrainingData([], [], template, template_source, source)
    for name, examples in encoded.items():
        kept, report = apply_truncation(examples, cfg.tune.truncation, cfg.tune.max_seq_length)
        data.truncation[name] = report
        setattr(data, name, kept)
    if not data.train:
        t = data.truncation["train"]
        raise DataError(f"no training example fits tune.max_seq_length={t.max_seq_length}: all {t.examples} are "
                        "longer", hint="raise tune.max_seq_length (prep's report lists token-length percentiles)")
    return data


def _render(renderer: ChatRenderer, row: dict[str, Any]) -> dict[str, list[int]]:
    from llmops_cli.prep.schemas import example_messages

    out = (renderer.render_text(row["text"]) if "text" in row
           else renderer.render_chat(example_messages(row), row.get("tools")))
    return {"input_ids": out.input_ids, "completion_mask": out.mask}


def _from_cache(cfg: ProjectConfig, renderer: ChatRenderer,
                splits: dict[str, list[dict[str, Any]]]) -> tuple[dict[str, list[dict[str, list[int]]]], str] | None:
    """prep's token ids when its cache was made from these very files, tokenizer, template and config."""
    from llmops_cli.prep.cache import find_cache, load_cached_split
    from llmops_cli.prep.pipeline import SPLITS, render_config

    info = renderer.info()
    folder = find_cache(cfg.tune.data_dir, SPLITS, info["tokenizer_sha256"], info["chat_template_sha256"],
                        render_config(cfg.prep))
    if folder is None:
        return None
    encoded = {}
    for name, rows in splits.items():
        cached = load_cached_split(folder, name)
        if [r["id"] for r in cached] != [r.get("id") for r in rows]:  # a key collision cannot happen; be sure
            return None
        encoded[name] = [{"input_ids": list(r["input_ids"]), "completion_mask": [int(m) for m in r["mask"]]}
                         for r in cached]
    return encoded, f"prep tokenization cache {folder}"


def apply_truncation(examples: list[dict[str, list[int]]], policy: str, max_len: int
                     ) -> tuple[list[dict[str, list[int]]], Truncation]:
    """drop: leave out examples longer than max_len; refuse: fail if any is; truncate: cut them (their
    answers lose their end, so the model is taught not to stop) and leave out those with nothing left."""
    report = Truncation(policy, max_len, examples=len(examples))
    kept = []
    for ex in examples:
        if len(ex["input_ids"]) <= max_len:
            kept.append(ex)
            continue
        report.over_limit += 1
        if policy == "truncate":
            cut = {k: v[:max_len] for k, v in ex.items()}
            if any(cut["completion_mask"]):
                report.truncated += 1
                kept.append(cut)
                continue
        report.dropped += 1
    if policy == "refuse" and report.over_limit:
        raise DataError(f"{report.over_limit} of {report.examples} examples are longer than "
                        f"tune.max_seq_length={max_len} tokens (tune.truncation=refuse)",
                        hint="raise tune.max_seq_length, set tune.truncation=drop to leave them out, or cap them "
                             "in prep with prep.tokenize.max_tokens")
    return kept, report
