"""Progress as log lines, for CI logs: stderr that is not a terminal gets no progress bar.

One line when each cell starts and finishes (with the running robust accuracy at its threat),
and a heartbeat at most every ``HEARTBEAT`` seconds while a long cell runs, so an 18-minute
audit never leaves an empty log. The heartbeat comes from a small background thread: one batch
of a ResNet-18 under a 100-step attack can take minutes without a single ``advance``. ``json``
writes one JSON object per event instead, for log collectors.
"""

from __future__ import annotations

import json
import threading
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
        self._robust: tuple[int, int] | None = None
        self._lock = threading.Lock()
        # a test's fake clock drives heartbeats through advance() alone
        self._background = clock is time.monotonic
        self._ticker: tuple[threading.Thread, threading.Event] | None = None

    def header(self, kind: str, text: str, **fields: Any) -> None:
        """A line written just before the first cell starts: once the model and data have
        loaded, so a bad input still ends in exactly one error line."""
        self._header = (kind, text, fields)

    def event(self, kind: str, text: str, **fields: Any) -> None:
        """One log line: ``[  12.3s] text`` or a JSON object with ``event`` and the fields."""
        with self._lock:
            now = self._clock() - self._t0
            if self._fmt == "json":
                self._write(
                    json.dumps({"event": kind, "t": round(now, 3), **fields}, sort_keys=True)
                )
            else:
                self._write(f"[{now:7.1f}s] {text}")

    def note(self, kind: str, text: str, **fields: Any) -> None:
        """A line about work outside the cells (a universal patch in training), after the
        header like every other line."""
        self._flush_header()
        self.event(kind, text, **fields)

    def _flush_header(self) -> None:
        if self._header is not None:
            kind, text, fields = self._header
            self._header = None
            self.event(kind, text, **fields)

    def start(self, label: str, total: int) -> None:
        self._flush_header()
        self._label, self._total, self._done, self._robust = label, total, 0, None
        self._started = self._last = self._clock()
        self.event("cell_start", f"start {label}: {total} samples", cell=label, samples=total)
        if self._background:
            stop = threading.Event()
            thread = threading.Thread(target=self._tick, args=(stop,), daemon=True)
            self._ticker = (thread, stop)
            thread.start()

    def _tick(self, stop: threading.Event) -> None:
        while not stop.wait(min(1.0, self._every)):
            self._beat()

    def _beat(self) -> None:
        now = self._clock()
        if now - self._last < self._every:
            return
        self._last = now
        self.event(
            "heartbeat",
            f"... {self._label}: {self._done}/{self._total} samples, {now - self._started:.0f} s",
            cell=self._label, done=self._done, samples=self._total,
            seconds=round(now - self._started, 1),
        )

    def advance(self, n: int) -> None:
        self._done += n
        self._beat()

    def tally(self, robust: int, of: int) -> None:
        """The running robust count at the cell's threat, shown on its finish line."""
        self._robust = (robust, of)

    def finish(self) -> None:
        if self._ticker is not None:
            thread, stop = self._ticker
            self._ticker = None
            stop.set()
            thread.join()
        seconds = self._clock() - self._started
        text = f"done  {self._label}: {self._done}/{self._total} samples in {seconds:.1f} s"
        fields: dict[str, Any] = {}
        if self._robust is not None:
            robust, of = self._robust
            text += f", robust so far {robust}/{of} ({robust / max(1, of):.1%})"
            fields = {"robust": robust, "of": of}
        self.event(
            "cell_finish", text, cell=self._label, done=self._done, samples=self._total,
            seconds=round(seconds, 3), **fields,
        )
