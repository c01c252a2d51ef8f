"""Progress reporting as a callback, so library code never prints.

The CLI plugs a rich progress bar in; tests and notebooks pass nothing (silence).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives the engine's progress: one task per cell, advanced by samples.

    A sink may also define ``tally(robust, of)``: the engine calls it just before ``finish``
    with the samples still robust at the cell's threat after it (the running robust accuracy).
    """

    def start(self, label: str, total: int) -> None: ...

    def advance(self, n: int) -> None: ...

    def finish(self) -> None: ...


class NullProgress:
    """Progress that goes nowhere."""

    def start(self, label: str, total: int) -> None:
        return None

    def advance(self, n: int) -> None:
        return None

    def finish(self) -> None:
        return None


def note(progress: Progress | None, kind: str, text: str, **fields: object) -> None:
    """A line about work outside the cells, to a sink that logs lines (optional)."""
    say = getattr(progress, "note", None)
    if callable(say):
        say(kind, text, **fields)


def tally(progress: Progress, robust: int, of: int) -> None:
    """Pass a cell's running robust count to ``progress`` if it takes one (optional)."""
    take = getattr(progress, "tally", None)
    if callable(take):
        take(robust, of)
