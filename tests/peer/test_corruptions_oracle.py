"""robaudit's common corruptions against the ``imagecorruptions`` package (ImageNet-C's
definitions, ported by Michaelis et al.) on the same 224x224 images, and against the
package's helpers, Pillow and skimage with CIFAR-10-C's constants on 32x32 images.

Deterministic corruptions: the mean absolute difference (MAD) of the outputs, in [0, 1]
units, must be small in absolute terms and against the change the corruption makes.
Random corruptions other than noise are fed the oracle's own numpy draws (replayed in its
order), which makes them deterministic: same MAD criterion. Noise (the random streams
differ): statistics of the outputs and of the change ``y - x`` (mean, std, mean absolute
change, radially averaged power spectrum of the change) must agree within the tolerances
below; ``test_*thresholds_catch_a_wrong_constant`` check that a factor-2 error in a
constant fails them.

imagecorruptions 1.1.2 predates NumPy 2, setuptools 81 and skimage 0.19: the loader below
gives it ``pkg_resources.resource_filename``, ``np.float_`` and skimage's old
``gaussian(multichannel=True)`` (shims only; its code is not changed).
"""

from __future__ import annotations

import importlib
import importlib.util
import math
import os
import sys
import types
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch

from robaudit.natural._common import Rng
from robaudit.natural.blur import motion_blur_fn
from robaudit.natural.constants import CIFAR
from robaudit.natural.corruptions import CORRUPTIONS

pytestmark = pytest.mark.peer

if importlib.util.find_spec("imagecorruptions") is None:
    pytest.skip("imagecorruptions is not installed (dev extra)", allow_module_level=True)


def load_oracle() -> Any:
    """``imagecorruptions.corruptions`` with compatibility shims for current libraries."""
    shim = None
    if importlib.util.find_spec("pkg_resources") is None and "pkg_resources" not in sys.modules:
        shim = types.ModuleType("pkg_resources")

        def resource_filename(package: str, path: str) -> str:
            module = importlib.import_module(package)
            return os.path.join(os.path.dirname(str(module.__file__)), path)

        shim.resource_filename = resource_filename  # type: ignore[attr-defined]
        sys.modules["pkg_resources"] = shim
    if not hasattr(np, "float_"):
        np.float_ = np.float64  # type: ignore[attr-defined]
    import imagecorruptions.corruptions as ic
    from skimage.filters import gaussian as sk_gaussian

    if shim is not None and sys.modules.get("pkg_resources") is shim:
        # imagecorruptions keeps its own reference; other code (pytest's monkeypatch of
        # sys.path) must not find this partial stand-in under the real name
        del sys.modules["pkg_resources"]

    def gaussian(image: Any, sigma: Any = 1, multichannel: Any = None, **kw: Any) -> Any:
        if multichannel:
            kw["channel_axis"] = -1
        return sk_gaussian(image, sigma=sigma, **kw)

    ic.gaussian = gaussian
    return ic


@pytest.fixture(scope="module")
def ic() -> Any:
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    return load_oracle()


