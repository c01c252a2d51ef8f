"""The natural-robustness stage of an audit: the ``natural:`` section run on the audited
classifier (and, for mCE, on a reference model through the same preprocessing)."""

from __future__ import annotations

from typing import Any

import torch

from robaudit.classifier import Classifier
from robaudit.config.natural import NaturalSection
from robaudit.natural.run import (
    NaturalOutcome,
    Predict,
    corruption_rows,
    corruption_summary,
    geometric_robustness,
    occlusion_robustness,
    timed,
)


def run_natural(
    clf: Classifier,
    x: Any,
    y: torch.Tensor,
    clean_correct: torch.Tensor,
    section: NaturalSection,
    *,
    seed: int,
    reference: tuple[str, Predict] | None = None,
    indices: list[int] | None = None,
) -> NaturalOutcome:
    """Every part of ``section`` on ``x``; ``clean_correct`` comes from the audit's clean pass
    (geometric and occlusion robustness count only samples the model gets right clean).

    ``indices``: each sample's position in its source; the random draws of a corruption or a
    transform are seeded by it, so an image gets the same corruption whatever subset or batch
    it is evaluated in.
    """
    n = int(y.numel())
    y = y.cpu()
    clean_correct = clean_correct.cpu()
    indices = list(range(n)) if indices is None else indices
    out = NaturalOutcome(n=n, clean_correct=int(clean_correct.sum()))
    common: dict[str, Any] = {
        "bounds": clf.bounds, "batch_size": max(1, clf.batch_size), "device": clf.device,
    }
    spent = 0.0
    corr = section.corruptions
    if corr is not None:
        (rows, skipped, gallery), t = timed(lambda: corruption_rows(
            clf.verification_logits, x, y, indices, corr.chosen(), corr.severities,
            seed=seed, **common,
        ))
        spent += t
        ref = None
        if reference is not None:
            path, ref_predict = reference
            (ref_rows, _, _), t = timed(lambda: corruption_rows(
                ref_predict, x, y, indices, corr.chosen(), corr.severities, seed=seed,
                keep_gallery=False, **common,
            ))
            spent += t
            ref_clean = _accuracy(ref_predict, x, y, common)
            ref = {"path": path, "clean_accuracy": ref_clean, "rows": ref_rows}
        out.corruptions, out.skipped, out.gallery = rows, skipped, gallery
        out.summary = corruption_summary(rows, out.clean_correct / n if n else 0.0, ref)
    geo = section.geometric
    if geo is not None:
        out.geometric, t = timed(lambda: geometric_robustness(
            clf.verification_logits, x, y, clean_correct, indices, search=geo.search,
            max_angle=geo.max_angle, max_shift=geo.max_shift, k=geo.k, angles=geo.angles,
            shifts=geo.shifts, padding=geo.padding, seed=seed, **common,
        ))
        spent += t
    occ = section.occlusion
    if occ is not None:
        out.occlusion, t = timed(lambda: occlusion_robustness(
            clf.verification_logits, x, y, clean_correct, size=occ.size, fill=occ.fill,
            stride=occ.stride, **common,
        ))
        spent += t
    out.seconds = round(spent, 4)
    return out


def _accuracy(predict: Predict, x: Any, y: torch.Tensor, common: dict[str, Any]) -> float:
    n = int(y.numel())
    right = 0
    bs = common["batch_size"]
    with torch.no_grad():
        for s in range(0, n, bs):
            pred = predict(x[s : s + bs].to(common["device"])).argmax(1).cpu()
            right += int((pred == y[s : s + bs]).sum())
    return right / n if n else 0.0
