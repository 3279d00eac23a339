"""Streaming, atomic output files: rows are appended to a temp file in the destination folder
and only `commit()` moves it into place, so readers see the old file or the complete new one."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from llmops_cli.utils import temp_beside


class AtomicJsonl:
    """Append JSON lines to a temp file; `commit()` renames it over the destination."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_beside(self.path)
        self._tmp = Path(tmp)
        self._fh = os.fdopen(fd, "w", encoding="utf-8")
        self.count = 0

    def write(self, row: dict[str, Any]) -> None:
        self._fh.write(json.dumps(row, ensure_ascii=False) + "\n")
        self.count += 1

    def commit(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        if not self._fh.closed:
            self._fh.close()
        self._tmp.unlink(missing_ok=True)


class ParquetSink:
    """Rows -> a parquet file in batches (bounded memory); written to a temp path, then renamed."""

    def __init__(self, path: str | Path, schema: Any, batch_rows: int = 4096) -> None:
        import pyarrow.parquet as pq

        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = temp_beside(self.path)
        os.close(fd)
        self._tmp = Path(tmp)
        self._schema = schema
        self._writer = pq.ParquetWriter(self._tmp, schema)
        self._buffer: list[dict[str, Any]] = []
        self._batch_rows = batch_rows
        self.count = 0

    def write(self, row: dict[str, Any]) -> None:
        self._buffer.append(row)
        self.count += 1
        if len(self._buffer) >= self._batch_rows:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa

        if self._buffer:
            self._writer.write_table(pa.Table.from_pylist(self._buffer, schema=self._schema))
            self._buffer = []

    def commit(self) -> None:
        self._flush()
        self._writer.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        try:
            self._writer.close()
        finally:
            self._tmp.unlink(missing_ok=True)
