"""The plan stage: everything a scan will run, decided before the first attack.

:func:`make_plan` turns the config into a frozen :class:`Plan`: the config's attacks × threats
(battery members expanded), integrity's reactions to the pre-flight checks (EOT, margin-loss
PGD, straight-through copies, a gradient-free search), the access cap (attacks that need more
access than the run has are skipped, each with its reason), the defense variants' attacks,
and the cheap-first order the engine runs the cells in. The engine, the variants and the
integrity checks read the plan; none of them decides what runs.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from robaudit.attacks.base import ACCESS_FOR_REQUIRES, Attack, registry
from robaudit.classifier import ACCESS_RANK, Classifier
from robaudit.config import Config, variant_labels
from robaudit.engine import PlannedAttack, order_plan
from robaudit.entries import BATTERY_ID
from robaudit.errors import ConfigError
from robaudit.integrity import Preflight, preflight, react
from robaudit.loading.data import DataSet
from robaudit.results import SkippedAttack


@dataclass(frozen=True)
class Plan:
    """What one scan runs, in the order it runs it."""

    cells: tuple[PlannedAttack, ...]  # the audited model's, cheap first
    skipped: tuple[SkippedAttack, ...]  # attacks the access level did not allow
    preflight: Preflight  # what the pre-flight checks saw and how the plan reacted
    access: str  # the access level every threat was capped to
    capped_because: str
    variant_cells: tuple[PlannedAttack, ...] = ()  # what each defense variant runs
    variants: tuple[str, ...] = ()  # the defense variants' labels, in config order
    certify: bool = False

    def attacks(self) -> dict[int, Attack]:
        """The attack instance behind each entry index."""
        return {p.index: p.attack for p in self.cells}

    def params(self) -> dict[int, dict[str, Any]]:
        """Each entry's parameters as the report shows them."""
        return {p.index: p.attack.params.model_dump(mode="json") for p in self.cells}


def make_plan(
    clf: Classifier, data: DataSet, cfg: Config, capped_because: str, config_path: str | None
) -> Plan:
    """The plan for ``cfg`` on ``clf``; a plan left empty is a config error naming what fits.

    The pre-flight checks run here (on up to 64 samples of ``data``) because the plan reacts
    to them; they may set EOT and sequential verdicts on ``clf`` (randomized models).
    """
    cells = build_plan(cfg)
    pre = Preflight()
    if cfg.integrity.enabled:
        pre = preflight(clf, data.samples, data.y)
        cells = react(pre, clf, cells, cfg)
    cells, skipped = cap_access(cells, clf.access, capped_because)
    if not cells:
        raise ConfigError(_nothing_fits(skipped, clf.access, capped_because, config_path))
    variant_cells: list[PlannedAttack] = []
    if cfg.defenses:
        variant_cells, _ = cap_access(build_plan(cfg), clf.access, capped_because)
    return Plan(
        cells=tuple(order_plan(cells)),
        skipped=tuple(skipped),
        preflight=pre,
        access=clf.access,
        capped_because=capped_because,
        variant_cells=tuple(variant_cells),
        variants=tuple(variant_labels(cfg)),
        certify=cfg.certify is not None,
    )


def _nothing_fits(
    skipped: list[SkippedAttack], access: str, why: str, config_path: str | None
) -> str:
    names = ", ".join(sorted({s.attack for s in skipped}))
    fits = ", ".join(
        n for n, c in registry().items()
        if ACCESS_RANK[ACCESS_FOR_REQUIRES[c.requires]] <= ACCESS_RANK[access]
    )
    return (
        f"{config_path or 'config'}: no attack can run at {access} access ({why}); "
        f"skipped {names}; add one of: {fits}"
    )


def build_plan(cfg: Config) -> list[PlannedAttack]:
    """Every (attack, eps) pair in the config, as attack instances at threats."""
    plan: list[PlannedAttack] = []
    reg = registry()
    for i, spec in enumerate(cfg.attacks):
        members = spec.members()
        for k, (name, params) in enumerate(members):
            cls = reg[name]
            attack = cls(spec.params if spec.battery is None else cls.Params(**params))
            # battery members get ids of their own (BATTERY_ID * (k + 1) + entry) and cascade
            index = i if spec.battery is None else BATTERY_ID * (k + 1) + i
            plan.extend(
                PlannedAttack(index, attack, t, cascade=spec.battery is not None)
                for t in spec.threats()
            )
    return plan


def cap_access(
    plan: list[PlannedAttack], access: str, why: str
) -> tuple[list[PlannedAttack], list[SkippedAttack]]:
    """Lower every threat to ``access``; attacks that need more are skipped, with the reason.

    The threats are relabelled (a white-box row becomes a score row) so no number in the report
    claims a stronger attacker than the one that ran, and a gate threshold on a white-box
    threat then fails as "not evaluated" rather than passing on weaker evidence.
    """
    if access == "white-box":
        return plan, []
    kept: list[PlannedAttack] = []
    skipped: dict[int, dict[str, Any]] = {}
    for p in plan:
        level = min(p.threat.access, access, key=ACCESS_RANK.__getitem__)
        need = ACCESS_FOR_REQUIRES[p.attack.requires]
        if ACCESS_RANK[need] > ACCESS_RANK[level]:
            row = skipped.setdefault(
                p.index,
                {
                    "attack": p.attack.name,
                    "attack_index": p.index,
                    "threats": [],
                    "reason": f"needs {need} access; {why}",
                },
            )
            row["threats"].append(p.threat.key)
            continue
        kept.append(replace(p, threat=replace(p.threat, access=level)))
    return kept, [SkippedAttack(**row) for row in skipped.values()]
