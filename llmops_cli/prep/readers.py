"""Read input rows from jsonl / json / csv / parquet files, Hugging Face `save_to_disk` directories
and hub datasets. A row that cannot be parsed is yielded as a RawRow with an error instead of
raising, so that it is quarantined rather than lost; a source that cannot be read at all raises
DataError with a hint. Everything streams (line by line, parquet batch by batch, arrow memory-mapped)
except a single .json array, which has to be parsed whole. Text files may be gzip / bz2 / zstd
compressed (by suffix), start with a UTF-8 byte-order mark, or use another ASCII-compatible encoding
(`prep.sources[].encoding`). Each reader also counts its input records into `records`, independently
of the rows it yields, so that the pipeline can check that no record was swallowed.
"""

from __future__ import annotations

import codecs
import csv
import glob
import io
import json
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from llmops_cli.errors import DataError

SUPPORTED = (".jsonl", ".json", ".csv", ".parquet")
COMPRESSED = {".gz": "gzip", ".bz2": "bz2", ".zst": "zstd"}  # text formats only: parquet compresses itself
_BOM = codecs.BOM_UTF8
_REPARSE_LINES = 8  # a CSV record up to this many lines is parsed whole as it is framed
_SMALL_COLUMN = 65_536  # an arrow column this small counts whole towards each row's size bound
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
    encoding: str = "utf-8"  # of text files (jsonl, json, csv); a UTF-8 byte-order mark is skipped

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
        fmt, compression = format_suffix(path)
        if fmt not in SUPPORTED or (compression and fmt == ".parquet"):
            shown = "".join(path.suffixes[-2:]) if compression else path.suffix
            raise DataError(
                f"unsupported file type {shown or '(none)'!r}: {path}",
                hint=f"supported: {', '.join(SUPPORTED)} (text formats also as {', '.join(COMPRESSED)}), "
                     "or a save_to_disk directory",
            )
        out.append(path)
    return out


def format_suffix(path: Path) -> tuple[str, str | None]:
    """(format suffix, compression suffix or None): `a.jsonl.gz` -> (".jsonl", ".gz")."""
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes and suffixes[-1] in COMPRESSED:
        return (suffixes[-2] if len(suffixes) > 1 else ""), suffixes[-1]
    return (suffixes[-1] if suffixes else ""), None


def source_files(path: str | None, hub: str | None, split: str | None,
                 encoding: str = "utf-8") -> list[SourceFile]:
    """Resolve a configured source to its readable units (raises DataError when there are none)."""
    if hub is not None:
        return [SourceFile("hub", hub, split)]
    assert path is not None
    files = []
    for p in expand_source(path):
        if p.is_dir():
            files.append(SourceFile("hf_disk", str(p), split))
        else:
            files.append(SourceFile(format_suffix(p)[0].lstrip("."), str(p), encoding=encoding))
    return files


def read_rows(source: SourceFile | Path, max_row_bytes: int = 1_000_000,
              records: Counter[str] | None = None) -> Iterator[RawRow]:
    """Every row of one source unit, in order; unparseable rows carry an error. `records` receives the
    number of input records of each source name, counted apart from the rows yielded."""
    if isinstance(source, Path):
        source = SourceFile(format_suffix(source)[0].lstrip("."), str(source))
    path = Path(source.location)
    counts: Counter[str] = records if records is not None else Counter()
    codec = _codec(source.encoding)
    if source.kind == "jsonl":
        yield from _read_jsonl(path, codec, max_row_bytes, counts)
    elif source.kind == "json":
        yield from _read_json(path, codec, max_row_bytes, counts)
    elif source.kind == "csv":
        yield from _read_csv(path, codec, max_row_bytes, counts)
    elif source.kind == "parquet":
        yield from _read_parquet(path, max_row_bytes, counts)
    elif source.kind == "hf_disk":
        yield from _read_saved(source, max_row_bytes, counts)
    elif source.kind == "hub":
        yield from _read_hub(source, max_row_bytes, counts)
    else:
        raise DataError(f"unsupported source kind {source.kind!r}: {source.location}")


