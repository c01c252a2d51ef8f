"""PNG tiles of exported adversarial examples (``robaudit scan --save-adversarial`` with images).

Only 1- and 3-channel image inputs (N x C x H x W) have a picture; other inputs get none.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from robaudit.errors import UserInputError
from robaudit.report.writers import create_temp_dir

if TYPE_CHECKING:
    from robaudit.export.examples import AdversarialExamples

_PNG_MIN_SIDE = 64  # tiles are upscaled (nearest) to at least this many pixels
_INDEX_HEADER = "row,file,attack,threat,broken,source_index,y,y_adv_pred,distance"


def write_images(ex: AdversarialExamples, folder: str | Path, bounds: tuple[float, float]) -> Path | None:
    """One PNG per row plus ``index.csv``, swapped in for ``folder`` whole; None (nothing
    written) when the inputs are not 1- or 3-channel images."""
    if ex.x_adv.ndim != 4 or ex.x_adv.shape[1] not in (1, 3):
        return None
    target = Path(folder)
    tmp = create_temp_dir(target)  # mode 0777 less the umask, not mkdtemp's 0700
    try:
        lines = [_INDEX_HEADER]
        for k in range(len(ex)):
            name = _tile_name(ex, k)
            _side_by_side(ex.x_clean[k], ex.x_adv[k], bounds).save(tmp / name)
            lines.append(
                f"{k},{name},{ex.attack[k]},{ex.threat[k]},{bool(ex.broken[k])},"
                f"{int(ex.source_index[k])},{int(ex.y[k])},{int(ex.y_adv_pred[k])},"
                f"{float(ex.distance[k]):.9g}"
            )
        (tmp / "index.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
        if target.is_dir():
            shutil.rmtree(target)
        elif target.exists():
            raise UserInputError(f"{target}: exists and is not a folder; not replacing it")
        os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _tile_name(ex: AdversarialExamples, k: int) -> str:
    """Row, attack, threat, outcome, sample and classes: sortable and readable in a listing."""
    return (
        f"{k:05d}_{_safe(str(ex.attack[k]))}_{_safe(str(ex.norm[k]))}-"
        f"{_safe(str(ex.eps_label[k]))}_{'broken' if ex.broken[k] else 'unbroken'}"
        f"_s{int(ex.source_index[k])}_y{int(ex.y[k])}_p{int(ex.y_adv_pred[k])}.png"
    )


def _safe(text: str) -> str:
    """A file-name-safe rendering of an attack name or an eps label (``8/255`` -> ``8-255``)."""
    return "".join(ch if ch.isalnum() or ch in "._" else "-" for ch in text)


def _side_by_side(x: np.ndarray, x_adv: np.ndarray, bounds: tuple[float, float]) -> Any:
    """clean | adversarial | perturbation amplified to the full range (mid-grey = none)."""
    from PIL import Image

    lo, hi = bounds
    d = x_adv.astype(np.float64) - x.astype(np.float64)
    m = float(np.abs(d).max()) if d.size else 0.0
    pert = 0.5 + 0.5 * d / m if m > 0 else np.full_like(d, 0.5)
    tiles = [(x - lo) / (hi - lo), (x_adv - lo) / (hi - lo), pert]
    c, h, w = x.shape
    scale = max(1, -(-_PNG_MIN_SIDE // max(h, w)))
    gap = max(1, scale // 2)
    canvas = np.full((h * scale, 3 * w * scale + 2 * gap, c), 255, dtype=np.uint8)
    for i, t in enumerate(tiles):
        a8 = (np.clip(t, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
        big = a8.repeat(scale, axis=0).repeat(scale, axis=1)
        x0 = i * (w * scale + gap)
        canvas[:, x0 : x0 + w * scale, :] = big
    if c == 1:
        return Image.fromarray(canvas[:, :, 0], mode="L")
    return Image.fromarray(canvas, mode="RGB")
