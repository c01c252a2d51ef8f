"""Natural robustness of a classifier: corruptions, rotations and translations, occlusion.

Each image's corruption draws the same random numbers at every severity (common random
numbers: only the strength changes), so the accuracy-vs-severity curve is not blurred by
independent noise at each level.

Each transformed batch gets one fresh forward pass of the audited classifier (its
verification logits: a randomized model's are averaged over its votes), the same check every
adversarial break gets. Corruptions are drawn per image from ``image_seeds(seed, index)``, so
a number does not depend on the batch size; geometric draws are seeded per sample too.

Metrics (Hendrycks & Dietterich 2019): accuracy per corruption and severity, the mean over
them, and per corruption the error summed over severities. With a reference model
(``natural.corruptions.reference``) the corruption error CE_c = Σ_s E_{s,c} / Σ_s E^ref_{s,c}
and mCE is their mean; without one, the relative error Σ_s (E_{s,c} − E_clean) / #s (points
of error the corruption adds to the model's own clean error) is reported instead.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

from robaudit.natural.corruptions import CORRUPTIONS, image_seeds
from robaudit.natural.geometric import Transform, grid, random_draws, transform
from robaudit.natural.occlusion import box_side, occlude, positions

Predict = Callable[[torch.Tensor], torch.Tensor]  # inputs -> logits
SENSITIVITY_SAMPLES = 4  # occlusion sensitivity maps drawn for this many samples
GALLERY_PER_CORRUPTION = 1


@dataclass
class NaturalOutcome:
    """What the natural-robustness stage measured (JSON-ready but for gallery tensors)."""

    n: int
    clean_correct: int
    corruptions: list[dict[str, Any]] = field(default_factory=list)
    summary: dict[str, Any] | None = None
    skipped: list[dict[str, str]] = field(default_factory=list)
    geometric: dict[str, Any] | None = None
    occlusion: dict[str, Any] | None = None
    gallery: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0


def _batches(n: int, size: int) -> list[slice]:
    return [slice(s, min(n, s + size)) for s in range(0, n, size)]


def _correct(predict: Predict, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-sample right/wrong and the predicted class, one forward pass."""
    with torch.no_grad():
        pred = predict(x).argmax(1).cpu()
    return pred == y, pred


def corruption_rows(
    predict: Predict,
    x: Any,
    y: torch.Tensor,
    indices: list[int],
    names: list[str],
    severities: list[int],
    *,
    seed: int,
    bounds: tuple[float, float],
    batch_size: int,
    device: torch.device,
    keep_gallery: bool = True,
) -> tuple[list[dict[str, Any]], list[dict[str, str]], list[dict[str, Any]]]:
    """Accuracy per (corruption, severity) on every sample; skipped corruptions with why."""
    lo, hi = bounds
    n = int(y.numel())
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    gallery: list[dict[str, Any]] = []
    channels = int(x.shape[1])
    for name in names:
        c = CORRUPTIONS[name]
        why = c.unavailable()
        if why is None and channels not in (1, 3):
            why = f"needs 1 or 3 channels, the input has {channels}"
        if why is None and c.needs_color and channels != 3:
            why = "needs colour (3 channels); on a grayscale input it is the identity"
        if why is not None:
            skipped.append({"corruption": name, "reason": why})
            continue
        for sev in severities:
            right = torch.zeros(n, dtype=torch.bool)
            for sl in _batches(n, batch_size):
                xb = x[sl].to(device)
                unit = (xb - lo) / (hi - lo)
                seeds = image_seeds(seed, indices[sl])  # the same draws at every severity
                xc = c.apply_seeded(unit, sev, seeds) * (hi - lo) + lo
                ok, pred = _correct(predict, xc, y[sl])
                right[sl] = ok
                if keep_gallery and sl.start == 0 and sev == severities[-1]:
                    gallery.append({
                        "corruption": name, "severity": sev, "sample": 0,
                        "label": int(y[0]), "pred": int(pred[0]),
                        "x": x[0].detach().cpu(), "x_corrupted": xc[0].detach().cpu(),
                    })
            rows.append({
                "corruption": name, "family": c.family, "severity": sev,
                "correct": int(right.sum()), "accuracy": int(right.sum()) / n if n else 0.0,
            })
    return rows, skipped, gallery


def corruption_summary(
    rows: list[dict[str, Any]], clean_accuracy: float, reference: dict[str, Any] | None
) -> dict[str, Any]:
    """Mean corruption accuracy, per-corruption error, and (CE, mCE) or relative error.

    ``reference``: {"clean_accuracy": a, "rows": rows of the reference model} or None.
    """
    by: dict[str, list[dict[str, Any]]] = {}
    for r in rows:
        by.setdefault(r["corruption"], []).append(r)
    per: dict[str, dict[str, Any]] = {}
    ref_by: dict[str, list[dict[str, Any]]] = {}
    for r in (reference or {}).get("rows", []):
        ref_by.setdefault(r["corruption"], []).append(r)
    for name, rs in by.items():
        err = [1.0 - r["accuracy"] for r in rs]
        entry: dict[str, Any] = {
            "accuracy": sum(r["accuracy"] for r in rs) / len(rs),
            "error_increase": sum(e - (1.0 - clean_accuracy) for e in err) / len(err),
        }
        ref = ref_by.get(name)
        if ref:
            ref_err = sum(1.0 - r["accuracy"] for r in ref)
            entry["ce"] = sum(err) / ref_err if ref_err > 0 else None
        per[name] = entry
    accs = [r["accuracy"] for r in rows]
    out: dict[str, Any] = {
        "mean_accuracy": sum(accs) / len(accs) if accs else None,
        "clean_accuracy": clean_accuracy,
        "mean_error_increase": (
            sum(p["error_increase"] for p in per.values()) / len(per) if per else None
        ),
        "per_corruption": per,
        "reference": (reference or {}).get("path"),
    }
    ces = [p["ce"] for p in per.values() if p.get("ce") is not None]
    out["mce"] = sum(ces) / len(ces) if reference is not None and ces else None
    return out