def _open_binary(path: Path) -> IO[bytes]:
    """The file's bytes, decompressed by suffix."""
    compression = format_suffix(path)[1]
    if compression is None:
        return path.open("rb")
    if compression == ".gz":
        import gzip

        return gzip.open(path, "rb")
    if compression == ".bz2":
        import bz2

        return bz2.open(path, "rb")
    try:
        import zstandard
    except ImportError:
        raise DataError(f"{path}: reading .zst files needs the `zstandard` package, which is not installed",
                        hint="pip install zstandard, or decompress the file first (zstd -d)") from None
    return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(path.open("rb"), closefd=True))


def _unreadable(path: Path, exc: Exception) -> DataError:
    compression = format_suffix(path)[1]
    what = f"a readable {COMPRESSED[compression]} file" if compression else "a readable file"
    return DataError(f"{path}: not {what} ({exc})",
                     hint="check that the file is complete and that its suffix matches its compression")


def _codec(encoding: str) -> str:
    """The codec's canonical name; every UTF-8 spelling is "utf-8" (a BOM is stripped separately)."""
    name = codecs.lookup(encoding).name
    return "utf-8" if name in ("utf-8", "utf-8-sig") else name


def _physical_lines(path: Path, encoding: str) -> Iterator[tuple[int, int, bytes]]:
    """(1-based line number, byte offset, bytes) of every physical line; a UTF-8 BOM is dropped."""
    errors: tuple[type[BaseException], ...] = (OSError, EOFError)  # bad gzip / bz2 data
    with _open_binary(path) as fh:
        if format_suffix(path)[1] == ".zst":
            import zstandard  # present: _open_binary checked

            errors += (zstandard.ZstdError,)
        try:
            first = fh.readline()
            if not first:
                return
            first, offset = _strip_bom(path, first, encoding)
            yield 1, offset, first
            offset += len(first)
            for number, raw in enumerate(fh, start=2):
                yield number, offset, raw
                offset += len(raw)
        except errors as exc:
            raise _unreadable(path, exc) from None


def _strip_bom(path: Path, first: bytes, encoding: str) -> tuple[bytes, int]:
    """The first line without a UTF-8 byte-order mark (what Excel writes first), and its byte offset."""
    if first.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) and encoding == "utf-8":
        raise DataError(f"{path}: the file is UTF-16 (it starts with a UTF-16 byte-order mark)",
                        hint="re-export it as UTF-8 (in Excel: CSV UTF-8)")
    if first.startswith(_BOM) and encoding == "utf-8":
        return first[len(_BOM):], len(_BOM)
    return first, 0


def _decode(raw: bytes, encoding: str, name: str, line: int, offset: int) -> tuple[str, str | None]:
    """(text, problem): on a decoding problem the text has replacement characters and the problem
    says where, what the file probably is, and what to do."""
    try:
        return raw.decode(encoding), None
    except UnicodeDecodeError as exc:
        where = f"{name} line {line}, byte {offset + exc.start}"
        if encoding != "utf-8":
            problem = f"not valid {encoding} at {where}: check prep.sources[].encoding"
        else:
            guess = _guess_encoding(raw)
            problem = (f"invalid UTF-8 at {where} ({raw[exc.start:exc.start + 4]!r}); the file looks like "
                       f"{guess}: re-export as UTF-8 or set the source's encoding: {guess} "
                       "(prep.sources[].encoding)")
        return raw.decode(encoding, "replace"), problem


def _guess_encoding(raw: bytes) -> str:
    """cp1252 (what Windows tools write) when its printable extras occur, else latin-1."""
    if any(0x80 <= b <= 0x9F for b in raw):
        try:
            raw.decode("cp1252")
            return "cp1252"
        except UnicodeDecodeError:
            pass
    return "latin-1"


