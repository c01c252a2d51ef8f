"""The report document: a JSON-ready dict of a run, versioned by ``schema_version``.

The published JSON Schema (``schema.json`` beside this file) describes it; a breaking
change bumps the major version.
"""

from __future__ import annotations

import math
from dataclasses import asdict
from typing import Any

from robaudit.norms import find as find_norm
from robaudit.report.audio import audio_example
from robaudit.report.images import changed_box, perturbation_png_b64, to_png_b64
from robaudit.report.natural import natural_document
from robaudit.results import SCHEMA_VERSION, TABULAR_COLUMNS, AttackRow, RunResult
from robaudit.scoring import SCORE_FORMULA

DEFINITIONS = {
    "robust_accuracy": (
        "share of all evaluated samples that the model classifies correctly clean and that no "
        "attack at the threat (or at a smaller eps of the same norm) broke; verified by a fresh "
        "forward pass"
    ),
    "success_rate": (
        "verified breaks / samples the attack ran on (those classified correctly clean; in a "
        "cascade, minus those already broken)"
    ),
    "confidence_interval": "95% Wilson score interval",
    "score": SCORE_FORMULA,
}


def _clean(v: Any) -> Any:
    """NaN/inf are not JSON: they become null."""
    if isinstance(v, float) and not math.isfinite(v):
        return None
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def _attack_row(a: AttackRow) -> dict[str, Any]:
    """An attack row; ``constraint_violations`` and ``naive_breaks`` only when the run had a
    feature schema (so reports of other runs are unchanged)."""
    row = asdict(a)
    for key in TABULAR_COLUMNS:
        if row[key] is None:
            del row[key]
    return row


def _example(
    e: dict[str, Any], bounds: tuple[float, float], rate: int | None = None
) -> dict[str, Any]:
    """An example's fields, its sizes, and its pictures: PNGs for images, else the changes.

    A vector or sequence has no picture; its largest changes (position, clean and adversarial
    value) say what the attack touched. A waveform with a declared sample ``rate`` also gets
    playable clips, a waveform plot and spectrograms (:mod:`robaudit.report.audio`).
    """
    x, x_adv = e["x"], e["x_adv"]
    out = {
        **{k: v for k, v in e.items() if k not in ("x", "x_adv")},
        "linf": float((x_adv - x).abs().max()),
        "l2": float((x_adv - x).norm()),
        "l1": float((x_adv - x).abs().sum()),
    }
    if "features" in e:  # a table's row: the before/after feature table stands for a picture
        out["clean_png"] = out["adv_png"] = out["perturbation_png"] = None
    elif x.dim() == 3:
        # a patch threat's example: the changed region outlined (and its box in the JSON)
        box = changed_box(x, x_adv) if _is_patch(str(e.get("threat_key", ""))) else None
        if box is not None:
            out["patch_box"] = list(box)
        out["clean_png"] = to_png_b64(x, bounds)
        out["adv_png"] = to_png_b64(x_adv, bounds, box)
        out["perturbation_png"] = perturbation_png_b64(x, x_adv, box)
    else:
        out["clean_png"] = out["adv_png"] = out["perturbation_png"] = None
        out["changes"] = largest_changes(x, x_adv)
        if x.dim() == 2 and rate is not None:
            out["audio"] = audio_example(x, x_adv, bounds, rate)
    return out


def _is_patch(threat_key: str) -> bool:
    """Whether a threat key (``access/norm/label``) is at a patch threat."""
    parts = threat_key.split("/")
    return len(parts) > 1 and getattr(find_norm(parts[1]), "family", "") == "patch"


def _sample_rate(config: dict[str, Any]) -> int | None:
    """The declared sample rate of waveform data (``data.sample_rate``), if any."""
    data = config.get("data") if isinstance(config, dict) else None
    rate = data.get("sample_rate") if isinstance(data, dict) else None
    return int(rate) if isinstance(rate, int) and rate > 0 else None


def largest_changes(x: Any, x_adv: Any, k: int = 8) -> list[dict[str, Any]]:
    """The ``k`` largest changes of a non-image example, largest first (ties: lower position)."""
    d = (x_adv - x).flatten().abs()
    order = sorted(range(d.numel()), key=lambda i: (-float(d[i]), i))[:k]
    flat, flat_adv = x.flatten(), x_adv.flatten()
    return [
        {
            "position": [int(p) for p in _unravel(i, tuple(x.shape))],
            "clean": float(flat[i]),
            "adversarial": float(flat_adv[i]),
        }
        for i in order
        if float(d[i]) > 0
    ]


def _unravel(i: int, shape: tuple[int, ...]) -> list[int]:
    out = []
    for size in reversed(shape):
        out.append(i % size)
        i //= size
    return out[::-1]


def to_document(r: RunResult, *, incomplete: bool = False) -> dict[str, Any]:
    """Everything the renderers need, as plain JSON types."""
    bounds = (float(r.model.bounds[0]), float(r.model.bounds[1]))
    rate = _sample_rate(r.config)
    examples = [_example(e, bounds, rate) for e in r.examples]
    doc = {
        "schema_version": SCHEMA_VERSION,
        "robaudit_version": r.meta.robaudit_version,
        "incomplete": incomplete or r.incomplete is not None,
        "partial": r.incomplete.to_dict() if r.incomplete is not None else None,
        "model": r.model.to_dict(),
        "data": r.data.to_dict(),
        "clean_accuracy": r.clean_accuracy,
        "clean_correct": r.clean_correct,
        "clean_ci": list(r.clean_ci),
        "threats": [
            {**asdict(t), "ci": [t.ci_low, t.ci_high], "attacks": list(t.attacks)} for t in r.threats
        ],
        "attacks": [_attack_row(a) for a in r.attacks],
        "samples": list(r.samples),
        "per_class": list(r.per_class),
        "minimal_norms": list(r.minimal_norms),
        "skipped": [s.to_dict() for s in r.skipped],
        "variants": list(r.variants),
        "certification": r.certification,
        "confusions": list(r.confusions),
        "examples": examples,
        "score": r.score,
        "grade": r.grade,
        "gate": {
            "passed": r.gate.passed,
            "checked": list(r.gate.checked),
            "failures": [asdict(f) for f in r.gate.failures],
        },
        "findings": [asdict(f) for f in r.findings],
        "definitions": DEFINITIONS,
        "config": r.config,
        "meta": r.meta.to_dict(),
    }
    if r.positive_class is not None:  # only with a positive class: other reports unchanged
        doc["positive_class"] = r.positive_class
    if r.feature_changes is not None:  # tabular runs only
        doc["feature_changes"] = r.feature_changes
    if r.naive_audit is not None:  # tabular runs only
        doc["naive_audit"] = list(r.naive_audit)
    if r.natural is not None:  # only when the config asked for it: other reports are unchanged
        doc["natural"] = natural_document(r.natural, bounds)
    if r.universal:  # universal patches: the numbers, the patch's values and its picture
        doc["universal_patches"] = [
            {**u.to_dict(), "patch": u.patch.tolist(), "patch_png": to_png_b64(u.patch, bounds)}
            for u in r.universal
        ]
    out = _clean(doc)
    assert isinstance(out, dict)
    return out
