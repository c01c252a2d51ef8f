"""RA008: an attack whose budget covers the whole input range must break about every sample;
if it does not, the evaluation (not the model) is broken."""

from __future__ import annotations

import torch

from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.findings import finding
from robaudit.integrity.probes import PROBE, SANITY_LEFT, SANITY_QUERIES, Preflight
from robaudit.integrity.reactions import TITLES, gradient_free
from robaudit.loading.samples import Images
from robaudit.results import Finding
from robaudit.threat import Threat


def sanity(
    clf: Classifier,
    x: Images,
    y: torch.Tensor,
    correct: torch.Tensor,
    seed: int,
    pre: Preflight | None = None,
) -> Finding | None:
    """RA008: an attack with an eps covering the whole input range must break ~all.

    PGD (margin loss) searches on the straight-through copy when the reactions made one; where
    gradients are dead and no copy exists, Square (gradient-free) joins it, so the check judges
    the evaluation robaudit actually ran, not the bare gradient attack it replaced.
    """
    from robaudit.attacks.fgsm_pgd import PGD, PGDParams

    idx = correct.nonzero().flatten()[:PROBE]
    if idx.numel() == 0:
        return None
    span = clf.bounds[1] - clf.bounds[0]
    search = pre.bpda if pre is not None else None
    attack = PGD(PGDParams(steps=20, rel_step_size=0.1, loss="margin"))
    threat = Threat("linf", span)
    plan = [PlannedAttack(-1, attack, threat, search=search)]
    dead = pre is not None and pre.masked_gradients and not pre.margin_gradients_ok
    if dead and search is None and clf.access != "decision":
        plan.append(PlannedAttack(-2, gradient_free(SANITY_QUERIES, len(x.shape) == 4), threat))
    res = run_plan(clf, x[idx], y[idx], plan, seed=seed, batch_size=len(idx), cascade=True)
    broken = torch.zeros_like(res.correct)
    for c in res.cells:
        broken |= c.broken
    left = int((res.correct & ~broken).sum())
    if left > SANITY_LEFT * idx.numel():
        how = "PGD-20 (margin loss" + (", straight-through copy)" if search is not None else ")")
        if len(plan) > 1:
            how += f" and {TITLES[plan[1].attack.name]} ({SANITY_QUERIES} queries)"
        return finding(
            "RA008",
            f"{how} at Linf eps {span:g} (the whole input range) left {left} of "
            f"{idx.numel()} probed samples correctly classified",
        )
    return None
