"""What robaudit does about pre-flight findings before the attacks run (EOT and sequential
verdicts for randomized models, margin-loss attacks, straight-through copies and a
gradient-free search for masked gradients), and whether each reaction ran where it had to."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import torch

from robaudit.attacks.base import Attack
from robaudit.classifier import Classifier
from robaudit.engine import EngineResult, PlannedAttack
from robaudit.entries import REACTION_ID
from robaudit.inputs import InputSpec
from robaudit.integrity.probes import Coverage, Preflight
from robaudit.results import Finding
from robaudit.threat import Threat


def react(
    pre: Preflight, clf: Classifier, plan: list[PlannedAttack], cfg: Any
) -> list[PlannedAttack]:
    """Apply what robaudit can do about pre-flight findings; returns the (possibly) extended plan.

    A reaction to masked gradients resolves its finding only after the run, and only if its
    attacks ran at every affected threat (:func:`settle`).
    """
    from robaudit.attacks.fgsm_pgd import PGD, PGDParams

    settings = cfg.integrity
    if pre.randomized and settings.react:
        from robaudit.verdicts import SequentialTest

        clf.eot, clf.votes = settings.eot_samples, settings.votes
        clf.sequential = test = SequentialTest()
        _resolve(
            pre,
            "RA004",
            f"gradients averaged over {clf.eot} draws (EOT); verdicts by a sequential test "
            f"(Clopper-Pearson, {test.first} to {test.max_draws} draws, error {test.alpha:g} "
            "per sample; undecided samples counted broken)",
        )
    if pre.masked_gradients and settings.react:
        margin = {i for i, p in enumerate(plan) if _margin_loss(p.attack)}
        covered = {where(plan[i].threat) for i in margin}
        steps = max((getattr(p.attack.params, "steps", 0) for p in plan), default=0) or 50
        extra = [
            PlannedAttack(REACTION_ID + i, PGD(PGDParams(steps=steps, loss="margin")), t)
            for i, t in enumerate(sorted({p.threat for p in plan if where(p.threat) not in covered}))
        ]
        how = (
            f"added PGD-{steps} with the margin loss at {len(extra)} threat(s)"
            if extra
            else "margin-loss attacks already run at every threat"
        )
        needed = _needed(plan, extra, lambda a: _margin_loss(a))
        plan = [*plan, *extra]
        # margin attacks cure saturated softmax; they cure dead gradients only if their own
        # gradients are alive (not for quantization inside the model: that needs BPDA and a
        # gradient-free attack)
        pre.coverage["RA010"] = Coverage(how, needed)
        if pre.margin_gradients_ok:
            pre.coverage["RA003"] = Coverage(how, needed)
        else:
            plan = _straight_through(pre, clf, plan, tuple(cfg.model.input_shape))
            image = InputSpec.of(cfg.model.input_shape).is_image
            plan = _add_gradient_free(pre, plan, settings.square_queries, image)
    return plan


def _margin_loss(attack: Attack) -> bool:
    return getattr(attack.params, "loss", None) in ("margin", "dlr") or attack.name == "apgd-t"


def gradient_free_search(attack: Attack) -> bool:
    """An adversarial search of the target that needs no gradient: the noise baseline (no
    search) and transfer (a search on another model) do not count."""
    return attack.requires != "gradients" and attack.search and attack.name != "transfer"


def where(t: Threat) -> tuple[str, float]:
    return (t.norm, round(float(t.eps), 12))


def _needed(
    plan: list[PlannedAttack], extra: list[PlannedAttack], counts: Any
) -> dict[tuple[str, float], set[int]]:
    """Per affected threat, the attack indices that do the reaction's job there."""
    needed: dict[tuple[str, float], set[int]] = {}
    for p in plan:
        needed.setdefault(where(p.threat), set())
    for p in [*plan, *extra]:
        if counts(p.attack):
            needed.setdefault(where(p.threat), set()).add(p.index)
    return needed


def _straight_through(
    pre: Preflight, clf: Classifier, plan: list[PlannedAttack], shape: tuple[int, ...]
) -> list[PlannedAttack]:
    """Gradient attacks search on a copy whose gradient-killing operations are straight-through
    (BPDA, Athalye et al. 2018); verdicts still come from the unmodified model."""
    lo, hi = clf.bounds
    probe = torch.full((2, *shape), (lo + hi) / 2, device=clf.device)
    try:
        from robaudit.straight_through import straight_through_copy

        st = straight_through_copy(clf.model, probe)
    except Exception as exc:  # an opaque model: say so and rely on the gradient-free search
        pre.bpda_note = f"no straight-through copy ({type(exc).__name__}: {str(exc)[:120]})"
        return plan
    if st.module is None or not st.replacements:
        pre.bpda_note = f"no straight-through copy: {st.reason or 'nothing to replace'}"
        return plan
    copy = clf.restricted(clf.access)
    copy.model = st.module.to(clf.device).eval()
    ops = "; ".join(f"{r.op} at {r.where} (backward: {r.backward})" for r in st.replacements)
    kept = "; ".join(f"{r.op} at {r.where}" for r in st.left)
    pre.bpda = copy
    pre.bpda_note = (
        f"gradient attacks searched on a straight-through (BPDA) copy of the {st.graph} graph "
        f"replacing {len(st.replacements)} operation(s): {ops}"
        + (f"; left as they are (no surrogate): {kept}" if kept else "")
    )
    return [replace(p, search=copy) if p.attack.requires == "gradients" else p for p in plan]


