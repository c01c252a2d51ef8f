"""Budget profiles: the field's standard budgets for an input size, so presets fit any model.

A preset that does not fix its budgets (an attack entry without ``eps``, a gate threshold
without ``eps``) takes them from the profile chosen by the model's input size, or from the
config's ``profile``. The numbers are the ones published results use, in units of a [0, 1]
input range; for other ``model.bounds`` they scale with the range (a [0, 255] model gets 8
for ``8/255``).

The rule for ``profile: auto`` (C x H x W input, side = max(H, W)):

- one channel and side <= 16: ``digits`` (scikit-learn's 8x8 digits and similar);
- one channel and side <= 28: ``mnist``;
- side <= 64 (any channels): ``cifar`` (CIFAR-10/100, SVHN, Tiny-ImageNet at 64 px);
- larger: ``imagenet`` (224 px and up; sizes between 64 and 224 px take these too).

Inputs that are not images (see robaudit.inputs):

- ``[F]`` feature vectors: ``tabular``, TabularBench's L2 0.5 on min-max-scaled features
  (Simonetto et al. 2024) and Linf 0.05 / 0.1;
- ``[C, T]`` sequences: ``waveform``, Linf 0.001 / 0.0025 of the range (0.002 / 0.005 on a
  [-1, 1] waveform, about -54 / -46 dB of full scale) and L2 0.1 of the range, and SNR 40 /
  30 dB (perturbation energy that far below each signal's; dB budgets never scale).
  ``audio`` is the same budgets under the name the audio starter uses (``profile: audio``).

L1 budgets: the AutoAttack/RobustBench L1 tracks give CIFAR-10 12 and ImageNet 255. The small
grayscale profiles derive theirs from their own L2 budgets by the rule that maps CIFAR's L2 0.5
to its L1 12, ``L1 = L2 · √D · 12 / (0.5 · √3072) ≈ 0.43 · L2 · √D`` for D input values: each
L1 budget is the same share of the L1 ball covering the box (radius D) as 0.43 times the L2
budget's share of its covering ball (radius √D). digits (1x8x8, L2 1 and 2): 3.5 and 7; mnist
(1x28x28, L2 1 and 2): 12 and 24, rounded. Feature vectors and sequences have no standard L1
budget and no fixed D: an L1 entry there gives its own eps.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction

from robaudit.errors import ConfigError
from robaudit.norms import get as get_norm

PROFILE_NAMES = ("auto", "digits", "mnist", "cifar", "imagenet", "tabular", "waveform", "audio")
_WAVEFORM = {"linf": ("0.001", "0.0025"), "l2": ("0.1",), "snr": ("40", "30")}
_WAVEFORM_HEADLINE = {"linf": "0.001", "l2": "0.1", "snr": "40"}


@dataclass(frozen=True)
class Profile:
    """Budgets per norm (as written, e.g. ``"8/255"``) and the headline budget of each norm."""

    name: str
    description: str
    budgets: dict[str, tuple[str, ...]]
    headline: dict[str, str]

    def eps(self, norm: str, span: float = 1.0) -> list[str]:
        """The budgets of ``norm`` as config values, scaled to an input range of ``span``."""
        return [scale(e, _span(norm, span)) for e in self.budgets[self._has(norm)]]

    def headline_eps(self, norm: str, span: float = 1.0) -> str:
        return scale(self.headline[self._has(norm)], _span(norm, span))

    def _has(self, norm: str) -> str:
        if norm not in self.budgets:
            raise ConfigError(
                f"profile {self.name} has no {norm} budgets (it has {', '.join(self.budgets)}): "
                f"give eps for each {norm} attack entry and gate threshold"
            )
        return norm


def _span(norm: str, span: float) -> float:
    """The range a norm's budgets scale with (1: budgets not in input units, such as dB)."""
    return span if get_norm(norm).scales_with_range else 1.0


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            "digits",
            "8x8 to 16x16 grayscale digits",
            {"linf": ("0.1", "0.2"), "l2": ("1", "2"), "l1": ("3.5", "7")},
            {"linf": "0.1", "l2": "1", "l1": "3.5"},
        ),
        Profile(
            "mnist",
            "up to 28x28 grayscale (MNIST budgets: Linf 0.3, L2 2.0)",
            {"linf": ("0.1", "0.2", "0.3"), "l2": ("1", "2"), "l1": ("12", "24")},
            {"linf": "0.3", "l2": "2", "l1": "24"},
        ),
        Profile(
            "cifar",
            "about 32x32 (CIFAR-10 budgets of RobustBench: Linf 8/255, L2 0.5, L1 12)",
            {"linf": ("8/255", "16/255"), "l2": ("0.5",), "l1": ("12",)},
            {"linf": "8/255", "l2": "0.5", "l1": "12"},
        ),
        Profile(
            "imagenet",
            "224 px and up (ImageNet budgets of RobustBench: Linf 4/255, L2 3.0, L1 255)",
            {"linf": ("4/255",), "l2": ("3",), "l1": ("255",)},
            {"linf": "4/255", "l2": "3", "l1": "255"},
        ),
        Profile(
            "tabular",
            "feature vectors (TabularBench: L2 0.5 on min-max-scaled features)",
            {"linf": ("0.05", "0.1"), "l2": ("0.5",)},
            {"linf": "0.1", "l2": "0.5"},
        ),
        Profile(
            "waveform",
            "sequences such as audio (Linf 0.002 / 0.005 on a [-1, 1] waveform)",
            _WAVEFORM,
            _WAVEFORM_HEADLINE,
        ),
        Profile(
            "audio",
            "audio waveforms: the waveform budgets (Linf 0.002 / 0.005 and L2 0.2 on a [-1, 1] "
            "waveform, SNR 40 / 30 dB)",
            _WAVEFORM,
            _WAVEFORM_HEADLINE,
        ),
    )
}


