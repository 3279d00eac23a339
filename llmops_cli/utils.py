"""Small shared helpers: atomic writes, hashing, git and package lineage."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import tempfile
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import Any


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write text so that readers see the old file or the new one, never half of it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = temp_beside(path)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def temp_beside(path: Path) -> tuple[int, str]:
    """A temp file next to `path` (same filesystem, so os.replace is atomic) with the usual
    permissions: mkstemp alone makes 0600, which would leave every output owner-only."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.fchmod(fd, 0o666 & ~_umask())
    return fd, tmp


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def atomic_write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON lines atomically; returns the number of rows."""
    count = 0
    lines = []
    for row in rows:
        lines.append(json.dumps(row, ensure_ascii=False))
        count += 1
    atomic_write_text(path, "\n".join(lines) + ("\n" if lines else ""))
    return count


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def copy_hashing(src: str | Path, dst: str | Path, chunk: int = 1 << 20) -> tuple[str, int]:
    """Copy src to dst and return (sha256, size) of what was copied: one read of every byte."""
    digest, size = hashlib.sha256(), 0
    with open(src, "rb") as fin, open(dst, "wb") as fout:
        while block := fin.read(chunk):
            digest.update(block)
            fout.write(block)
            size += len(block)
    return digest.hexdigest(), size


def hash_tree(root: str | Path) -> dict[str, str]:
    """sha256 of every file under root, keyed by relative POSIX path (sorted)."""
    root = Path(root)
    if root.is_file():
        return {root.name: sha256_file(root)}
    return {
        p.relative_to(root).as_posix(): sha256_file(p)
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.startswith(".")
    }


def check_hashes(root: str | Path, expected: dict[str, str], others: Collection[str] | None = None) -> list[str]:
    """Problems found re-hashing the files under root against {relative path: sha256} (empty when intact).
    With `others` (the names allowed beside `expected`), any other file under root, hidden ones and links
    included, is a problem too, and a link never passes for a file: the check for a copy that must hold
    exactly a registered version."""
    root = Path(root)
    strict = others is not None
    problems = []
    if strict:
        present = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() or p.is_symlink()}
        problems += [f"{rel}: not part of the version" for rel in sorted(present - set(expected) - set(others))]
    for rel, sha in expected.items():
        path = root / rel
        if not path.is_file():
            problems.append(f"{rel}: missing")
        elif (strict and path.is_symlink()) or sha256_file(path) != sha:
            problems.append(f"{rel}: content does not match its sha256")
    return problems


def tree_digest(files: dict[str, str]) -> str:
    """One digest for a set of file hashes (order independent)."""
    return hashlib.sha256(json.dumps(files, sort_keys=True).encode()).hexdigest()


def flatten(obj: Any, prefix: str = "") -> dict[str, Any]:
    """Nested dicts as one level of dotted keys: {"tune": {"lr": 1}} -> {"tune.lr": 1}."""
    if not isinstance(obj, dict):
        return {prefix[:-1]: obj}
    out: dict[str, Any] = {}
    for key, value in obj.items():
        out.update(flatten(value, f"{prefix}{key}."))
    return out


def git_commit(cwd: str | Path = ".") -> str | None:
    """Current commit (with a -dirty suffix for uncommitted changes), or None outside git."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=cwd, capture_output=True, text=True, timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{commit}-dirty" if dirty else commit


def package_versions(names: Iterable[str] = ("llmops-cli", "torch", "transformers", "peft", "trl",
                                               "datasets", "tokenizers", "accelerate")) -> dict[str, str]:
    """Installed versions of the packages that decide a run's result (the run's lockfile)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            continue
    return out
