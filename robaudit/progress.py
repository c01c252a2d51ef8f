"""Progress reporting as a callback, so library code never prints.

The CLI plugs a rich progress bar in; tests and notebooks pass nothing (silence).
"""

from __future__ import annotations

from typing import Protocol


class Progress(Protocol):
    """Receives the engine's progress: one task per cell, advanced by samples."""

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
