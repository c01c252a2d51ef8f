"""The catalogue of the built-in defenses: what each one is, in one table.

One row per defense: its name, a one-line summary, the paper, and how an adaptive attacker
differentiates through it. :func:`robaudit.defenses.base.register` copies a row onto its
class, so ``cls.summary``, ``cls.needs_image`` and the rest read the same for every reader,
while the defense modules hold only the transformations.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class DefenseInfo:
    """What the rest of robaudit knows about a defense without applying it."""

    name: str
    summary: str
    paper: str
    differentiable: bool = True  # exact gradients flow through apply()
    randomized: bool = False  # apply() draws fresh randomness on every call
    needs_image: bool = False  # apply() needs N x C x H x W batches


_ROWS = (
    DefenseInfo(
        name="jpeg",
        summary="JPEG compression of the input (BPDA with the identity backward)",
        paper="Guo et al. 2018, 'Countering Adversarial Images using Input Transformations'",
        differentiable=False,
        needs_image=True,
    ),
    DefenseInfo(
        name="bit-depth",
        summary="Bit-depth reduction (feature squeezing; BPDA with the identity backward)",
        paper="Xu, Evans & Qi 2018, 'Feature Squeezing'",
        differentiable=False,
    ),
    DefenseInfo(
        name="median",
        summary="Median filter (spatial smoothing; exact gradients through the selected pixels)",
        paper="Xu, Evans & Qi 2018, 'Feature Squeezing'",
        needs_image=True,
    ),
    DefenseInfo(
        name="gaussian-blur",
        summary="Gaussian blur (differentiable: exact gradients)",
        paper="spatial smoothing baseline (Xu, Evans & Qi 2018)",
        needs_image=True,
    ),
    DefenseInfo(
        name="random-resize-pad",
        summary="Random resize and pad (randomized: EOT over the draws)",
        paper="Xie et al. 2018, 'Mitigating Adversarial Effects Through Randomization'",
        randomized=True,
        needs_image=True,
    ),
    DefenseInfo(
        name="gaussian-noise",
        summary="Gaussian input noise (randomized: EOT over the draws, majority-vote verdicts)",
        paper="randomized input defense; see Cohen et al. 2019 for the certified version",
        randomized=True,
    ),
    DefenseInfo(
        name="ensemble",
        summary="Ensemble with other checkpoints (attacked as a whole; vote via BPDA)",
        paper="Tramèr et al. 2018 (ensembles); Athalye et al. 2018 (attacking the whole)",
    ),
)

CATALOG: dict[str, DefenseInfo] = {row.name: row for row in _ROWS}

# audio (waveforms): the telephone codec's quantization as a defense (robaudit.defenses.audio)
CATALOG["mu-law"] = DefenseInfo(
    name="mu-law",
    summary="Mu-law companding then quantization (audio bit depth; BPDA with the identity backward)",
    paper="ITU-T G.711 (1972); as a defense: Yang et al. 2019 (audio input transformations)",
    differentiable=False,
)
