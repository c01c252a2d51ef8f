"""Square Attack's proposals: where the next square goes and what it holds, Linf, L2 and L1.

The search (:mod:`robaudit.attacks.square`) is sequential per sample, but its randomness is
not: a proposer draws the squares of up to ``BLOCK`` iterations at once from the explicit
generator (on the CPU, so a seed gives the same squares on any device) and precomputes what
does not depend on the current point, so an iteration costs a handful of tensor ops and no
host work proportional to the batch.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch

from robaudit.attacks.common import is_l2
from robaudit.attacks.projections import clip_to_ball, flat_norm, per_sample

_TINY = 1e-12
_ROUNDING = 5e-7  # L2: norms this far past eps are rounding (the engine allows 1e-6)
_L1_MARGIN = 1e-6  # L1: candidates aim at eps·(1 − this), clear of float rounding
BLOCK = 64  # iterations drawn ahead
BLOCK_ELEMENTS = 1 << 21  # cap on the elements of one block's precomputed tensors


# -- patterns and starting points ------------------------------------------------------------


def bump(h1: int, h2: int, power: int = 2) -> torch.Tensor:
    """The paper's η^(h1,h2): concentric rings whose weights grow towards the centre.

    Ring m (m = 0 at the centre) weighs Σ_{k=0}^{n−m} 1/(n+1−k)^power with n = ⌊h1/2⌋, so most
    of the mass sits in the middle, like a coarse Gaussian; entries beyond ring n are zero.
    Power 2 is the L2 pattern; the L1 version (AutoAttack's) uses 4, a sharper peak.
    """
    n = h1 // 2
    rows = (torch.arange(h1) - h1 // 2).abs()[:, None]
    cols = (torch.arange(h2) - h2 // 2).abs()[None, :]
    top = n - torch.maximum(rows, cols)  # M(r, s): the number of terms minus one
    weights = 1.0 / (n + 1 - torch.arange(n + 1, dtype=torch.float64)) ** power
    cum = torch.cat([weights.cumsum(0), weights.new_zeros(1)])  # cum[-1] = 0 for M < 0
    return cum[top.clamp(min=-1)].to(torch.float32)


@functools.lru_cache(maxsize=64)
def l2_pattern(h: int) -> torch.Tensor:
    """The L2 update's h×h shape: a bump on the left half and a negated bump on the right.

    Opposite halves let one square push the logits both ways; unit L2 norm. Cached (callers
    never write to it): every iteration of a run uses one of a few sizes.
    """
    k = h // 2
    eta = torch.cat([bump(h, k), -bump(h, h - k)], dim=1)
    return eta / (eta.norm() + _TINY)


@functools.lru_cache(maxsize=64)
def l1_pattern(h: int) -> torch.Tensor:
    """The L1 update's h×h shape: like :func:`l2_pattern` with the sharper power-4 bumps, unit
    L1 norm (AutoAttack's Square-L1)."""
    k = h // 2
    eta = torch.cat([bump(h, k, 4), -bump(h, h - k, 4)], dim=1)
    return eta / (eta.abs().sum() + _TINY)


def _rand_sign(shape: tuple[int, ...], generator: torch.Generator) -> torch.Tensor:
    return torch.randint(0, 2, shape, generator=generator).to(torch.float32) * 2 - 1


def _vertices(
    x: torch.Tensor, eps: float, bounds: tuple[float, float]
) -> tuple[torch.Tensor, torch.Tensor]:
    """The two Linf vertices of every pixel, ``x + eps`` and ``x − eps``, clipped to the box.

    Every Linf point the search visits is built from these two tensors, so "does this square
    change the point" is an exact comparison.
    """
    return (x + eps).clamp(bounds[0], bounds[1]), (x - eps).clamp(bounds[0], bounds[1])


def _tiles(
    x: torch.Tensor, pattern: Callable[[int], torch.Tensor], generator: torch.Generator
) -> torch.Tensor:
    """A centred grid of about 5×5 tiles, each ``pattern`` with per-channel random sign (CPU)."""
    n, c, height, width = x.shape
    s = max(1, min(height, width) // 5)
    gh, gw = height // s, width // s
    signs = _rand_sign((n, c, gh, gw), generator)
    tiles = signs.repeat_interleave(s, dim=2).repeat_interleave(s, dim=3)
    tiles = tiles * pattern(s).repeat(gh, gw)
    delta = torch.zeros(n, c, height, width)
    top, left = (height - gh * s) // 2, (width - gw * s) // 2
    delta[:, :, top : top + gh * s, left : left + gw * s] = tiles
    return delta


def init_l2(
    x: torch.Tensor, eps: float, bounds: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """The L2 start: the tiles of L2 patterns, scaled to norm eps."""
    delta = _tiles(x, l2_pattern, generator)
    delta = delta / per_sample(flat_norm(delta, "l2") + _TINY, delta) * eps
    delta = delta.to(device=x.device, dtype=x.dtype)
    return clip_to_ball(x + delta, x, "l2", eps, bounds)


def init_l1(
    x: torch.Tensor, eps: float, bounds: tuple[float, float], generator: torch.Generator
) -> torch.Tensor:
    """The L1 start (AutoAttack's): the tiles of unit-L1 patterns, projected onto the ball ∩
    box, which keeps the patterns' peaks where the tiles' mass exceeds eps."""
    delta = _tiles(x, l1_pattern, generator).to(device=x.device, dtype=x.dtype)
    return clip_to_ball(x + delta, x, "l1", eps * (1 - _L1_MARGIN), bounds)


# -- proposals, drawn ahead in blocks ------------------------------------------------------


def _upload(t: torch.Tensor, device: torch.device) -> torch.Tensor:
    """CPU draws to the device; to CUDA through pinned memory, so the host does not wait."""
    if device.type == "cuda":
        return t.pin_memory().to(device, non_blocking=True)
    return t.to(device)


class _LinfProposer:
    """Linf updates: one h×h square of every channel set to ``x0 ± eps`` (a vertex).

    As in the paper's reference code, a square whose every channel already sits at the drawn
    vertex would change nothing, so its signs are redrawn: the reference loops until the
    square changes; here the signs are negated, which for one channel is the only other draw
    and for several always changes every channel (hi ≠ lo for eps > 0). One query, one change.
    """

    def __init__(self, x0: torch.Tensor, eps: float, bounds: tuple[float, float]) -> None:
        self.hi, self.lo = _vertices(x0, eps, bounds)
        self.shape = tuple(int(v) for v in x0.shape)
        self.lin = self.new = self.alt = torch.empty(0)

    def side(self, h: int, height: int, width: int) -> int:
        """The square side the schedule's ``h`` becomes under this norm's rule (here ``h``)."""
        del height, width
        return h

    def start(self, generator: torch.Generator) -> torch.Tensor:
        """Vertical stripes: each column of each channel at ``x0 ± eps``, signs uniform."""
        n, c, _, w = self.shape
        signs = _rand_sign((n, c, 1, w), generator).to(device=self.hi.device)
        return torch.where(signs > 0, self.hi, self.lo)

    def draw(self, iters: int, h: int, generator: torch.Generator) -> int:
        """Draw the squares of up to ``iters`` iterations of side ``h``; returns how many."""
        n, c, height, width = self.shape
        dev = self.hi.device
        b = max(1, min(iters, BLOCK_ELEMENTS // max(1, n * c * h * h)))
        r = _upload(torch.randint(0, height - h + 1, (b, n), generator=generator), dev)
        s = _upload(torch.randint(0, width - h + 1, (b, n), generator=generator), dev)
        up = _upload(torch.randint(0, 2, (b, n, c, 1, 1), generator=generator), dev).bool()
        ar = torch.arange(h, device=dev)
        # flat index of every pixel of every square in the (contiguous) batch: B×N×C×h×h
        rows = ((r[..., None] + ar) * width)[..., None, :, None]
        cols = (s[..., None] + ar)[..., None, None, :]
        base = torch.arange(n, device=dev).view(1, n, 1, 1, 1) * (c * height * width)
        chan = torch.arange(c, device=dev).view(1, 1, c, 1, 1) * (height * width)
        self.lin = rows + cols + chan + base
        hi, lo = self.hi.take(self.lin), self.lo.take(self.lin)
        self.new, self.alt = torch.where(up, hi, lo), torch.where(up, lo, hi)
        return b

    def step(self, j: int, xcur: torch.Tensor) -> torch.Tensor:
        """The candidate of iteration ``j`` of the block for every sample of ``xcur``."""
        lin, new = self.lin[j], self.new[j]  # N×C×h×h
        same = (xcur.take(lin) == new).flatten(1).all(dim=1)
        cand = xcur.clone()
        cand.put_(lin, torch.where(same.view(-1, 1, 1, 1), self.alt[j], new))
        return cand

    def select(self, keep: torch.Tensor) -> None:
        """Keep the samples at positions ``keep`` (in order); the rest left the search."""
        _, c, height, width = self.shape
        self.hi, self.lo = self.hi[keep], self.lo[keep]
        self.shape = (int(keep.numel()), c, height, width)
        if self.lin.dim() == 5:
            moved = (torch.arange(keep.numel(), device=keep.device) - keep) * (c * height * width)
            self.lin = self.lin[:, keep] + moved.view(1, -1, 1, 1, 1)
            self.new, self.alt = self.new[:, keep], self.alt[:, keep]


class _L2Proposer:
    """L2 updates: move mass into one square W1 in a new direction, emptying a second W2.

    Per channel, W1's new content is its old direction plus a unit pattern of random sign,
    renormalized to carry the mass of W1 ∪ W2 plus an equal share of the budget not yet used,
    so the perturbation keeps norm eps (before clipping to the box).
    """

    pattern_of = staticmethod(l2_pattern)  # the unit update pattern of a side

    def __init__(self, x0: torch.Tensor, eps: float, bounds: tuple[float, float]) -> None:
        self.x0, self.eps, self.bounds = x0, eps, bounds
        self.w1 = self.rest = self.pattern = torch.empty(0)

    def start(self, generator: torch.Generator) -> torch.Tensor:
        return init_l2(self.x0, self.eps, self.bounds, generator)

    def side(self, h: int, height: int, width: int) -> int:
        """The square side the schedule's ``h`` becomes under this norm's rule (here ``h``)."""
        del height, width
        return h

    def draw(self, iters: int, h: int, generator: torch.Generator) -> int:
        n, c, height, width = (int(v) for v in self.x0.shape)
        dev, dt = self.x0.device, self.x0.dtype
        b = max(1, min(iters, BLOCK_ELEMENTS // max(1, n * (c + 2) * height * width)))
        r1 = torch.randint(0, height - h + 1, (b, n), generator=generator)
        s1 = torch.randint(0, width - h + 1, (b, n), generator=generator)
        r2 = torch.randint(0, height - h + 1, (b, n), generator=generator)
        s2 = torch.randint(0, width - h + 1, (b, n), generator=generator)
        flip = torch.randint(0, 2, (b, n), generator=generator).bool()
        rho = _rand_sign((b, n, c, 1, 1), generator)
        r1, s1, r2, s2, flip = (_upload(t, dev) for t in (r1, s1, r2, s2, flip))
        rows, cols = torch.arange(height, device=dev), torch.arange(width, device=dev)

        def square(r: torch.Tensor, s: torch.Tensor) -> torch.Tensor:  # B×N×1×H×W
            in_r = (rows >= r[..., None]) & (rows < r[..., None] + h)
            in_s = (cols >= s[..., None]) & (cols < s[..., None] + h)
            return (in_r[..., :, None] & in_s[..., None, :])[:, :, None]

        m1 = square(r1, s1)
        # float masks: multiplying by them is one op (a bool mask would be converted each time)
        self.w1 = m1.to(dt)
        self.rest = (~(m1 | square(r2, s2))).to(dt)  # outside both squares: left as it is
        eta = self.pattern_of(h).to(device=dev, dtype=dt)
        eta = torch.where(flip[..., None, None], eta.t(), eta)  # half the squares split top/bottom
        canvas = torch.zeros(b * n, height, width, device=dev, dtype=dt)
        ar = torch.arange(h, device=dev)
        canvas[
            torch.arange(b * n, device=dev).view(-1, 1, 1),
            (r1.flatten()[:, None] + ar)[:, :, None],
            (s1.flatten()[:, None] + ar)[:, None, :],
        ] = eta.view(b * n, h, h)
        # the unit pattern in W1 with its per-channel sign: B×N×C×H×W
        self.pattern = _upload(rho, dev).to(dt) * canvas.view(b, n, 1, height, width)
        return b

    def step(self, j: int, xcur: torch.Tensor) -> torch.Tensor:
        """The candidate of iteration ``j`` of the block (squared norms throughout: few ops)."""
        w1, rest, pattern = self.w1[j], self.rest[j], self.pattern[j]
        c = int(xcur.shape[1])
        nu = xcur - self.x0
        kept = nu * rest  # outside W1 ∪ W2
        in_w1 = nu * w1
        # per sample and channel: ‖nu‖², ‖nu outside W1 ∪ W2‖², ‖nu in W1‖²
        total, outside, inside = torch.stack((nu, kept, in_w1)).square_().sum(dim=(3, 4))
        unused = (self.eps**2 - total.sum(dim=1, keepdim=True)).clamp_(min=0.0) / c
        avail2 = (total - outside).clamp_(min=0.0) + unused  # mass of W1 ∪ W2 plus a share
        direction = torch.addcmul(pattern, in_w1, (inside + _TINY**2).rsqrt_()[..., None, None])
        scale = (avail2 / (direction.square().sum(dim=(2, 3)) + _TINY**2)).sqrt_()
        new_nu = torch.addcmul(kept, direction, scale[..., None, None])
        # by construction ‖new_nu‖ = eps; shrink onto the ball only past rounding (so the
        # pixels outside the two squares stay as they were), then clip to the box
        norm2 = new_nu.square().sum(dim=(1, 2, 3))
        shrink = torch.where(norm2 > (self.eps + _ROUNDING) ** 2, (self.eps**2 / norm2).sqrt(), 1.0)
        lo, hi = self.bounds
        return torch.addcmul(self.x0, new_nu, shrink.view(-1, 1, 1, 1)).clamp_(lo, hi)

    def select(self, keep: torch.Tensor) -> None:
        self.x0 = self.x0[keep]
        if self.w1.dim() == 5:
            self.w1, self.rest, self.pattern = (
                self.w1[:, keep],
                self.rest[:, keep],
                self.pattern[:, keep],
            )


class _L1Proposer(_L2Proposer):
    """L1 updates (Croce & Hein 2021, "Mind the box", AutoAttack's Square-L1): the L2 scheme
    with L1 masses and the sharper power-4 pattern.

    Per channel, W1's new content is its old direction (unit L1) plus a unit-L1 pattern of
    random sign, rescaled to carry the L1 mass of W1 ∪ W2 plus an equal share of the budget
    not yet used; W2 is emptied, and the point is projected onto the L1 ball ∩ box (the box
    can cut some mass, which later steps find unused). AutoAttack's reference scales that mass
    by the channel count and lets the projection cut it back; here each channel gets exactly
    its share (the same on one channel). Squares have an odd side of at least 3, as there.
    """

    pattern_of = staticmethod(l1_pattern)

    def start(self, generator: torch.Generator) -> torch.Tensor:
        return init_l1(self.x0, self.eps, self.bounds, generator)

    def side(self, h: int, height: int, width: int) -> int:
        s = max(h, 3)
        return min(s + 1 - s % 2, height, width)

    def step(self, j: int, xcur: torch.Tensor) -> torch.Tensor:
        """The candidate of iteration ``j`` of the block, inside the L1 ball ∩ box."""
        w1, rest, pattern = self.w1[j], self.rest[j], self.pattern[j]
        c = int(xcur.shape[1])
        nu = xcur - self.x0
        kept = nu * rest  # outside W1 ∪ W2
        in_w1 = nu * w1
        # per sample and channel: L1 mass in W1 ∪ W2 and in W1; the budget not yet used
        aim = self.eps * (1 - _L1_MARGIN)
        windows, inside = (nu - kept).abs().sum(dim=(2, 3)), in_w1.abs().sum(dim=(2, 3))
        unused = (aim - nu.abs().sum(dim=(1, 2, 3))).clamp(min=0.0) / c
        direction = pattern + in_w1 / (inside + _TINY)[..., None, None]
        scale = (windows + unused[:, None]) / (direction.abs().sum(dim=(2, 3)) + _TINY)
        new_nu = kept + direction * scale[..., None, None]
        # by construction ‖new_nu‖₁ = aim: inside the ball only the box can cut (clipping just
        # shrinks coordinates), so the projection runs only past rounding and the pixels
        # outside the two squares stay as they were
        cand = (self.x0 + new_nu).clamp(*self.bounds)
        over = flat_norm(new_nu, "l1") > self.eps * (1 - _L1_MARGIN / 2)
        projected = clip_to_ball(cand, self.x0, "l1", aim, self.bounds)  # no host sync: where
        return torch.where(per_sample(over, cand), projected, cand)


Proposer = _LinfProposer | _L2Proposer | _L1Proposer


def proposer(norm: str, x0: torch.Tensor, eps: float, bounds: tuple[float, float]) -> Proposer:
    """The proposer of ``norm``'s update rule (Linf and L2 from the paper, L1 from AutoAttack)."""
    if norm == "l1":
        return _L1Proposer(x0, eps, bounds)
    return _L2Proposer(x0, eps, bounds) if is_l2(norm) else _LinfProposer(x0, eps, bounds)


def propose(
    norm: str,
    x0: torch.Tensor,
    xcur: torch.Tensor,
    eps: float,
    h: int,
    bounds: tuple[float, float],
    generator: torch.Generator,
) -> torch.Tensor:
    """One proposal per sample of side ``h`` (see :class:`_LinfProposer`, :class:`_L2Proposer`)."""
    prop = proposer(norm, x0, eps, bounds)
    prop.draw(1, h, generator)
    return prop.step(0, xcur)


propose_linf = functools.partial(propose, "linf")
propose_l2 = functools.partial(propose, "l2")
