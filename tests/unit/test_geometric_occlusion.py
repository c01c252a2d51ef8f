"""Rotations, translations and occlusion boxes: identities, exact pixel moves, coverage."""

from __future__ import annotations

import pytest
import torch

from robaudit.natural.geometric import Transform, grid, random_draws, transform
from robaudit.natural.occlusion import box_side, occlude, positions


def _x(n: int = 3, c: int = 3, h: int = 8, w: int = 8) -> torch.Tensor:
    return torch.rand(n, c, h, w, generator=torch.Generator().manual_seed(0))


def test_zero_transform_is_the_identity_bit_for_bit() -> None:
    x = _x()
    zero = torch.zeros(3)
    assert torch.equal(transform(x, zero, zero, zero), x)
    assert Transform().identity


def test_shift_by_whole_pixels_moves_the_image() -> None:
    x = _x(h=8, w=8)
    out = transform(x, torch.zeros(3), torch.full((3,), 0.25), torch.zeros(3))  # 2 px right
    assert torch.allclose(out[..., 2:], x[..., :-2], atol=1e-5)
    assert torch.all(out[..., :2] == 0)  # black: the lower bound comes in
    edge = transform(x, torch.zeros(3), torch.full((3,), 0.25), torch.zeros(3), padding="edge")
    assert torch.allclose(edge[..., :2], x[..., :1].expand(-1, -1, -1, 2), atol=1e-5)
    down = transform(x, torch.zeros(3), torch.zeros(3), torch.full((3,), 0.125))  # 1 px down
    assert torch.allclose(down[..., 1:, :], x[..., :-1, :], atol=1e-5)


def test_quarter_turn_is_a_rot90_and_bounds_are_kept() -> None:
    x = _x(h=9, w=9)
    out = transform(x, torch.full((3,), 90.0), torch.zeros(3), torch.zeros(3))
    turned = [torch.rot90(x, k, dims=(2, 3)) for k in (1, -1)]
    assert any(torch.allclose(out, t, atol=1e-5) for t in turned)
    lo = transform(x * 2 - 1, torch.full((3,), 45.0), torch.zeros(3), torch.zeros(3), bounds=(-1, 1))
    assert float(lo.min()) >= -1 and float(lo.max()) <= 1
    assert float(lo[0, 0, 0, 0]) == -1.0  # a corner rotated out is filled with the lower bound


def test_grid_and_random_draws() -> None:
    g = grid(30, 0.1, 31, 5)
    assert len(g) == 31 * 25 and Transform(0.0, 0.0, 0.0) in g
    assert {t.angle for t in g} >= {-30.0, 0.0, 30.0}
    d = random_draws(4, 10, 30, 0.1, seeds=[1, 2, 3, 4])
    assert d.shape == (4, 10, 3) and float(d[..., 0].abs().max()) <= 30
    again = random_draws(2, 10, 30, 0.1, seeds=[3, 4])
    assert torch.equal(d[2:], again)  # a sample's draws do not depend on its batch
    with pytest.raises(ValueError, match="padding 'wrap'"):
        transform(_x(), torch.zeros(3), torch.zeros(3), torch.zeros(3), padding="wrap")


def test_occlusion_boxes_cover_every_pixel() -> None:
    assert box_side(0.1, 32, 32) == 10 and box_side(1.0, 8, 8) == 8 and box_side(1e-6, 8, 8) == 1
    with pytest.raises(ValueError, match="share of the image"):
        box_side(0.0, 8, 8)
    for h, w, side in [(32, 32, 10), (8, 8, 3), (28, 20, 7)]:
        covered = torch.zeros(h, w, dtype=torch.bool)
        for b in positions(h, w, side):
            assert b.top + side <= h and b.left + side <= w
            covered[b.top : b.top + side, b.left : b.left + side] = True
        assert covered.all()
    x = _x()
    box = positions(8, 8, 3)[0]
    grey = occlude(x, box, bounds=(0.0, 1.0))
    assert torch.all(grey[:, :, :3, :3] == 0.5) and torch.equal(grey[:, :, 3:], x[:, :, 3:])
    assert torch.all(occlude(x, box, fill="black")[:, :, :3, :3] == 0.0)
