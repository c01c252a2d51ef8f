"""Progress as log lines, for CI logs: stderr that is not a terminal gets no progress bar.

One line when each cell starts and finishes, and a heartbeat at most every ``HEARTBEAT``
seconds while a long cell runs, so an 18-minute audit never leaves an empty log. ``json``
writes one JSON object per event instead, for log collectors.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

HEARTBEAT = 30.0  # seconds between "still running" lines within one cell


class LogProgress:
    """The engine's progress callback, written as plain or JSON lines to ``write``."""

    def __init__(
        self,
        write: Callable[[str], None],
        fmt: str = "text",
        clock: Callable[[], float] = time.monotonic,
        heartbeat: float = HEARTBEAT,
    ) -> None:
        self._write, self._fmt, self._clock, self._every = write, fmt, clock, heartbeat
        self._t0 = clock()
        self._label, self._total, self._done = "", 0, 0
        self._started = self._last = self._t0
        self._header: tuple[str, str, dict[str, Any]] | None = None

    def header(self, kind: str, text: str, **fields: Any) -> None:
        """A line written just before the first cell starts: once the model and data have
        loaded, so a bad input still ends in exactly one error line."""
        self._header = (kind, text, fields)

    def event(self, kind: str, text: str, **fields: Any) -> None:
        """One log line: ``[  12.3s] text`` or a JSON object with ``event`` and the fields."""
        now = self._clock() - self._t0
        if self._fmt == "json":
            self._write(json.dumps({"event": kind, "t": round(now, 3), **fields}, sort_keys=True))
        else:
            self._write(f"[{now:7.1f}s] {text}")

    def start(self, label: str, total: int) -> None:
        if self._header is not None:
            kind, text, fields = self._header
            self._header = None
            self.event(kind, text, **fields)
        self._label, self._total, self._done = label, total, 0
        self._started = self._last = self._clock()
        self.event("cell_start", f"start {label}: {total} samples", cell=label, samples=total)

    def advance(self, n: int) -> None:
        self._done += n
        now = self._clock()
        if now - self._last >= self._every:
            self._last = now
            self.event(
                "heartbeat",
                f"... {self._label}: {self._done}/{self._total} samples, {now - self._started:.0f} s",
                cell=self._label, done=self._done, samples=self._total,
                seconds=round(now - self._started, 1),
            )

    def finish(self) -> None:
        seconds = self._clock() - self._started
        self.event(
            "cell_finish", f"done  {self._label}: {self._done}/{self._total} samples in {seconds:.1f} s",
            cell=self._label, done=self._done, samples=self._total, seconds=round(seconds, 3),
        )
