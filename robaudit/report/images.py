"""Small PNG thumbnails (base64) of clean and adversarial inputs, for the report gallery."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image, ImageDraw

from robaudit.norms.patch import changed

THUMB = 96  # pixels on the long side


Box = tuple[int, int, int, int]  # top, left, height, width in image pixels
OUTLINE = (255, 0, 0)  # the patch region's outline: red, one thumbnail pixel per 32 upscaled


def to_png_b64(img: torch.Tensor, bounds: tuple[float, float], outline: Box | None = None) -> str:
    """A C×H×W tensor in ``bounds`` as a nearest-neighbour-upscaled PNG, base64-encoded; with
    ``outline``, a rectangle drawn just around that region (a patch threat's changed pixels)."""
    lo, hi = bounds
    a = ((img.detach().cpu().float() - lo) / (hi - lo)).clamp(0, 1).numpy()
    a8 = (a * 255 + 0.5).astype(np.uint8)
    if a8.shape[0] == 1:
        pil = Image.fromarray(a8[0], mode="L")
    else:
        pil = Image.fromarray(np.transpose(a8[:3], (1, 2, 0)), mode="RGB")
    scale = max(1, THUMB // max(pil.size))
    pil = pil.resize((pil.size[0] * scale, pil.size[1] * scale), Image.Resampling.NEAREST)
    if outline is not None and outline[2] > 0 and outline[3] > 0:
        top, left, h, w = outline
        pil = pil.convert("RGB")
        box = (left * scale, top * scale, (left + w) * scale - 1, (top + h) * scale - 1)
        ImageDraw.Draw(pil).rectangle(box, outline=OUTLINE, width=max(1, scale // 32))
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def changed_box(x: torch.Tensor, x_adv: torch.Tensor) -> Box | None:
    """The smallest rectangle holding every changed pixel of a C×H×W pair (None: no change)."""
    ch = changed((x_adv - x).detach().cpu().float()[None])[0]
    if not bool(ch.any()):
        return None
    rows, cols = ch.any(dim=1).nonzero().flatten(), ch.any(dim=0).nonzero().flatten()
    top, left = int(rows[0]), int(cols[0])
    return top, left, int(rows[-1]) - top + 1, int(cols[-1]) - left + 1


def perturbation_png_b64(x: torch.Tensor, x_adv: torch.Tensor, outline: Box | None = None) -> str:
    """The perturbation amplified to the full range (mid-grey = no change)."""
    d = (x_adv - x).float()
    m = float(d.abs().max())
    scaled = 0.5 + 0.5 * d / m if m > 0 else torch.full_like(d, 0.5)
    return to_png_b64(scaled, (0.0, 1.0), outline)
