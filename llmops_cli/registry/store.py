"""A local model registry: an SQLite index (WAL) and a content-addressed blob store.

Blobs are written first (each atomically, named by its sha256), then one transaction inserts the
version with all its file rows. A crash before the commit leaves at most unreferenced blobs, never
a half-visible version; versions are never modified after the commit.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import sqlite3
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llmops_cli.errors import RegistryError

if TYPE_CHECKING:
    from llmops_cli.config.schema import ProjectConfig
from llmops_cli.utils import hash_tree, sha256_file, tree_digest

NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
ALIAS_RE = re.compile(r"^[a-z][a-z0-9_-]{0,31}$")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS versions (
    name TEXT NOT NULL, version INTEGER NOT NULL, digest TEXT NOT NULL, created_at TEXT NOT NULL,
    created_by TEXT NOT NULL, forced INTEGER NOT NULL DEFAULT 0, force_reason TEXT,
    manifest TEXT NOT NULL, PRIMARY KEY (name, version));
CREATE TABLE IF NOT EXISTS files (
    name TEXT NOT NULL, version INTEGER NOT NULL, path TEXT NOT NULL, sha256 TEXT NOT NULL,
    size INTEGER NOT NULL, PRIMARY KEY (name, version, path));
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER NOT NULL, updated_at TEXT NOT NULL,
    PRIMARY KEY (name, alias));
CREATE TABLE IF NOT EXISTS alias_history (
    id INTEGER PRIMARY KEY AUTOINCREMENT, name TEXT NOT NULL, alias TEXT NOT NULL, version INTEGER,
    previous INTEGER, actor TEXT NOT NULL, reason TEXT, at TEXT NOT NULL);
"""


@dataclass(frozen=True)
class Version:
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

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ref": self.ref}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise RegistryError(
            f"invalid model name {name!r}",
            hint="use 1-64 letters, digits, '.', '_' or '-', starting with a letter or digit",
        )
    return name


