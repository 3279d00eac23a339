"""A version's lineage manifest: what it was built from, with which settings, in which environment.

`build_manifest` is the one place that assembles it; the model card is rendered from the stored
record (card.model_card), so the two never disagree.
"""

from __future__ import annotations

import glob
import hashlib
import importlib.util
import platform
import re
from pathlib import Path
from typing import Any

from llmops_cli.config.base import Section
from llmops_cli.config.schema import ProjectConfig
from llmops_cli.prep.config import SourceSpec
from llmops_cli.prep.readers import is_saved_dataset
from llmops_cli.registry.base import os_user
from llmops_cli.registry.card import chat_template_of, serve_readiness
from llmops_cli.utils import git_commit, hash_tree, package_versions, sha256_file, tree_digest

# Files that decide how text becomes token ids (and back), whichever a tokenizer saved.
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja",
                   "added_tokens.json", "vocab.json", "vocab.txt", "merges.txt")
TOKENIZER_SUFFIXES = (".model", ".tiktoken")  # sentencepiece / tiktoken vocabularies
EVAL_KEYS = ("n", "base", "tuned", "delta", "gates", "gates_passed", "data")
EVAL_OPTIONAL_KEYS = ("production", "delta_production", "parity")
URL_CREDENTIALS = re.compile(r"(://)[^/@\s]+@")


def build_manifest(cfg: ProjectConfig, model_dir: Path, run: dict[str, Any], evaluation: dict[str, Any],
                   prep: dict[str, Any]) -> dict[str, Any]:
    """The lineage manifest of the model in model_dir, from the tune run manifest, eval metrics and prep report.
    JSON-serialisable; apart from the environment, commit and OS user it depends only on its inputs' content."""
    model_dir = Path(model_dir)
    base_id = (run.get("base_model") or {}).get("id") or cfg.model.base
    return {
        "base_model": run.get("base_model"),
        "adapter": (model_dir / "adapter_config.json").is_file(),
        "training": {"config": run.get("config"), "metrics": run.get("metrics"), "data": run.get("data")},
        "data": {
            "prep_hashes": prep.get("hashes"),
            "splits": prep.get("splits"),
            "sources": source_lineage(cfg.prep.sources, prep),
            "prep_config": section_config(cfg.prep),
        },
        "eval": eval_lineage(evaluation, cfg),
        "tokenizer": tokenizer_lineage(model_dir),
        "register": {"config": section_config(cfg.registry)},
        "git_commit": git_commit(),
        "packages": package_versions(),
        "environment": environment(),
        "train_git_commit": run.get("git_commit"),
        "train_packages": run.get("packages"),
        "registered_by_os_user": os_user(),
        "license": license_of(cfg.registry.license, base_id),
        "serve_readiness": serve_readiness(model_dir, prep),
    }


def section_config(section: Section) -> dict[str, Any]:
    """A config section as written in YAML (aliases). Configs hold no secrets (only the names of the
    variables that do), but a URL may carry user:password@: that part is masked."""
    return _mask_url_credentials(section.model_dump(mode="json", by_alias=True))


