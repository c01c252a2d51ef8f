"""Which features the verified breaks of a tabular audit changed, how often and by how much.

A fraud analyst acts on features, not on perturbation norms: "most breaks lower the amount and
switch the channel to the app" says where the model is weak and what a fraudster would do. The
engine hands every verified batch to a sink (:data:`robaudit.outcomes.BatchSink`); this one
counts, over the breaks only, each feature changed (by more than the schema's tolerance in
scaled units) and the size of the change in the data's own units (raw = scaled x span). Each
(attack, sample) break counts once: a sample two attacks broke counts twice.

Examples are turned into before/after feature tables here too (:func:`feature_table`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from robaudit.tabular.data import MinMaxScaler
from robaudit.tabular.schema import TOL


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


class FeatureChanges:
    """A batch sink over the verified batches of one audit (the bare model's cells)."""

    def __init__(self, x: Any, scaler: MinMaxScaler) -> None:
        """``x``: the audited samples (a tensor, or the loader's samples: indexable by a tensor
        of positions), in the scaler's columns and scaled units."""
        self.x = x
        self.columns = tuple(scaler.columns)
        self.span = np.asarray(scaler.span, dtype=np.float64)
        self.all = _Tally(len(self.columns))
        self.by_threat: dict[str, _Tally] = {}

    def __call__(self, batch: Any) -> None:
        """Count the breaks of one verified batch (a :class:`robaudit.outcomes.VerifiedBatch`)."""
        hit = batch.broken.cpu().bool()
        if not bool(hit.any()):
            return
        xa = batch.x_adv[hit].reshape(int(hit.sum()), -1).double().numpy()
        xc = self.x[batch.idx[hit]].reshape(xa.shape[0], -1).double().cpu().numpy()
        delta = xa - xc
        moved = np.abs(delta) > TOL
        size = np.abs(delta) * self.span
        self.all.add(moved, size)
        key = batch.threat.key
        self.by_threat.setdefault(key, _Tally(len(self.columns))).add(moved, size)

    def to_dict(self) -> dict[str, Any]:
        """The report's ``feature_changes``: over all breaks, and per threat."""
        return {
            **self.all.rows(self.columns),
            "by_threat": {k: t.rows(self.columns) for k, t in sorted(self.by_threat.items())},
        }


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
