"""Named batteries: fixed protocols of several attacks run as a cascade under one config entry.

``battery: autoattack`` is Croce & Hein 2020's standard AutoAttack (APGD-CE, APGD-T, FAB-T,
Square at the paper's settings); its members share a few parameters (steps, restarts,
targets, queries). The config validates the shared parameters; the plan expands an entry into
its members with :func:`battery_members`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from robaudit.attacks.base import AttackParams


class BatteryParams(AttackParams):
    """Parameters shared by a battery's members (AutoAttack's standard values by default)."""

    steps: int = Field(100, ge=1, le=100_000, description="iterations per APGD run")
    restarts: int = Field(1, ge=1, le=1000, description="restarts per APGD run")
    targets: int = Field(9, ge=1, le=1000, description="target classes for APGD-T and FAB-T")
    queries: int = Field(5000, ge=1, le=1_000_000, description="Square's queries per sample")


# Croce & Hein 2020's standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square, as a cascade.
BATTERIES: dict[str, dict[str, tuple[str, ...]]] = {
    "autoattack": {"runs": ("apgd", "apgd-t", "fab-t", "square"), "missing": ()},
}

BATTERY_PARAMS: dict[str, type[AttackParams]] = {"autoattack": BatteryParams}


def battery_members(name: str, p: AttackParams) -> list[tuple[str, dict[str, Any]]]:
    """The (attack name, parameters) a battery runs, in its order."""
    assert name in BATTERIES and isinstance(p, BatteryParams)
    return [
        ("apgd", {"steps": p.steps, "restarts": p.restarts, "loss": "ce"}),
        ("apgd-t", {"steps": p.steps, "restarts": p.restarts, "targets": p.targets}),
        (
            "fab-t",
            {
                "steps": p.steps,
                "restarts": p.restarts,
                "targets": p.targets,
                "stop_within_eps": True,
            },
        ),
        ("square", {"queries": p.queries}),
    ]