# L0 budgets are shares of the input's pixels (counted once its size is known): the same in
# every profile, 1% (headline) and 5%; Sparse-RS's ImageNet 0.1% rounds to few pixels on
# small inputs. Shares ignore the input range (robaudit.config.budgets).
L0_BUDGETS = ("1%", "5%")
for _p in PROFILES.values():
    for _norm in ("l0", "l0-feature"):
        _p.budgets[_norm] = L0_BUDGETS
        _p.headline[_norm] = L0_BUDGETS[0]

# patch budgets are the region's share of the image, on images only: 1% and 5% (headline), a
# small and a sticker-sized patch (Sparse-RS's patch threat uses about 1-2% of ImageNet's
# 224x224 pixels; Brown et al.'s stickers cover ~10%)
PATCH_BUDGETS = ("1%", "5%")
for _name in ("digits", "mnist", "cifar", "imagenet"):
    PROFILES[_name].budgets["patch"] = PATCH_BUDGETS
    PROFILES[_name].headline["patch"] = PATCH_BUDGETS[1]


def choose(input_shape: tuple[int, ...]) -> tuple[Profile, str]:
    """The profile ``auto`` picks for an input shape, and why (for the report)."""
    if len(input_shape) == 1:
        return PROFILES["tabular"], f"input of {input_shape[0]} features: a feature vector"
    if len(input_shape) == 2:
        c, t = input_shape
        return PROFILES["waveform"], f"input {c}x{t}: a sequence"
    c, h, w = input_shape
    side = max(h, w)
    dims = f"{c}x{h}x{w}"
    if c == 1 and side <= 16:
        return PROFILES["digits"], f"input {dims}: one channel, at most 16 px"
    if c == 1 and side <= 28:
        return PROFILES["mnist"], f"input {dims}: one channel, at most 28 px"
    if side <= 64:
        return PROFILES["cifar"], f"input {dims}: at most 64 px"
    return PROFILES["imagenet"], f"input {dims}: larger than 64 px"


def scale(eps: str, span: float) -> str:
    """A budget written for a [0, 1] range, for a range of ``span`` (kept as written at 1)."""
    if span == 1.0 or eps.endswith("%"):  # a share of the pixels does not scale with range
        return eps
    value = Fraction(eps) * Fraction(span).limit_denominator(10**6)
    return f"{float(value):.10g}"


def summary(name: str) -> str:
    """One line per profile for ``robaudit validate``: its budgets per norm, headline first."""
    p = PROFILES[name]
    norms = " · ".join(
        f"{norm} {', '.join(b)} (headline {p.headline[norm]})" for norm, b in p.budgets.items()
    )
    return f"{name}: {norms}"
