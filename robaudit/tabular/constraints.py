"""Constraints on tabular candidates, in torch and batched: which are broken, and a repair.

Units: ``x`` is in the scaler's scaled units when a :class:`~robaudit.tabular.data.MinMaxScaler`
is given (what the engine attacks, and what budgets are measured in, as TabularBench does), and
in raw units when ``scaler`` is None. Inputs are batches N x F in the layout's column order
(:func:`~robaudit.tabular.compiled.compile_layout`); the math runs in float64 and results come
back in the input's dtype.

**violations** names every broken constraint per sample: ``immutable:age``, ``bounds:amount``,
``integer:n_accounts``, ``binary:is_foreign``, ``onehot:channel``,
``relation:open_accounts<=total_accounts``, ``linear:fee_cap`` and ``nonfinite``. Tolerances:
1e-5 of each feature's scaled unit (:data:`~robaudit.tabular.schema.TOL`; a float32 input is
good to about 1e-7 of it), and for a linear row the sum of its columns' tolerances weighted by
``|coefficient|``. ``immutable:`` needs the clean rows; without them it is not checked.

**repair** turns any candidate into one that breaks no constraint and stays in the threat's
ball around the clean row. Each round does, in this order:

1. immutable features reset to the clean row;
2. the continuous part: relations and linear rows projected onto their half-spaces (hyperplanes
   for ``==``), moving mutable features only (continuous ones first: the first half of the
   rounds leaves integers alone when a row has a continuous mutable feature, so rounding cannot
   undo the fix), then the ball (``norms.get(norm).project``), then the bounds; repeated until
   the rows hold. All of these sets are convex and contain the clean row, so the alternating
   projections head for a point in their intersection;
3. the discrete part: integers rounded to the nearest integer within the bounds, binaries to
   0/1, each one-hot group to the argmax of the group. When that leaves the ball (a category
   switch costs sqrt(2) in L2, a binary flip 1), it rounds *toward the clean row* instead
   (integers truncated toward the clean value, binaries and groups kept clean unless already
   flipped exactly): this only shrinks each coordinate of the perturbation, so the ball and
   the bounds still hold.

Rounding can break a row again, hence the rounds; a sample is accepted at the first round whose
result (cast to the output dtype) passes every check and the ball. Samples still failing after
the last round try the blends ``clean + t (p - clean)`` for t = 1, 1/2, 1/4, 1/8 of the last
continuous point p, rounded toward the clean row (every convex constraint holds along that
segment); whatever fails those too gets the clean row back. So the output never breaks a
constraint the clean row satisfies: check clean data with ``schema.validate_against`` first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from robaudit import norms
from robaudit.norms import Norm
from robaudit.tabular.compiled import EQUAL, Layout, compile_layout
from robaudit.tabular.data import MinMaxScaler
from robaudit.tabular.schema import TabularSchema

BALL_TOL = 1e-6  # the engine's slack on the budget (robaudit.verification.TOLERANCE)
_TINY = 1e-9  # "exactly" for values that went through float64 arithmetic
BLENDS = (1.0, 0.5, 0.25, 0.125)

Check = tuple[str, torch.Tensor]  # a constraint's name, its per-sample violation mask


@dataclass(frozen=True)
class _Budget:
    """The threat's ball around the clean rows, or none (constraints only)."""

    norm: Norm
    eps: float | torch.Tensor | None

    def project(self, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return s if self.eps is None else c + self.norm.project(s - c, self.eps)

    def inside(self, s: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        if self.eps is None:
            return torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
        return self.norm.measure(s - c) <= self.eps + BALL_TOL


class Constraints:
    """A schema compiled for one input layout: build once, call per batch."""

    def __init__(
        self,
        schema: TabularSchema,
        scaler: MinMaxScaler | None = None,
        columns: Sequence[str] | None = None,
    ) -> None:
        self.schema = schema
        self.scaler = scaler
        self._base = compile_layout(schema, scaler, columns)
        self._on: dict[torch.device, Layout] = {}

    @property
    def columns(self) -> tuple[str, ...]:
        return self._base.columns

    def mutable(self, device: torch.device) -> torch.Tensor:
        """F bools: the columns an attacker may change (constrained attacks mask the others'
        gradient, so a step's budget goes where it can count)."""
        return self.layout(device).mutable

    def layout(self, device: torch.device) -> Layout:
        if device not in self._on:
            self._on[device] = self._base.to(device)
        return self._on[device]

    def checks(self, x: torch.Tensor, x_clean: torch.Tensor | None = None) -> list[Check]:
        """Every constraint's name and per-sample violation mask, in a fixed order."""
        s = self._batch(x)
        c = None if x_clean is None else self._batch(x_clean, like=s)
        return _checks(s, c, self.layout(s.device))

    def violated(self, x: torch.Tensor, x_clean: torch.Tensor | None = None) -> torch.Tensor:
        """Per sample: does it break any constraint (the engine's refusal to count a break)."""
        found = self.checks(x, x_clean)  # never empty: "nonfinite" is always checked
        return torch.stack([m for _, m in found], dim=1).any(dim=1)

    def violations(self, x: torch.Tensor, x_clean: torch.Tensor | None = None) -> list[list[str]]:
        """Per sample, the names of the constraints it breaks (empty: valid)."""
        found = self.checks(x, x_clean)
        out: list[list[str]] = [[] for _ in range(x.shape[0])]
        for name, mask in found:
            for i in torch.nonzero(mask).flatten().tolist():
                out[i].append(name)
        return out

    def repair(
        self,
        x_adv: torch.Tensor,
        x_clean: torch.Tensor,
        *,
        norm: str | Norm = "l2",
        eps: float | torch.Tensor | None = None,
        rounds: int = 8,
    ) -> torch.Tensor:
        """Valid candidates inside the ball (see the module's docstring for the order)."""
        if x_adv.shape != x_clean.shape:
            raise ValueError(f"x_adv {list(x_adv.shape)} and x_clean {list(x_clean.shape)} differ")
        c = self._batch(x_clean)
        s = self._batch(x_adv, like=c)
        s = torch.where(torch.isfinite(s), s, c)
        lay = self.layout(c.device)
        nm = norms.get(norm) if isinstance(norm, str) else norm
        if eps is not None and bool((torch.as_tensor(eps) < 0).any()):
            raise ValueError(f"eps must be >= 0, got {eps}")
        e = eps.to(device=c.device, dtype=torch.float64) if isinstance(eps, torch.Tensor) else eps
        budget = _Budget(nm, e)
        out, done = c.clone(), torch.zeros(c.shape[0], dtype=torch.bool, device=c.device)
        p = s
        for r in range(max(1, rounds)):
            p = _convex(s, c, lay, budget, continuous_first=r < rounds // 2)
            s = _discretise(p, c, lay, budget)
            done = _accept(s, c, lay, budget, x_adv.dtype, out, done)
            if bool(done.all()):
                return out.to(x_adv.dtype)
        for t in BLENDS:
            cand = _toward_clean(c + t * (p - c), c, lay)
            done = _accept(cand, c, lay, budget, x_adv.dtype, out, done)
            if bool(done.all()):
                break
        return out.to(x_adv.dtype)

    def _batch(self, x: torch.Tensor, like: torch.Tensor | None = None) -> torch.Tensor:
        n = len(self.columns)
        if x.dim() != 2 or x.shape[1] != n:
            raise ValueError(f"expected a batch N x {n} (one row per sample), got {list(x.shape)}")
        device = like.device if like is not None else x.device
        return x.detach().to(device=device, dtype=torch.float64)


def _accept(
    s: torch.Tensor,
    c: torch.Tensor,
    lay: Layout,
    budget: _Budget,
    dtype: torch.dtype,
    out: torch.Tensor,
    done: torch.Tensor,
) -> torch.Tensor:
    """Store the samples of ``s`` that are valid as the caller will see them (cast to ``dtype``)
    and not accepted before; the updated ``done``."""
    cast = s.to(dtype).to(torch.float64)
    checks = _checks(cast, c, lay)
    bad = torch.stack([m for _, m in checks], dim=1).any(dim=1)
    ok = ~bad & budget.inside(cast, c) & ~done
    out[ok] = s[ok]
    return done | ok


def _raw(x: torch.Tensor, lay: Layout, cols: torch.Tensor | int) -> torch.Tensor:
    return x[:, cols] * lay.span[cols] + lay.low[cols]


def _near(v: torch.Tensor, target: float | torch.Tensor, tol: float | torch.Tensor) -> torch.Tensor:
    return (v - target).abs() <= tol


def _checks(s: torch.Tensor, c: torch.Tensor | None, lay: Layout) -> list[Check]:
    """The violation masks of ``s`` (float64, working units); see the module docstring."""
    out: list[Check] = [("nonfinite", ~torch.isfinite(s).all(dim=1))]
    s = torch.nan_to_num(s, nan=0.0)
    if c is not None:
        for name, idx in lay.immutables:
            moved = ((s[:, idx] - c[:, idx]).abs() > lay.tol[idx]).any(dim=1)
            out.append((f"immutable:{name}", moved))
    for name, j in lay.bounded:
        outside = (s[:, j] < lay.lo[j] - lay.tol[j]) | (s[:, j] > lay.hi[j] + lay.tol[j])
        out.append((f"bounds:{name}", outside))
    for name, j in lay.integers:
        raw, tol = _raw(s, lay, j), lay.tol[j] * lay.span[j]
        out.append((f"integer:{name}", ~_near(raw, raw.round(), tol)))
    for name, j in lay.binaries:
        raw, tol = _raw(s, lay, j), lay.tol[j] * lay.span[j]
        out.append((f"binary:{name}", ~(_near(raw, 0.0, tol) | _near(raw, 1.0, tol))))
    for name, idx in lay.groups:
        raw, tol = _raw(s, lay, idx), lay.tol[idx] * lay.span[idx]
        hot = _near(raw, 1.0, tol)
        flag = hot | _near(raw, 0.0, tol)
        out.append((f"onehot:{name}", ~flag.all(dim=1) | (hot.sum(dim=1) != 1)))
    if lay.w.shape[0]:
        gap = s @ lay.w.T - lay.b
        bad = torch.where(lay.kind == EQUAL, gap.abs(), gap) > lay.row_tol
        out += [(name, bad[:, k]) for k, name in enumerate(lay.row_names)]
    return out


def _convex(
    s: torch.Tensor, c: torch.Tensor, lay: Layout, budget: _Budget, *, continuous_first: bool,
    sweeps: int = 25,
) -> torch.Tensor:
    """Step 1 and 2 of a round: immutables, then rows, ball and bounds until the rows hold."""
    s = torch.where(lay.mutable, s, c)
    for _ in range(sweeps):
        s = _project_rows(s, lay, continuous_first)
        s = torch.clamp(budget.project(s, c), lay.lo, lay.hi)
        if not lay.w.shape[0]:
            break
        gap = s @ lay.w.T - lay.b
        if not bool((torch.where(lay.kind == EQUAL, gap.abs(), gap) > lay.row_tol * 0.5).any()):
            break
    return s


def _project_rows(s: torch.Tensor, lay: Layout, continuous_first: bool) -> torch.Tensor:
    """One pass of projections onto each row's half-space (or hyperplane), moving only mutable
    columns: the smallest L2 move in working units that satisfies the row."""
    moves, sizes = (
        (lay.move_first, lay.size_first) if continuous_first else (lay.move_any, lay.size_any)
    )
    for k, size in enumerate(sizes):
        if size == 0.0:
            continue  # only immutable features: the clean row already satisfies it
        gap = s @ lay.w[k] - lay.b[k]
        if not lay.equal[k]:
            gap = gap.clamp(min=0.0)
        s = s - (gap / size).unsqueeze(1) * moves[k]
    return s


def _write(s: torch.Tensor, lay: Layout, cols: torch.Tensor, raw_new: torch.Tensor) -> None:
    """Put rounded raw values back in working units, leaving unchanged values bit-identical."""
    old = _raw(s, lay, cols)
    scaled = (raw_new - lay.low[cols]) / lay.span[cols]
    s[:, cols] = torch.where(raw_new == old, s[:, cols], scaled)


def _nearest(p: torch.Tensor, c: torch.Tensor, lay: Layout) -> torch.Tensor:
    """Step 3, nearest: integers within their bounds, binaries at 0.5, groups by argmax."""
    s = p.clone()
    if lay.integer.numel():
        idx = lay.integer
        raw = _raw(p, lay, idx)
        tol = lay.tol[idx] * lay.span[idx]
        lo = torch.ceil(lay.lo[idx] * lay.span[idx] + lay.low[idx] - tol)
        hi = torch.floor(lay.hi[idx] * lay.span[idx] + lay.low[idx] + tol)
        _write(s, lay, idx, torch.minimum(torch.maximum(raw.round(), lo), hi))
    if lay.binary.numel():
        _write(s, lay, lay.binary, (_raw(p, lay, lay.binary) >= 0.5).to(p.dtype))
    for _, idx in lay.groups:
        raw = _raw(p, lay, idx)
        pick = (raw + _TINY * _raw(c, lay, idx)).argmax(dim=1)  # a tie keeps the clean category
        _write(s, lay, idx, torch.nn.functional.one_hot(pick, idx.numel()).to(p.dtype))
    return s


def _toward_clean(p: torch.Tensor, c: torch.Tensor, lay: Layout) -> torch.Tensor:
    """Step 3, within the ball: each discrete coordinate moves from ``p`` toward the clean row
    (so no coordinate of the perturbation grows)."""
    s = p.clone()
    if lay.integer.numel():
        idx = lay.integer
        raw, clean = _raw(p, lay, idx), _raw(c, lay, idx)
        nudge = _TINY * lay.span[idx]
        toward = torch.where(raw >= clean, torch.floor(raw + nudge), torch.ceil(raw - nudge))
        _write(s, lay, idx, toward)
    if lay.binary.numel():
        raw, clean = _raw(p, lay, lay.binary), _raw(c, lay, lay.binary)
        flipped = (raw - clean).abs() >= 1.0 - _TINY
        _write(s, lay, lay.binary, torch.where(flipped, raw.round(), clean))
    for _, idx in lay.groups:
        raw, clean = _raw(p, lay, idx), _raw(c, lay, idx)
        exact = (_near(raw, 0.0, _TINY) | _near(raw, 1.0, _TINY)).all(dim=1)
        exact &= raw.round().sum(dim=1) == 1
        _write(s, lay, idx, torch.where(exact.unsqueeze(1), raw.round(), clean))
    return s


def _discretise(p: torch.Tensor, c: torch.Tensor, lay: Layout, budget: _Budget) -> torch.Tensor:
    """Step 3: nearest rounding, or toward the clean row where nearest leaves the ball."""
    s = _nearest(p, c, lay)
    out = ~budget.inside(s, c)
    if bool(out.any()):
        s[out] = _toward_clean(p[out], c[out], lay)
    return s


def repair(
    x_adv: torch.Tensor,
    x_clean: torch.Tensor,
    schema: TabularSchema,
    scaler: MinMaxScaler | None = None,
    *,
    norm: str | Norm = "l2",
    eps: float | torch.Tensor | None = None,
    columns: Sequence[str] | None = None,
    rounds: int = 8,
) -> torch.Tensor:
    """Valid candidates inside the ``norm`` ball of radius ``eps`` around ``x_clean`` (scaled
    units with a scaler, raw without); ``eps=None`` repairs the constraints only. Build a
    :class:`Constraints` once instead when calling per batch."""
    cons = Constraints(schema, scaler, columns)
    return cons.repair(x_adv, x_clean, norm=norm, eps=eps, rounds=rounds)


def violations(
    x: torch.Tensor,
    schema: TabularSchema,
    scaler: MinMaxScaler | None = None,
    *,
    x_clean: torch.Tensor | None = None,
    columns: Sequence[str] | None = None,
) -> list[list[str]]:
    """Per sample, the names of the broken constraints (``immutable:`` only with ``x_clean``)."""
    return Constraints(schema, scaler, columns).violations(x, x_clean)
