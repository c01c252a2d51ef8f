"""Named batteries: fixed protocols of several attacks run as a cascade under one config entry.

``battery: autoattack`` is Croce & Hein 2020's standard AutoAttack (APGD-CE, APGD-T, FAB-T,
Square at the paper's settings), in the version of the entry's norm: at L1 the members are
the L1 ones (Croce & Hein 2021; AutoAttack's ``version='standard'`` at L1): APGD-CE with 5
restarts and APGD-T with 5 targets, both with l1-APGD's 3·eps → eps schedule, FAB-T with 9
targets, Square with 5,000 queries. Its members share a few parameters (steps, restarts,
targets, queries); left out, each takes AutoAttack's value for the norm. The config validates
the shared parameters and refuses a norm some member lacks; the plan expands an entry into
its members with :func:`battery_members`.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from robaudit.attacks.base import AttackParams


class BatteryParams(AttackParams):
    """Parameters shared by a battery's members (AutoAttack's standard values by default)."""

    steps: int = Field(100, ge=1, le=100_000, description="iterations per APGD run")
    restarts: int | None = Field(
        None, ge=1, le=1000,
        description="restarts of every APGD and FAB run; omitted: AutoAttack's (APGD-CE 5 at "
        "L1, else 1)",
    )  # fmt: skip
    targets: int | None = Field(
        None, ge=1, le=1000,
        description="target classes for APGD-T and FAB-T; omitted: AutoAttack's (9, APGD-T 5 "
        "at L1)",
    )  # fmt: skip
    queries: int = Field(5000, ge=1, le=1_000_000, description="Square's queries per sample")


# Croce & Hein 2020's standard AutoAttack: APGD-CE, APGD-T, FAB-T, Square, as a cascade.
BATTERIES: dict[str, dict[str, tuple[str, ...]]] = {
    "autoattack": {"runs": ("apgd", "apgd-t", "fab-t", "square"), "missing": ()},
}

BATTERY_PARAMS: dict[str, type[AttackParams]] = {"autoattack": BatteryParams}

# AutoAttack's standard settings that differ by norm: (APGD-CE restarts, APGD-T targets)
_STANDARD: dict[str, tuple[int, int]] = {"l1": (5, 5)}
_STANDARD_DEFAULT = (1, 9)
FAB_TARGETS = 9


def battery_members(name: str, p: AttackParams, norm: str) -> list[tuple[str, dict[str, Any]]]:
    """The (attack name, parameters) a battery runs at ``norm``, in its order."""
    assert name in BATTERIES and isinstance(p, BatteryParams)
    apgd_restarts, apgd_t_targets = _STANDARD.get(norm, _STANDARD_DEFAULT)
    restarts = p.restarts or 1
    return [
        ("apgd", {"steps": p.steps, "restarts": p.restarts or apgd_restarts, "loss": "ce"}),
        (
            "apgd-t",
            {"steps": p.steps, "restarts": restarts, "targets": p.targets or apgd_t_targets},
        ),
        (
            "fab-t",
            {
                "steps": p.steps,
                "restarts": restarts,
                "targets": p.targets or FAB_TARGETS,
                "stop_within_eps": True,
            },
        ),
        ("square", {"queries": p.queries}),
    ]
