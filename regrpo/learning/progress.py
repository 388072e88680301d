"""A progress bar for training loops: steps done, elapsed time and the latest loss."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

__all__ = ["training_bar"]


@contextlib.contextmanager
def training_bar(label: str, total: int, show: bool = True) -> Iterator[Callable[[str], None]]:
    """Yield ``advance(status)``: one step done, with a short status (``"loss 0.41"``) by the bar."""
    columns = (
        TextColumn(label),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("{task.fields[status]}"),
    )
    with Progress(*columns, disable=not show, transient=False) as bar:
        job = bar.add_task(label, total=total, status="")

        def advance(status: str) -> None:
            bar.update(job, advance=1, status=status)

        yield advance
