"""The one place that talks to the terminal.

Three modes: rich on an interactive terminal, plain lines when stdout is not a TTY or CI / NO_COLOR
is set (logs stay readable in CI), and JSON, where stdout carries exactly one result object and
every human-facing line goes to stderr so that `llmops ... --json | jq` works.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


def plain_wanted() -> bool:
    """Plain lines unless both streams are a terminal: `llmops ... | tee log` (stdout piped) and
    `llmops ... 2> log` (stderr redirected) both get lines that read well in a file."""
    ci = os.environ.get("CI", "").strip().lower()
    if os.environ.get("NO_COLOR") or ci not in ("", "0", "false", "no"):
        return True
    return not (sys.stdout.isatty() and sys.stderr.isatty())


@dataclass
class Progress:
    """A progress handle: `advance(n, **info)`; renders a rich bar or periodic plain lines."""

    description: str
    total: int | None
    _console: Console
    _bar: Any = None
    _task: Any = None
    _done: int = 0
    _last_line: float = 0.0
    _info: dict[str, Any] = field(default_factory=dict)

    def set_total(self, total: int) -> None:
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    def advance(self, n: int = 1, **info: Any) -> None:
        self._done += n
        self._info.update(info)
        extra = " ".join(f"{k}={v}" for k, v in self._info.items())
        if self._bar is not None:
            self._bar.update(self._task, advance=n, info=extra)
            return
        now = time.monotonic()
        # Plain mode: one line every few seconds, so CI logs show liveness without flooding.
        if now - self._last_line >= 5 or (self.total is not None and self._done >= self.total):
            self._last_line = now
            total = f"/{self.total}" if self.total else ""
            self._console.info(f"{self.description}: {self._done}{total} {extra}".rstrip())


class Console:
    """Renders messages, tables and results. Commands create one and pass it down where needed."""

    def __init__(self, json_mode: bool = False, plain: bool | None = None) -> None:
        self.json_mode = json_mode
        self.plain = plain_wanted() if plain is None else plain
        self.result_printed = False
        self._rich = None
        if not self.plain:
            from rich.console import Console as RichConsole

            self._rich = RichConsole(stderr=True)

    def info(self, message: str, prefix: str = "", style: str | None = None) -> None:
        """Print one human-facing line (never markup-interpreted: messages may hold user data)."""
        if self._rich is not None:
            from rich.text import Text

            text = Text()
            if prefix:
                text.append(prefix + " ", style=style)
            text.append(message)
            self._rich.print(text, highlight=False)
        else:
            line = f"{prefix} {message}" if prefix else message
            print(line, file=sys.stderr, flush=True)  # noqa: T201

    def success(self, message: str) -> None:
        self.info(message, prefix="✓" if self._rich else "ok:", style="green")

    def warn(self, message: str) -> None:
        self.info(message, prefix="warning:", style="yellow")

    def error(self, message: str) -> None:
        self.info(message, prefix="error:", style="bold red")

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        if self._rich is not None:
            from rich.table import Table

            table = Table(title=title)
            for col in columns:
                table.add_column(col)
            for row in rows:
                table.add_row(*(_fmt(v) for v in row))
            self._rich.print(table)
            return
        self.info(title)
        widths = [max(len(c), *(len(_fmt(r[i])) for r in rows)) if rows else len(c) for i, c in enumerate(columns)]
        self.info("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
        for row in rows:
            self.info("  ".join(_fmt(v).ljust(w) for v, w in zip(row, widths, strict=True)))

    def result(self, obj: dict[str, Any], summary: str | None = None, ok: bool = True) -> None:
        """The command's final result: JSON on stdout in --json mode, a summary line otherwise. Every
        JSON result says whether the command succeeded (`ok`); pass ok=False when it is about to fail."""
        if self.json_mode:
            self.result_printed = True
            obj = {"ok": ok, **obj}
            sys.stdout.write(json.dumps(obj, indent=2, default=str) + "\n")
            sys.stdout.flush()
        elif summary:
            self.success(summary)

    @contextmanager
    def progress(self, description: str, total: int | None = None) -> Iterator[Progress]:
        if self._rich is None:
            yield Progress(description, total, self)
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )
        from rich.progress import (
            Progress as RichProgress,
        )

        with RichProgress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=self._rich,
            transient=False,
        ) as bar:
            task = bar.add_task(description, total=total, info="")
            yield Progress(description, total, self, _bar=bar, _task=task)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)

