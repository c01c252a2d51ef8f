"""Progress bars for a person at a terminal (rich, on stderr): the audit's cells, and for
``robaudit harden`` the training epochs with their running loss and accuracies."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, ClassVar

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text


class RichProgress:
    """Adapts the engine's progress callback to a rich progress bar on stderr."""

    fields: ClassVar[dict[str, Any]] = {}  # extra task fields the bar's columns show

    def __init__(self, progress: Progress) -> None:
        self._p = progress
        self._task: Any = None

    def start(self, label: str, total: int) -> None:
        self._task = self._p.add_task(label, total=max(total, 1), **self.fields)
        if total == 0:
            self._p.update(self._task, completed=1)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._p.advance(self._task, n)

    def finish(self) -> None:
        if self._task is not None:
            self._p.update(self._task, visible=True)


class TrainingBar(RichProgress):
    """Rich bars for training epochs (running loss and batch accuracies) and the audits'
    cells; one line per finished epoch stays on screen."""

    fields: ClassVar[dict[str, Any]] = {"stats": ""}

    def __init__(self, progress: Progress, console: Console) -> None:
        super().__init__(progress)
        self._console = console

    def batch(self, s: Any) -> None:
        adv = f" · adv {s.adv_acc:.1%}" if s.adv_acc is not None else ""
        if self._task is not None:
            self._p.update(self._task, stats=f"loss {s.loss:.4g} · clean {s.clean_acc:.1%}{adv}")

    def epoch(self, r: Any) -> None:
        if self._task is not None:
            self._p.update(self._task, visible=False)
        adv = f", adv {r.train_adv_acc:.1%}" if r.train_adv_acc is not None else ""
        co = " · CATASTROPHIC OVERFITTING" if r.catastrophic_overfitting else ""
        self._console.print(
            Text(
                f"epoch {r.epoch} ({r.stage}): loss {r.loss:.4g} · train clean "
                f"{r.train_clean_acc:.1%}{adv} · held-out clean {r.heldout_clean_acc:.1%}, "
                f"robust {r.heldout_robust_acc:.1%} (PGD-CE {r.heldout_robust_ce:.1%}, margin "
                f"{r.heldout_robust_margin:.1%}) · {r.seconds:.1f} s{co}"
            )
        )


def _bars(console: Console, *extra: ProgressColumn) -> Progress:
    """Label, bar, done/total, ``extra`` columns, elapsed time; gone when the run ends."""
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        *extra,
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


@contextmanager
def scan_bars(console: Console) -> Iterator[RichProgress]:
    """A bar per audit cell, for the span of the block."""
    with _bars(console) as bar:
        yield RichProgress(bar)


@contextmanager
def training_bars(console: Console) -> Iterator[TrainingBar]:
    """A bar per training epoch (with its running stats) and per audit cell."""
    with _bars(console, TextColumn("{task.fields[stats]}")) as bar:
        yield TrainingBar(bar, console)