def _too_large(name: str, number: int, size: int, limit: int, head: str) -> RawRow:
    return RawRow(name, number, None, f"row is {size} bytes > prep.max_row_bytes={limit}",
                  head[:_RAW_KEEP] + "…", reason="too_large")


def _read_jsonl(path: Path, encoding: str, max_row_bytes: int, records: Counter[str]) -> Iterator[RawRow]:
    name = str(path)
    for number, offset, raw_bytes in _physical_lines(path, encoding):
        if raw_bytes.isspace() or not raw_bytes:
            continue  # blank lines are not rows
        records[name] += 1  # one record per non-blank line, whatever the parse below makes of it
        if len(raw_bytes) > max_row_bytes:
            yield _too_large(name, number, len(raw_bytes), max_row_bytes,
                             raw_bytes[:_RAW_KEEP].decode("utf-8", "replace"))
            continue
        try:
            text = raw_bytes.decode(encoding)
        except UnicodeDecodeError:
            text, problem = _decode(raw_bytes, encoding, name, number, offset)
            yield RawRow(name, number, None, problem, text[:_RAW_KEEP], reason="encoding")
            continue
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


def _read_json(path: Path, encoding: str, max_row_bytes: int, records: Counter[str]) -> Iterator[RawRow]:
    try:
        with _open_binary(path) as fh:
            raw = fh.read()
    except (OSError, EOFError) as exc:
        raise _unreadable(path, exc) from None
    raw, offset = _strip_bom(path, raw, encoding)
    try:
        text = raw.decode(encoding)
    except UnicodeDecodeError as exc:  # one document: it cannot be read around a bad byte
        start = raw.rfind(b"\n", 0, exc.start) + 1
        _, problem = _decode(raw[start:exc.end], encoding, str(path), raw.count(b"\n", 0, start) + 1,
                             offset + start)
        raise DataError(problem or str(exc), hint="re-export the file as UTF-8, or set prep.sources[].encoding") \
            from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: not a valid JSON file ({exc})",
                        hint="use one JSON array of objects, or jsonl") from None
    if isinstance(data, dict) and isinstance(data.get("data"), list):
        data = data["data"]
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects", hint="or use jsonl, one object per line")
    records[str(path)] += len(data)
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


@dataclass(slots=True)
class _Line:
    number: int
    text: str
    size: int  # bytes
    problem: str | None  # a decoding problem, with its hint


@dataclass(slots=True)
class _Record:
    """The physical lines of one CSV record (only the first when it is oversized or broken)."""

    lines: list[_Line]
    first: int
    last: int
    size: int
    broken: str | None = None  # why the record was cut off at its first line
    parsed: list[str] | None = None  # the cells, when framing already parsed the whole record


class _CsvParser:
    """One long-lived strict csv.reader fed record by record (building a reader per record costs more
    than parsing the record), so that framing and parsing follow the csv module's own quoting rules."""

    def __init__(self) -> None:
        self.queue: deque[str] = deque()
        self.reader = csv.reader(self, strict=True)

    def __iter__(self) -> _CsvParser:
        return self

    def __next__(self) -> str:
        if not self.queue:
            raise StopIteration
        return self.queue.popleft()

    def cells(self, texts: list[str]) -> list[str] | None:
        """The cells of the record made of these lines, or None when they hold more than one record.
        Raises csv.Error (an open quote at the end raises "unexpected end of data")."""
        self.queue.extend(texts)
        try:
            cells = next(self.reader, None)
        finally:
            extra = bool(self.queue)
            self.queue.clear()
        return None if extra else cells

    def attempt(self, texts: list[str]) -> tuple[list[str] | None, bool]:
        """(cells or None on a parse error, whether a quoted field is still open at the end)."""
        try:
            return self.cells(texts), False
        except csv.Error as exc:
            return None, "unexpected end of data" in str(exc)

    def ends_in_quote(self, text: str, in_quote: bool) -> bool:
        """Whether a quoted field is still open at the end of this physical line (a quote opens a field
        only at its start; "" inside one is a quote): the line is parsed, after a quote when it
        continues a quoted field, and only an end inside the quote reads "unexpected end of data"."""
        try:
            self.cells(['"' + text if in_quote else text])
        except csv.Error as exc:
            return "unexpected end of data" in str(exc)
        return False

    def full_record(self, text: str, width: int) -> bool:
        """A line that is a complete record on its own: no open quote and exactly `width` cells."""
        try:
            cells = self.cells([text])
        except csv.Error:
            return False
        return cells is not None and len(cells) == width


