"""Property tests of the patch threat: whatever the perturbation, size, place and image shape,
``measure <= eps`` holds exactly when one allowed region holds every changed pixel (checked by
brute force over all windows), and ``project`` lands in such a region, idempotently, leaving a
perturbation that already fits unchanged."""

from __future__ import annotations

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from robaudit.norms import get
from robaudit.norms.patch import CHANGED, region_dims

PROFILE = settings(max_examples=150, deadline=None, derandomize=True, database=None)


@st.composite
def perturbations(draw: st.DrawFn) -> tuple[torch.Tensor, float, str]:
    n, c = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    kind = draw(st.sampled_from(["dense", "sparse", "block"]))
    d = torch.randn(n, c, h, w, generator=g)
    if kind == "sparse":
        d = d * (torch.rand(n, 1, h, w, generator=g) < 0.1)
    elif kind == "block":  # a random rectangle, as an attack would return
        mask = torch.zeros(n, 1, h, w)
        for i in range(n):
            t, lft = (
                int(torch.randint(0, h, (1,), generator=g)),
                int(torch.randint(0, w, (1,), generator=g)),
            )
            mask[i, :, t : t + draw(st.integers(1, 4)), lft : lft + draw(st.integers(1, 4))] = 1
        d = d * mask
    eps = draw(st.sampled_from([0.0, 0.01, 0.05, 0.1, 0.25, 1.0]) | st.floats(0.0, 1.0))
    where = draw(st.sampled_from(["patch", "patch@center", f"patch@{h // 3},{w // 2}"]))
    return d, eps, where


def _fits(d: torch.Tensor, eps: float, name: str) -> torch.Tensor:
    """Brute force: does one allowed region (any window, or the fixed one) hold the changes?"""
    n, _, h, w = d.shape
    rh, rw = region_dims(eps, h, w)
    changed = d.abs().amax(1) > CHANGED
    norm = get(name)
    if name == "patch":
        corners = [(t, lft) for t in range(h - rh + 1) for lft in range(w - rw + 1)]
    else:
        corners = [norm.origin((rh, rw), h, w)]  # type: ignore[attr-defined]
    out = torch.zeros(n, dtype=torch.bool)
    for t, lft in corners:
        inside = torch.zeros(h, w, dtype=torch.bool)
        inside[t : t + rh, lft : lft + rw] = True
        out |= ~(changed & ~inside).flatten(1).any(1)
    return out


@PROFILE
@given(case=perturbations())
def test_measure_within_eps_is_exactly_one_region_holding_the_changes(case: tuple) -> None:
    d, eps, name = case
    assert torch.equal(get(name).measure(d) <= eps, _fits(d, eps, name))


@PROFILE
@given(case=perturbations())
def test_projection_lands_in_one_region_idempotently(case: tuple) -> None:
    d, eps, name = case
    norm = get(name)
    p = norm.project(d, eps)
    assert bool(_fits(p, eps, name).all()) and bool((norm.measure(p) <= eps).all())
    assert torch.equal(norm.project(p, eps), p)
    kept = (p != 0) & (p != d)
    assert not kept.any()  # it only zeroes: the kept pixels are the perturbation's own
    fits = _fits(d, eps, name)
    assert torch.equal(p[fits], d[fits])  # what already fits is left alone
