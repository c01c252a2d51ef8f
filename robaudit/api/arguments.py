"""The checks on a scan's arguments, written once for the Python API and the CLI.

Both front ends refuse the same values; only the name a message gives the value differs: the
keyword a Python caller wrote (``seed=-1``) or the flag a shell user typed (``--seed -1``).
The CLI runs these checks before it creates the output folder, so a bad flag leaves nothing
half-written.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from robaudit.access import LEVELS as ACCESS_LEVELS
from robaudit.classifier import resolve_device
from robaudit.config import MAX_SEED
from robaudit.control import RunControl, parse_duration
from robaudit.errors import UserInputError
from robaudit.threads import ThreadChoice


@dataclass(frozen=True)
class Naming:
    """How an error names the argument it refuses: as a keyword or as a command-line flag."""

    flags: bool

    def label(self, key: str) -> str:
        """``max_drop`` or ``--max-drop``."""
        return "--" + key.replace("_", "-") if self.flags else key

    def given(self, key: str, value: Any, quote: bool = False) -> str:
        """``seed=-1`` for a keyword; ``--seed -1`` (``--access 'x'`` with ``quote``) for a flag."""
        if not self.flags:
            return f"{key}={value!r}"
        return f"{self.label(key)} {value!r}" if quote else f"{self.label(key)} {value}"


KEYWORDS = Naming(flags=False)
FLAGS = Naming(flags=True)


def check_overrides(
    samples: int | None,
    batch_size: int | None,
    device: str | None,
    seed: int | None = None,
    names: Naming = KEYWORDS,
) -> None:
    """The overrides of the config's seed, sample count, batch size and device."""
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        raise UserInputError(f"{names.given('seed', seed)}: give a whole number from 0 to {MAX_SEED}")
    if samples is not None and (isinstance(samples, bool) or samples <= 0):
        raise UserInputError(f"{names.given('samples', samples)}: give a positive number of samples")
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size <= 0):
        raise UserInputError(f"{names.given('batch_size', batch_size)}: give a positive batch size")
    if device is None:
        return
    if names.flags:
        resolve_device(device)  # fails fast, before the config or the model is read
    elif device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UserInputError(f"device={device!r}: valid values are auto, cpu, cuda, cuda:N")


def check_access(access: str | None, names: Naming = KEYWORDS) -> None:
    """``access``: audit as an attacker with this much access (None: the model's own)."""
    if access is not None and access not in ACCESS_LEVELS:
        raise UserInputError(
            f"{names.given('access', access, quote=True)}: valid values are {', '.join(ACCESS_LEVELS)}"
        )


def check_threads(threads: int | ThreadChoice | None, names: Naming = KEYWORDS) -> None:
    """A thread count is a positive whole number (a flag's value is one already)."""
    if threads is None or isinstance(threads, ThreadChoice):  # a ThreadChoice: the CLI's, with its reason
        return
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 1:
        number = "number" if names.flags else "whole number"
        raise UserInputError(f"{names.given('threads', threads)}: give a positive {number} of threads")


def budgeted(
    control: RunControl | None, time_budget: float | str | None, names: Naming = KEYWORDS
) -> RunControl | None:
    """``control`` (a new one if None) with the time budget set; unchanged without a budget."""
    if time_budget is None:
        return control
    budget = (
        parse_duration(time_budget, names.label("time_budget"))
        if isinstance(time_budget, str)
        else float(time_budget)
    )
    if budget <= 0:
        raise UserInputError(f"{names.given('time_budget', time_budget)}: give a positive duration")
    control = control or RunControl()
    control.budget_seconds = budget
    return control