def geometric_robustness(
    predict: Predict,
    x: Any,
    y: torch.Tensor,
    clean_correct: torch.Tensor,
    indices: list[int],
    *,
    search: str,
    max_angle: float,
    max_shift: float,
    k: int,
    angles: int,
    shifts: int,
    padding: str,
    seed: int,
    bounds: tuple[float, float],
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """Correct under every transform tried: the worst of ``k`` seeded random draws per sample
    or of the whole grid. Each break names the first transform that broke the sample."""
    n = int(y.numel())
    broken = ~clean_correct.clone()
    first: dict[int, dict[str, Any]] = {}
    tried: list[Transform] = []
    per_transform: list[dict[str, Any]] = []
    if search == "grid":
        tried = grid(max_angle, max_shift, angles, shifts)
        for t in tried:
            wrong = torch.zeros(n, dtype=torch.bool)
            for sl in _batches(n, batch_size):
                m = sl.stop - sl.start
                xb = x[sl].to(device)
                xt = transform(xb, torch.full((m,), t.angle), torch.full((m,), t.dx),
                               torch.full((m,), t.dy), bounds=bounds, padding=padding)
                ok, pred = _correct(predict, xt, y[sl])
                wrong[sl] = ~ok
                _note_breaks(first, broken, ~ok, pred, sl, t)
            per_transform.append({**t.to_dict(), "accuracy": float((~wrong).float().mean())})
    else:
        draws = random_draws(n, k, max_angle, max_shift, image_seeds(seed, indices))
        for j in range(k):
            for sl in _batches(n, batch_size):
                d = draws[sl, j]
                xb = x[sl].to(device)
                xt = transform(xb, d[:, 0].float(), d[:, 1].float(), d[:, 2].float(),
                               bounds=bounds, padding=padding)
                ok, pred = _correct(predict, xt, y[sl])
                for i in (~ok).nonzero().flatten().tolist():
                    s = sl.start + i
                    t = Transform(*(round(float(v), 4) for v in d[i]))
                    if not broken[s]:
                        first[s] = {"sample": s, **t.to_dict(), "pred": int(pred[i])}
                    broken[s] = True
    robust = int((clean_correct & ~broken).sum())
    worst = sorted(per_transform, key=lambda r: (r["accuracy"], abs(r["angle"])))[:5]
    return {
        "search": search,
        "transforms": len(tried) if search == "grid" else k,
        "max_angle": max_angle,
        "max_shift": max_shift,
        "padding": padding,
        "robust": robust,
        "robust_accuracy": robust / n if n else 0.0,
        "breaks": [first[s] for s in sorted(first)],
        "worst_transforms": worst,
    }


def _note_breaks(
    first: dict[int, dict[str, Any]],
    broken: torch.Tensor,
    wrong: torch.Tensor,
    pred: torch.Tensor,
    sl: slice,
    t: Transform,
) -> None:
    for i in wrong.nonzero().flatten().tolist():
        s = sl.start + i
        if not broken[s]:
            first[s] = {"sample": s, **t.to_dict(), "pred": int(pred[i])}
        broken[s] = True


def occlusion_robustness(
    predict: Predict,
    x: Any,
    y: torch.Tensor,
    clean_correct: torch.Tensor,
    *,
    size: float,
    fill: str,
    stride: int | None,
    bounds: tuple[float, float],
    batch_size: int,
    device: torch.device,
) -> dict[str, Any]:
    """Correct with the box at every grid position; the true-class probability per position
    for the first few correctly classified samples (the sensitivity maps)."""
    n = int(y.numel())
    h, w = int(x.shape[2]), int(x.shape[3])
    side = box_side(size, h, w)
    boxes = positions(h, w, side, stride)
    broken = ~clean_correct.clone()
    first: dict[int, dict[str, Any]] = {}
    shown = clean_correct.nonzero().flatten()[:SENSITIVITY_SAMPLES].tolist()
    probs: dict[int, list[float]] = {s: [] for s in shown}
    for box in boxes:
        for sl in _batches(n, batch_size):
            xo = occlude(x[sl].to(device), box, bounds=bounds, fill=fill)
            with torch.no_grad():
                logits = predict(xo)
            pred = logits.argmax(1).cpu()
            wrong = pred != y[sl]
            for i in wrong.nonzero().flatten().tolist():
                s = sl.start + i
                if not broken[s]:
                    first[s] = {"sample": s, **box.to_dict(), "pred": int(pred[i])}
                broken[s] = True
            p = logits.softmax(1).cpu()
            for s in shown:
                if sl.start <= s < sl.stop:
                    probs[s].append(float(p[s - sl.start, int(y[s])]))
    rows = sorted({b.top for b in boxes})
    cols = sorted({b.left for b in boxes})
    robust = int((clean_correct & ~broken).sum())
    return {
        "size": size,
        "fill": fill,
        "side": side,
        "positions": len(boxes),
        "robust": robust,
        "robust_accuracy": robust / n if n else 0.0,
        "breaks": [first[s] for s in sorted(first)],
        "sensitivity": [
            {"sample": s, "label": int(y[s]), "rows": rows, "cols": cols,
             "p_true": [probs[s][r * len(cols) : (r + 1) * len(cols)] for r in range(len(rows))]}
            for s in shown
        ],
    }


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0