class _CsvFramer:
    """Groups physical lines into CSV records without trusting a quote to be closed: a quoted field
    that spans a newline is cut off as a broken record (its first line) when a following line, that
    does not close the quote, is a complete record with the header's number of cells, or when the
    file ends inside the quote; the lines after the first are read again as records of their own."""

    def __init__(self, lines: Iterator[_Line], max_row_bytes: int) -> None:
        self.lines = lines
        self.limit = max_row_bytes
        self.width = 0  # cells of the header, once read (the heuristic needs at least two)
        self.pending: deque[_Line] = deque()
        self.parser = _CsvParser()

    def _next(self) -> _Line | None:
        return self.pending.popleft() if self.pending else next(self.lines, None)

    def records(self) -> Iterator[_Record]:
        while (first := self._next()) is not None:
            if first.text.strip():  # blank lines between records are not records
                yield self._record(first)

    def again(self, record: _Record) -> _Record:
        """Cut a multi-line record that failed to parse down to its first line; re-read the rest."""
        self.pending.extendleft(reversed(record.lines[1:]))
        first = record.lines[0]
        return _Record([first], first.number, first.number, first.size, "makes the record unparseable")

    def _record(self, first: _Line) -> _Record:
        if '"' not in first.text:  # the common case: a one-line record
            return _Record([first], first.number, first.number, first.size)
        parsed, in_quote = self.parser.attempt([first.text])
        if not in_quote:
            return _Record([first], first.number, first.number, first.size, parsed=parsed)
        group, size, last, oversized = [first], first.size, first, False
        while in_quote:
            line = self._next()
            if line is None:
                return self._broken(group, last, size, oversized, "runs to the end of the file")
            if '"' not in line.text:  # no quote can close the field; without quotes a record splits at commas
                full = self.width >= 2 and line.text.count(",") == self.width - 1
            else:
                if oversized or len(group) > _REPARSE_LINES:  # re-parsing a long record per line is quadratic
                    in_quote = self.parser.ends_in_quote(line.text, True)
                else:  # parse the record so far: where it closes, this is its parse
                    parsed, in_quote = self.parser.attempt([*(g.text for g in group), line.text])
                full = in_quote and self.width >= 2 and self.parser.full_record(line.text, self.width)
            if full:
                self.pending.appendleft(line)
                return self._broken(group, last, size, oversized, f"runs into line {line.number}, a record of its own")
            size += line.size
            last = line
            if not oversized:
                group.append(line)
                if size > self.limit:  # keep scanning to its end, but stop holding its lines
                    oversized = True
                    del group[1:]
        return _Record(group, first.number, last.number, size, parsed=None if oversized else parsed)

    def _broken(self, group: list[_Line], last: _Line, size: int, oversized: bool, why: str) -> _Record:
        first = group[0]
        if oversized:  # its lines are gone: the whole span is the broken record
            return _Record([first], first.number, last.number, size, why)
        self.pending.extendleft(reversed(group[1:]))
        return _Record([first], first.number, first.number, first.size, why)


def _text_lines(path: Path, encoding: str) -> Iterator[_Line]:
    for number, offset, raw in _physical_lines(path, encoding):
        try:
            line = _Line(number, raw.decode(encoding), len(raw), None)
        except UnicodeDecodeError:
            text, problem = _decode(raw, encoding, str(path), number, offset)
            line = _Line(number, text, len(raw), problem)
        yield line


