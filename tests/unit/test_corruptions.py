"""The common corruptions (robaudit.natural): contracts that need no oracle."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from robaudit.natural._common import Rng, image_seeds, pil_resample_matrix
from robaudit.natural.constants import CIFAR, IMAGENET, constants, regime
from robaudit.natural.corruptions import CORRUPTIONS, corruption_names

NAMES = list(CORRUPTIONS)
COMMON = corruption_names()


def smooth(n: int, size: int, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Smooth random images in [0.1, 0.9] with a sharp box each."""
    g = torch.Generator().manual_seed(seed)
    low = torch.rand(n, channels, 4, 4, generator=g)
    x = torch.nn.functional.interpolate(low, size=(size, size), mode="bicubic",
                                        align_corners=False)
    x[..., size // 4 : size // 2, size // 4 : size // 2] += 0.3
    return x.clamp(0.1, 0.9)


def _usable(name: str) -> None:
    reason = CORRUPTIONS[name].unavailable()
    if reason:
        pytest.skip(reason)


def test_registry() -> None:
    assert len(COMMON) == 15 and len(NAMES) == 19
    assert set(NAMES) - set(COMMON) == {"speckle_noise", "gaussian_blur", "spatter", "saturate"}
    for c in CORRUPTIONS.values():
        assert c.family in ("noise", "blur", "weather", "digital")
        assert len(c.constants(32)) == len(c.constants(224)) == 5
    assert [n for n, c in CORRUPTIONS.items() if c.needs_color] == ["saturate"]


def test_constant_rule() -> None:
    assert regime(32) == "cifar" and regime(63) == "cifar" and regime(64) == "imagenet"
    for name in NAMES:
        assert list(constants(name, 32)) == [tuple(e) if isinstance(e, list) else e
                                             for e in CIFAR[name]] or name == "elastic_transform"
        assert list(constants(name, 224)) == IMAGENET[name]
    assert constants("gaussian_blur", 448)[0] == 2 * IMAGENET["gaussian_blur"][0]
    assert constants("motion_blur", 16)[4] == (4.5, 1.25)
    assert constants("glass_blur", 112)[4] == (0.75, 2, 2)
    assert constants("elastic_transform", 32)[1] == pytest.approx((1.6, 6.4, 2.24))
    zoom = [np.arange(1, 1.11, 0.01), np.arange(1, 1.16, 0.01), np.arange(1, 1.21, 0.02),
            np.arange(1, 1.26, 0.02), np.arange(1, 1.31, 0.03)]
    for ours, ref in zip(constants("zoom_blur", 224), zoom, strict=True):
        np.testing.assert_allclose(ours, ref)


@pytest.mark.parametrize("name", [n for n in NAMES if CORRUPTIONS[n].zero is not None])
def test_strength_zero_is_identity(name: str) -> None:
    c = CORRUPTIONS[name]
    x = smooth(2, 32)
    assert c.zero is not None
    kwargs = dict(c.zero)
    if c.random:
        kwargs["rng"] = Rng([1, 2])
    torch.testing.assert_close(c.fn(x, **kwargs), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("size", [32, 96])
@pytest.mark.parametrize("name", NAMES)
def test_shape_dtype_bounds_and_seeding(name: str, size: int) -> None:
    _usable(name)
    c = CORRUPTIONS[name]
    x = smooth(3, size)
    for severity in (1, 5):
        y = c.apply(x, severity, torch.Generator().manual_seed(7))
        assert y.shape == x.shape and y.dtype == x.dtype and y.device == x.device
        assert float(y.min()) >= 0.0 and float(y.max()) <= 1.0
        assert torch.isfinite(y).all()
        again = c.apply(x, severity, torch.Generator().manual_seed(7))
        torch.testing.assert_close(y, again, atol=0, rtol=0)
    if c.random:
        other = c.apply(x, 5, torch.Generator().manual_seed(8))
        assert not torch.equal(other, c.apply(x, 5, torch.Generator().manual_seed(7)))


@pytest.mark.parametrize("name", [n for n in NAMES if CORRUPTIONS[n].random])
def test_per_image_seeds_do_not_depend_on_the_batch(name: str) -> None:
    _usable(name)
    c = CORRUPTIONS[name]
    x = smooth(4, 32)
    seeds = image_seeds(3, range(4))
    whole = c.apply_seeded(x, 3, seeds)
    parts = torch.cat([c.apply_seeded(x[:1], 3, seeds[:1]), c.apply_seeded(x[1:], 3, seeds[1:])])
    torch.testing.assert_close(whole, parts, atol=1e-6, rtol=0)
    # apply: a prefix of the batch gets the same seeds from the same generator state
    first = c.apply(x[:2], 3, torch.Generator().manual_seed(5))
    torch.testing.assert_close(c.apply(x, 3, torch.Generator().manual_seed(5))[:2], first,
                               atol=1e-6, rtol=0)


def test_half_precision_input_keeps_dtype() -> None:
    x = smooth(2, 32).half()
    y = CORRUPTIONS["gaussian_noise"].apply(x, 2, torch.Generator().manual_seed(0))
    assert y.dtype == torch.float16


# severities whose reference constants make the change grow monotonically (the others are
# not monotone by definition: e.g. CIFAR elastic 1 is pure affine, saturate 1-2 desaturate,
# frost and glass mix several constants, zoom's mean changes little between 3 and 5,
# pixelate's BOX resampling at non-integer ratios: e.g. 32 -> 30 -> 32 px changes more than
# 32 -> 28 -> 32 px)
MONOTONE = ["gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise", "defocus_blur",
            "motion_blur", "gaussian_blur", "brightness", "contrast", "fog",
            "jpeg_compression"]


@pytest.mark.parametrize("size", [32, 224])
@pytest.mark.parametrize("name", MONOTONE)
def test_change_grows_with_severity(name: str, size: int) -> None:
    c = CORRUPTIONS[name]
    x = smooth(4, size, seed=1)
    changes = []
    for severity in range(1, 6):
        y = c.apply_seeded(x, severity, [11, 12, 13, 14])
        changes.append(float((y - x).abs().mean()))
    assert all(b >= a * 0.98 for a, b in itertools.pairwise(changes)), changes
    assert changes[-1] > changes[0]


@pytest.mark.parametrize("name", NAMES)
def test_grayscale(name: str) -> None:
    _usable(name)
    c = CORRUPTIONS[name]
    x = smooth(2, 32, channels=1)
    if c.needs_color:
        with pytest.raises(ValueError, match="RGB"):
            c.apply(x, 3, torch.Generator().manual_seed(0))
        return
    y = c.apply(x, 3, torch.Generator().manual_seed(0))
    assert y.shape == x.shape and float(y.min()) >= 0 and float(y.max()) <= 1


@pytest.mark.parametrize("name", ["gaussian_noise", "defocus_blur", "contrast", "zoom_blur",
                                  "pixelate", "elastic_transform", "fog", "brightness"])
def test_channelwise_on_gray_equals_rgb_of_equal_channels(name: str) -> None:
    """On an RGB image with three equal channels, the channel-wise corruptions give three
    equal channels, equal to the grayscale result (same seeds)."""
    c = CORRUPTIONS[name]
    gray = smooth(2, 32, channels=1)
    rgb = gray.expand(2, 3, 32, 32).contiguous()
    y_rgb = c.apply_seeded(rgb, 3, [1, 2])
    y_gray = c.apply_seeded(gray, 3, [1, 2])
    if not c.random or name in ("fog", "elastic_transform"):  # per-image fields only
        torch.testing.assert_close(y_rgb[:, :1], y_gray, atol=1e-5, rtol=0)
        torch.testing.assert_close(y_rgb, y_rgb[:, :1].expand_as(y_rgb), atol=1e-5, rtol=0)
    else:  # per-value draws: each channel gets noise of the same strength as the gray image
        gray_std = float((y_gray - gray).std())
        assert gray_std > 0.01
        for ch in range(3):
            ch_std = float((y_rgb[:, ch : ch + 1] - gray).std())
            assert abs(ch_std - gray_std) < 0.15 * gray_std, (ch, ch_std, gray_std)


def test_bad_inputs() -> None:
    c = CORRUPTIONS["gaussian_noise"]
    with pytest.raises(ValueError):
        c.apply(torch.rand(3, 32, 32), 1, torch.Generator())
    with pytest.raises(ValueError):
        c.apply(torch.rand(1, 3, 32, 32), 6, torch.Generator())
    with pytest.raises(ValueError):
        c.apply(torch.rand(1, 3, 32, 32), 1, None)
    with pytest.raises(ValueError):
        c.apply(torch.rand(1, 4, 32, 32), 1, torch.Generator())


def test_pil_box_matrix_rows_sum_to_one() -> None:
    for n_in, n_out in [(32, 30), (224, 134), (67, 224), (32, 20)]:
        m = pil_resample_matrix(n_in, n_out, "box")
        torch.testing.assert_close(m.sum(1), torch.ones(n_out, dtype=torch.float64))


def test_jpeg_matches_pillow_roughly() -> None:
    """Pillow is a core dependency: our codec against libjpeg at CIFAR qualities."""
    import io

    from PIL import Image

    x = smooth(2, 32, seed=3)
    for quality in (80, 40):
        ours = CORRUPTIONS["jpeg_compression"].fn(x, quality)
        refs = []
        for img in (x * 255).round().byte().permute(0, 2, 3, 1).numpy():
            buf = io.BytesIO()
            Image.fromarray(img).save(buf, "JPEG", quality=quality)
            refs.append(np.asarray(Image.open(buf), dtype=np.float32) / 255)
        ref = torch.from_numpy(np.stack(refs)).permute(0, 3, 1, 2)
        assert float((ours - ref).abs().mean()) < 0.004


def test_glass_blur_sweeps_in_one_gather_equal_the_sequential_copies() -> None:
    """At max_delta 1 (every CIFAR-10-C severity) a sweep's targets are never written before
    they are read, so the vectorized sweep equals the reference's position-by-position copies;
    at max_delta 2 they differ (a target can be written first), so the fast path is not used."""
    import numpy as np

    from robaudit.natural.blur import glass_sweeps, glass_sweeps_parallel

    rng = np.random.default_rng(0)
    h = w = 12
    for d, same in ((1, True), (2, False)):
        pos = np.array([r * w + c for r in range(h - d, d, -1) for c in range(w - d, d, -1)])
        offsets = rng.integers(-d, d, (5, 2, len(pos), 2))
        targets = pos[None, None, :] + offsets[..., 1] * w + offsets[..., 0]
        a = glass_sweeps(targets, pos, 5, h * w)
        b = glass_sweeps_parallel(targets, pos, 5, h * w)
        assert np.array_equal(a, b) == same
