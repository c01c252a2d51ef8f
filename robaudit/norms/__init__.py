"""Norms as objects, registered by name: one module per norm, nothing else branches on one.

``get("linf")`` gives the :class:`~robaudit.norms.base.Norm` that measures, projects, steps,
starts at random and says how large a ball covers the whole input range. Adding a norm is one
module here plus its tests. ``CONFIG_NORMS`` are those a config may name today.
"""

from __future__ import annotations

from robaudit.norms.base import TINY, Norm, per_sample
from robaudit.norms.l0 import L0, L0Feature
from robaudit.norms.l1 import L1
from robaudit.norms.l2 import L2
from robaudit.norms.linf import Linf
from robaudit.norms.patch import Patch
from robaudit.norms.patch import parse as parse_patch
from robaudit.norms.snr import Snr

REGISTRY: dict[str, Norm] = {n.name: n for n in (Linf(), L2(), L1())}
REGISTRY.update({n.name: n for n in (L0(), L0Feature())})  # pixels, single numbers
CONFIG_NORMS: tuple[str, ...] = ("linf", "l2", "l1", "l0", "l0-feature")
REGISTRY["snr"] = Snr()  # audio: a per-sample L2 ball set by a signal-to-noise ratio in dB
CONFIG_NORMS += ("snr", "patch")  # patch: a region, its location in the config (norms.patch)
# threat sets that are no Lp ball (a patch region, its location in the name: patch@center):
# get() finds them, the ball-contract tests over REGISTRY leave them out
REGIONS: dict[str, Norm] = {n.name: n for n in (Patch(), Patch("center"), Patch(universal=True))}


def get(name: str) -> Norm:
    """The norm called ``name``; a ValueError naming the valid ones otherwise."""
    try:
        return REGISTRY[name]
    except KeyError:
        if name.startswith("patch"):
            return REGIONS.get(name) or parse_patch(name)
        raise ValueError(f"unknown norm {name!r}; valid: {', '.join(REGISTRY)}") from None


def find(name: str) -> Norm | None:
    """The norm called ``name``, or None (reading threat keys: patch@center is one too)."""
    try:
        return get(name)
    except ValueError:
        return None


__all__ = ["CONFIG_NORMS", "REGIONS", "REGISTRY", "TINY", "Norm", "find", "get", "per_sample"]
