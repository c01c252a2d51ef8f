"""Defense variants: each configured defense audited beside the bare model.

Every variant runs the config's attacks twice over one clean pass: *adaptively*, through the
defense with exact, BPDA or EOT gradients, and *non-adaptively*, searching on the bare model
and verifying on the defended one (the naive evaluation). Any verified break counts for the
variant's robust accuracy; the summary also gives each mode's own robust accuracy and the gap,
the false sense of security a naive evaluation would have given.

The two modes are judged apart: each runs as its own engine pass with its own cascade, so the
naive twins attack every sample, not only those the adaptive attacks left standing (with a
shared cascade the naive number came out 99% where an independent naive evaluation gives 88%).
And a naive evaluator runs its attack to the end: the twins do not stop a sample once the bare
model is fooled (``early_stop`` off), since an example just across the bare model's boundary
is one the defense undoes more easily than the one a full run reaches.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

import torch

from robaudit.attacks.base import Attack
from robaudit.classifier import Classifier
from robaudit.config import Config, DefenseSpec, variant_labels
from robaudit.defenses import Defense, Transform
from robaudit.engine import (
    EngineControl,
    EngineResult,
    PlannedAttack,
    describe,
    order_plan,
    run_plan,
)
from robaudit.entries import NON_ADAPTIVE_ID
from robaudit.errors import RuntimeFailure
from robaudit.loading.samples import Images
from robaudit.progress import Progress
from robaudit.results import AttackRow, ThreatRow, wilson_interval
from robaudit.tables import build_tables
from robaudit.threat import Threat
from robaudit.verdicts import SequentialTest

# (defended model, variant label, adaptive cells, non-adaptive twins) -> the cells to run
PrepareCells = Callable[
    [Classifier, str, list[PlannedAttack], list[PlannedAttack]],
    tuple[list[PlannedAttack], list[PlannedAttack]],
]


def variant_classifier(
    bare: Classifier, defense: Defense, backward: str, cfg: Config
) -> Classifier:
    """The defended model as attacks see it: the defense's transform (BPDA/exact) before the
    preprocessing, EOT gradients when asked for or when the defense is random, and verdicts by
    the sequential test (robaudit.verdicts) only when it is random: a deterministic defense
    gives the same label on every draw, so one forward pass is its verdict."""
    transform = None if defense.name == "ensemble" else Transform(defense, backward, bare.bounds)
    eot = backward == "eot" or defense.randomized
    return bare.derive(
        model=defense.wrap_model(bare.model),
        eot=cfg.integrity.eot_samples if eot else 1,
        votes=cfg.integrity.votes if defense.randomized else 1,
        sequential=SequentialTest() if defense.randomized else None,
        transform=transform,
    )


def bare_view(clf: Classifier) -> Classifier:
    """The undefended model with the same preprocessing: the non-adaptive search space."""
    return clf.derive(eot=1, votes=1, sequential=None, transform=None)


def variant_plan(
    plan: list[PlannedAttack], bare: Classifier, non_adaptive: bool
) -> tuple[list[PlannedAttack], frozenset[int]]:
    """The config's attacks (adaptive) plus, for gradient attacks, a twin searching on the
    bare model (non-adaptive; black-box attacks query the defended model either way)."""
    twins = [
        replace(p, index=NON_ADAPTIVE_ID + p.index, search=bare, attack=to_the_end(p.attack))
        for p in plan
        if non_adaptive and p.attack.requires == "gradients"
    ]
    return [*plan, *twins], frozenset(t.index for t in twins)


def to_the_end(attack: Attack) -> Attack:
    """The attack as a naive evaluator runs it: every step, no stop once the model is fooled."""
    if "early_stop" not in type(attack.params).model_fields or not attack.params.early_stop:
        return attack
    return type(attack)(attack.params.model_copy(update={"early_stop": False}))


def summarize(
    label: str,
    spec: DefenseSpec,
    defense: Defense,
    backward: str,
    er: EngineResult,
    non_adaptive: frozenset[int],
    threats: tuple[ThreatRow, ...],
) -> dict[str, Any]:
    """Per threat: robust accuracy against the non-adaptive and the adaptive attacks alone,
    the gap between them, and the variant's worst case over both. A random defense's open
    verdicts count as breaks in each mode, as in the headline (``robust_accuracy_upper``
    and ``undecided`` give the other end)."""
    n = int(er.correct.numel())
    rows = []
    for t in threats:
        modes: dict[str, torch.Tensor] = {}
        for c in er.cells:
            # a break at a smaller eps of the same norm and access holds here too (nested
            # balls): a cascade does not attack those samples again at this eps
            if not c.threat.within(Threat(t.norm, t.eps, t.access)):
                continue
            mode = "non_adaptive" if c.index in non_adaptive else "adaptive"
            lost = c.broken if c.undecided is None else c.broken | c.undecided
            modes[mode] = modes.get(mode, torch.zeros(n, dtype=torch.bool)) | lost
        kept = {m: int((er.correct & ~b).sum()) for m, b in modes.items()}
        acc = {m: k / n if n else 0.0 for m, k in kept.items()}
        cis = {m: list(wilson_interval(k, n)) for m, k in kept.items()}
        na, ad = acc.get("non_adaptive"), acc.get("adaptive")
        rows.append(
            {
                "threat_key": t.key,
                "model_threat_key": t.key.removeprefix(f"{label}/"),
                "access": t.access,
                "norm": t.norm,
                "eps": t.eps,
                "eps_label": t.eps_label,
                "non_adaptive_robust_accuracy": na,
                "adaptive_robust_accuracy": ad,
                "non_adaptive_ci": cis.get("non_adaptive"),
                "adaptive_ci": cis.get("adaptive"),
                "gap": None if na is None or ad is None else na - ad,
                "robust_accuracy": t.robust_accuracy,
                "ci": [t.ci_low, t.ci_high],
                "robust_accuracy_upper": t.robust_accuracy_upper,
                "undecided": t.undecided,
            }
        )
    return {
        "variant": label,
        "defense": spec.name,
        "params": defense.params.model_dump(mode="json"),
        "backward": backward,
        "randomized": defense.randomized,
        "clean_correct": int(er.correct.sum()),
        "clean_accuracy": float(er.correct.float().mean()) if n else 0.0,
        "clean_ci": list(wilson_interval(int(er.correct.sum()), n)),
        "threats": rows,
    }


def run_variants(
    clf: Classifier,
    x: Images,
    y: torch.Tensor,
    plan: list[PlannedAttack],
    cfg: Config,
    *,
    seed: int,
    batch_size: int,
    progress: Progress | None,
    ctl: EngineControl | None = None,
    prepare: PrepareCells | None = None,
) -> tuple[list[ThreatRow], list[AttackRow], list[dict[str, Any]], list[dict[str, object]]]:
    """Audit every configured defense; rows carry the variant's label.

    The fourth value lists the cells that did not run (a stop or a failure; their threat
    keys carry the variant's label). A failure ends the loop: ``failure`` is set on it.
    ``prepare`` turns cells that need work before the engine runs (universal patches: trained
    against the defended model, the twin pasting the bare model's) into cells it can run.
    """
    ctl = ctl or EngineControl()
    unrun: list[dict[str, object]] = []
    threats: list[ThreatRow] = []
    attacks: list[AttackRow] = []
    summaries: list[dict[str, Any]] = []
    bare = bare_view(clf)
    for spec, label in zip(cfg.defenses, variant_labels(cfg), strict=True):
        if unrun:  # an earlier variant stopped: the rest do not start
            unrun.append({"attack": "*", "attack_index": -1, "threat": f"{label}/*"})
            continue
        defense = spec.build()
        backward = defense.default_backward() if spec.backward == "auto" else spec.backward
        vclf = variant_classifier(clf, defense, backward, cfg)
        vplan, twins = variant_plan(plan, bare, cfg.engine.non_adaptive)
        adaptive = [p for p in vplan if p.index not in twins]
        naive = [p for p in vplan if p.index in twins]
        if prepare is not None:
            adaptive, naive = prepare(vclf, label, adaptive, naive)
        vctl = replace(ctl, variant=label)
        er = run_plan(
            vclf, x, y, adaptive, seed=seed, batch_size=batch_size, cascade=cfg.engine.cascade,
            examples=0, progress=progress, ctl=vctl, verdicts=len(vplan),
        )
        if naive and not (er.unrun or er.failure):
            twin = run_plan(
                vclf, x, y, naive, seed=seed, batch_size=batch_size,
                cascade=cfg.engine.cascade, examples=0, progress=progress, ctl=vctl, clean=er,
            )
            er.cells += twin.cells
            er.unrun, er.failure = twin.unrun, twin.failure
        elif naive:
            er.unrun += [describe(p) for p in order_plan(naive)]
        if er.unrun or er.failure:
            unrun.extend({**u, "threat": f"{label}/{u['threat']}"} for u in er.unrun)
            if er.failure:
                raise RuntimeFailure(f"{label}: {er.failure}")
            continue
        params = {p.index: p.attack.params.model_dump(mode="json") for p in vplan}
        trows, arows, _ = build_tables(
            er, y, params, cfg.engine.cascade, variant=label, non_adaptive=twins
        )
        threats.extend(trows)
        attacks.extend(arows)
        summaries.append(summarize(label, spec, defense, backward, er, twins, trows))
    return threats, attacks, summaries, unrun
