"""Progress bars and tables on the terminal, via rich.

rich allows one live display at a time, so the process shares a single :class:`Progress`: the outermost
:func:`progress` starts it and any nested :func:`track` adds its bar to that display instead of starting another.
Bars go to stderr so stdout stays clean for tables and piping.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

T = TypeVar("T")

console = Console(stderr=True)
# Logs and pipes get a wide table instead of rich's 80-column default, which folds every cell.
_stdout = Console() if sys.stdout.isatty() else Console(width=160)
_current: Progress | None = None
_depth = 0  # track() loops running now; a loop started inside another one is an inner loop


@contextmanager
def progress() -> Iterator[Progress]:
    """The process's live Progress: started here if none is active, otherwise the active one is reused."""
    global _current
    if _current is not None:
        yield _current
        return
    bar = Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=False,
    )
    _current = bar
    try:
        with bar:
            yield bar
    finally:
        _current = None


def track(iterable: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield from ``iterable`` while advancing a bar; inside another bar it becomes a nested line."""
    if total is None and hasattr(iterable, "__len__"):
        total = len(iterable)  # type: ignore[arg-type]
    global _depth
    inner = _depth > 0
    with progress() as bar:
        task = bar.add_task(description, total=total)
        _depth += 1
        try:
            for item in iterable:
                yield item
                bar.advance(task)
        finally:
            _depth -= 1
            if inner:
                # An inner loop runs once per outer item; dropping its line keeps the display from growing.
                bar.remove_task(task)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if getattr(value, "ndim", None) == 0 and hasattr(value, "item"):
        value = value.item()  # numpy / 0-d tensor scalars format like the Python numbers they hold
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        # Small probabilities (random models, far-off classes) would all print as 0.000.
        return f"{value:.2e}" if 0 < abs(value) < 0.01 else f"{value:.3f}"
    return str(value)


def print_table(title: str, rows: Sequence[dict], columns: Sequence[str] | None = None) -> None:
    """Print ``rows`` as a table on stdout; columns default to the union of keys in first-seen order."""
    if columns is None:
        columns = list(dict.fromkeys(k for row in rows for k in row))
    table = Table(title=title)
    for column in columns:
        table.add_column(str(column), overflow="fold")
    for row in rows:
        table.add_row(*(_cell(row.get(c)) for c in columns))
    _stdout.print(table)
