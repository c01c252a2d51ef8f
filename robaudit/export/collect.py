"""Collecting adversarial examples during a scan: the engine's ``on_batch`` sink.

Every verified break is kept; with a separate ``logits`` function, so is the strongest
candidate (lowest true-class margin) of each sample no attack broke. :meth:`finish` turns
them into :class:`~robaudit.export.examples.AdversarialExamples` with the report's threats.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

import numpy as np
import torch

from robaudit.attacks.projections import flat_norm
from robaudit.engine import VerifiedBatch
from robaudit.export.examples import FORMAT, AdversarialExamples, perturbation_norm
from robaudit.loading.data import DataSet
from robaudit.results import RunResult
from robaudit.threat import Threat
from robaudit.verification import TOLERANCE

LogitsFn = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Best:
    """Per threat: the lowest-margin candidate seen so far for each sample."""

    margin: torch.Tensor
    x: torch.Tensor | None = None
    pred: torch.Tensor | None = None
    attack: list[str] = field(default_factory=list)
    attack_index: torch.Tensor | None = None


class AdversarialCollector:
    """The engine's ``on_batch`` sink: keeps every verified break (and, with ``logits``, the
    strongest candidate per unbroken sample), then builds :class:`AdversarialExamples`.

    ``logits`` must not share counters with the audited classifier, or the extra forward
    passes that rank unbroken candidates would show up in the attacks' query counts.
    """

    def __init__(self, data: DataSet, *, logits: LogitsFn | None = None) -> None:
        self._data = data
        self._logits = logits
        self._parts: list[dict[str, Any]] = []
        self._best: dict[tuple[str, str, float], _Best] = {}

    @property
    def unbroken(self) -> bool:
        return self._logits is not None

    def __call__(self, batch: VerifiedBatch) -> None:
        b = batch.broken.bool()
        if bool(b.any()):
            idx = batch.idx[b]
            k = int(idx.numel())
            self._parts.append(
                {
                    "x_adv": batch.x_adv[b].detach().float().clone(),
                    "idx": idx.clone(),
                    "pred": batch.pred[b].clone(),
                    "attack_names": [batch.attack] * k,
                    "attack_index": torch.full((k,), batch.attack_index, dtype=torch.long),
                    "threat": batch.threat,
                    "broken": True,
                }
            )
        if self._logits is not None and bool((~b).any()):
            self._keep_strongest(batch, ~b)

    def _keep_strongest(self, batch: VerifiedBatch, keep: torch.Tensor) -> None:
        assert self._logits is not None
        t = batch.threat
        # a minimal-norm attack's candidate is not projected: only those inside the ball count
        size = flat_norm(batch.x_adv.float() - self._data.samples[batch.idx], t.norm)
        keep = keep & (size <= t.eps + TOLERANCE)
        if not bool(keep.any()):
            return
        idx = batch.idx[keep]
        xa = batch.x_adv[keep].detach().float()
        y = self._data.y[idx]
        logits = self._logits(xa).detach().float().cpu()
        true = logits.gather(1, y.view(-1, 1)).squeeze(1)
        other = logits.scatter(1, y.view(-1, 1), float("-inf")).amax(dim=1)
        margin = true - other
        n = int(self._data.y.numel())
        key = (t.access, t.norm, t.eps)
        best = self._best.get(key)
        if best is None:
            best = _Best(margin=torch.full((n,), float("inf")), attack=[""] * n)
            best.x = torch.zeros((n, *self._data.samples.shape[1:]), dtype=torch.float32)
            best.pred = torch.full((n,), -1, dtype=torch.long)
            best.attack_index = torch.full((n,), -1, dtype=torch.long)
            self._best[key] = best
        assert best.x is not None and best.pred is not None and best.attack_index is not None
        better = margin < best.margin[idx]
        sel = idx[better]
        best.margin[sel] = margin[better]
        best.x[sel] = xa[better]
        best.pred[sel] = batch.pred[keep][better]
        best.attack_index[sel] = batch.attack_index
        for s in sel.tolist():
            best.attack[s] = batch.attack

    def finish(self, result: RunResult) -> AdversarialExamples:
        """Every collected row, in run order; unbroken candidates only for samples the report
        counts as robust at that threat (nor broken at a smaller eps of the same norm)."""
        rows: list[dict[str, Any]] = [_rekey(r, result) for r in self._parts]
        rows.extend(self._derived_rows(result, rows))
        if self._logits is not None:
            rows.extend(self._unbroken_rows(result))
        data = self._data
        shape = tuple(data.samples.shape[1:])
        if rows:
            idx = torch.cat([r["idx"] for r in rows]).long()
            x_adv = torch.cat([r["x_adv"] for r in rows])
            pred = torch.cat([r["pred"] for r in rows]).long()
        else:
            idx = torch.zeros(0, dtype=torch.long)
            x_adv = torch.zeros((0, *shape), dtype=torch.float32)
            pred = torch.zeros(0, dtype=torch.long)
        x_clean = data.samples[idx].float()
        per_row = [(r, int(r["idx"].numel())) for r in rows]

        def col(fn: Callable[[dict[str, Any]], Any]) -> list[Any]:
            return [fn(r) for r, k in per_row for _ in range(k)]

        broken = col(lambda r: r["broken"])
        norms = col(lambda r: r["threat"].norm)
        distance = np.zeros(len(idx), dtype=np.float64)
        for norm in set(norms):
            m = torch.tensor([nm == norm for nm in norms], dtype=torch.bool)
            distance[m.numpy()] = perturbation_norm(x_adv[m] - x_clean[m], norm, x_clean[m]).numpy()
        attack = [a for r, _ in per_row for a in r["attack_names"]]
        attack_index = [int(a) for r, _ in per_row for a in r["attack_index"].tolist()]
        ex = AdversarialExamples(
            x_adv=x_adv.numpy().astype(np.float32),
            x_clean=x_clean.numpy().astype(np.float32),
            y=data.y[idx].numpy().astype(np.int64),
            y_adv_pred=pred.numpy().astype(np.int64),
            broken=np.asarray(broken, dtype=bool),
            x_clean_index=idx.numpy().astype(np.int64),
            source_index=np.asarray([data.indices[i] for i in idx.tolist()], dtype=np.int64),
            attack=_strs(attack),
            attack_index=np.asarray(attack_index, dtype=np.int64),
            access=_strs(col(lambda r: r["threat"].access)),
            norm=_strs(norms),
            eps=np.asarray(col(lambda r: r["threat"].eps), dtype=np.float64),
            eps_label=_strs(col(lambda r: r["threat"].label)),
            threat=_strs(col(lambda r: r["threat"].key)),
            distance=distance,
            meta={},
        )
        meta = export_meta(result, unbroken=self._logits is not None, counts=ex.counts())
        return AdversarialExamples(**{**ex.__dict__, "meta": meta})

    def _derived_rows(self, result: RunResult, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Breaks at the smaller eps of a minimal-norm attack, which the engine runs once (at
        its largest eps) and derives elsewhere: a verified break whose norm fits ``eps``."""
        seen = {(r["attack_index"][0].item(), r["threat"].key) for r in rows if r["idx"].numel()}
        out: list[dict[str, Any]] = []
        for a in result.attacks:
            if a.broken == 0 or (a.attack_index, a.threat_key) in seen:
                continue
            runs = [
                r for r in rows
                if r["idx"].numel()
                and r["attack_index"][0].item() == a.attack_index
                and (r["threat"].access, r["threat"].norm) == (a.access, a.norm)
                and r["threat"].eps > a.eps
            ]
            top = max((r["threat"].eps for r in runs), default=None)
            for r in (r for r in runs if r["threat"].eps == top):
                size = flat_norm(r["x_adv"] - self._data.samples[r["idx"]], a.norm)
                fits = size <= a.eps + TOLERANCE
                if bool(fits.any()):
                    k = int(fits.sum())
                    out.append(
                        {
                            **r,
                            "x_adv": r["x_adv"][fits],
                            "idx": r["idx"][fits],
                            "pred": r["pred"][fits],
                            "attack_names": [a.attack] * k,
                            "attack_index": r["attack_index"][fits],
                            "threat": Threat(a.norm, a.eps, a.access, a.eps_label),
                        }
                    )
        return out

    def _unbroken_rows(self, result: RunResult) -> Iterable[dict[str, Any]]:
        correct = {s["index"] for s in result.samples if s["correct"]}
        for t in result.threats:
            best = self._best.get((t.access, t.norm, t.eps))
            if best is None or best.x is None or best.pred is None or best.attack_index is None:
                continue
            robust = [
                s["index"]
                for s in result.samples
                if s["index"] in correct and s["threats"].get(t.key) is None
            ]
            have = [i for i in robust if torch.isfinite(best.margin[i])]
            if not have:
                continue
            sel = torch.tensor(have, dtype=torch.long)
            yield {
                "x_adv": best.x[sel].clone(),
                "idx": sel,
                "pred": best.pred[sel].clone(),
                "attack_names": [best.attack[i] for i in have],
                "attack_index": best.attack_index[sel].clone(),
                "threat": Threat(t.norm, t.eps, t.access, t.eps_label),
                "broken": False,
            }


