"""A local model registry: an SQLite index (WAL) and a content-addressed blob store.

Blobs are written first (each atomically, named by its sha256, hashed while it is copied), then one
transaction inserts the version, its file rows and the record's seal. A crash before the commit leaves
at most unreferenced blobs, never a half-visible version; versions are never modified after the commit.

gc and writers share one lock file: registrations and materialisations hold it shared for their whole
run, gc holds it exclusively, so gc never sees the blobs of a version that is not committed yet.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from llmops_cli.errors import ModelMismatch, RefError, RegistryError
from llmops_cli.registry.base import (
    CARD_FILE,
    COMPLETE_MARK,
    Version,
    actor,
    check_alias,
    check_name,
    model_files,
    now,
    os_user,
    parse_ref,
    rollback_target_from_history,
)
from llmops_cli.utils import check_hashes, copy_hashing, sha256_file, tree_digest

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
# Columns added after the first release: added in place to older indexes.
_ADDED_COLUMNS = {"versions": {"seal": "TEXT"}, "alias_history": {"action": "TEXT", "os_user": "TEXT"}}


class LocalRegistry:
    """The registry under one root directory. Safe for concurrent processes (SQLite + a lock file)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "blobs" / "sha256"
        self.copies = self.root / "materialized"

    @contextmanager
    def _db(self) -> Iterator[sqlite3.Connection]:
        self.root.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.root / "index.sqlite", timeout=60, isolation_level=None)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA busy_timeout=60000")
            conn.executescript(_SCHEMA)
            for table, columns in _ADDED_COLUMNS.items():
                have = {row[1] for row in conn.execute(f"PRAGMA table_info({table})")}
                for column, kind in columns.items():
                    if column not in have:
                        try:
                            conn.execute(f"ALTER TABLE {table} ADD COLUMN {column} {kind}")
                        except sqlite3.OperationalError:  # another process added it first
                            pass
            yield conn
        finally:
            conn.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction. BEGIN IMMEDIATE serialises writers (version numbers never collide,
        an alias move and its history entry land together); any exception rolls it back."""
        with self._db() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    @contextmanager
    def _lock(self, exclusive: bool) -> Iterator[None]:
        """Writers (shared) against gc (exclusive). flock is released by the kernel when a process
        dies, so a killed registration never blocks gc for good."""
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / "gc.lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    # -- writing ---------------------------------------------------------------------------------
    def add(self, name: str, source_dir: str | Path, manifest: dict[str, Any], forced_reason: str | None = None,
            expected_digest: str | None = None) -> tuple[Version, bool]:
        """Store model_files(source_dir) as a new version of `name`; returns (version, created).
        Identical content already registered under this name returns that version instead."""
        check_name(name)
        source = Path(source_dir)
        if not source.is_dir():
            raise RegistryError(f"nothing to register: {source} is not a directory",
                                hint="run `llmops tune` first")
        with self._lock(exclusive=False):
            files: dict[str, str] = {}
            sizes: dict[str, int] = {}
            for rel, path in model_files(source).items():
                files[rel], sizes[rel] = self._store_file(path)
            digest = tree_digest(files)
            if expected_digest is not None and digest != expected_digest:
                raise ModelMismatch(
                    f"{source} is not the model that was evaluated: its content hash is {digest[:16]}, "
                    f"the eval results are for {expected_digest[:16]}",
                    hint="re-run `llmops eval` on this model, or pass --force --reason TEXT to register it anyway")
            return self._commit_version(name, digest, files, sizes, manifest, forced_reason)

    def _store_file(self, path: Path) -> tuple[str, int]:
        """Copy one file into the blob store, hashing while copying (each byte is read once)."""
        self.blobs.mkdir(parents=True, exist_ok=True)
        before = path.stat()
        fd, tmp = tempfile.mkstemp(dir=self.blobs, prefix=".incoming-")
        os.close(fd)
        try:
            sha, size = copy_hashing(path, tmp)
            after = path.stat()
            if (after.st_size, after.st_mtime_ns) != (before.st_size, before.st_mtime_ns) or size != after.st_size:
                raise RegistryError(f"{path} changed while it was being registered",
                                    hint="wait for the writer (e.g. a running `llmops tune`) to finish")
            target = self.blobs / sha[:2] / sha
            if not target.exists():
                target.parent.mkdir(parents=True, exist_ok=True)
                os.chmod(tmp, 0o444)
                os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        return sha, size

    def _commit_version(self, name: str, digest: str, files: dict[str, str], sizes: dict[str, int],
                        manifest: dict[str, Any], forced_reason: str | None) -> tuple[Version, bool]:
        with self._write() as conn:
            row = conn.execute("SELECT version FROM versions WHERE name=? AND digest=?", (name, digest)).fetchone()
            if not row:
                number = conn.execute("SELECT COALESCE(MAX(version), 0) + 1 FROM versions WHERE name=?",
                                      (name,)).fetchone()[0]
                # Round-trip through JSON so the sealed record is exactly what get() will read back.
                record = json.loads(json.dumps({**manifest, "files": files, "registered_by_os_user": os_user()},
                                               sort_keys=True, default=str))
                version = Version(name, number, digest, now(), actor(), forced_reason is not None, forced_reason,
                                  record)
                conn.execute(
                    "INSERT INTO versions (name, version, digest, created_at, created_by, forced, force_reason, "
                    "manifest, seal) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (name, number, digest, version.created_at, version.created_by, int(version.forced),
                     forced_reason, json.dumps(version.manifest, sort_keys=True), version.seal()))
                conn.executemany("INSERT INTO files VALUES (?, ?, ?, ?, ?)",
                                 [(name, number, rel, sha, sizes[rel]) for rel, sha in files.items()])
        if row:  # identical content is already a version of this name
            return self.get(name, row[0]), False
        return version, True

    # -- reading ---------------------------------------------------------------------------------
    def get(self, name: str, version: int) -> Version:
        with self._db() as conn:
            row = conn.execute("SELECT name, version, digest, created_at, created_by, forced, force_reason, "
                               "manifest FROM versions WHERE name=? AND version=?", (name, version)).fetchone()
        if not row:
            raise RefError(f"no version {name}:{version}", hint="`llmops register list` shows versions")
        return Version(row[0], row[1], row[2], row[3], row[4], bool(row[5]), row[6], json.loads(row[7]))

    def list(self, name: str | None = None) -> list[Version]:
        query = "SELECT name, version FROM versions" + (" WHERE name=?" if name else "") + " ORDER BY name, version"
        with self._db() as conn:
            keys = conn.execute(query, (check_name(name),) if name else ()).fetchall()
        return [self.get(n, v) for n, v in keys]

    def resolve(self, ref: str, default_name: str | None = None) -> Version:
        name, alias, number = parse_ref(ref, default_name)
        if number is not None:
            return self.get(name, number)
        with self._db() as conn:
            if alias in (None, "latest"):
                row = conn.execute("SELECT MAX(version) FROM versions WHERE name=?", (name,)).fetchone()
            else:
                row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
        if not row or row[0] is None:
            raise RefError(f"nothing registered as {ref!r}", hint="run `llmops register` (or promote) first")
        return self.get(name, row[0])

    def aliases(self, name: str) -> dict[str, int]:
        with self._db() as conn:
            return dict(conn.execute("SELECT alias, version FROM aliases WHERE name=?", (name,)).fetchall())

    def set_alias(self, name: str, alias: str, version: int, actor: str, reason: str | None,
                  action: str = "promote") -> int | None:
        check_alias(alias)
        with self._write() as conn:
            if not conn.execute("SELECT 1 FROM versions WHERE name=? AND version=?", (name, version)).fetchone():
                raise RefError(f"no version {name}:{version}", hint="`llmops register list` shows versions")
            previous = _alias_target(conn, name, alias)
            conn.execute("INSERT OR REPLACE INTO aliases VALUES (?, ?, ?, ?)", (name, alias, version, now()))
            _record_move(conn, name, alias, version, previous, action, actor, reason)
        return previous

    def delete_alias(self, name: str, alias: str, actor: str, reason: str | None) -> None:
        with self._write() as conn:
            previous = _alias_target(conn, name, alias)
            conn.execute("DELETE FROM aliases WHERE name=? AND alias=?", (name, alias))
            _record_move(conn, name, alias, None, previous, "revert", actor, reason)

    def alias_history(self, name: str, alias: str | None = None) -> list[dict[str, Any]]:
        query = "SELECT alias, version, previous, action, actor, os_user, reason, at FROM alias_history WHERE name=?"
        args: tuple[Any, ...] = (name,)
        if alias:
            query, args = query + " AND alias=?", (name, alias)
        with self._db() as conn:
            rows = conn.execute(query + " ORDER BY id", args).fetchall()
        keys = ("alias", "version", "previous", "action", "actor", "os_user", "reason", "at")
        events = [dict(zip(keys, row, strict=True)) for row in rows]
        for event in events:  # entries written before `action` existed said so in their reason
            if event["action"] is None:
                event["action"] = "rollback" if (event["reason"] or "").startswith("rollback") else "promote"
        return events

    def rollback_target(self, name: str, alias: str) -> int:
        return rollback_target_from_history(self.aliases(name).get(alias), self.alias_history(name, alias),
                                            name, alias)

    # -- integrity -------------------------------------------------------------------------------
    def _record_problems(self, version: Version, require_seal: bool = True) -> list[str]:
        """Index-level checks (no file reads): the record's seal, the files table, the digest."""
        with self._db() as conn:
            row = conn.execute("SELECT seal FROM versions WHERE name=? AND version=?",
                               (version.name, version.version)).fetchone()
            rows = conn.execute("SELECT path, sha256 FROM files WHERE name=? AND version=?",
                                (version.name, version.version)).fetchall()
        problems = []
        seal = row[0] if row else None
        if seal is None and require_seal:
            problems.append("index record has no seal (registered before llmops sealed versions): re-register it")
        elif seal is not None and seal != version.seal():
            problems.append("index record was modified after registration (its seal does not match)")
        if dict(rows) != version.files:
            problems.append("the index's file list differs from the version manifest")
        if tree_digest(version.files) != version.digest:
            problems.append("the version digest does not match its file list")
        return problems

    def verify(self, version: Version) -> list[str]:
        problems = self._record_problems(version)
        for rel, sha in version.files.items():
            blob = self.blobs / sha[:2] / sha
            if not blob.is_file():
                problems.append(f"{rel}: blob missing")
            elif sha256_file(blob) != sha:
                problems.append(f"{rel}: content does not match its sha256")
        copy = self.copies / version.name / str(version.version)
        if copy.is_dir():
            problems += [f"materialized copy: {p}" for p in copy_problems(copy, version)]
        return problems

    def materialize(self, version: Version) -> Path:
        """A read-only, verified copy under materialized/NAME/VERSION: re-hashed on every call and
        rebuilt from the (re-hashed) blobs when anything in it changed."""
        problems = self._record_problems(version, require_seal=False)
        if problems:
            raise RegistryError(f"{version.ref} failed verification: " + "; ".join(problems),
                                hint="the registry index was modified; `llmops register verify --all` lists what")
        target = self.copies / version.name / str(version.version)
        with self._lock(exclusive=False):
            if target.is_dir() and not copy_problems(target, version):
                return target
            staging = Path(tempfile.mkdtemp(dir=self.root, prefix=".materialize-"))
            try:
                bad = [rel for rel, sha in version.files.items()
                       if self._copy_blob(sha, staging / rel) != sha]
                if bad:
                    raise RegistryError(f"{version.ref} failed verification: " + "; ".join(
                        f"{rel}: blob missing or content does not match its sha256" for rel in bad[:5]),
                        hint="the registry store was modified or corrupted; re-register the model")
                write_card_and_mark(staging, version)
                target.parent.mkdir(parents=True, exist_ok=True)
                if target.exists():
                    remove_tree(target)
                os.replace(staging, target)
                make_read_only(target)
            finally:
                if staging.exists():
                    remove_tree(staging)
        return target

    def _copy_blob(self, sha: str, out: Path) -> str | None:
        """Copy a blob to `out`, returning the sha256 of what was copied (None if the blob is missing)."""
        blob = self.blobs / sha[:2] / sha
        if not blob.is_file():
            return None
        out.parent.mkdir(parents=True, exist_ok=True)
        return copy_hashing(blob, out)[0]

    def gc(self, dry_run: bool = False) -> dict[str, Any]:
        """Delete unreferenced blobs, leftovers of killed registrations and materialisations, and copies of
        versions that no longer exist. Holds the lock exclusively: waits for registrations in flight."""
        with self._lock(exclusive=True), self._db() as conn:
            referenced = {row[0] for row in conn.execute("SELECT DISTINCT sha256 FROM files")}
            live = {(n, str(v)): d for n, v, d in conn.execute("SELECT name, version, digest FROM versions")}
            found: dict[str, list[Path]] = {"blobs": [], "leftovers": [], "copies": []}
            if self.blobs.is_dir():
                found["blobs"] = [b for b in sorted(self.blobs.glob("*/*"))
                                  if b.name not in referenced and not b.name.startswith(".")]
                found["leftovers"] = sorted([*self.blobs.glob(".incoming-*"), *self.blobs.glob("*/.incoming-*")])
            found["leftovers"] += sorted(self.root.glob(".materialize-*"))
            for copy in sorted(self.copies.glob("*/*")) if self.copies.is_dir() else []:
                mark = copy / COMPLETE_MARK
                digest = live.get((copy.parent.name, copy.name))
                if digest is None or not mark.is_file() or mark.read_text(encoding="utf-8").strip() != digest:
                    found["copies"].append(copy)
            freed = sum(_size(p) for paths in found.values() for p in paths)
            if not dry_run:
                for path in (p for paths in found.values() for p in paths):
                    remove_tree(path) if path.is_dir() else path.unlink(missing_ok=True)
        return {"removed": len(found["blobs"]), "leftovers": len(found["leftovers"]),
                "copies": len(found["copies"]), "bytes": freed, "dry_run": dry_run, "referenced": len(referenced)}


