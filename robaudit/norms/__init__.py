"""Norms as objects, registered by name: one module per norm, nothing else branches on one.

``get("linf")`` gives the :class:`~robaudit.norms.base.Norm` that measures, projects, steps,
starts at random and says how large a ball covers the whole input range. Adding a norm is one
module here plus its tests. ``CONFIG_NORMS`` are those a config may name today.
"""

from __future__ import annotations

from robaudit.norms.base import TINY, Norm, per_sample
from robaudit.norms.l1 import L1
from robaudit.norms.l2 import L2
from robaudit.norms.linf import Linf

REGISTRY: dict[str, Norm] = {n.name: n for n in (Linf(), L2(), L1())}
CONFIG_NORMS = ("linf", "l2", "l1")


def get(name: str) -> Norm:
    """The norm called ``name``; a ValueError naming the valid ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown norm {name!r}; valid: {', '.join(REGISTRY)}") from None


__all__ = ["CONFIG_NORMS", "REGISTRY", "TINY", "Norm", "get", "per_sample"]