def _mask_url_credentials(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _mask_url_credentials(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask_url_credentials(item) for item in value]
    return URL_CREDENTIALS.sub(r"\1***@", value) if isinstance(value, str) else value


def eval_lineage(evaluation: dict[str, Any], cfg: ProjectConfig) -> dict[str, Any]:
    """Eval results as register records them: metrics, gates, safety (None when not run), the eval config."""
    out = {key: evaluation.get(key) for key in EVAL_KEYS}
    out["safety"] = evaluation.get("safety")
    out.update({key: evaluation[key] for key in EVAL_OPTIONAL_KEYS if key in evaluation})
    out["config"] = section_config(cfg.eval)
    return out


def source_lineage(sources: list[SourceSpec], prep: dict[str, Any]) -> list[dict[str, Any]]:
    """{path, sha256, bytes} of every raw file the configured prep sources name, as they are now.
    A missing one is recorded as {path, missing: true}; a hub dataset by id (its content is not local)."""
    per_source = prep.get("per_source") or {}
    out: list[dict[str, Any]] = []
    for spec in sources:
        if spec.path is None:
            out.append({"hub": spec.hub, "split": spec.split, "sha256": None})
            continue
        for entry in _path_entries(spec.path):
            rows = per_source.get(entry["path"]) or {}
            out.append({**entry, **{k: rows[k] for k in ("rows_in", "rows_out") if k in rows}})
    return out


def _path_entries(pattern: str) -> list[dict[str, Any]]:
    if not glob.has_magic(pattern):
        path = Path(pattern)
        if path.is_file():
            return [file_entry(path)]
        return [_dir_entry(path)] if path.is_dir() else [{"path": str(path), "missing": True}]
    entries = []
    for name in sorted(glob.glob(pattern, recursive=True)):
        path = Path(name)
        if path.is_file():
            entries.append({**file_entry(path), "pattern": pattern})
        elif is_saved_dataset(path):
            entries.append({**_dir_entry(path), "pattern": pattern})
    return entries or [{"path": pattern, "missing": True}]


def file_entry(path: Path) -> dict[str, Any]:
    """sha256 and size of a file read once in blocks (size and hash describe the same bytes)."""
    digest = hashlib.sha256()
    size = 0
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
            size += len(block)
    return {"path": str(path), "sha256": digest.hexdigest(), "bytes": size}


def _dir_entry(path: Path) -> dict[str, Any]:
    files = hash_tree(path)
    return {"path": str(path), "sha256": tree_digest(files), "bytes": sum((path / f).stat().st_size for f in files),
            "files": len(files)}


def tokenizer_lineage(model_dir: Path) -> dict[str, Any]:
    """{files: {name: sha256}, sha256: one digest over them, chat_template_sha256} of the saved tokenizer."""
    files = {}
    for path in sorted(model_dir.iterdir()) if model_dir.is_dir() else []:
        if path.is_file() and (path.name in TOKENIZER_FILES or path.suffix in TOKENIZER_SUFFIXES):
            files[path.name] = sha256_file(path)
    template = chat_template_of(model_dir)
    return {"files": files, "sha256": tree_digest(files) if files else None,
            "chat_template_sha256": hashlib.sha256(template.encode()).hexdigest() if template else None}


def environment() -> dict[str, Any]:
    """The full lockfile: interpreter, platform, every installed distribution and torch's build."""
    libc = " ".join(part for part in platform.libc_ver() if part)
    return {
        "python": {"version": platform.python_version(), "implementation": platform.python_implementation()},
        "platform": {"system": platform.system(), "release": platform.release(), "machine": platform.machine(),
                     "libc": libc or None},
        "packages": installed_distributions(),
        "torch": torch_build(),
    }


def installed_distributions() -> dict[str, str]:
    """{normalised name: version} of every installed distribution, sorted."""
    from importlib.metadata import distributions

    out: dict[str, str] = {}
    for dist in distributions():
        name = dist.metadata["Name"]
        if name:
            # The first one found on sys.path is the one that is imported: later duplicates are shadowed.
            out.setdefault(re.sub(r"[-_.]+", "-", name).lower(), dist.version)
    return dict(sorted(out.items()))


def torch_build() -> dict[str, Any] | None:
    """torch's version and build (CUDA, cuDNN, debug), or None when torch is not installed."""
    if importlib.util.find_spec("torch") is None:
        return None
    try:
        import torch
    except Exception as exc:  # a broken install is worth recording, not a reason to refuse registering
        return {"error": f"{type(exc).__name__}: {exc}"}
    try:
        cudnn = torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None
    except Exception:  # cuDNN present but unloadable
        cudnn = None
    return {"version": str(torch.__version__), "cuda": torch.version.cuda, "hip": getattr(torch.version, "hip", None),
            "cudnn": cudnn, "debug": bool(torch.version.debug), "git_version": torch.version.git_version}


def license_of(configured: str | None, base: str) -> str:
    """register.license, else the `license:` of a local base model's README front matter, else "unknown"."""
    if configured:
        return configured
    readme = Path(base) / "README.md"
    if not readme.is_file():
        return "unknown"  # a hub id: never fetched here
    found = _front_matter(readme.read_text(encoding="utf-8", errors="replace")).get("license")
    if isinstance(found, list):
        found = ", ".join(str(item) for item in found)
    return str(found).strip() if found else "unknown"


def _front_matter(text: str) -> dict[str, Any]:
    import yaml

    lines = text.splitlines()
    if not lines or lines[0].strip() != "---":
        return {}
    end = next((i for i, line in enumerate(lines[1:], start=1) if line.strip() == "---"), None)
    if end is None:
        return {}
    try:
        data = yaml.safe_load("\n".join(lines[1:end]))
    except yaml.YAMLError:
        return {}
    return data if isinstance(data, dict) else {}
