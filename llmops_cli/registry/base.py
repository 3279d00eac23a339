"""The registry interface every backend implements, the version record, and what "the model" is.

Callers never construct a backend: they call `open_registry(cfg)` (registry/factory.py) and use this
Protocol, so register, eval's production comparison, serve, reload, rollback and export behave the
same on the local store and on MLflow.
"""

from __future__ import annotations

import getpass
import hashlib
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from llmops_cli.errors import RefError
from llmops_cli.utils import sha256_file, tree_digest

# Not model content: training state (checkpoints/, the Trainer's pickled training_args.bin, which
# nothing that serves a model reads), the tune run's own record (its timings differ on every run; its
# lineage goes into the version manifest) and the card, which the registry renders from the manifest.
EXCLUDED_TOP_LEVEL = ("README.md", "run_manifest.json", "training_args.bin")
EXCLUDED_DIRS = ("checkpoints",)
CARD_FILE = "README.md"
COMPLETE_MARK = ".complete"


def model_files(model_dir: str | Path) -> dict[str, Path]:
    """The files that make up a model directory's content, keyed by relative POSIX path (sorted).
    Eval's model hash and the registry's version digest are both computed over exactly these."""
    root = Path(model_dir)
    out: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        rel = path.relative_to(root)
        if any(part.startswith(".") for part in rel.parts) or rel.parts[0] in EXCLUDED_DIRS:
            continue
        if len(rel.parts) == 1 and rel.name in EXCLUDED_TOP_LEVEL:
            continue
        out[rel.as_posix()] = path
    return out


def model_digest(model_dir: str | Path) -> tuple[str, dict[str, str]]:
    """(digest, {path: sha256}) of a model directory's content (reads every file once)."""
    files = {rel: sha256_file(path) for rel, path in model_files(model_dir).items()}
    return tree_digest(files), files  # a version's identity: the registry's digest is the same


@dataclass(frozen=True)
class Version:
    """One immutable registered version. `manifest` holds the lineage and `manifest["files"]`."""

    name: str
    version: int
    digest: str
    created_at: str
    created_by: str
    forced: bool
    force_reason: str | None
    manifest: dict[str, Any]

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def files(self) -> dict[str, str]:
        return dict(self.manifest.get("files") or {})

    def seal(self) -> str:
        """sha256 over the whole record: stored at registration, recomputed by `verify`, so an edit of
        the index (metrics, actor, a file's sha, the digest) is detected. It detects edits made by
        anything but llmops; it is not a signature against someone who recomputes it."""
        record = {k: getattr(self, k) for k in ("name", "version", "digest", "created_at", "created_by",
                                                "forced", "force_reason", "manifest")}
        return hashlib.sha256(json.dumps(record, sort_keys=True, default=str).encode()).hexdigest()

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ref": self.ref}


class Registry(Protocol):
    """What register, eval, serve, reload, promote, rollback, verify, export and gc use."""

    def add(self, name: str, source_dir: str | Path, manifest: dict[str, Any], forced_reason: str | None = None,
            expected_digest: str | None = None) -> tuple[Version, bool]:
        """Store model_files(source_dir) as a new version (or return the version with identical content,
        created=False). With expected_digest, refuse (ModelMismatch) content that hashes differently,
        before anything becomes visible. Every file is read once."""
        ...

    def get(self, name: str, version: int) -> Version: ...

    def list(self, name: str | None = None) -> list[Version]: ...

    def resolve(self, ref: str, default_name: str | None = None) -> Version:
        """NAME:VERSION, NAME@ALIAS, NAME (latest), or latest / @ALIAS / :N for default_name."""
        ...

    def aliases(self, name: str) -> dict[str, int]: ...

    def set_alias(self, name: str, alias: str, version: int, actor: str, reason: str | None,
                  action: str = "promote") -> int | None:
        """Point alias at version, recorded in the history with `action` (promote, rollback, revert);
        returns the previous version. Concurrent calls never lose history entries."""
        ...

    def delete_alias(self, name: str, alias: str, actor: str, reason: str | None) -> None:
        """Unset an alias (history: action `revert`, version None): undoes a first promotion."""
        ...

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Changes oldest first: {alias, version, previous, action, actor, os_user, reason, at}."""
        ...

    def rollback_target(self, name: str, alias: str) -> int: ...

    def verify(self, version: Version) -> list[str]:
        """Problems (empty when intact): the record's seal, digest vs file list, every stored file's
        sha256, and a materialised copy if one exists."""
        ...

    def materialize(self, version: Version) -> Path:
        """A read-only plain directory with the version's files and its card, verified before it is
        returned (rebuilt from the store when it was modified)."""
        ...

    def gc(self, dry_run: bool = False) -> dict[str, Any]:
        """Reclaim what no version references; never what an in-flight registration is writing."""
        ...


def rollback_target_from_history(current: int | None, history: list[dict[str, Any]], name: str, alias: str) -> int:
    """The version before the current one, replaying the history as a stack: a rollback pops, any other
    change pushes. The entry's `action` decides, never its free-text reason."""
    from llmops_cli.errors import RegistryError

    if current is None:
        raise RegistryError(f"{name}@{alias} is not set: nothing to roll back")
    stack: list[int] = []
    for event in history:
        # "revert": a promotion undone because its --reload failed; it pops like a rollback.
        if event.get("action") in ("rollback", "revert") and stack:
            stack.pop()
        else:
            stack.append(event["version"])
    if len(stack) < 2 or stack[-1] != current:
        raise RegistryError(f"{name}@{alias} has no earlier version to roll back to",
                            hint="promote a specific version instead")
    return stack[-2]


NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$", re.ASCII)
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$", re.ASCII)
# ASCII digits only ("²" and "١" are str.isdigit()), at most 9 so the number fits every store.
VERSION_RE = re.compile(r"^[0-9]{1,9}$", re.ASCII)


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise RefError(f"invalid model name {name!r}",
                       hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit")
    return name


def check_alias(alias: str) -> str:
    if not ALIAS_RE.match(alias) or alias == "latest":
        raise RefError(f"invalid alias {alias!r}",
                       hint="aliases are lower-case words such as staging or production ('latest' is implicit)")
    return alias


def parse_ref(ref: str, default_name: str | None) -> tuple[str, str | None, int | None]:
    """(name, alias, version) of NAME:VERSION, NAME@ALIAS, NAME, latest, @ALIAS or :N; RefError if malformed."""
    ref = ref.strip()
    if ref == "latest" or ref.startswith(("@", ":")):
        if not default_name:
            raise RefError(f"reference {ref!r} needs a model name", hint="use NAME@alias or NAME:version")
        ref = default_name + ("" if ref == "latest" else ref)
    alias = number = None
    if "@" in ref:
        ref, alias = ref.split("@", 1)
        if alias != "latest":
            check_alias(alias)
    elif ":" in ref:
        ref, text = ref.split(":", 1)
        if not VERSION_RE.match(text) or int(text) == 0:
            raise RefError(f"invalid version {text!r}", hint="versions are positive integers: NAME:3")
        number = int(text)
    return check_name(ref), alias, number


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def os_user() -> str:
    """The account running the command (recorded beside any --by name, which anyone can type)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def actor() -> str:
    return os.environ.get("LLMOPS_USER") or os_user()