def _alias_target(conn: sqlite3.Connection, name: str, alias: str) -> int | None:
    row = conn.execute("SELECT version FROM aliases WHERE name=? AND alias=?", (name, alias)).fetchone()
    return row[0] if row else None


def _record_move(conn: sqlite3.Connection, name: str, alias: str, version: int | None, previous: int | None,
                 action: str, actor: str, reason: str | None) -> None:
    conn.execute("INSERT INTO alias_history (name, alias, version, previous, actor, reason, at, action, os_user) "
                 "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)", (name, alias, version, previous, actor, reason, now(), action,
                                                      os_user()))


def copy_problems(copy: Path, version: Version) -> list[str]:
    """What differs between a materialised copy and the version: every file re-hashed, extra files
    (hidden ones too), the card and the completion mark."""
    from llmops_cli.registry.card import model_card

    problems = check_hashes(copy, version.files, others={CARD_FILE, COMPLETE_MARK})
    card = copy / CARD_FILE
    if not card.is_file() or card.read_text(encoding="utf-8") != model_card(version):
        problems.append(f"{CARD_FILE}: not the card of {version.ref}")
    mark = copy / COMPLETE_MARK
    if not mark.is_file() or mark.read_text(encoding="utf-8").strip() != version.digest:
        problems.append(f"{COMPLETE_MARK}: incomplete copy")
    return problems


def write_card_and_mark(directory: Path, version: Version) -> None:
    from llmops_cli.registry.card import model_card

    (directory / CARD_FILE).write_text(model_card(version), encoding="utf-8")
    (directory / COMPLETE_MARK).write_text(version.digest, encoding="utf-8")


def make_read_only(root: Path) -> None:
    """Files 0444 and directories 0555: a served copy is not edited in place by accident."""
    for path in sorted(root.rglob("*"), reverse=True):
        if not path.is_symlink():
            os.chmod(path, 0o555 if path.is_dir() else 0o444)
    os.chmod(root, 0o555)


def remove_tree(root: Path) -> None:
    """rmtree that also removes read-only copies (directories need their write bit back first)."""
    for path in [root, *root.rglob("*")]:
        if path.is_dir() and not path.is_symlink():
            os.chmod(path, stat.S_IRWXU)
    shutil.rmtree(root, ignore_errors=True)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size if path.exists() else 0