def make_images(n: int, size: int, seed: int = 0) -> np.ndarray:
    """``[n, size, size, 3]`` uint8: smooth random waves plus a few sharp-edged boxes."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    out = np.empty((n, size, size, 3))
    for i in range(n):
        for c in range(3):
            acc = np.full((size, size), rng.uniform(0.35, 0.65))
            for _ in range(5):
                fx, fy = rng.uniform(0.5, 5, 2)
                acc += rng.uniform(0.03, 0.1) * np.sin(
                    2 * np.pi * (fx * xx + fy * yy) + rng.uniform(0, 2 * np.pi))
            out[i, :, :, c] = acc
        for _ in range(3):
            y0, x0 = rng.integers(0, size * 3 // 4, 2)
            hh, ww = rng.integers(size // 8, size // 3, 2)
            out[i, y0 : y0 + hh, x0 : x0 + ww] += rng.uniform(-0.25, 0.25, 3)
    return np.clip(out * 255, 8, 247).astype(np.uint8)


def to_tensor(images: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0


def oracle_run(ic: Any, name: str, images: np.ndarray, severity: int, seed: int) -> np.ndarray:
    """The oracle image by image, numpy seeded per image; ``[n, H, W, 3]`` in [0, 1]."""
    from PIL import Image

    outs = []
    for i, img in enumerate(images):
        np.random.seed(seed * 1000 + i)
        outs.append(np.asarray(getattr(ic, name)(Image.fromarray(img), severity), np.float64))
    return np.stack(outs) / 255.0


def ours(name: str, images: np.ndarray, severity: int, seed: int = 0) -> np.ndarray:
    g = torch.Generator().manual_seed(seed)
    y = CORRUPTIONS[name].apply(to_tensor(images), severity, g)
    return y.permute(0, 2, 3, 1).double().numpy()


def radial_spectrum(d: np.ndarray, bins: int = 12) -> np.ndarray:
    """Radially averaged power spectrum of ``d`` ``[n, H, W, C]``, averaged over images and
    channels, in ``bins`` rings."""
    h, w = d.shape[1:3]
    power = np.abs(np.fft.fft2(d - d.mean(axis=(1, 2), keepdims=True), axes=(1, 2))) ** 2
    power = power.mean(axis=(0, 3))
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing="ij")
    ring = np.minimum((np.hypot(fy, fx) / 0.5 * bins).astype(int), bins - 1)
    return np.array([power[ring == b].mean() for b in range(bins)])


def stats(x: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    d = y - x
    return {"mean": y.mean(), "std": y.std(), "change": np.abs(d).mean(),
            "spectrum": radial_spectrum(d)}


def stat_gaps(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    """Differences: of means (absolute), of std and change (relative), of spectra (mean
    absolute log ratio)."""
    spec = np.mean(np.abs(np.log((a["spectrum"] + 1e-12) / (b["spectrum"] + 1e-12))))
    return {
        "mean": abs(a["mean"] - b["mean"]),
        "std": abs(a["std"] / b["std"] - 1),
        "change": abs(a["change"] / max(b["change"], 1e-9) - 1),
        "spectrum": float(spec),
    }


# ---------------------------------------------------------------------------------------------
# ImageNet-size, deterministic: (max MAD, max MAD / change)
DETERMINISTIC: dict[str, tuple[float, float]] = {
    "defocus_blur": (0.002, 0.05),
    "zoom_blur": (0.002, 0.05),
    "brightness": (0.002, 0.02),
    "contrast": (0.002, 0.02),
    "pixelate": (0.003, 0.4),  # Pillow rounds to 8 bits between its two passes
    "jpeg_compression": (0.006, 0.15),
    "gaussian_blur": (0.002, 0.05),
    "saturate": (0.002, 0.02),
}

# ImageNet-size, noise (random per pixel): tolerances of stat_gaps (mean, std, change,
# spectrum); the other random corruptions are compared with replayed draws below
RANDOM: dict[str, tuple[float, float, float, float]] = {
    "gaussian_noise": (0.003, 0.02, 0.03, 0.1),
    "shot_noise": (0.003, 0.02, 0.03, 0.1),
    "impulse_noise": (0.003, 0.02, 0.05, 0.1),
    "speckle_noise": (0.003, 0.02, 0.03, 0.1),
}


@pytest.fixture(scope="module")
def images224() -> np.ndarray:
    return make_images(4, 224)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", list(DETERMINISTIC))
def test_deterministic_matches_oracle(ic: Any, images224: np.ndarray, name: str,
                                      severity: int) -> None:
    x = images224.astype(np.float64) / 255.0
    ref = oracle_run(ic, name, images224, severity, 0)
    got = ours(name, images224, severity)
    mad, change = np.abs(got - ref).mean(), np.abs(ref - x).mean()
    max_mad, max_ratio = DETERMINISTIC[name]
    assert mad <= max_mad and mad <= max_ratio * change, (name, severity, mad, change)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_motion_blur_matches_oracle_at_the_same_angle(ic: Any, images224: np.ndarray,
                                                      severity: int) -> None:
    """imagecorruptions' numpy port of ImageMagick's motion blur, its angle replayed."""
    radius, sigma = CORRUPTIONS["motion_blur"].constants(224)[severity - 1]
    angles = []
    for i in range(len(images224)):
        np.random.seed(i)
        angles.append(np.random.uniform(-45, 45))
    ref = oracle_run(ic, "motion_blur", images224, severity, 0)  # seeds 0..n-1 again
    got = motion_blur_fn(to_tensor(images224), radius, sigma, angles=torch.tensor(angles))
    got_np = got.permute(0, 2, 3, 1).double().numpy()
    change = np.abs(ref - images224 / 255.0).mean()
    mad = np.abs(got_np - ref).mean()
    assert mad <= 1e-4 and mad <= 0.01 * change, (severity, mad, change)


def _random_case(ic: Any, name: str, severity: int) -> dict[str, float]:
    n = 4
    images = make_images(n, 224, seed=1)
    x = images.astype(np.float64) / 255.0
    return stat_gaps(stats(x, ours(name, images, severity, seed=3)),
                     stats(x, oracle_run(ic, name, images, severity, 3)))


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", list(RANDOM))
def test_random_statistics_match_oracle(ic: Any, name: str, severity: int) -> None:
    gaps = _random_case(ic, name, severity)
    limits = dict(zip(("mean", "std", "change", "spectrum"), RANDOM[name], strict=True))
    bad = {k: (round(v, 4), limits[k]) for k, v in gaps.items() if v > limits[k]}
    assert not bad, (name, severity, bad)


@pytest.mark.parametrize(
    ("name", "kwargs", "severity"),
    [
        ("gaussian_noise", {"sigma": 2 * 0.18}, 3),
        ("shot_noise", {"photons": 12 / 2}, 3),
        ("impulse_noise", {"amount": 2 * 0.09}, 3),
        ("speckle_noise", {"sigma": 2 * 0.35}, 3),
    ],
)
def test_thresholds_catch_a_wrong_constant(ic: Any, name: str, kwargs: dict[str, Any],
                                           severity: int) -> None:
    """A factor-2 error in the severity-3 constant must fail the random tolerances."""
    n = 4
    images = make_images(n, 224, seed=1)
    x = images.astype(np.float64) / 255.0
    xt = to_tensor(images)
    wrong = CORRUPTIONS[name].fn(xt, **kwargs, rng=Rng(range(n))).permute(0, 2, 3, 1)
    gaps = stat_gaps(stats(x, wrong.double().numpy()),
                     stats(x, oracle_run(ic, name, images, severity, 3)))
    limits = dict(zip(("mean", "std", "change", "spectrum"), RANDOM[name], strict=True))
    assert any(v > limits[k] for k, v in gaps.items()), (name, gaps)


def test_deterministic_thresholds_catch_a_wrong_constant(ic: Any, images224: np.ndarray) -> None:
    """Defocus with twice the radius, contrast with half the factor, JPEG at half the
    quality: each must fail its MAD tolerance."""
    from robaudit.natural.blur import defocus_blur_fn
    from robaudit.natural.digital import contrast_fn
    from robaudit.natural.jpeg import jpeg_compression_fn

    x = images224.astype(np.float64) / 255.0
    xt = to_tensor(images224)
    cases: list[tuple[str, Callable[[torch.Tensor], torch.Tensor], int]] = [
        ("defocus_blur", lambda t: defocus_blur_fn(t, 2 * 6, 0.5), 3),
        ("contrast", lambda t: contrast_fn(t, 0.2 / 2), 3),
        ("jpeg_compression", lambda t: jpeg_compression_fn(t, 15 // 2), 3),
    ]
    for name, wrong, severity in cases:
        ref = oracle_run(ic, name, images224, severity, 0)
        got = wrong(xt).permute(0, 2, 3, 1).double().numpy()
        mad, change = np.abs(got - ref).mean(), np.abs(ref - x).mean()
        max_mad, max_ratio = DETERMINISTIC[name]
        assert mad > max_mad or mad > max_ratio * change, (name, mad, change)


# ---------------------------------------------------------------------------------------------
# CIFAR-size: CIFAR-10-C's constants (read from make_cifar_c.py) through the oracle's helpers,
# Pillow and skimage.


@pytest.fixture(scope="module")
def images32() -> np.ndarray:
    return make_images(16, 32, seed=2)


def _cifar_reference(ic: Any, name: str, img: np.ndarray, c: Any) -> np.ndarray:
    """One 32x32 image through the reference definition with CIFAR constant ``c``."""
    import cv2
    from PIL import Image
    from skimage import color
    from skimage.filters import gaussian

    x = img / 255.0
    if name == "defocus_blur":
        k = ic.disk(radius=c[0], alias_blur=c[1])
        return np.stack([cv2.filter2D(x[..., d], -1, k) for d in range(3)], -1).clip(0, 1)
    if name == "zoom_blur":
        xf = x.astype(np.float32)
        return ((xf + sum(ic.clipped_zoom(xf, z)[:32, :32] for z in c)) / (len(c) + 1)).clip(0, 1)
    if name == "gaussian_blur":
        return gaussian(x, sigma=c, channel_axis=-1).clip(0, 1)
    if name in ("brightness", "saturate"):
        hsv = color.rgb2hsv(x)
        if name == "brightness":
            hsv[..., 2] = np.clip(hsv[..., 2] + c, 0, 1)
        else:
            hsv[..., 1] = np.clip(hsv[..., 1] * c[0] + c[1], 0, 1)
        return color.hsv2rgb(hsv).clip(0, 1)
    if name == "contrast":
        m = x.mean(axis=(0, 1), keepdims=True)
        return ((x - m) * c + m).clip(0, 1)
    if name == "pixelate":
        small = Image.fromarray(img).resize((int(32 * c), int(32 * c)), Image.Resampling.BOX)
        return np.asarray(small.resize((32, 32), Image.Resampling.BOX)) / 255.0
    if name == "jpeg_compression":
        import io

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, "JPEG", quality=c)
        return np.asarray(Image.open(buf)) / 255.0
    raise KeyError(name)


CIFAR_DETERMINISTIC = {
    "defocus_blur": 0.002, "zoom_blur": 0.002, "gaussian_blur": 0.002, "brightness": 0.002,
    "saturate": 0.002, "contrast": 0.002, "pixelate": 0.003, "jpeg_compression": 0.006,
}


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", list(CIFAR_DETERMINISTIC))
def test_cifar_deterministic_matches_reference(ic: Any, images32: np.ndarray, name: str,
                                               severity: int) -> None:
    c = CIFAR[name][severity - 1]
    assert CORRUPTIONS[name].constants(32)[severity - 1] == c
    ref = np.stack([_cifar_reference(ic, name, img, c) for img in images32])
    got = ours(name, images32, severity)
    mad = np.abs(got - ref).mean()
    change = np.abs(ref - images32 / 255.0).mean()
    assert mad <= CIFAR_DETERMINISTIC[name] and mad <= 0.15 * change + 1e-4, (mad, change)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_cifar_motion_blur_matches_the_port(ic: Any, images32: np.ndarray, severity: int) -> None:
    radius, sigma = CIFAR["motion_blur"][severity - 1]
    angles = np.linspace(-44, 44, len(images32))
    ref = np.stack([ic._motion_blur(img, radius=radius, sigma=sigma, angle=a)
                    for img, a in zip(images32, angles, strict=True)]) / 255.0
    got = motion_blur_fn(to_tensor(images32), radius, sigma, angles=torch.tensor(angles))
    mad = np.abs(got.permute(0, 2, 3, 1).double().numpy() - ref.clip(0, 1)).mean()
    assert mad <= 1e-4, mad


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
def test_cifar_noise_levels(severity: int) -> None:
    """The noise added at CIFAR size has CIFAR-10-C's level (mid-gray images: no clipping)."""
    x = torch.full((8, 3, 32, 32), 0.5)
    g = torch.Generator().manual_seed(severity)
    sigma = CIFAR["gaussian_noise"][severity - 1]
    d = CORRUPTIONS["gaussian_noise"].apply(x, severity, g) - x
    assert abs(d.std().item() / sigma - 1) < 0.05
    photons = CIFAR["shot_noise"][severity - 1]
    d = CORRUPTIONS["shot_noise"].apply(x, severity, g) - x
    assert abs(d.std().item() / math.sqrt(0.5 / photons) - 1) < 0.05
    amount = CIFAR["impulse_noise"][severity - 1]
    changed = (CORRUPTIONS["impulse_noise"].apply(x, severity, g) != x).float().mean().item()
    assert abs(changed / amount - 1) < 0.15
    sigma = CIFAR["speckle_noise"][severity - 1]
    d = CORRUPTIONS["speckle_noise"].apply(x, severity, g) - x
    assert abs(d.std().item() / (0.5 * sigma) - 1) < 0.05


