"""Stopping a run early on purpose: SIGINT/SIGTERM and ``--time-budget``.

The engine asks :meth:`RunControl.should_stop` before each cell and each batch, and inside a
batch every forward pass of the model polls it (:func:`poll`, armed by :func:`interruptible`
around an attack's batch), so a stop lands within one model call, not at the end of a cell
that may run for minutes. The batch in flight is then dropped; the cell's finished batches
are kept (verified work only), saved for ``--resume``, and the rest is listed as not run.
A ``--time-budget`` covers the whole process (start-up and report writing included): the stop
comes a little before it, leaving :data:`REPORT_RESERVE` of it for writing the reports.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import FrameType

from robaudit.errors import UserInputError

log = logging.getLogger(__name__)

INTERRUPTED = "interrupted"
TIME_BUDGET = "time-budget"
FAILURE = "failure"

_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0}
REPORT_RESERVE = 0.05  # share of a time budget kept for writing the reports (at most 5 s)


class StopRequested(Exception):
    """Raised from a model call inside an attack once a stop was requested."""


def process_started() -> float:
    """This process's start on the ``time.perf_counter`` clock (now, where /proc is missing).

    A CI job's time limit counts from the process start, interpreter and torch import included.
    """
    now = time.perf_counter()
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            start_ticks = float(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime", encoding="ascii") as fh:
            uptime = float(fh.read().split()[0])
        age = uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return now
    return now - min(max(age, 0.0), 600.0)


def parse_duration(text: str, what: str = "--time-budget") -> float:
    """``90``, ``90s``, ``10m``, ``1.5h`` or ``1h30m`` → seconds (positive)."""
    s = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", s):
        seconds = float(s)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([smh])", s)
        if not parts or "".join(a + b for a, b in parts) != s:
            raise UserInputError(
                f"{what} {text!r}: give a duration such as 90, 90s, 10m, 1.5h or 1h30m"
            )
        seconds = sum(float(a) * _UNITS[b] for a, b in parts)
    if seconds <= 0:
        raise UserInputError(f"{what} {text!r}: give a positive duration")
    return seconds


@dataclass
class RunControl:
    """Shared between the front end (signals, budget) and the engine (checks it)."""

    budget_seconds: float | None = None
    started: float = field(default_factory=time.perf_counter)
    kind: str | None = None  # INTERRUPTED or TIME_BUDGET once a stop is requested
    reason: str | None = None
    # CUDA out-of-memory back-off: the largest batch that fits (None: the configured one)
    max_batch: int | None = None
    oom_events: list[str] = field(default_factory=list)

    def request_stop(self, kind: str, reason: str) -> None:
        """Ask the run to stop at the next check; the first request wins."""
        if self.kind is None:
            self.kind, self.reason = kind, reason

    def should_stop(self) -> bool:
        """True once a stop was requested or the time budget is spent."""
        if (
            self.kind is None
            and self.budget_seconds is not None
            and time.perf_counter() - self.started >= self.deadline()
        ):
            self.request_stop(TIME_BUDGET, f"the time budget of {self.budget_seconds:g} s ran out")
        return self.kind is not None

    def deadline(self) -> float:
        """Seconds after ``started`` at which a budgeted run stops (room left for reports)."""
        assert self.budget_seconds is not None
        return self.budget_seconds - min(5.0, REPORT_RESERVE * self.budget_seconds)

    def remaining(self) -> float | None:
        """Seconds left in the budget (None: no budget)."""
        if self.budget_seconds is None:
            return None
        return self.budget_seconds - (time.perf_counter() - self.started)

    def record_oom(self, where: str, new_batch: int) -> None:
        """Lower the batch size after an out-of-memory error; logged once per run."""
        self.max_batch = new_batch
        if not self.oom_events:
            log.warning("%s: out of memory, retrying with batch size %d", where, new_batch)
        self.oom_events.append(f"{where}: batch size lowered to {new_batch}")


_ARMED: list[RunControl] = []


@contextmanager
def interruptible(control: RunControl | None) -> Iterator[None]:
    """Within this block, :func:`poll` raises :class:`StopRequested` once ``control`` stops."""
    if control is None:
        yield
        return
    _ARMED.append(control)
    try:
        yield
    finally:
        _ARMED.pop()


def poll() -> None:
    """Called on every model call: raise :class:`StopRequested` inside an armed block."""
    if _ARMED and _ARMED[-1].should_stop():
        raise StopRequested(_ARMED[-1].reason or "stop requested")


@contextmanager
def stop_on_signals(control: RunControl) -> Iterator[None]:
    """SIGINT/SIGTERM ask the run to stop and write a partial report; a second SIGINT aborts.

    Only the main thread may install handlers; elsewhere this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}

    def handler(signum: int, frame: FrameType | None) -> None:
        if control.kind == INTERRUPTED and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now, no report
        # an interruption overrides a budget stop: the exit code must say 130
        control.kind = INTERRUPTED
        control.reason = f"interrupted by {signal.Signals(signum).name}"

    for s in previous:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