class LocalRegistry:
    """The registry under one root directory. Safe for concurrent processes (SQLite locking)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.root / "index.sqlite", timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.executescript(_SCHEMA)
            yield conn
        finally:
            conn.close()

    # -- writing ---------------------------------------------------------------------------------
    def add(self, name: str, source_dir: str | Path, manifest: dict[str, Any], forced_reason: str | None = None,
            extra_files: dict[str, bytes] | None = None) -> tuple[Version, bool]:
        """Store source_dir (plus generated `extra_files`, e.g. the model card) as a new version of
        `name`; returns (version, created). Identical content already registered under this name
        returns that version instead of a duplicate."""
        check_name(name)
        source = Path(source_dir)
        if not source.is_dir():
            raise RegistryError(f"nothing to register: {source} is not a directory",
                                hint="run `llmops tune` first")
        with tempfile.TemporaryDirectory() as extra_dir:
            for rel, data in (extra_files or {}).items():
                (Path(extra_dir) / rel).parent.mkdir(parents=True, exist_ok=True)
                (Path(extra_dir) / rel).write_bytes(data)
            sources = {p: source / p for p in hash_tree(source) if not p.startswith("checkpoints/")}
            sources.update({rel: Path(extra_dir) / rel for rel in extra_files or {}})
            files = {rel: sha256_file(path) for rel, path in sorted(sources.items())}
            for rel, sha in files.items():
                self._put_blob(sources[rel], sha)
            sizes = {rel: sources[rel].stat().st_size for rel in files}
        return self._commit_version(name, files, sizes, manifest, forced_reason)

    def _commit_version(self, name: str, files: dict[str, str], sizes: dict[str, int], manifest: dict[str, Any],
                        forced_reason: str | None) -> tuple[Version, bool]:
        digest = tree_digest(files)
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")  # serialises writers: version numbers never collide
            try:
                row = conn.execute("SELECT version FROM versions WHERE name=? AND digest=?",
                                   (name, digest)).fetchone()
                if row:
                    conn.execute("ROLLBACK")
                    return self.get(name, row[0]), False
                number = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name=?",
                                      (name,)).fetchone()[0]
                conn.execute(
                    "INSERT INTO versions VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, number, digest, _now(), _actor(), int(forced_reason is not None), forced_reason,
                     json.dumps({**manifest, "files": files}, sort_keys=True, default=str)),
                )
                conn.executemany(
                    "INSERT INTO files VALUES (?, ?, ?, ?, ?)",
                    [(name, number, rel, sha, sizes[rel]) for rel, sha in files.items()],
                )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return self.get(name, number), True

    def _put_blob(self, path: Path, sha: str) -> None:
        target = self.blobs / sha[:2] / sha
        if target.exists():
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".incoming-")
        os.close(fd)
        try:
            shutil.copyfile(path, tmp)
            if sha256_file(tmp) != sha:
                raise RegistryError(f"{path} changed while it was being registered")
            os.chmod(tmp, 0o444)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)

    # -- reading ---------------------------------------------------------------------------------
    def get(self, name: str, version: int) -> Version:
        with self._db() as conn:
            row = conn.execute("SELECT * FROM versions WHERE name=? AND version=?", (name, version)).fetchone()
        if not row:
            raise RegistryError(f"no version {name}:{version}", hint="`llmops register list` shows versions")
        return Version(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], json.loads(row[7]))

    def list(self, name: str | None = None) -> list[Version]:
        query = "SELECT name, version FROM versions" + (" WHERE name=?" if name else "") + " ORDER BY name, version"
        with self._db() as conn:
            keys = conn.execute(query, (name,) if name else ()).fetchall()
        return [self.get(n, v) for n, v in keys]

    def resolve(self, ref: str, default_name: str | None = None) -> Version:
        """NAME:VERSION, NAME@ALIAS, NAME (latest), or latest / @ALIAS / :N for default_name."""
        name, alias, number = _parse_ref(ref, default_name)
        check_name(name)
        if number is not None:
            return self.get(name, number)
        with self._db() as conn:
            if alias in (None, "latest"):
                row = conn.execute("SELECT MAX(version) FROM versions WHERE name=?", (name,)).fetchone()
            else:
                row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
        if not row or row[0] is None:
            raise RegistryError(f"nothing registered as {ref!r}", hint="run `llmops register` first")
        return self.get(name, row[0])

    def aliases(self, name: str) -> dict[str, int]:
        with self._db() as conn:
            return dict(conn.execute("SELECT alias, version FROM aliases WHERE name=?", (name,)).fetchall())

    def set_alias(self, name: str, alias: str, version: int, actor: str, reason: str | None) -> int | None:
        """Point `alias` at `version` (recorded in the alias history); returns the previous version."""
        check_alias(alias)
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not conn.execute("SELECT 1 FROM versions WHERE name=? AND version=?", (name, version)).fetchone():
                    raise RegistryError(f"no version {name}:{version}", hint="`llmops register list` shows versions")
                row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
                previous = row[0] if row else None
                conn.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?)", (name, alias, version, _now()))
                conn.execute("INSERT INTO alias_history (name, alias, version, previous, actor, reason, at) "
                             "VALUES (?, ?, ?, ?, ?, ?, ?)", (name, alias, version, previous, actor, reason, _now()))
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        return previous

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Every change of an alias (or of all aliases of `name`), oldest first."""
        query = "SELECT alias, version, previous, actor, reason, at FROM alias_history WHERE name=?"
        args: tuple[Any, ...] = (name,)
        if alias:
            query, args = query + " AND alias=?", (name, alias)
        with self._db() as conn:
            rows = conn.execute(query + " ORDER BY id", args).fetchall()
        keys = ("alias", "version", "previous", "actor", "reason", "at")
        return [dict(zip(keys, row, strict=True)) for row in rows]

    def rollback_target(self, name: str, alias: str) -> int:
        """The version `alias` pointed at before its current one (walking back over earlier rollbacks)."""
        return self._rollback_from_history(self.aliases(name).get(alias), self.alias_history(name, alias), name, alias)

    @staticmethod
    def _rollback_from_history(current: int | None, history: list[dict[str, Any]], name: str, alias: str) -> int:
        if current is None:
            raise RegistryError(f"{name}@{alias} is not set: nothing to roll back")
        # Replay the history as a stack: a rollback pops, any other change pushes.
        stack: list[int] = []
        for event in history:
            if (event["reason"] or "").startswith("rollback") and stack:
                stack.pop()
            else:
                stack.append(event["version"])
        if len(stack) < 2 or stack[-1] != current:
            raise RegistryError(f"{name}@{alias} has no earlier version to roll back to",
                                hint="promote a specific version instead")
        return stack[-2]

    def gc(self, dry_run: bool = False) -> dict[str, Any]:
        """Delete blobs no version references (and leftovers of interrupted copies)."""
        with self._db() as conn:
            referenced = {row[0] for row in conn.execute("SELECT DISTINCT sha256 FROM files")}
        removed, freed = [], 0
        for blob in sorted(self.blobs.glob("*/*")) if self.blobs.is_dir() else []:
            if blob.name in referenced:
                continue
            if blob.name.startswith(".incoming-") and time.time() - blob.stat().st_mtime < 3600:
                continue  # possibly a registration in progress right now
            removed.append(blob.name)
            freed += blob.stat().st_size
            if not dry_run:
                blob.unlink()
        return {"removed": len(removed), "bytes": freed, "dry_run": dry_run, "referenced": len(referenced)}

    def verify(self, version: Version) -> list[str]:
        """Problems found re-hashing every blob of a version (empty when intact)."""
        problems = []
        for rel, sha in version.manifest["files"].items():
            blob = self.blobs / sha[:2] / sha
            if not blob.is_file():
                problems.append(f"{rel}: blob missing")
            elif sha256_file(blob) != sha:
                problems.append(f"{rel}: content does not match its sha256")
        return problems

    def materialize(self, version: Version, dest: str | Path | None = None) -> Path:
        """A verified plain directory with the version's files (cached under the registry root)."""
        problems = self.verify(version)
        if problems:
            raise RegistryError(f"{version.ref} failed verification: " + "; ".join(problems[:5]),
                                hint="the registry store was modified or corrupted; re-register the model")
        target = Path(dest) if dest else self.root / "materialized" / version.name / str(version.version)
        if (target / ".complete").is_file():
            return target
        staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".materialize-"))
        try:
            for rel, sha in version.manifest["files"].items():
                out = staging / rel
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(self.blobs / sha[:2] / sha, out)
            (staging / ".complete").write_text(version.digest)
            target.parent.mkdir(parents=True, exist_ok=True)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return target