# ---------------------------------------------------------------------------------------------
# ImageNet-size, random, replayed: robaudit's functions fed the oracle's own numpy draws
# (image i: RandomState(seed * 1000 + i), drawn in the oracle's order), so the outputs
# must agree pixel for pixel up to float and the documented approximations.


class ReplayRng(Rng):
    """An :class:`Rng` whose draws are numpy's legacy ones, as the oracle makes them."""

    def __init__(self, n: int, seed: int) -> None:
        super().__init__(range(n))
        self.states = [np.random.RandomState(seed * 1000 + i) for i in range(n)]

    def uniform(self, shape: Any, low: float = 0.0, high: float = 1.0) -> torch.Tensor:
        return torch.from_numpy(np.stack([r.uniform(low, high, tuple(shape))
                                          for r in self.states]))

    def normal(self, shape: Any, mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
        shape = tuple(shape)
        draws = [r.normal(mean, std, shape[-2:]).reshape(shape) for r in self.states]
        return torch.from_numpy(np.stack(draws)).float()

    def randint(self, low: int, high: int, shape: Any) -> torch.Tensor:
        return torch.from_numpy(np.stack([r.randint(low, high, tuple(shape))
                                          for r in self.states]).astype(np.int64))


def _frost_crops(n: int, seed: int) -> torch.Tensor:
    """The oracle's (texture, top, left) for images of 224: its numpy draws replayed."""
    from robaudit.natural.weather import frost_texture

    rows = []
    for i in range(n):
        r = np.random.RandomState(seed * 1000 + i)
        index = r.randint(5)
        th, tw = frost_texture(index, (224, 224), False, 1.0).shape[-2:]
        rows.append((index, r.randint(0, th - 224), r.randint(0, tw - 224)))
    return torch.tensor(rows)


# (max MAD, max MAD / change)
REPLAYED: dict[str, tuple[float, float]] = {
    "glass_blur": (0.002, 0.05),
    "snow": (0.004, 0.03),
    "frost": (0.006, 0.03),
    "fog": (0.002, 0.02),
    "elastic_transform": (0.002, 0.05),
    "spatter": (0.02, 0.5),  # the water branch approximates Canny + distance transform
}


def _replayed(name: str, xt: torch.Tensor, severity: int, seed: int) -> torch.Tensor:
    corruption = CORRUPTIONS[name]
    c = corruption.constants(224)[severity - 1]
    rng = ReplayRng(xt.shape[0], seed)
    if name == "frost":
        from robaudit.natural.weather import frost_fn

        return frost_fn(xt, c[0], c[1], crops=_frost_crops(xt.shape[0], seed))
    return corruption.adapter(xt, c, rng, _context224())


def _context224() -> Any:
    from robaudit.natural.corruptions import Context

    return Context(False, 1.0, 224, 224)


@pytest.mark.parametrize("severity", [1, 2, 3, 4, 5])
@pytest.mark.parametrize("name", list(REPLAYED))
def test_replayed_draws_match_oracle(ic: Any, name: str, severity: int) -> None:
    if CORRUPTIONS[name].unavailable():
        pytest.skip(str(CORRUPTIONS[name].unavailable()))
    n = 2 if name == "glass_blur" else 4
    images = make_images(n, 224, seed=1)
    x = images.astype(np.float64) / 255.0
    ref = oracle_run(ic, name, images, severity, 3)
    got = _replayed(name, to_tensor(images), severity, 3).permute(0, 2, 3, 1).double().numpy()
    mad, change = np.abs(got - ref).mean(), np.abs(ref - x).mean()
    max_mad, max_ratio = REPLAYED[name]
    assert mad <= max_mad and mad <= max_ratio * change, (name, severity, mad, change)


if __name__ == "__main__":  # print the measured gaps (for choosing the tolerances)
    oracle = load_oracle()
    for corruption in REPLAYED:
        for sev in range(1, 6):
            imgs = make_images(2 if corruption == "glass_blur" else 4, 224, seed=1)
            ref_ = oracle_run(oracle, corruption, imgs, sev, 3)
            got_ = _replayed(corruption, to_tensor(imgs), sev, 3).permute(0, 2, 3, 1).numpy()
            print(corruption, sev, "mad", round(float(np.abs(got_ - ref_).mean()), 5),
                  "change", round(float(np.abs(ref_ - imgs / 255.0).mean()), 5))
    for corruption in RANDOM:
        for sev in range(1, 6):
            found = _random_case(oracle, corruption, sev)
            print(corruption, sev, {k: round(v, 4) for k, v in found.items()})
