"""The adversarial-examples file: its row arrays, writing it atomically and reading it back.

The format is described in :mod:`robaudit.export`; the PNG rendering lives in
:mod:`robaudit.export.images`, so this module needs no image library.
"""

from __future__ import annotations

import json
import os
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robaudit import norms
from robaudit.errors import UserInputError
from robaudit.report.writers import create_temp_file

FORMAT = "robaudit-adversarial/1"
ADVERSARIAL_FILE = "adversarial.npz"
ADVERSARIAL_FOLDER = "adversarial"
_ROW_ARRAYS = (
    "x_adv", "x_clean", "y", "y_adv_pred", "broken", "x_clean_index", "source_index", "attack",
    "attack_index", "access", "norm", "eps", "eps_label", "threat", "distance",
)


def perturbation_norm(delta: torch.Tensor, norm: str, x: torch.Tensor) -> torch.Tensor:
    """Per-row size of a batch of perturbations around clean inputs ``x`` in budget units
    (snr: dB), in float64 (verification's own arithmetic)."""
    return norms.get(norm).size64(delta, x)


# ----------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class AdversarialExamples:
    """Exported adversarial examples: parallel per-row arrays (see the module docstring)."""

    x_adv: np.ndarray
    x_clean: np.ndarray
    y: np.ndarray
    y_adv_pred: np.ndarray
    broken: np.ndarray
    x_clean_index: np.ndarray
    source_index: np.ndarray
    attack: np.ndarray
    attack_index: np.ndarray
    access: np.ndarray
    norm: np.ndarray
    eps: np.ndarray
    eps_label: np.ndarray
    threat: np.ndarray
    distance: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def counts(self) -> dict[tuple[str, str], int]:
        """Verified breaks per (attack, threat key): what the scan's attack rows call ``broken``."""
        out: dict[tuple[str, str], int] = {}
        for a, t, b in zip(self.attack.tolist(), self.threat.tolist(), self.broken.tolist(), strict=True):
            if b:
                out[(str(a), str(t))] = out.get((str(a), str(t)), 0) + 1
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Every row array by name, plus ``meta`` as a 0-d JSON string (what the npz holds)."""
        out = {name: getattr(self, name) for name in _ROW_ARRAYS}
        out["meta"] = np.asarray(json.dumps(self.meta, sort_keys=True))
        return out

    def save(self, path: str | Path) -> Path:
        """Write the ``.npz`` atomically (temp file, then rename); returns the path."""
        p = Path(path)
        fd, tmp = create_temp_file(p)  # mode 0666 less the umask, not mkstemp's 0600
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **self.arrays())  # type: ignore[arg-type]
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return p

    def save_images(self, folder: str | Path, bounds: tuple[float, float]) -> Path | None:
        """One PNG per row (clean | adversarial | amplified perturbation) plus ``index.csv``.

        Written into a temp folder that then replaces ``folder``, so a reader never sees half
        a set. Returns None (and writes nothing) when the inputs are not 1- or 3-channel images.
        """
        from robaudit.export.images import write_images  # Pillow only when images are asked for

        return write_images(self, folder, bounds)

    @classmethod
    def load(cls, path: str | Path) -> AdversarialExamples:
        """Read an exported file; anything malformed is a UserInputError naming the problem."""
        p = Path(path)
        if not p.is_file():
            raise UserInputError(f"adversarial file '{p}' not found")
        try:
            with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                missing = [k for k in (*_ROW_ARRAYS, "meta") if k not in f.files]
                if missing:
                    raise UserInputError(
                        f"adversarial file '{p}' lacks arrays {missing}; "
                        "is it a file written by robaudit scan --save-adversarial?"
                    )
                arrays = {k: f[k] for k in _ROW_ARRAYS}
                meta = json.loads(str(f["meta"][()]))
        except UserInputError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
            raise UserInputError(
                f"adversarial file '{p}' is not a readable .npz: {' '.join(str(exc).split())[:200]}"
            ) from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UserInputError(
                f"adversarial file '{p}' has format {meta.get('format') if isinstance(meta, dict) else None!r}; "
                f"this robaudit reads {FORMAT!r}"
            )
        n = len(arrays["y"])
        bad = [k for k, v in arrays.items() if v.ndim < 1 or v.shape[0] != n]
        if bad:
            raise UserInputError(
                f"adversarial file '{p}': arrays {bad} do not have one entry per row ({n} rows)"
            )
        if arrays["x_adv"].shape != arrays["x_clean"].shape or arrays["x_adv"].ndim < 2:
            raise UserInputError(  # any input rank: N x C x H x W images, N x F, N x C x T
                f"adversarial file '{p}': x_adv {arrays['x_adv'].shape} and x_clean "
                f"{arrays['x_clean'].shape} must both be N x (the model's input shape)"
            )
        return cls(**arrays, meta=meta)

