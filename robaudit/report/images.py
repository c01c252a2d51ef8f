"""Small PNG thumbnails (base64) of clean and adversarial inputs, for the report gallery."""

from __future__ import annotations

import base64
import io

import numpy as np
import torch
from PIL import Image

THUMB = 96  # pixels on the long side


def to_png_b64(img: torch.Tensor, bounds: tuple[float, float]) -> str:
    """A C×H×W tensor in ``bounds`` as a nearest-neighbour-upscaled PNG, base64-encoded."""
    lo, hi = bounds
    a = ((img.detach().cpu().float() - lo) / (hi - lo)).clamp(0, 1).numpy()
    a8 = (a * 255 + 0.5).astype(np.uint8)
    if a8.shape[0] == 1:
        pil = Image.fromarray(a8[0], mode="L")
    else:
        pil = Image.fromarray(np.transpose(a8[:3], (1, 2, 0)), mode="RGB")
    scale = max(1, THUMB // max(pil.size))
    pil = pil.resize((pil.size[0] * scale, pil.size[1] * scale), Image.Resampling.NEAREST)
    buf = io.BytesIO()
    pil.save(buf, format="PNG", optimize=True)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def perturbation_png_b64(x: torch.Tensor, x_adv: torch.Tensor) -> str:
    """The perturbation amplified to the full range (mid-grey = no change)."""
    d = (x_adv - x).float()
    m = float(d.abs().max())
    scaled = 0.5 + 0.5 * d / m if m > 0 else torch.full_like(d, 0.5)
    return to_png_b64(scaled, (0.0, 1.0))
