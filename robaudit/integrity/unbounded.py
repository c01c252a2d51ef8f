"""RA008: an attack whose budget covers the whole input range must break about every sample;
if it does not, the evaluation (not the model) is broken."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.findings import finding
from robaudit.integrity.probes import PROBE, SANITY_LEFT, SANITY_QUERIES, Preflight
from robaudit.integrity.reactions import TITLES, gradient_free
from robaudit.loading.samples import Images
from robaudit.norms import get as get_norm
from robaudit.results import Finding
from robaudit.threat import Threat


def sanity(
    clf: Classifier,
    x: Images,
    y: torch.Tensor,
    correct: torch.Tensor,
    seed: int,
    pre: Preflight | None = None,
    norms: Sequence[str] = (),
) -> Finding | None:
    """RA008: an attack with an eps covering the whole input range must break ~all.

    PGD (margin loss) searches on the straight-through copy when the reactions made one; where
    gradients are dead and no copy exists, Square (gradient-free) joins it, so the check judges
    the evaluation robaudit actually ran, not the bare gradient attack it replaced. Each
    counting norm among ``norms`` (L0) gets its own check with its own attacks at a budget of
    every pixel: PGD-L0, joined by Sparse-RS where gradients are dead; L1 threats get APGD with
    its L1 rules at an L1 budget covering the box; patch threats get Patch PGD at a patch
    covering the whole image.
    """
    from robaudit.attacks.fgsm_pgd import PGD, PGDParams

    idx = correct.nonzero().flatten()[:PROBE]
    if idx.numel() == 0:
        return None
    span = clf.bounds[1] - clf.bounds[0]
    search = pre.bpda if pre is not None else None
    dead = pre is not None and pre.masked_gradients and not pre.margin_gradients_ok
    extra = dead and search is None and clf.access != "decision"
    threat = Threat("linf", span)
    first = PlannedAttack(-1, PGD(PGDParams(steps=20, rel_step_size=0.1, loss="margin")), threat,
                          search=search)  # fmt: skip
    plan = [first]
    if extra:
        plan.append(PlannedAttack(-2, gradient_free(SANITY_QUERIES, len(x.shape) == 4), threat))
    copy = ", straight-through copy)" if search is not None else ")"
    found = _check(clf, x, y, idx, plan, seed, f"PGD-20 (margin loss{copy}", f"at Linf eps "
                   f"{span:g} (the whole input range)")  # fmt: skip
    for name in dict.fromkeys(n for n in norms if get_norm(n).counts):
        if found is not None:
            break
        full = get_norm(name).covering(span, x.shape[1:])
        unit = getattr(get_norm(name), "unit", "unit")
        found = _check(clf, x, y, idx, _l0_plan(clf, name, x, search, extra), seed,
                       "PGD-L0" + (" (straight-through copy)" if search is not None else ""),
                       f"at {name} eps {full:g} (every {unit})")  # fmt: skip
    if found is None and "l1" in norms:
        full = get_norm("l1").covering(span, x.shape[1:])
        found = _check(clf, x, y, idx, _l1_plan(full, search), seed,
                       "APGD-L1 (DLR loss" + copy, f"at L1 eps {full:g} (the whole input range)")  # fmt: skip
    if found is None and any(getattr(get_norm(n), "family", "") == "patch" for n in norms):
        found = _check(clf, x, y, idx, _patch_plan(search), seed,
                       "Patch PGD" + (" (straight-through copy)" if search is not None else ""),
                       "at a patch covering the whole image (patch eps 1)")  # fmt: skip
    return found


def _l1_plan(full: float, search: Any) -> list[PlannedAttack]:
    """APGD with the L1 rules (sparse box-aware steps) at an L1 budget covering the box: a
    working L1 search then reaches any input, so it breaks about everything."""
    from robaudit.attacks.apgd import APGD, APGDParams

    attack = APGD(APGDParams(steps=20, loss="dlr"))
    return [PlannedAttack(-1, attack, Threat("l1", full), search=search)]


def _patch_plan(search: Any) -> list[PlannedAttack]:
    """Patch PGD with a patch as large as the image: its content is then any input in the box,
    so a working search breaks about everything (one place: the whole image)."""
    from robaudit.attacks.patch_pgd import PatchPGD, PatchPGDParams

    attack = PatchPGD(PatchPGDParams(steps=20, locations=1, loss="margin"))
    return [PlannedAttack(-1, attack, Threat("patch", 1.0), search=search)]


def _l0_plan(clf: Classifier, name: str, x: Images, search: Any, extra: bool
             ) -> list[PlannedAttack]:  # fmt: skip
    """PGD-L0 at a budget of every unit, and Sparse-RS where gradients are dead."""
    from robaudit.attacks.pgd_l0 import PGDL0
    from robaudit.attacks.sparse_rs import SparseRS, SparseRSParams

    span = clf.bounds[1] - clf.bounds[0]
    threat = Threat(name, get_norm(name).covering(span, x.shape[1:]))
    plan = [PlannedAttack(-1, PGDL0(), threat, search=search)]
    if extra:
        plan.append(PlannedAttack(-2, SparseRS(SparseRSParams(queries=SANITY_QUERIES)), threat))
    return plan


def _check(clf: Classifier, x: Images, y: torch.Tensor, idx: torch.Tensor,
           plan: list[PlannedAttack], seed: int, how: str, where: str) -> Finding | None:  # fmt: skip
    """RA008 when the plan leaves more than SANITY_LEFT of the probed samples standing."""
    res = run_plan(clf, x[idx], y[idx], plan, seed=seed, batch_size=len(idx), cascade=True)
    broken = torch.zeros_like(res.correct)
    for c in res.cells:
        broken |= c.broken
    left = int((res.correct & ~broken).sum())
    if left <= SANITY_LEFT * idx.numel():
        return None
    if len(plan) > 1:
        name = plan[1].attack.name
        how += f" and {TITLES.get(name, name)} ({SANITY_QUERIES} queries)"
    return finding(
        "RA008", f"{how} {where} left {left} of {idx.numel()} probed samples correctly classified"
    )
