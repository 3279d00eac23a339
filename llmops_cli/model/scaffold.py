"""Build a small random-initialised Llama with a BPE tokenizer trained on local text.

Nothing is downloaded: the result is an ordinary Hugging Face model directory (config.json,
model.safetensors, tokenizer files with a chat template), so everything downstream loads it through
the same code that loads a hub model.
"""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from importlib.resources import files
from pathlib import Path

from llmops_cli.errors import DataError
from llmops_cli.model.config import ScaffoldSection
from llmops_cli.utils import atomic_write_json, hash_tree, tree_digest

PAD, BOS, EOS = "<|endoftext|>", "<|im_start|>", "<|im_end|>"


@dataclass
class ScaffoldResult:
    output: str
    parameters: int
    vocab_size: int
    corpus_files: list[str]
    digest: str


def chat_template() -> str:
    """The project's ChatML template with {% generation %} markers (assistant-only loss needs them)."""
    return files("llmops_cli.model").joinpath("templates/chatml.jinja").read_text(encoding="utf-8")


def iter_corpus_text(patterns: list[str]) -> Iterator[str]:
    """Every string in the corpus files: jsonl/json values, csv cells, or lines of text files."""
    for path in _expand(patterns):
        if path.suffix == ".csv":
            with path.open(newline="", encoding="utf-8", errors="replace") as fh:
                for row in csv.reader(fh):
                    yield from (cell for cell in row if cell)
            continue
        with path.open(encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if path.suffix in (".jsonl", ".json"):
                    try:
                        obj = json.loads(line)
                    except json.JSONDecodeError:
                        yield line  # malformed rows still carry useful text for a tokenizer
                        continue
                    yield from _strings(obj)
                else:
                    yield line


def _strings(obj: object) -> Iterator[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def _expand(patterns: list[str]) -> list[Path]:
    paths = sorted({Path(p) for pattern in patterns for p in glob.glob(pattern, recursive=True)})
    return [p for p in paths if p.is_file()]


def scaffold_model(cfg: ScaffoldSection) -> ScaffoldResult:
    """Train the tokenizer, build the model and save both under cfg.output."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    corpus = _expand(cfg.corpus)
    if not corpus:
        raise DataError(f"no corpus files match {cfg.corpus}", hint="set scaffold.corpus to existing text files")

    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=cfg.vocab_size,
        special_tokens=[PAD, BOS, EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),  # any byte stays encodable
        show_progress=False,
    )
    bpe.train_from_iterator(iter_corpus_text(cfg.corpus), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe, bos_token=BOS, eos_token=EOS, pad_token=PAD,
        model_max_length=cfg.max_position_embeddings,
    )
    tokenizer.chat_template = chat_template()

    torch.manual_seed(cfg.seed)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_layers,
        num_attention_heads=cfg.num_heads,
        num_key_value_heads=cfg.num_heads,
        head_dim=cfg.hidden_size // cfg.num_heads,
        max_position_embeddings=cfg.max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id, do_sample=False
    )
    out = Path(cfg.output)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    files_hashes = hash_tree(out)
    files_hashes.pop("scaffold.json", None)
    digest = tree_digest(files_hashes)
    result = ScaffoldResult(
        output=str(out),
        parameters=sum(p.numel() for p in model.parameters()),
        vocab_size=len(tokenizer),
        corpus_files=[str(p) for p in corpus],
        digest=digest,
    )
    atomic_write_json(out / "scaffold.json", {**result.__dict__, "config": cfg.model_dump(), "files": files_hashes})
    return result