def _read_csv(path: Path, encoding: str, max_row_bytes: int, records: Counter[str]) -> Iterator[RawRow]:
    # The csv module refuses fields over 131,072 characters; here max_row_bytes is the only limit. The
    # limit is process-wide, so it is only ever raised.
    if csv.field_size_limit() < max_row_bytes:
        csv.field_size_limit(max_row_bytes)
    name = str(path)
    framer = _CsvFramer(_text_lines(path, encoding), max_row_bytes)
    header: list[str] | None = None
    for record in framer.records():
        if header is None:
            header = _csv_header(path, record, framer.parser)
            framer.width = len(header)
            continue
        records[name] += 1  # counted where the record starts, whatever the parse makes of it
        row = _csv_row(name, record, header, max_row_bytes, framer.parser)
        if row.error and row.reason == "unparseable" and len(record.lines) > 1 and "unparseable CSV" in row.error:
            row = _csv_row(name, framer.again(record), header, max_row_bytes, framer.parser)
        yield row


def _csv_header(path: Path, record: _Record, parser: _CsvParser) -> list[str]:
    problem = next((line.problem for line in record.lines if line.problem), None)
    if problem:
        raise DataError(f"unreadable CSV header: {problem}", hint="re-export the file as UTF-8")
    if record.broken or len(record.lines) != record.last - record.first + 1:
        raise DataError(f"{path}: unreadable CSV header (an unclosed quote, lines {record.first}-{record.last})")
    try:
        cells = parser.cells([line.text for line in record.lines])
    except csv.Error as exc:
        raise DataError(f"{path}: unreadable CSV header ({exc})") from None
    if cells is None:
        raise DataError(f"{path}: unreadable CSV header (lines {record.first}-{record.last})")
    return cells


def _csv_row(name: str, record: _Record, header: list[str], max_row_bytes: int, parser: _CsvParser) -> RawRow:
    line = record.lines[0]
    if record.broken is None and record.size <= max_row_bytes and all(g.problem is None for g in record.lines):
        found = record.parsed
        if found is None and len(record.lines) == 1:
            text = line.text.rstrip("\r\n")
            found = text.split(",") if '"' not in text and "\r" not in text else None  # no quoting: exact
        if found is not None and len(found) <= len(header):
            values: list[str | None] = [*found, *[None] * (len(header) - len(found))]
            return RawRow(name, record.first, dict(zip(header, values, strict=True)))
    span = f"lines {record.first}-{record.last}"
    text = "".join(line.text for line in record.lines)
    if record.broken:
        return RawRow(name, record.first, None, f"broken CSV record ({span}): a quote opened here {record.broken}; "
                      "reading resumed on the next line", text[:_RAW_KEEP])
    if record.size > max_row_bytes:
        return RawRow(name, record.first, None, f"row is {record.size} bytes > prep.max_row_bytes={max_row_bytes} "
                      f"({span})", text[:_RAW_KEEP] + "…", reason="too_large")
    problem = next((line.problem for line in record.lines if line.problem), None)
    if problem:
        return RawRow(name, record.first, None, problem, text[:_RAW_KEEP], reason="encoding")
    try:
        parsed = parser.cells([line.text for line in record.lines])
    except csv.Error as exc:
        return RawRow(name, record.first, None, f"unparseable CSV row ({span}): {exc}", text[:_RAW_KEEP])
    if parsed is None or len(parsed) > len(header):
        return RawRow(name, record.first, None, f"CSV row has more cells than the header ({span})", text[:_RAW_KEEP])
    cells: list[str | None] = [*parsed, *[None] * (len(header) - len(parsed))]  # short rows: None, as DictReader
    return RawRow(name, record.first, dict(zip(header, cells, strict=True)))


def _read_parquet(path: Path, max_row_bytes: int, records: Counter[str]) -> Iterator[RawRow]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file ({exc})") from None
    records[str(path)] += pf.metadata.num_rows  # from the footer, not from the batches read
    yield from _iter_arrow(str(path), pf.iter_batches(batch_size=_BATCH), max_row_bytes)