TITLES = {"square": "Square", "simba": "SimBA", "sparse-rs": "Sparse-RS", "patch-rs": "Sparse-RS patches"}


def gradient_free(queries: int, image: bool, norm: str = "linf") -> Attack:
    """The score-based search robaudit adds where gradients die, by threat: Sparse-RS patches
    for a patch, Sparse-RS for a few pixels (L0), else Square on images and SimBA in the
    standard basis on other inputs (Square's windows are square patches of pixels)."""
    from robaudit.norms import get as get_norm

    n = get_norm(norm)
    if getattr(n, "family", "") == "patch":
        from robaudit.attacks.patch_rs import PatchRS, PatchRSParams

        return PatchRS(PatchRSParams(queries=queries))
    if n.counts:
        from robaudit.attacks.sparse_rs import SparseRS, SparseRSParams

        return SparseRS(SparseRSParams(queries=queries))
    if image:
        from robaudit.attacks.square import Square, SquareParams

        return Square(SquareParams(queries=queries))
    from robaudit.attacks.simba import SimBA, SimBAParams

    return SimBA(SimBAParams(queries=queries, basis="pixel"))


def _add_gradient_free(
    pre: Preflight, plan: list[PlannedAttack], queries: int, image: bool = True
) -> list[PlannedAttack]:
    """Dead gradients whatever the loss (quantization or a non-differentiable step inside the
    model): a score-based search for the threat (Square; SimBA off images; Sparse-RS at L0;
    Sparse-RS patches for a patch) runs at every threat that has no adversarial gradient-free
    search (the noise baseline is not one); RA003 is resolved once it ran at every affected
    threat."""
    have = {where(p.threat) for p in plan if gradient_free_search(p.attack)}
    # a norm no search supports (snr) keeps its finding open: nothing was added there
    threats = sorted(
        {
            p.threat for p in plan
            if where(p.threat) not in have
            and p.threat.norm in gradient_free(queries, image, p.threat.norm).norms
        }
    )  # fmt: skip
    extra = [
        PlannedAttack(REACTION_ID + 500 + i, gradient_free(queries, image, t.norm), t)
        for i, t in enumerate(threats)
    ]
    title = " and ".join(dict.fromkeys(TITLES[e.attack.name] for e in extra)) or "Square"
    how = (
        f"added {title} ({queries} queries, gradient-free) at {len(extra)} threat(s)"
        if extra
        else "a gradient-free search (Square or another) already runs at every threat"
    )
    if pre.bpda_note:
        how += f"; {pre.bpda_note}"
    pre.coverage["RA003"] = Coverage(how, _needed(plan, extra, gradient_free_search))
    return [*plan, *extra]


def settle(pre: Preflight, er: EngineResult) -> list[Finding]:
    """The pre-flight findings after the run: a reaction resolves its finding only if its
    attacks ran at every affected threat; the finding then lists those threats."""
    ran: dict[tuple[str, float], set[int]] = {}
    for c in er.cells:
        ran.setdefault(where(c.threat), set()).add(c.index)
    out = []
    for f in pre.findings:
        cov = pre.coverage.get(f.id)
        if cov is None or f.resolved:
            out.append(f)
            continue
        missing = [w for w, idx in cov.needed.items() if not (idx & ran.get(w, set()))]
        shown = ", ".join(f"{n} {e:g}" for n, e in sorted(cov.needed))
        if missing:
            gaps = ", ".join(f"{n} {e:g}" for n, e in sorted(missing))
            out.append(
                replace(
                    f,
                    detail=f"{f.detail}; the reaction ({cov.reaction}) did not run at {gaps}",
                )
            )
        else:
            out.append(replace(f, resolved=True, reaction=f"{cov.reaction}; ran at {shown}"))
    return out


def _resolve(pre: Preflight, fid: str, reaction: str) -> None:
    pre.findings = [
        replace(f, resolved=True, reaction=reaction) if f.id == fid else f for f in pre.findings
    ]


def dead_gradient_threats(pre: Preflight, settled: list[Finding]) -> set[tuple[str, float]]:
    """Threats where RA003 fired on dead gradients and its gradient-free reaction ran."""
    cov = pre.coverage.get("RA003")
    resolved = any(f.id == "RA003" and f.resolved for f in settled)
    if cov is None or not resolved or pre.margin_gradients_ok:
        return set()
    return set(cov.needed)
