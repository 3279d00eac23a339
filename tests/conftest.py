"""Shared fixtures. Nothing here touches the network: models are scaffolded locally."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path

import pytest

# No hub at run time: any accidental download fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
CATEGORIES = {
    "billing": ["I was charged twice for my {p}", "my invoice shows the wrong amount for {p}",
                "the payment for {p} failed on my card"],
    "shipping": ["my package with the {p} has not arrived", "the tracking for my {p} shows no update",
                 "the delivery of my {p} is late"],
    "account": ["I forgot my password again", "I cannot log in to my account", "please change the email on my account"],
}
PRODUCTS = ["shoes", "laptop", "headphones", "jacket", "phone case", "kettle", "desk lamp"]


def make_rows(n: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        cat = rng.choice(sorted(CATEGORIES))
        text = rng.choice(CATEGORIES[cat]).format(p=rng.choice(PRODUCTS)) + rng.choice([".", "!", " please", ""])
        rows.append({"id": f"R{i:05d}", "message": f"{text} (ref {rng.randint(1000, 99999)})", "category": cat})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_jsonl(tmp_path_factory.mktemp("corpus") / "rows.jsonl", make_rows(600))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory, tiny_corpus: Path) -> Path:
    """A random-initialised 2-layer Llama (hidden 128, 2 heads of 64) with a 512-token BPE tokenizer."""
    from llmops_cli.model.config import ScaffoldSection
    from llmops_cli.model.scaffold import scaffold_model

    out = tmp_path_factory.mktemp("models") / "base"
    scaffold_model(ScaffoldSection(output=str(out), corpus=[str(tiny_corpus)], vocab_size=512,
                                   max_position_embeddings=256))
    return out


def project_yaml(tmp: Path, base: Path, data: Path, **sections: dict) -> Path:
    """A project config whose every path lives under tmp (tests never write into the repo)."""
    import yaml

    cfg = {
        "project": {"name": "test-model"},
        "model": {"base": str(base)},
        "prep": {"sources": [{"path": str(data)}], "fields": {"prompt": "message", "completion": "category",
                                                              "label": "category"},
                 "output_dir": str(tmp / "processed"), "report": str(tmp / "reports/prep.json"),
                 "metrics_file": str(tmp / "metrics/prep.json")},
        "tune": {"data_dir": str(tmp / "processed"), "output_dir": str(tmp / "tune"), "learning_rate": 0.003,
                 "epochs": 2, "batch_size": 16, "max_seq_length": 96, "metrics_file": str(tmp / "metrics/tune.json")},
        "eval": {"data": str(tmp / "processed/test.jsonl"), "adapter": str(tmp / "tune"), "max_new_tokens": 4,
                 "metrics_file": str(tmp / "metrics/eval.json"), "results_file": str(tmp / "reports/eval.json"),
                 "predictions_file": str(tmp / "reports/predictions.jsonl")},
        "register": {"root": str(tmp / "registry"), "model_dir": str(tmp / "tune"),
                     "eval_metrics": str(tmp / "metrics/eval.json"), "prep_report": str(tmp / "reports/prep.json"),
                     "output": str(tmp / "reports/register.json")},
        "serve": {"request_log": str(tmp / "serve/requests.jsonl"),
                  "endpoint_file": str(tmp / "serve/endpoint.json"), "ready_timeout_s": 120},
        "monitor": {"request_log": str(tmp / "serve/requests.jsonl"), "output": str(tmp / "reports/monitor.json")},
    }
    for name, values in sections.items():
        cfg.setdefault(name, {}).update(values)
    path = tmp / "llmops.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    return path


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
