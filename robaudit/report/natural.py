"""The report's ``natural`` section: corruption accuracies, CE/mCE, the geometric and
occlusion results, and a small gallery (clean and corrupted input, prediction) as PNGs."""

from __future__ import annotations

from typing import Any

from robaudit.natural.run import NaturalOutcome
from robaudit.report.images import to_png_b64


def natural_document(out: NaturalOutcome, bounds: tuple[float, float]) -> dict[str, Any]:
    """JSON-ready: every number of the stage, the gallery's tensors as base64 PNGs."""
    gallery = [
        {
            **{k: v for k, v in g.items() if k not in ("x", "x_corrupted")},
            "clean_png": to_png_b64(g["x"], bounds),
            "corrupted_png": to_png_b64(g["x_corrupted"], bounds),
        }
        for g in out.gallery
    ]
    return {
        "n": out.n,
        "clean_correct": out.clean_correct,
        "corruptions": out.corruptions,
        "summary": out.summary,
        "skipped": out.skipped,
        "geometric": out.geometric,
        "occlusion": out.occlusion,
        "gallery": gallery,
        "seconds": out.seconds,
    }
