"""Budgets written as a share of the input's units (``eps: ["1%", "5%"]`` at L0).

A share needs the input's size, which a config may leave for the run to take from the data;
until then an entry holds its budgets as written (``pending_eps``) and no threats. Once the
shape is known each share becomes a whole count of units (pixels, or single numbers at
``l0-feature``): ``floor(share x units)``, at least 1 (a share that rounds to no unit at all
still asks about one). The label stays as written ("5%"), so the report reads as the config.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field, model_validator

from robaudit import norms
from robaudit.norms.l0 import with_unit
from robaudit.threat import _short_repr, parse_eps

L0Unit = Literal["pixel", "feature"]


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


class L0Budgets(BaseModel):
    """What an entry with a norm and budgets (an attack, a gate threshold) adds for L0:
    ``l0_unit``, and shares held as written until the input's size is known."""

    l0_unit: L0Unit | None = Field(
        None, exclude_if=lambda v: v is None,
        description="l0 budgets: count pixels (all channels of a position together; the "
        "default) or single features (tabular and sequence models); sets norm to l0-feature",
    )  # fmt: skip
    # budgets as written while one is a share ("5%") and the input's size is not known yet
    pending_eps: list[Any] | str | None = Field(None, exclude=True)
    if TYPE_CHECKING:  # the entry's own fields
        norm: str
        eps: Any

    @model_validator(mode="before")
    @classmethod
    def _hold_shares(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("eps") is None:
            return data
        raw = data["eps"]
        written = split(raw)
        if written is None:
            return data
        out = {k: v for k, v in data.items() if k != "eps"}
        out["pending_eps"] = written if isinstance(raw, list) else raw
        return out

    @model_validator(mode="after")
    def _l0_unit_and_kind(self) -> L0Budgets:
        if self.l0_unit is not None:
            self.norm = with_unit(self.norm, self.l0_unit)
        pending = self.pending_eps
        written = [] if pending is None else pending if isinstance(pending, list) else [pending]
        eps = self.eps if isinstance(self.eps, list) else [] if self.eps is None else [self.eps]
        check_kind(self.norm, written, eps)
        return self


def count_shares(shape: Sequence[int] | None, entries: Iterable[L0Budgets]) -> None:
    """Each entry's shares counted against an input of ``shape`` (nothing while unknown)."""
    if shape is None:
        return
    for e in entries:
        written = e.pending_eps
        if written is None:
            continue
        counted = resolve(written if isinstance(written, list) else [written], e.norm, shape)
        e.eps = counted if isinstance(written, list) else counted[0]
        e.pending_eps = None