def _iter_arrow(name: str, batches: Iterator[Any], max_row_bytes: int) -> Iterator[RawRow]:
    """Rows of arrow record batches or tables; a row over max_row_bytes is quarantined as `too_large`
    with a clipped preview (a 2 MB cell is never copied into the quarantine)."""
    number = 0
    for batch in batches:
        suspects = _maybe_oversized(batch, max_row_bytes)
        for i, obj in enumerate(batch.to_pylist()):
            number += 1
            if i in suspects:
                size = len(json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8", "replace"))
                if size > max_row_bytes:
                    yield _too_large(name, number, size, max_row_bytes, json.dumps(_clip(obj), default=str))
                    continue
            yield RawRow(name, number, obj)


def _maybe_oversized(batch: Any, limit: int) -> set[int]:
    """Rows of an arrow batch that may be larger than `limit`: an upper bound from arrow buffer sizes,
    without Python objects (string lengths per row; nested columns a row slice at a time, small ones
    counted whole), so that only the few suspects are measured exactly."""
    if batch.nbytes <= limit:
        return set()
    import pyarrow as pa
    import pyarrow.compute as pc

    bound = [0] * batch.num_rows
    for column in batch.columns:
        kind = column.type
        if pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_binary(kind) \
                or pa.types.is_large_binary(kind):
            lengths = pc.binary_length(column).fill_null(0).to_pylist()
            bound = [b + n for b, n in zip(bound, lengths, strict=True)]
        elif column.nbytes <= _SMALL_COLUMN:
            bound = [b + column.nbytes for b in bound]
        else:
            bound = [b + column.slice(i, 1).nbytes for i, b in enumerate(bound)]
    return {i for i, b in enumerate(bound) if b > limit}


def _clip(obj: Any) -> Any:
    """A small preview of a row: long strings cut, long lists shortened."""
    if isinstance(obj, str):
        return obj if len(obj) <= 200 else obj[:200] + f"… ({len(obj)} chars)"
    if isinstance(obj, (bytes, bytearray)):
        return f"<{len(obj)} bytes>"
    if isinstance(obj, dict):
        return {k: _clip(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clip(v) for v in obj[:5]] + ([f"… ({len(obj)} items)"] if len(obj) > 5 else [])
    return obj


def _read_saved(source: SourceFile, max_row_bytes: int, records: Counter[str]) -> Iterator[RawRow]:
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
        records[name] += ds.num_rows
        yield from _iter_arrow(name, ds.with_format("arrow").iter(batch_size=_BATCH), max_row_bytes)


def _read_hub(source: SourceFile, max_row_bytes: int, records: Counter[str]) -> Iterator[RawRow]:
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
    records[source.name] += 1  # a stream has no independent count: each row is a record
    yield _sized_row(source.name, number, dict(first), max_row_bytes)
    for obj in rows:
        number += 1
        records[source.name] += 1
        yield _sized_row(source.name, number, dict(obj), max_row_bytes)


def _sized_row(name: str, number: int, obj: dict[str, Any], max_row_bytes: int) -> RawRow:
    """A row of Python values, quarantined as `too_large` over max_row_bytes (a character count
    screens; only a suspect is serialised to measure it)."""
    if _chars(obj) * 4 > max_row_bytes:  # UTF-8 takes at most 4 bytes a character
        size = len(json.dumps(obj, ensure_ascii=False, default=str).encode("utf-8", "replace"))
        if size > max_row_bytes:
            return _too_large(name, number, size, max_row_bytes, json.dumps(_clip(obj), default=str))
    return RawRow(name, number, obj)


def _chars(obj: Any) -> int:
    if isinstance(obj, (str, bytes)):
        return len(obj)
    if isinstance(obj, dict):
        return sum(len(str(k)) + _chars(v) for k, v in obj.items())
    if isinstance(obj, list):
        return sum(_chars(v) for v in obj)
    return 8
