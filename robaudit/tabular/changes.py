"""Which features the verified breaks of a tabular audit changed, how often and by how much.

A fraud analyst acts on features, not on perturbation norms: "most breaks lower the amount and
switch the channel to the app" says where the model is weak and what a fraudster would do.
Every cell of a tabular run keeps each attacked sample's verified candidate
(``CellOutcome.candidates``), so the count is made from the cells themselves: it travels with
them through a resumed partial cell, ``--resume`` and the ranks' merge, and a report equals an
uninterrupted single-process run's. Over the breaks only, each feature changed (by more than
the schema's tolerance in scaled units) is counted, with the size of the change in the data's
own units (raw = scaled x span). Each cell's break counts once: a sample two attacks (or one
attack at two budgets) broke counts twice. A cell saved without its candidates is listed as
not tallied instead of being left out silently.

Examples are turned into before/after feature tables here too (:func:`feature_table`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np
import torch

from robaudit.tabular.data import MinMaxScaler
from robaudit.tabular.schema import TOL
from robaudit.threat import Threat


class CellLike(Protocol):
    """What the count reads off a cell (a :class:`robaudit.outcomes.CellOutcome`)."""

    index: int
    attack: str
    threat: Threat
    broken: torch.Tensor
    candidates: torch.Tensor | None


class _Tally:
    """Per feature: breaks that changed it, the sum and the largest of |change| (raw units)."""

    def __init__(self, f: int) -> None:
        self.breaks = 0
        self.changed = np.zeros(f, dtype=np.int64)
        self.total = np.zeros(f)
        self.largest = np.zeros(f)

    def add(self, moved: np.ndarray, size: np.ndarray) -> None:
        self.breaks += int(moved.shape[0])
        self.changed += moved.sum(axis=0)
        self.total += np.where(moved, size, 0.0).sum(axis=0)
        if size.shape[0]:
            self.largest = np.maximum(self.largest, np.where(moved, size, 0.0).max(axis=0))

    def rows(self, columns: tuple[str, ...]) -> dict[str, Any]:
        feats = [
            {
                "feature": c,
                "changed": int(self.changed[j]),
                "share": float(self.changed[j]) / self.breaks if self.breaks else 0.0,
                "mean_abs_change": float(self.total[j] / self.changed[j])
                if self.changed[j]
                else None,
                "max_abs_change": float(self.largest[j]) if self.changed[j] else None,
            }
            for j, c in enumerate(columns)
        ]
        order = sorted(range(len(columns)), key=lambda j: (-int(self.changed[j]), j))
        feats = [feats[j] for j in order]
        return {"breaks": self.breaks, "features": feats}


def feature_changes(cells: Sequence[CellLike], x: Any, scaler: MinMaxScaler) -> dict[str, Any]:
    """The report's ``feature_changes`` over the audited model's cells: over all breaks, per
    threat, and (only when some are) the cells whose breaks could not be tallied.

    ``x``: the audited samples (a tensor, or the loader's samples: indexable by a tensor of
    positions), in the scaler's columns and scaled units.
    """
    columns = tuple(scaler.columns)
    span = np.asarray(scaler.span, dtype=np.float64)
    every = _Tally(len(columns))
    by_threat: dict[str, _Tally] = {}
    untallied: list[dict[str, Any]] = []
    for cell in cells:
        rows = cell.broken.nonzero().flatten()
        if not rows.numel():
            continue
        if cell.candidates is None:
            untallied.append(
                {"attack": cell.attack, "attack_index": cell.index,
                 "threat": cell.threat.key, "breaks": int(rows.numel())}
            )  # fmt: skip
            continue
        xa = cell.candidates[rows].double().numpy()
        xc = x[rows].reshape(xa.shape[0], -1).double().cpu().numpy()
        delta = xa - xc
        moved, size = np.abs(delta) > TOL, np.abs(delta) * span
        every.add(moved, size)
        by_threat.setdefault(cell.threat.key, _Tally(len(columns))).add(moved, size)
    out = {
        **every.rows(columns),
        "by_threat": {k: t.rows(columns) for k, t in sorted(by_threat.items())},
    }
    if untallied:
        out["not_tallied"] = untallied
    return out


def feature_table(
    x: torch.Tensor, x_adv: torch.Tensor, scaler: MinMaxScaler
) -> list[dict[str, Any]]:
    """An example as a before/after table in the data's own units, one row per feature."""
    xc = x.reshape(-1).double().cpu().numpy()
    xa = x_adv.reshape(-1).double().cpu().numpy()
    span = np.asarray(scaler.span, dtype=np.float64)
    # the samples are float32 in scaled units: good to about 1e-7 of a span, so digits below
    # that in raw units are noise (34.0000001 years is 34)
    digits = np.maximum(0, -np.floor(np.log10(span * 2e-7))).astype(int)
    clean = [round(float(v), int(d)) for v, d in zip(xc * span + scaler.low, digits, strict=True)]
    adv = [round(float(v), int(d)) for v, d in zip(xa * span + scaler.low, digits, strict=True)]
    moved = np.abs(xa - xc) > TOL
    return [
        {"feature": c, "clean": clean[j], "adversarial": adv[j],
         "changed": bool(moved[j])}
        for j, c in enumerate(scaler.columns)
    ]  # fmt: skip
