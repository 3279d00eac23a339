"""The tokenization cache: token ids and trainable masks of every split, stored under a folder
named by the content hash of everything that decides them (the split files, the tokenizer, the chat
template and the prep config that shapes rendering). A change to any of them gives another key, so
a stale cache cannot be read: a reader computes the key from what it has and finds that folder or
nothing. The manifest inside repeats every component for humans and for `verify_cache`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from llmops_cli.errors import DataError
from llmops_cli.utils import check_hashes, sha256_file

CACHE_DIR = "tokenized"
MANIFEST = "manifest.json"
FORMAT_VERSION = 1  # bump when the cache layout changes: old caches then simply miss


def cache_key(split_hashes: dict[str, str], tokenizer_sha256: str, chat_template_sha256: str,
              render_config: dict[str, Any]) -> str:
    """sha256 over data + tokenizer + template + config (order independent)."""
    payload = {"format": FORMAT_VERSION, "data": dict(sorted(split_hashes.items())),
               "tokenizer": tokenizer_sha256, "template": chat_template_sha256, "config": render_config}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def cache_path(output_dir: str | Path, key: str) -> Path:
    return Path(output_dir) / CACHE_DIR / key[:16]


def find_cache(output_dir: str | Path, splits: tuple[str, ...], tokenizer_sha256: str, chat_template_sha256: str,
               render_config: dict[str, Any]) -> Path | None:
    """The cache folder matching the current split files, tokenizer, template and config, or None."""
    out = Path(output_dir)
    hashes = {}
    for name in splits:
        path = out / f"{name}.jsonl"
        if not path.is_file():
            return None
        hashes[name] = sha256_file(path)
    key = cache_key(hashes, tokenizer_sha256, chat_template_sha256, render_config)
    folder = cache_path(out, key)
    manifest = folder / MANIFEST
    if not manifest.is_file() or json.loads(manifest.read_text(encoding="utf-8")).get("key") != key:
        return None
    return folder


def verify_cache(folder: str | Path) -> list[str]:
    """Problems with a cache folder: missing or altered files (empty list when it is intact)."""
    folder = Path(folder)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        return [f"unreadable manifest: {exc}"]
    return check_hashes(folder, manifest.get("files", {}))


def load_cached_split(folder: str | Path, split: str) -> list[dict[str, Any]]:
    """Rows {id, input_ids, mask, n_tokens} of one split from a verified cache folder."""
    import pyarrow.parquet as pq

    problems = verify_cache(folder)
    if problems:
        raise DataError(f"tokenization cache {folder} is damaged: {problems[0]}", hint="re-run `llmops prep`")
    return pq.read_table(Path(folder) / f"{split}.parquet").to_pylist()
