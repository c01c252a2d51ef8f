"""Small helpers shared by test modules (fixtures live in conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import nn


def one_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine run far faster on one intra-op thread; use as
    ``yield from one_thread()`` inside a module-scoped autouse fixture."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class RowCounter(nn.Module):
    """Counts every input row the wrapped model is asked about: a query counter independent
    of robaudit's own."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.rows = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.rows += int(x.shape[0])
        return self.inner(x)


class Affine(nn.Module):
    """logits = x·W + b over the flattened input: minimal perturbations known exactly."""

    def __init__(self, w: torch.Tensor, b: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.clone(), requires_grad=False)
        self.b = nn.Parameter(b.clone(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w + self.b


# Report fields that measure the run rather than the model: wall-clock times and how the run
# executed (processes, resumed cells, OOM back-offs). Everything else must be reproducible.
TIMING_FIELDS = frozenset(
    {"seconds", "duration_seconds", "clean_seconds", "started_at", "execution"}
)


def without_timing(doc: object) -> object:
    """A report document with the timing and execution fields removed, at any depth."""
    if isinstance(doc, dict):
        return {k: without_timing(v) for k, v in doc.items() if k not in TIMING_FIELDS}
    if isinstance(doc, list):
        return [without_timing(v) for v in doc]
    return doc


def fraud_mlp(x: torch.Tensor, y: torch.Tensor, steps: int = 200) -> nn.Module:
    """A 32-unit MLP on the scaled fraud features (sample_models/data/fraud.csv), fraud
    weighted 4:1 against the 10:1 imbalance; about a second on one thread."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(x.shape[1], 32), nn.ReLU(), nn.Linear(32, 2))
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for _ in range(steps):
        opt.zero_grad()
        nn.functional.cross_entropy(model(x), y, weight=torch.tensor([1.0, 4.0])).backward()
        opt.step()
    return model.eval()


def l1_lp(w: torch.Tensor, r: float, low: torch.Tensor, high: torch.Tensor) -> float | None:
    """Independent oracle: min ‖δ‖₁ s.t. w·δ = r, low ≤ δ ≤ high, as a linear program over
    δ = δ⁺ − δ⁻ (None where infeasible): the exact L1 distance to an affine boundary in a box."""
    from scipy.optimize import linprog

    wn = w.double().tolist()
    bounds = [(0.0, float(h)) for h in high] + [(0.0, float(-lo)) for lo in low]
    res = linprog([1.0] * (2 * len(wn)), A_eq=[wn + [-v for v in wn]], b_eq=[r], bounds=bounds)
    return float(res.fun) if res.status == 0 else None


def affine_l1_distance(model: Affine, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Exact L1 distance of each sample to the affine model's decision boundary inside [0, 1]
    (by LP, per other class): far from the faces an L1 step moves one pixel by more than the
    box allows, so the box is part of the answer."""
    with torch.no_grad():
        z = model(x)
    flat = x.flatten(1).double()
    out = []
    for i in range(x.shape[0]):
        best = float("inf")
        for k in range(z.shape[1]):
            if k == int(y[i]):
                continue
            w = (model.w[:, k] - model.w[:, int(y[i])]).double()
            gap = float(z[i, int(y[i])] - z[i, k])  # w·δ must reach it
            d = l1_lp(w, gap, -flat[i], 1 - flat[i])
            best = min(best, d if d is not None else float("inf"))
        out.append(best)
    return torch.tensor(out)
