"""How commands show what they found: ``--json`` for scripts; on a terminal, ``rich`` tables and a
progress bar; otherwise (a pipe, a file, a CI log) plain aligned lines that grep and diff well.

``rich`` comes with the ``cli`` extra (``pip install 'promptdrop[cli]'``) and is imported only for a
terminal: the Lambda bundle never needs it, and without it a terminal gets the plain lines and a hint.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol, TextIO

__all__ = ["Column", "Progress", "View"]

INSTALL_HINT = "install 'promptdrop[cli]' for tables and progress bars on a terminal"


@dataclass(frozen=True)
class Column:
    name: str
    right: bool = False  # numbers line up on the right


class Progress(Protocol):
    def update(self, *, status: str, done: int, total: int | None, rate: str, eta: str, detail: str) -> None: ...


class View:
    """One command's output: JSON, rich (a terminal), or plain lines."""

    def __init__(
        self,
        *,
        json_mode: bool = False,
        out: TextIO | None = None,
        err: TextIO | None = None,
        terminal: bool | None = None,
    ) -> None:
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.json_mode = json_mode
        on_terminal = self.out.isatty() if terminal is None else terminal
        self._console: Any = _rich_console(self.out, self.err) if on_terminal and not json_mode else None

    @property
    def rich(self) -> bool:
        return self._console is not None

    def json(self, value: Any) -> None:
        self.out.write(json.dumps(value, indent=2, ensure_ascii=False, default=str) + "\n")

    def line(self, text: str = "") -> None:
        if self._console is not None:
            self._console.print(text, highlight=False, markup=False, soft_wrap=True)
        else:
            self.out.write(text + "\n")

    def note(self, text: str) -> None:
        """A message for the person at the keyboard (stderr: it never mixes with the output proper)."""
        self.err.write(text + "\n")
        self.err.flush()

    def raw(self, text: str) -> None:
        self.out.write(text)

    def fields(self, rows: Sequence[tuple[str, str]], title: str | None = None) -> None:
        """``name  value`` pairs, one a line."""
        rows = [(k, v) for k, v in rows if v not in ("", None)]
        if self._console is not None:
            from rich.table import Table

            table = Table(title=title, show_header=False, box=None, title_justify="left", pad_edge=False)
            table.add_column(style="bold")
            table.add_column()
            for name, value in rows:
                table.add_row(name, value)
            self._console.print(table)
            return
        if title:
            self.out.write(title + "\n")
        width = max((len(k) for k, _ in rows), default=0)
        for name, value in rows:
            self.out.write(f"{name:<{width}}  {value}\n")

    def table(self, columns: Sequence[Column], rows: Sequence[Sequence[str]], title: str | None = None) -> None:
        if self._console is not None:
            from rich.table import Table

            table = Table(title=title, title_justify="left")
            for column in columns:
                table.add_column(column.name, justify="right" if column.right else "left", overflow="fold")
            for row in rows:
                table.add_row(*row)
            self._console.print(table)
            return
        if title:
            self.out.write(title + "\n")
        widths = [max([len(c.name), *(len(r[i]) for r in rows)]) for i, c in enumerate(columns)]

        def cells(values: Sequence[str]) -> str:
            parts = [v.rjust(w) if c.right else v.ljust(w) for v, w, c in zip(values, widths, columns, strict=True)]
            return "  ".join(parts).rstrip()

        self.out.write(cells([c.name for c in columns]) + "\n")
        for row in rows:
            self.out.write(cells(row) + "\n")

    @contextmanager
    def progress(self, description: str, *, every_s: float = 5.0) -> Iterator[Progress]:
        """A live progress bar on a terminal; else a line on stderr when something changed, at most every
        ``every_s`` (stdout keeps the result alone); nothing with ``--json``."""
        if self._console is None:
            yield _PlainProgress(self, every_s) if not self.json_mode else _NoProgress()
            return
        from rich.progress import BarColumn, TextColumn
        from rich.progress import Progress as RichProgress

        bar = RichProgress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[rate]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TextColumn("{task.fields[detail]}"),
            console=self._console,
            refresh_per_second=4,
        )
        task = bar.add_task(description, total=None, count="", rate="", eta="-", detail="")
        with bar:
            yield _RichProgress(bar, task)


class _RichProgress:
    def __init__(self, bar: Any, task: Any) -> None:
        self._bar = bar
        self._task = task

    def update(self, *, status: str, done: int, total: int | None, rate: str, eta: str, detail: str) -> None:
        count = f"{done:,}/{total:,}" if total else f"{done:,}"
        self._bar.update(
            self._task, description=status, completed=done, total=total, count=count, rate=rate, eta=eta, detail=detail
        )


class _PlainProgress:
    def __init__(self, view: View, every_s: float) -> None:
        self._view = view
        self._every_s = every_s
        self._last: tuple[str, int] | None = None
        self._last_at = 0.0

    def update(self, *, status: str, done: int, total: int | None, rate: str, eta: str, detail: str) -> None:
        import time

        now = time.monotonic()
        changed = (status, done) != self._last
        if not changed or (self._last is not None and self._last[0] == status and now - self._last_at < self._every_s):
            return
        self._last, self._last_at = (status, done), now
        count = f"{done:,}/{total:,}" if total else f"{done:,}"
        self._view.note(f"{status:<9} {count}  {rate}  ETA {eta}  {detail}".rstrip())


class _NoProgress:
    def update(self, *, status: str, done: int, total: int | None, rate: str, eta: str, detail: str) -> None:
        return None


def _rich_console(out: TextIO, err: TextIO) -> Any:
    try:
        from rich.console import Console
    except ImportError:
        err.write(f"(plain output: {INSTALL_HINT})\n")
        return None
    return Console(file=out, force_terminal=True)
