"""What a straight-through rewrite returns, and how its reasons are worded.

Owns the public result types (:class:`Replacement`, :class:`StraightThrough`), the
:data:`NOTHING_FOUND` reason, and the one-line form of an exception used in reasons.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

NOTHING_FOUND = "no gradient-killing operation found"


@dataclass(frozen=True)
class Replacement:
    """One gradient-killing operation and what the copy passes backward through it."""

    op: str  # as the graph names it: "aten.round.default", "aten::gt", "Tensor.float"
    where: str  # node name, module path and source line when the graph records them
    backward: str  # "identity", or the smooth surrogate whose gradient is used


@dataclass(frozen=True)
class StraightThrough:
    """The rewritten copy (None when there is nothing to rewrite or it cannot be done).

    ``reason`` is one line for the report whenever ``module`` is None. ``left`` lists
    gradient killers that were found but kept (no meaningful surrogate exists for them);
    ``graph`` says how the graph was captured: "torch.export", "fx.symbolic_trace",
    "torchscript" or None.
    """

    module: nn.Module | None
    replacements: tuple[Replacement, ...]
    reason: str | None
    left: tuple[Replacement, ...] = ()
    graph: str | None = None


def _one_line(exc: BaseException | str, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