def open_registry(cfg: ProjectConfig) -> LocalRegistry:
    """The registry the config selects (the MLflow backend shares LocalRegistry's interface)."""
    if cfg.registry.backend == "mlflow":
        from llmops_cli.registry.mlflow_store import MlflowRegistry

        return MlflowRegistry(  # type: ignore[return-value]
            cfg.registry.mlflow_tracking_uri, cache_root=cfg.registry.root,
            artifact_location=cfg.registry.mlflow_artifact_location,
        )
    return LocalRegistry(cfg.registry.root)


def check_alias(alias: str) -> str:
    if not ALIAS_RE.match(alias) or alias == "latest":
        raise RegistryError(f"invalid alias {alias!r}",
                            hint="aliases are lower-case words such as staging or production ('latest' is implicit)")
    return alias


def _parse_ref(ref: str, default_name: str | None) -> tuple[str, str | None, int | None]:
    ref = ref.strip()
    if ref == "latest" or ref.startswith(("@", ":")):
        if not default_name:
            raise RegistryError(f"reference {ref!r} needs a model name", hint="use NAME@alias or NAME:version")
        ref = default_name + ("" if ref == "latest" else ref)
    if "@" in ref:
        name, alias = ref.split("@", 1)
        if not ALIAS_RE.match(alias):
            raise RegistryError(f"invalid alias {alias!r}", hint="aliases are lower-case words like production")
        return name, alias, None
    if ":" in ref:
        name, number = ref.split(":", 1)
        if not number.isdigit():
            raise RegistryError(f"invalid version {number!r} in {ref!r}", hint="versions are integers: NAME:3")
        return name, None, int(number)
    return ref, None, None


def _actor() -> str:
    try:
        return os.environ.get("LLMOPS_USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
