"""Read input rows from jsonl / json / csv / parquet files, Hugging Face `save_to_disk` directories
and hub datasets. A row that cannot be parsed is yielded as a RawRow with an error instead of
raising, so that it is quarantined rather than lost; a source that cannot be read at all raises
DataError with a hint. Everything streams (line by line, parquet batch by batch, arrow memory-mapped)
except a single .json array, which has to be parsed whole.
"""

from __future__ import annotations

import csv
import glob
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops_cli.errors import DataError

SUPPORTED = (".jsonl", ".json", ".csv", ".parquet")
_BATCH = 2048
_RAW_KEEP = 2000  # characters of an unparseable row kept in the quarantine file (a 50 MB row is not copied)


@dataclass
class RawRow:
    source: str
    line: int
    record: dict[str, Any] | None
    error: str | None = None
    raw: str | None = None  # the unparsed text (truncated), kept for the quarantine file
    reason: str = "unparseable"  # quarantine reason when error is set


@dataclass(frozen=True)
class SourceFile:
    """One readable unit of a source: a file, a saved dataset directory or a hub dataset."""

    kind: str  # jsonl, json, csv, parquet, hf_disk, hub
    location: str
    split: str | None = None

    @property
    def name(self) -> str:
        if self.kind == "hub":
            return f"hub:{self.location}" + (f"[{self.split}]" if self.split else "")
        return self.location + (f"[{self.split}]" if self.split else "")


def is_saved_dataset(path: Path) -> bool:
    """A directory written by `datasets.Dataset.save_to_disk` (or DatasetDict.save_to_disk)."""
    return path.is_dir() and ((path / "state.json").is_file() or (path / "dataset_dict.json").is_file())


def expand_source(pattern: str) -> list[Path]:
    """Files a source names (a path or a glob), checked for existence and a supported extension."""
    paths = sorted(Path(p) for p in glob.glob(pattern, recursive=True)) if glob.has_magic(pattern) else [
        Path(pattern)
    ]
    if not paths or not all(p.exists() for p in paths):
        raise DataError(f"source not found: {pattern}", hint="check prep.sources[].path in the config")
    out = []
    for path in paths:
        if path.is_dir():
            if is_saved_dataset(path):
                out.append(path)
                continue
            if glob.has_magic(pattern):
                continue  # a glob such as data/** also matches folders: only their files count
            raise DataError(
                f"{path} is a directory but not a Hugging Face save_to_disk dataset",
                hint=f"name its files with a glob, e.g. {path}/*.jsonl",
            )
        if path.suffix.lower() not in SUPPORTED:
            raise DataError(
                f"unsupported file type {path.suffix or '(none)'!r}: {path}",
                hint=f"supported: {', '.join(SUPPORTED)}, or a save_to_disk directory",
            )
        out.append(path)
    return out


def source_files(path: str | None, hub: str | None, split: str | None) -> list[SourceFile]:
    """Resolve a configured source to its readable units (raises DataError when there are none)."""
    if hub is not None:
        return [SourceFile("hub", hub, split)]
    assert path is not None
    files = []
    for p in expand_source(path):
        if p.is_dir():
            files.append(SourceFile("hf_disk", str(p), split))
        else:
            files.append(SourceFile(p.suffix.lower().lstrip("."), str(p)))
    return files


def read_rows(source: SourceFile | Path, max_row_bytes: int = 1_000_000) -> Iterator[RawRow]:
    """Every row of one source unit, in order; unparseable rows carry an error."""
    if isinstance(source, Path):
        source = SourceFile(source.suffix.lower().lstrip("."), str(source))
    path = Path(source.location)
    if source.kind == "jsonl":
        yield from _read_jsonl(path, max_row_bytes)
    elif source.kind == "json":
        yield from _read_json(path, max_row_bytes)
    elif source.kind == "csv":
        yield from _read_csv(path)
    elif source.kind == "parquet":
        yield from _read_parquet(path)
    elif source.kind == "hf_disk":
        yield from _read_saved(source)
    elif source.kind == "hub":
        yield from _read_hub(source)
    else:
        raise DataError(f"unsupported source kind {source.kind!r}: {source.location}")


def _too_large(name: str, number: int, size: int, limit: int, head: str) -> RawRow:
    return RawRow(name, number, None, f"row is {size} bytes > prep.max_row_bytes={limit}",
                  head[:_RAW_KEEP] + "…", reason="too_large")