def _rekey(part: dict[str, Any], result: RunResult) -> dict[str, Any]:
    """Use the report's own threat (its key and eps label) for a batch's threat."""
    t: Threat = part["threat"]
    for row in result.threats:
        if (row.access, row.norm) == (t.access, t.norm) and abs(row.eps - t.eps) <= 1e-12:
            if row.key != t.key:
                return {**part, "threat": Threat(row.norm, row.eps, row.access, row.eps_label)}
            break
    return part


def _strs(values: list[Any]) -> np.ndarray:
    """A unicode array (never ``object``, so the npz loads without pickle)."""
    return np.asarray([str(v) for v in values], dtype=np.str_) if values else np.zeros(0, "<U1")


def export_meta(
    result: RunResult, *, unbroken: bool, counts: dict[tuple[str, str], int]
) -> dict[str, Any]:
    """What the file says about the run that made it (verify reloads the same subset)."""
    return {
        "format": FORMAT,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "robaudit_version": result.meta.robaudit_version,
        "model": {k: getattr(result.model, k) for k in ("path", "sha256", "format", "arch")},
        "input_shape": result.model.input_shape,
        "num_classes": result.model.num_classes,
        "bounds": result.model.bounds,
        "data": {
            "source": result.data.source,
            "split": result.data.split,
            "samples": result.data.requested_samples,
            "evaluated": result.n,
            "seed": result.meta.data_seed,
        },
        "seed": result.meta.seed,
        "config_sha256": result.meta.config_sha256,
        "tolerance": TOLERANCE,
        "unbroken_included": unbroken,
        "scan_broken": [
            {"attack": a.attack, "attack_index": a.attack_index, "threat": a.threat_key, "broken": a.broken}
            for a in result.attacks
        ],
        "exported_broken": [
            {"attack": a, "threat": t, "rows": n} for (a, t), n in sorted(counts.items())
        ],
    }
