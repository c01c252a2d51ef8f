"""The threat a robust-accuracy number is about: who the attacker is and how far they may go."""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from robaudit.norms import REGISTRY as NORMS


@dataclass(frozen=True, order=True)
class Threat:
    """(norm, eps, access): eps is in pixel units of the declared input bounds."""

    norm: str
    eps: float
    access: str = "white-box"
    label: str = ""

    def __post_init__(self) -> None:
        if not self.label:
            object.__setattr__(self, "label", format_eps(self.eps))

    @property
    def key(self) -> str:
        """A stable id used in the report and the CSV."""
        return f"{self.access}/{self.norm}/{self.label}"

    def same_ball_family(self, other: Threat) -> bool:
        """Balls of the same norm and access are nested: a break at a smaller eps holds at a larger."""
        return self.norm == other.norm and self.access == other.access

    @property
    def ball_size(self) -> float:
        """Grows with the ball (eps for an Lp norm; minus the dB of an snr budget): sort by this,
        never by eps, wherever "smaller budget first" is meant."""
        norm = NORMS.get(self.norm)
        return self.eps if norm is None else norm.ball_size(self.eps)

    def within(self, other: Threat) -> bool:
        """This threat's ball lies inside ``other``'s: its breaks hold at ``other`` too."""
        return self.same_ball_family(other) and self.ball_size <= other.ball_size


def parse_eps(value: object) -> float:
    """Parse an eps given as a number or a fraction string such as ``"8/255"`` (never ``eval``)."""
    if isinstance(value, bool):
        raise ValueError(f"eps must be a number or a fraction like '8/255', got {value!r}")
    shown = _short_repr(value)
    if isinstance(value, (int, float)):
        try:
            eps = float(value)
        except OverflowError:  # an integer too large for a float is no budget either
            eps = math.inf
    elif isinstance(value, str):
        text = value.strip().replace(" ", "")
        try:
            # decimals through float(): Fraction('1e999999999') would build a huge integer
            eps = float(Fraction(text)) if "/" in text else float(text)
        except OverflowError:  # a fraction of integers too large for a float
            eps = math.inf
        except (ValueError, ZeroDivisionError):
            raise ValueError(f"eps {shown} is not a number or a fraction like '8/255'") from None
    else:
        raise ValueError(f"eps must be a number or a fraction like '8/255', got {shown}")
    if not math.isfinite(eps) or eps < 0:
        raise ValueError(f"eps must be a finite number >= 0, got {shown}")
    return eps


def _short_repr(value: object, limit: int = 60) -> str:
    """``repr`` cut to ``limit`` characters, so a hostile value cannot flood a one-line error."""
    text = repr(value) if not isinstance(value, int) or abs(value) < 10**limit else "a huge integer"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def format_eps(eps: float) -> str:
    """Show eps as a short fraction of 255 when it is one (8/255), else as a short decimal."""
    if not math.isfinite(eps):
        return "inf"
    frac = Fraction(eps).limit_denominator(255)
    if frac.denominator == 255 and abs(float(frac) - eps) < 1e-12:
        return f"{frac.numerator}/255"
    return f"{eps:.6g}"