def _read_jsonl(path: Path, max_row_bytes: int) -> Iterator[RawRow]:
    name = str(path)
    with path.open("rb") as fh:
        for number, raw_bytes in enumerate(fh, start=1):
            if len(raw_bytes) > max_row_bytes:
                yield _too_large(name, number, len(raw_bytes), max_row_bytes,
                                 raw_bytes[:_RAW_KEEP].decode("utf-8", "replace"))
                continue
            try:
                text = raw_bytes.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield RawRow(name, number, None, f"invalid UTF-8 at byte {exc.start}",
                             raw_bytes[:_RAW_KEEP].decode("utf-8", "replace"))
                continue
            if not text.strip():
                continue  # blank lines are not rows
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield RawRow(name, number, None, f"malformed JSON: {exc.msg}", text.rstrip("\n")[:_RAW_KEEP])
                continue
            if not isinstance(obj, dict):
                yield RawRow(name, number, None, f"row is a JSON {type(obj).__name__}, not an object",
                             text.rstrip("\n")[:_RAW_KEEP])
                continue
            yield RawRow(name, number, obj)


def _read_json(path: Path, max_row_bytes: int) -> Iterator[RawRow]:
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
        if not isinstance(obj, dict):
            yield RawRow(str(path), number, None, f"item is a {type(obj).__name__}, not an object",
                         repr(obj)[:_RAW_KEEP])
            continue
        size = len(json.dumps(obj, ensure_ascii=False))
        if size > max_row_bytes:
            yield _too_large(str(path), number, size, max_row_bytes, json.dumps(obj)[:_RAW_KEEP])
            continue
        yield RawRow(str(path), number, obj)


_SURROGATE = re.compile("[\udc80-\udcff]")


def _read_csv(path: Path) -> Iterator[RawRow]:
    try:
        # surrogateescape: an invalid byte spoils its own row (quarantined below), not the rest of the file.
        fh = path.open(newline="", encoding="utf-8", errors="surrogateescape")
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
            except csv.Error as exc:
                yield RawRow(str(path), reader.line_num, None, f"unparseable CSV row: {exc}")
                continue
            if None in row:  # more cells than header columns
                yield RawRow(str(path), reader.line_num, None, "CSV row has more cells than the header",
                             json.dumps(row, default=str)[:_RAW_KEEP])
                continue
            if any(isinstance(v, str) and _SURROGATE.search(v) for v in row.values()):
                yield RawRow(str(path), reader.line_num, None, "invalid UTF-8 in this row",
                             json.dumps(row, default=str).encode("utf-8", "replace").decode()[:_RAW_KEEP])
                continue
            yield RawRow(str(path), reader.line_num, dict(row))


def _read_parquet(path: Path) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    number = 0
    for batch in pf.iter_batches(batch_size=_BATCH):
        for obj in batch.to_pylist():
            number += 1
            yield RawRow(str(path), number, obj)


def _read_saved(source: SourceFile) -> Iterator[RawRow]:
    from datasets import Dataset, DatasetDict, load_from_disk

    try:
        loaded = load_from_disk(source.location)
    except Exception as exc:  # noqa: BLE001 - datasets raises many types for a bad directory
        raise DataError(f"{source.location}: cannot load the saved dataset ({exc})") from None
    if isinstance(loaded, DatasetDict):
        names = [source.split] if source.split else list(loaded)
        missing = [n for n in names if n not in loaded]
        if missing:
            raise DataError(f"{source.location}: no split {missing[0]!r}", hint=f"splits: {', '.join(loaded)}")
        parts = [(f"{source.location}[{n}]", loaded[n]) for n in names]
    else:
        parts = [(source.location, loaded)]
    for name, ds in parts:
        assert isinstance(ds, Dataset)
        yield from _iter_table(name, ds.iter(batch_size=_BATCH))


def _read_hub(source: SourceFile) -> Iterator[RawRow]:
    import os

    if os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get("HF_DATASETS_OFFLINE") == "1":
        raise DataError(f"hub dataset {source.location!r}: the Hugging Face hub is switched off (HF_HUB_OFFLINE=1)",
                        hint="unset HF_HUB_OFFLINE, or save the dataset locally and use `path:` instead")
    from datasets import load_dataset

    try:
        ds = load_dataset(source.location, split=source.split or "train", streaming=True)
        rows = iter(ds)
        first = next(rows, None)
    except Exception as exc:  # noqa: BLE001 - network, auth and not-found errors all land here
        raise DataError(f"hub dataset {source.location!r} is not reachable: {str(exc).splitlines()[0][:300]}",
                        hint="check the id and network; for gated data set HF_TOKEN; or use a local copy") from None
    if first is None:
        return
    number = 1
    yield RawRow(source.name, number, dict(first))
    for obj in rows:
        number += 1
        yield RawRow(source.name, number, dict(obj))


def _iter_table(name: str, batches: Iterator[dict[str, list[Any]]]) -> Iterator[RawRow]:
    number = 0
    for batch in batches:
        columns = list(batch)
        for values in zip(*(batch[c] for c in columns), strict=True):
            number += 1
            yield RawRow(name, number, dict(zip(columns, values, strict=True)))
