"""Checks that need the whole config: access, budgets, defenses, gate thresholds."""

from __future__ import annotations

from pydantic import (
    ValidationError,
)

from robaudit import norms
from robaudit.access import RANK
from robaudit.attacks.base import ACCESS_FOR_REQUIRES, registry
from robaudit.config.messages import format_errors
from robaudit.config.sections import AttackSpec, Config, ModelSection
from robaudit.inputs import InputSpec, needs_image_error

ACCESS_ORDER = RANK


def check_access(source: str, i: int, member: str, access: str) -> list[str]:
    """An attack cannot run at a threat that gives the attacker less than it needs."""
    need = ACCESS_FOR_REQUIRES[registry()[member].requires]
    if ACCESS_ORDER[need] <= ACCESS_ORDER[access]:
        return []
    fits = [
        n for n, c in registry().items()
        if ACCESS_ORDER[ACCESS_FOR_REQUIRES[c.requires]] <= ACCESS_ORDER[access]
    ]
    return [
        f"{source}: attacks[{i}].access: {member} needs {need} access, the threat gives "
        f"{access!r}; attacks that run at {access}: {', '.join(fits)}"
    ]


def check_eps(source: str, i: int, spec: AttackSpec, model: ModelSection) -> list[str]:
    if spec.eps is None or model.input_shape is None:  # checked once the profile filled it
        return []
    lo, hi = model.bounds
    span = hi - lo
    norm = norms.get(spec.norm)
    limit = norm.covering(span, model.input_shape)
    out = []
    for j, e in enumerate(spec.eps):
        if norm.beyond_range(e, span, model.input_shape):
            out.append(
                f"{source}: attacks[{i}].eps[{j}]: {e:g} is larger than the whole input range "
                f"({spec.norm} budget at most {limit:g} for bounds {list(model.bounds)})"
            )
    return out


def check_defenses(source: str, cfg: Config) -> list[str]:
    from robaudit.defenses import defense_registry

    out = []
    spec_in = input_spec(cfg)
    for i, spec in enumerate(cfg.defenses):
        cls = defense_registry()[spec.name]
        if spec_in is not None and not spec_in.is_image and getattr(cls, "needs_image", False):
            where = f"{source}: defenses[{i}].name"
            out.append(needs_image_error(f"defense '{spec.name}'", spec_in, where))
            continue
        try:
            spec._params = cls.Params.model_validate(spec.model_extra or {})
        except ValidationError as exc:
            out.append(format_errors(source, exc, ("defenses", i), cls.Params, spec=True))
            continue
        if spec.backward == "eot" and not cls.randomized:
            out.append(
                f"{source}: defenses[{i}].backward: eot needs a randomized defense; "
                f"{spec.name} is deterministic (use auto, exact or bpda)"
            )
    labels = variant_labels(cfg)
    if len(set(labels)) != len(labels) or "model" in labels:
        out.append(f"{source}: defenses: variant labels must be unique and not 'model': {labels}")
    return out


def input_spec(cfg: Config) -> InputSpec | None:
    """The input's spec when the config gives its shape (else the run checks once it is known)."""
    shape = cfg.model.input_shape
    return InputSpec.of(shape) if shape is not None else None


def variant_labels(cfg: Config) -> list[str]:
    """The report's name of each defense variant, in config order."""
    out = []
    for spec in cfg.defenses:
        try:
            out.append(spec.label or spec.build().label())
        except ValidationError:
            out.append(spec.label or spec.name)
    return out


def fitted(cfg: Config) -> bool:
    """Every budget is known (none is left for the budget profile to fill in at run time)."""
    return all(spec.eps is not None for spec in cfg.attacks) and all(
        g.eps is not None for g in cfg.gate.min_robust_accuracy
    )


def check_gate(source: str, cfg: Config) -> list[str]:
    threats = cfg.threats()
    out = []
    radii = cfg.certify.radii if cfg.certify is not None else []
    for k, c in enumerate(cfg.gate.min_certified_accuracy):
        if not any(abs(r - c.radius) < 1e-9 for r in radii):
            out.append(
                f"{source}: gate.min_certified_accuracy[{k}].radius: {c.radius:g} is not among "
                f"certify.radii ({', '.join(f'{r:g}' for r in radii) or 'no certify section'})"
            )
    variants = {"model", *variant_labels(cfg)}
    if not fitted(cfg):  # budgets from the profile: checked once the run has fitted them
        return out
    for k, g in enumerate(cfg.gate.min_robust_accuracy):
        if g.variant not in variants:
            out.append(
                f"{source}: gate.min_robust_accuracy[{k}].variant: {g.variant!r} is not a "
                f"variant of this config; valid: {', '.join(sorted(variants))}"
            )
            continue
        norm = g.threat_norm  # a patch's location is part of its threat
        if not any(
            t.norm == norm and t.access == g.access and abs(t.eps - g.budget) < 1e-9
            for t in threats
        ):
            have = (
                ", ".join(f"{t.access} {t.norm} {t.label}" for t in threats if t.norm == norm)
                or "none"
            )
            out.append(
                f"{source}: gate.min_robust_accuracy[{k}]: no attack runs at {g.access} {norm} "
                f"eps {g._eps_label or f'{g.eps:g}'}; threats in this config at {norm}: {have}"
            )
    return out


def check_natural(source: str, cfg: Config) -> list[str]:
    """The natural-robustness section against the input and the gate's natural thresholds."""
    out: list[str] = []
    nat, gate = cfg.natural, cfg.gate
    spec_in = input_spec(cfg)
    if nat is not None and spec_in is not None and not spec_in.is_image:
        out.append(needs_image_error("natural robustness", spec_in, f"{source}: natural"))
    corr = nat.corruptions if nat is not None else None
    need = {
        "min_corruption_accuracy": (gate.min_corruption_accuracy, corr, "natural.corruptions"),
        "max_mce": (gate.max_mce, corr, "natural.corruptions"),
        "min_geometric_accuracy": (
            gate.min_geometric_accuracy, nat.geometric if nat else None, "natural.geometric"
        ),
        "min_occlusion_accuracy": (
            gate.min_occlusion_accuracy, nat.occlusion if nat else None, "natural.occlusion"
        ),
    }
    for key, (value, section, name) in need.items():
        if value is not None and section is None:
            out.append(f"{source}: gate.{key}: set, but the config has no {name} section")
    if gate.max_mce is not None and corr is not None and corr.reference is None:
        out.append(
            f"{source}: gate.max_mce: mCE needs a reference model "
            "(natural.corruptions.reference: a checkpoint)"
        )
    if isinstance(gate.min_corruption_accuracy, dict) and corr is not None:
        for name, value in gate.min_corruption_accuracy.items():
            if name not in corr.chosen():
                out.append(
                    f"{source}: gate.min_corruption_accuracy.{name}: not among the corruptions "
                    f"run ({', '.join(corr.chosen())})"
                )
            elif not 0.0 <= value <= 1.0:
                out.append(
                    f"{source}: gate.min_corruption_accuracy.{name}: {value} is not in [0, 1]"
                )
    elif isinstance(gate.min_corruption_accuracy, float) and not (
        0.0 <= gate.min_corruption_accuracy <= 1.0
    ):
        out.append(
            f"{source}: gate.min_corruption_accuracy: {gate.min_corruption_accuracy} is not in "
            "[0, 1]"
        )
    return out
