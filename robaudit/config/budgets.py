"""Budgets written as a share of the input's units (``eps: ["1%", "5%"]`` at L0).

A share needs the input's size, which a config may leave for the run to take from the data;
until then an entry holds its budgets as written (``pending_eps``) and no threats. Once the
shape is known each share becomes a whole count of units (pixels, or single numbers at
``l0-feature``): ``floor(share x units)``, at least 1 (a share that rounds to no unit at all
still asks about one). The label stays as written ("5%"), so the report reads as the config.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction
from typing import Any

from robaudit import norms
from robaudit.threat import _short_repr, parse_eps


def is_share(value: object) -> bool:
    return isinstance(value, str) and value.strip().endswith("%")


def parse_share(value: str) -> Fraction:
    """``"5%"`` as 5/100; a ValueError unless it is a number > 0 and <= 100 before the %."""
    text = value.strip()[:-1].strip()
    try:
        share = Fraction(text)  # decimals and fractions of integers, never eval
    except (ValueError, ZeroDivisionError):
        raise ValueError(f"eps {_short_repr(value)} is no share like '5%'") from None
    if not 0 < share <= 100:
        raise ValueError(f"eps {_short_repr(value)}: a share must be > 0% and at most 100%")
    return share / 100


def count_of(value: str, units: int) -> int:
    """A share as a whole number of units: floored, at least 1."""
    return max(1, math.floor(parse_share(value) * units))


def split(raw: Any) -> list[Any] | None:
    """The budgets as written when one is a share (checked now), else None."""
    items = raw if isinstance(raw, list) else [raw]
    if not any(is_share(v) for v in items):
        return None
    for v in items:
        parse_share(v) if is_share(v) else parse_eps(v)
    return list(items)


def resolve(written: Sequence[Any], norm: str, shape: Sequence[int]) -> list[float]:
    """Each budget as a number: shares of the input's units counted, the others parsed."""
    units = norms.get(norm).units(shape)
    return [float(count_of(v, units)) if is_share(v) else parse_eps(v) for v in written]


def check_kind(norm: str, written: Sequence[Any], eps: Sequence[float] | None) -> None:
    """Shares only at counting norms (L0); counts there are whole numbers. ValueError else."""
    counting = norms.get(norm).counts
    if not counting and any(is_share(v) for v in written):
        first = next(v for v in written if is_share(v))
        raise ValueError(
            f"eps {first!r}: a share of the pixels is an L0 budget; a {norm} budget is a number "
            "or a fraction like '8/255'"
        )
    given = list(eps or []) + [parse_eps(v) for v in written if not is_share(v)]
    numbers = [v for v in given if counting and v != math.floor(v)]
    if numbers:
        unit = getattr(norms.get(norm), "unit", "unit")
        raise ValueError(
            f"eps {numbers[0]:g}: an {norm} budget is a whole number of {unit}s or a share of "
            "them like '5%'"
        )
