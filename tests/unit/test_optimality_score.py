"""benchmarks/optimality.py's arithmetic: AttackBench's ξ from per-sample distances, on hand-made
distances whose areas are known (the benchmark's runs are not tests; its scoring is)."""

from __future__ import annotations

import math

import pytest
import torch

from benchmarks.optimality import Outcome, linear_grid, score

INF = float("inf")


def _o(name: str, dist: list[float]) -> Outcome:
    return Outcome(name, "test", "fixed", torch.tensor(dist, dtype=torch.float64), 0.0)


def test_xi_on_hand_made_distances() -> None:
    # sample 3 is misclassified clean (distance 0 for everyone)
    best = _o("best", [1.0, 2.0, 4.0, 0.0])
    half = _o("half", [2.0, 2.0, INF, 0.0])
    none = _o("none", [INF, INF, INF, 0.0])
    correct = torch.tensor([True, True, True, False])
    eps0, rows = score([best, half, none], correct, linear_grid(4.0, 8))
    assert eps0 == 4.0  # where the reference curve reaches 0
    # rho * eps0 = 3/4 * 4 = 3; AUREC = mean of min(d, eps0): best (1+2+4)/4, half (2+2+4)/4
    by = {r.outcome.name: r for r in rows}
    assert by["best"].aurec == pytest.approx(7 / 4) and by["half"].aurec == pytest.approx(2.0)
    assert by["best"].xi == pytest.approx(1.0)
    assert by["half"].xi == pytest.approx((3 - 2.0) / (3 - 7 / 4))
    assert by["none"].xi == pytest.approx(0.0) and by["none"].success == 0.0
    assert math.isclose(by["half"].success, 2 / 3) and by["half"].median == 2.0
    # the curve: robust accuracy at each grid eps (0.5, 1, ..., 4)
    assert by["best"].curve[:3] == pytest.approx([0.75, 0.5, 0.5])
