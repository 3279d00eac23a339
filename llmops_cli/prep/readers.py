"""Read input rows from jsonl / json / csv files. A row that cannot be parsed is yielded as a
RawRow with an error instead of raising, so that it is quarantined rather than lost."""

from __future__ import annotations

import csv
import glob
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_cli.errors import DataError

SUPPORTED = (".jsonl", ".json", ".csv")


@dataclass
class RawRow:
    source: str
    line: int
    record: dict[str, Any] | None
    error: str | None = None
    raw: str | None = None  # the unparsed text, kept for the quarantine file


def expand_source(pattern: str) -> list[Path]:
    """Files a source names (a path or a glob), checked for existence and a supported extension."""
    paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [
        Path(pattern)
    ]
    if not paths or not all(p.exists() for p in paths):
        raise DataError(f"source not found: {pattern}", hint="check prep.sources[].path in the config")
    for path in paths:
        if path.suffix.lower() not in SUPPORTED:
            raise DataError(
                f"unsupported file type {path.suffix!r}: {path}",
                hint=f"supported: {', '.join(SUPPORTED)}",
            )
    return [p for p in paths if p.is_file()]


def read_rows(path: Path) -> Iterator[RawRow]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        yield from _read_jsonl(path)
    elif suffix == ".json":
        yield from _read_json(path)
    else:
        yield from _read_csv(path)


def _read_jsonl(path: Path) -> Iterator[RawRow]:
    with path.open("rb") as fh:
        for number, raw_bytes in enumerate(fh, start=1):
            try:
                text = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(str(path), number, None, f"invalid UTF-8 at byte {exc.start}",
                             raw_bytes.decode("utf-8", "replace"))
                continue
            if not text.strip():
                continue  # blank lines are not rows
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawRow(str(path), number, None, f"malformed JSON: {exc.msg}", text.rstrip("\n"))
                continue
            if not isinstance(obj, dict):
                yield RawRow(str(path), number, None, f"row is a JSON {type(obj).__name__}, not an object",
                             text.rstrip("\n"))
                continue
            yield RawRow(str(path), number, obj)


def _read_json(path: Path) -> Iterator[RawRow]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: not a valid JSON file ({exc})",
                        hint="use one JSON array of objects, or jsonl") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects", hint="or use jsonl, one object per line")
    for number, obj in enumerate(data, start=1):
        if isinstance(obj, dict):
            yield RawRow(str(path), number, obj)
        else:
            yield RawRow(str(path), number, None, f"item is a {type(obj).__name__}, not an object", repr(obj))


def _read_csv(path: Path) -> Iterator[RawRow]:
    try:
        fh = path.open(newline="", encoding="utf-8")
        reader = csv.DictReader(fh, strict=True)
        header = reader.fieldnames
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not UTF-8 text ({exc.reason})", hint="re-encode the file as UTF-8") from None
    except csv.Error as exc:
        raise DataError(f"{path}: unreadable CSV header ({exc})") from None
    with fh:
        if not header:
            return
        while True:
            try:
                row = next(reader)
            except StopIteration:
                return
            except (csv.Error, UnicodeDecodeError) as exc:
                yield RawRow(str(path), reader.line_num, None, f"unparseable CSV row: {exc}")
                continue
            if None in row:  # more cells than header columns
                yield RawRow(str(path), reader.line_num, None, "CSV row has more cells than the header",
                             json.dumps(row, default=str))
                continue
            yield RawRow(str(path), reader.line_num, dict(row))
