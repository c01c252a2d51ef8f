"""Adversarial examples out of a scan, and an independent check of them.

``robaudit scan --save-adversarial`` writes ``adversarial.npz``: one row per verified break
(per attack and threat), optionally plus the strongest candidate (lowest true-class margin)
for every sample that no attack broke. :func:`verify_examples` re-checks each row with its
own arithmetic and a fresh forward pass, so a reader need not trust the run that made the
file: inside the threat's ball around the clean input taken from the data set, inside the
bounds, clean input classified correctly, adversarial input misclassified.

File format (``np.load(path)`` with ``allow_pickle=False``; ``FORMAT`` in ``meta``):

=================  ======================  ============================================
array              dtype, shape            meaning
=================  ======================  ============================================
``x_adv``          float32 N×C×H×W         the exported input (projected, in the bounds)
``x_clean``        float32 N×C×H×W         the clean input it was found around
``y``              int64 N                 true label
``y_adv_pred``     int64 N                 the scan's fresh prediction on ``x_adv``
``broken``         bool N                  True: a verified break; False: the strongest
                                           candidate of a sample no attack broke
``x_clean_index``  int64 N                 the sample's position in the evaluated subset
``source_index``   int64 N                 the sample's position in the data source split
``attack``         str N                   attack name
``attack_index``   int64 N                 the attack's position in the config's ``attacks``
``access``         str N                   threat access (white-box, score, decision)
``norm``           str N                   threat norm (linf, l2)
``eps``            float64 N               threat budget in pixel units of the bounds
``eps_label``      str N                   the budget as written (``8/255``)
``threat``         str N                   threat key, as in report.json
``distance``       float64 N               ``norm`` of ``x_adv - x_clean``
``meta``           str (0-d, JSON)         format, versions, model sha256, data source,
                                           split, samples, seed, bounds, per-cell counts
=================  ======================  ============================================

``x_adv`` with ``y`` is what adversarial fine-tuning needs (``robaudit harden``, later).
"""

from __future__ import annotations

import json
import os
import shutil
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robaudit import norms
from robaudit.attacks.projections import flat_norm
from robaudit.classifier import Classifier
from robaudit.engine import VerifiedBatch
from robaudit.errors import UserInputError
from robaudit.loading.data import DataSet
from robaudit.report.writers import create_temp_dir, create_temp_file
from robaudit.results import RunResult
from robaudit.threat import Threat
from robaudit.verification import TOLERANCE

__all__ = [
    "ADVERSARIAL_FILE",
    "ADVERSARIAL_FOLDER",
    "FORMAT",
    "AdversarialCollector",
    "AdversarialExamples",
    "CellCheck",
    "VerifyResult",
    "Violation",
    "verify_examples",
]

FORMAT = "robaudit-adversarial/1"
ADVERSARIAL_FILE = "adversarial.npz"
ADVERSARIAL_FOLDER = "adversarial"
_ROW_ARRAYS = (
    "x_adv", "x_clean", "y", "y_adv_pred", "broken", "x_clean_index", "source_index", "attack",
    "attack_index", "access", "norm", "eps", "eps_label", "threat", "distance",
)
_PNG_MIN_SIDE = 64  # tiles are upscaled (nearest) to at least this many pixels


def perturbation_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-row norm of a batch of perturbations, in float64 (verification's own arithmetic)."""
    return norms.get(norm).measure64(delta)


# ----------------------------------------------------------------------------- the file


@dataclass(frozen=True)
class AdversarialExamples:
    """Exported adversarial examples: parallel per-row arrays (see the module docstring)."""

    x_adv: np.ndarray
    x_clean: np.ndarray
    y: np.ndarray
    y_adv_pred: np.ndarray
    broken: np.ndarray
    x_clean_index: np.ndarray
    source_index: np.ndarray
    attack: np.ndarray
    attack_index: np.ndarray
    access: np.ndarray
    norm: np.ndarray
    eps: np.ndarray
    eps_label: np.ndarray
    threat: np.ndarray
    distance: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.y.shape[0])

    def counts(self) -> dict[tuple[str, str], int]:
        """Verified breaks per (attack, threat key): what the scan's attack rows call ``broken``."""
        out: dict[tuple[str, str], int] = {}
        for a, t, b in zip(self.attack.tolist(), self.threat.tolist(), self.broken.tolist(), strict=True):
            if b:
                out[(str(a), str(t))] = out.get((str(a), str(t)), 0) + 1
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """Every row array by name, plus ``meta`` as a 0-d JSON string (what the npz holds)."""
        out = {name: getattr(self, name) for name in _ROW_ARRAYS}
        out["meta"] = np.asarray(json.dumps(self.meta, sort_keys=True))
        return out

    def save(self, path: str | Path) -> Path:
        """Write the ``.npz`` atomically (temp file, then rename); returns the path."""
        p = Path(path)
        fd, tmp = create_temp_file(p)  # mode 0666 less the umask, not mkstemp's 0600
        try:
            with os.fdopen(fd, "wb") as f:
                np.savez_compressed(f, **self.arrays())  # type: ignore[arg-type]
            os.replace(tmp, p)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return p

    def save_images(self, folder: str | Path, bounds: tuple[float, float]) -> Path | None:
        """One PNG per row (clean | adversarial | amplified perturbation) plus ``index.csv``.

        Written into a temp folder that then replaces ``folder``, so a reader never sees half
        a set. Returns None (and writes nothing) when the inputs are not 1- or 3-channel images.
        """
        if self.x_adv.ndim != 4 or self.x_adv.shape[1] not in (1, 3):
            return None
        target = Path(folder)
        tmp = create_temp_dir(target)  # mode 0777 less the umask, not mkdtemp's 0700
        try:
            lines = ["row,file,attack,threat,broken,source_index,y,y_adv_pred,distance"]
            for k in range(len(self)):
                name = (
                    f"{k:05d}_{_safe(str(self.attack[k]))}_{_safe(str(self.norm[k]))}-"
                    f"{_safe(str(self.eps_label[k]))}_{'broken' if self.broken[k] else 'unbroken'}"
                    f"_s{int(self.source_index[k])}_y{int(self.y[k])}_p{int(self.y_adv_pred[k])}.png"
                )
                _side_by_side(self.x_clean[k], self.x_adv[k], bounds).save(tmp / name)
                lines.append(
                    f"{k},{name},{self.attack[k]},{self.threat[k]},{bool(self.broken[k])},"
                    f"{int(self.source_index[k])},{int(self.y[k])},{int(self.y_adv_pred[k])},"
                    f"{float(self.distance[k]):.9g}"
                )
            (tmp / "index.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                raise UserInputError(f"{target}: exists and is not a folder; not replacing it")
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    @classmethod
    def load(cls, path: str | Path) -> AdversarialExamples:
        """Read an exported file; anything malformed is a UserInputError naming the problem."""
        p = Path(path)
        if not p.is_file():
            raise UserInputError(f"adversarial file '{p}' not found")
        try:
            with open(p, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                missing = [k for k in (*_ROW_ARRAYS, "meta") if k not in f.files]
                if missing:
                    raise UserInputError(
                        f"adversarial file '{p}' lacks arrays {missing}; "
                        "is it a file written by robaudit scan --save-adversarial?"
                    )
                arrays = {k: f[k] for k in _ROW_ARRAYS}
                meta = json.loads(str(f["meta"][()]))
        except UserInputError:
            raise
        except (OSError, ValueError, zipfile.BadZipFile, EOFError, KeyError) as exc:
            raise UserInputError(
                f"adversarial file '{p}' is not a readable .npz: {' '.join(str(exc).split())[:200]}"
            ) from exc
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            raise UserInputError(
                f"adversarial file '{p}' has format {meta.get('format') if isinstance(meta, dict) else None!r}; "
                f"this robaudit reads {FORMAT!r}"
            )
        n = len(arrays["y"])
        bad = [k for k, v in arrays.items() if v.ndim < 1 or v.shape[0] != n]
        if bad:
            raise UserInputError(
                f"adversarial file '{p}': arrays {bad} do not have one entry per row ({n} rows)"
            )
        if arrays["x_adv"].shape != arrays["x_clean"].shape or arrays["x_adv"].ndim != 4:
            raise UserInputError(
                f"adversarial file '{p}': x_adv {arrays['x_adv'].shape} and x_clean "
                f"{arrays['x_clean'].shape} must both be NxCxHxW"
            )
        return cls(**arrays, meta=meta)


def _safe(text: str) -> str:
    """A file-name-safe rendering of an attack name or an eps label (``8/255`` -> ``8-255``)."""
    return "".join(ch if ch.isalnum() or ch in "._" else "-" for ch in text)


def _side_by_side(x: np.ndarray, x_adv: np.ndarray, bounds: tuple[float, float]) -> Any:
    """clean | adversarial | perturbation amplified to the full range (mid-grey = none)."""
    from PIL import Image

    lo, hi = bounds
    d = x_adv.astype(np.float64) - x.astype(np.float64)
    m = float(np.abs(d).max()) if d.size else 0.0
    pert = 0.5 + 0.5 * d / m if m > 0 else np.full_like(d, 0.5)
    tiles = [(x - lo) / (hi - lo), (x_adv - lo) / (hi - lo), pert]
    c, h, w = x.shape
    scale = max(1, -(-_PNG_MIN_SIDE // max(h, w)))
    gap = max(1, scale // 2)
    canvas = np.full((h * scale, 3 * w * scale + 2 * gap, c), 255, dtype=np.uint8)
    for i, t in enumerate(tiles):
        a8 = (np.clip(t, 0.0, 1.0) * 255 + 0.5).astype(np.uint8).transpose(1, 2, 0)
        big = a8.repeat(scale, axis=0).repeat(scale, axis=1)
        x0 = i * (w * scale + gap)
        canvas[:, x0 : x0 + w * scale, :] = big
    if c == 1:
        return Image.fromarray(canvas[:, :, 0], mode="L")
    return Image.fromarray(canvas, mode="RGB")


# ----------------------------------------------------------------------------- collecting

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
            distance[m.numpy()] = perturbation_norm(x_adv[m] - x_clean[m], norm).numpy()
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
        "robaudit_version": result.meta.get("robaudit_version"),
        "model": {k: result.model.get(k) for k in ("path", "sha256", "format", "arch")},
        "input_shape": result.model.get("input_shape"),
        "num_classes": result.model.get("num_classes"),
        "bounds": result.model.get("bounds"),
        "data": {
            "source": result.data.get("source"),
            "split": result.data.get("split"),
            "samples": result.data.get("requested_samples"),
            "evaluated": result.n,
            "seed": result.meta.get("data_seed"),
        },
        "seed": result.meta.get("seed"),
        "config_sha256": result.meta.get("config_sha256"),
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


# ----------------------------------------------------------------------------- verifying


@dataclass(frozen=True)
class Violation:
    """One row that does not hold up, and which check it failed."""

    row: int
    attack: str
    threat: str
    check: str  # ball | bounds | nonfinite | not_misclassified | misclassified_unbroken |
    #             clean_misclassified | label | x_clean | source_index
    detail: str


@dataclass(frozen=True)
class CellCheck:
    """Rows of one (attack, threat): claimed breaks, breaks that held, unbroken candidates."""

    attack: str
    threat: str
    claimed: int
    verified: int
    unbroken: int


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of re-checking a file; ``ok`` is True when no row failed any check."""

    path: str
    rows: int
    claimed: int
    verified: int
    unbroken: int
    violations: tuple[Violation, ...]
    cells: tuple[CellCheck, ...]
    notes: tuple[str, ...] = ()
    data_checked: bool = True

    @property
    def ok(self) -> bool:
        return not self.violations

    def by_check(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for v in self.violations:
            out[v.check] = out.get(v.check, 0) + 1
        return out

    def summary_lines(self, max_violations: int = 20) -> list[str]:
        """The human summary ``robaudit verify`` prints: counts, per-cell table, violations."""
        where = "checked against the data" if self.data_checked else "taken from the file"
        lines = [
            f"{self.path or 'examples'}: {self.rows} row(s): {self.claimed} claimed break(s), "
            f"{self.verified} verified, {self.unbroken} unbroken candidate(s) "
            f"(clean inputs {where})"
        ]
        if self.cells:
            wa = max(6, *(len(c.attack) for c in self.cells))
            wt = max(6, *(len(c.threat) for c in self.cells))
            lines.append(f"  {'attack':<{wa}}  {'threat':<{wt}}  claimed  verified  unbroken")
            lines.extend(
                f"  {c.attack:<{wa}}  {c.threat:<{wt}}  {c.claimed:>7}  {c.verified:>8}  {c.unbroken:>8}"
                for c in self.cells
            )
        lines.extend(f"note: {n}" for n in self.notes)
        if self.violations:
            kinds = ", ".join(f"{k} {v}" for k, v in sorted(self.by_check().items()))
            rows = len({v.row for v in self.violations})
            lines.append(f"violations: {len(self.violations)} in {rows} row(s) ({kinds})")
            lines.extend(
                f"  row {v.row} {v.attack} {v.threat} [{v.check}]: {v.detail}"
                for v in self.violations[:max_violations]
            )
            if len(self.violations) > max_violations:
                lines.append(f"  ... and {len(self.violations) - max_violations} more")
            lines.append(f"FAILED: {len(self.violations)} violation(s) in {rows} row(s)")
        else:
            lines.append("VERIFIED: every exported example holds")
        return lines

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "ok": self.ok,
            "rows": self.rows,
            "claimed": self.claimed,
            "verified": self.verified,
            "unbroken": self.unbroken,
            "data_checked": self.data_checked,
            "violations_by_check": self.by_check(),
            "violations": [v.__dict__ for v in self.violations],
            "cells": [c.__dict__ for c in self.cells],
            "notes": list(self.notes),
        }


def verify_examples(
    ex: AdversarialExamples,
    clf: Classifier,
    data: DataSet | None,
    *,
    path: str = "",
    model_sha256: str | None = None,
    tolerance: float = TOLERANCE,
) -> VerifyResult:
    """Re-check every row with a fresh forward pass of ``clf`` and float64 arithmetic.

    With ``data`` (the source reloaded), the clean input and label come from the data set
    at ``source_index`` and the file's ``x_clean``/``y`` must match them; without it they
    come from the file (noted in the result). A randomized classifier (``clf.votes > 1`` or
    ``clf.sequential``) is judged by the sequential test of :mod:`robaudit.verdicts`, two
    verdicts per row (clean and adversarial); a verdict it leaves open does not hold.
    """
    n = len(ex)
    lo, hi = clf.bounds
    notes: list[str] = []
    want_shape = tuple(data.samples.shape[1:]) if data is not None else None
    if want_shape is not None and tuple(ex.x_adv.shape[1:]) != want_shape:
        raise UserInputError(
            f"adversarial file '{path}': inputs have shape {list(ex.x_adv.shape[1:])} but the "
            f"data (and model.input_shape) have {list(want_shape)}"
        )
    stored_sha = (ex.meta.get("model") or {}).get("sha256")
    if model_sha256 and stored_sha and stored_sha != model_sha256:
        notes.append(
            f"the model's sha256 {model_sha256[:12]}… differs from the scanned one "
            f"{str(stored_sha)[:12]}… (checking transfer to another model)"
        )
    x_adv = torch.from_numpy(np.ascontiguousarray(ex.x_adv, dtype=np.float32))
    x_file = torch.from_numpy(np.ascontiguousarray(ex.x_clean, dtype=np.float32))
    y_file = torch.from_numpy(np.ascontiguousarray(ex.y, dtype=np.int64))
    bad: list[list[tuple[str, str]]] = [[] for _ in range(n)]

    # 1. the clean reference: from the data set when given, else from the file
    if data is not None:
        pos_of = {src: pos for pos, src in enumerate(data.indices)}
        ref_x = x_file.clone()
        ref_y = y_file.clone()
        for k in range(n):
            src = int(ex.source_index[k])
            pos = pos_of.get(src)
            if pos is None:
                bad[k].append(("source_index", f"source_index {src} is not among the reloaded samples"))
                continue
            if int(ex.x_clean_index[k]) != pos:
                bad[k].append(
                    ("source_index", f"x_clean_index {int(ex.x_clean_index[k])} but source_index {src} is sample {pos}")
                )
            ref_x[k] = data.samples[pos]
            ref_y[k] = data.y[pos]
        dx = (x_file.double() - ref_x.double()).flatten(1).abs().amax(dim=1) if n else torch.zeros(0)
        for k in (dx > tolerance).nonzero().flatten().tolist():
            bad[k].append(("x_clean", f"x_clean differs from the data by up to {float(dx[k]):.3g}"))
        for k in (y_file != ref_y).nonzero().flatten().tolist():
            bad[k].append(("label", f"label {int(y_file[k])} but the data says {int(ref_y[k])}"))
    else:
        ref_x, ref_y = x_file, y_file
        notes.append("clean inputs and labels taken from the file itself (no data to check them against)")

    # 2. budget and bounds, in float64, without the engine's projection code
    finite = torch.isfinite(x_adv.flatten(1)).all(dim=1) if n else torch.zeros(0, dtype=torch.bool)
    for k in (~finite).nonzero().flatten().tolist():
        bad[k].append(("nonfinite", "x_adv holds NaN or inf"))
    for norm in sorted(set(ex.norm.tolist())):
        rows = torch.tensor([str(v) == norm for v in ex.norm.tolist()], dtype=torch.bool)
        try:
            dist = perturbation_norm(x_adv[rows] - ref_x[rows], norm)
        except ValueError:
            for k in rows.nonzero().flatten().tolist():
                bad[k].append(("ball", f"norm {norm!r} is not one verify can measure"))
            continue
        eps = torch.from_numpy(np.asarray(ex.eps, dtype=np.float64))[rows]
        for j, k in enumerate(rows.nonzero().flatten().tolist()):
            if not float(dist[j]) <= float(eps[j]) + tolerance:
                bad[k].append(("ball", f"{norm} distance {float(dist[j]):.6g} > eps {float(eps[j]):.6g}"))
    flat = x_adv.double().flatten(1)
    if n and flat.shape[1]:
        below = flat.amin(dim=1) < lo - tolerance
        above = flat.amax(dim=1) > hi + tolerance
        for k in (below | above).nonzero().flatten().tolist():
            bad[k].append(
                ("bounds", f"values span [{float(flat[k].min()):.6g}, {float(flat[k].max()):.6g}] outside [{lo:g}, {hi:g}]")
            )

    # 3. fresh forward passes: clean must be right, adversarial wrong (or right if unbroken)
    test = clf.verdict_test()
    if n and test is not None:  # randomized: sequential verdicts, α split over both per row
        alpha = test.alpha_for(2)
        safe_adv = torch.where(finite.view(-1, *([1] * (x_adv.dim() - 1))), x_adv, ref_x)
        vc = clf.verdict(ref_x, ref_y, alpha).cpu()
        va = clf.verdict(safe_adv, ref_y, alpha).cpu()
        clean_pred, adv_pred = vc.pred, va.pred
        clean_ok, clean_wrong, adv_wrong, adv_right = vc.right, vc.wrong, va.wrong, va.right
        clean_draws, adv_draws = vc.draws, va.draws
    elif n:
        clean_pred = clf.verification_logits(ref_x).argmax(dim=1).cpu()
        safe_adv = torch.where(finite.view(-1, 1, 1, 1), x_adv, ref_x)
        adv_pred = clf.verification_logits(safe_adv).argmax(dim=1).cpu()
        clean_ok, adv_wrong = clean_pred == ref_y, adv_pred != ref_y
        clean_wrong, adv_right = ~clean_ok, ~adv_wrong
        clean_draws = adv_draws = torch.ones(n, dtype=torch.long)
    else:
        clean_pred = adv_pred = torch.zeros(0, dtype=torch.long)
        clean_ok = clean_wrong = adv_wrong = adv_right = torch.zeros(0, dtype=torch.bool)
        clean_draws = adv_draws = torch.zeros(0, dtype=torch.long)
    for k in range(n):
        y = int(ref_y[k])
        if not bool(clean_ok[k]):
            bad[k].append(
                ("clean_misclassified", f"clean input predicted {int(clean_pred[k])}, label {y}")
                if bool(clean_wrong[k])
                else ("clean_misclassified", f"clean verdict undecided after {int(clean_draws[k])} draws")
            )
        if bool(ex.broken[k]) and not bool(adv_wrong[k]):
            bad[k].append(
                ("not_misclassified", f"x_adv is still classified as its label {y}")
                if bool(adv_right[k])
                else ("not_misclassified", f"x_adv verdict undecided after {int(adv_draws[k])} draws")
            )
        if not bool(ex.broken[k]) and bool(adv_wrong[k]):
            bad[k].append(
                ("misclassified_unbroken", f"marked unbroken but predicted {int(adv_pred[k])}, label {y}")
            )
    recorded_diff = int((adv_pred != torch.from_numpy(ex.y_adv_pred.astype(np.int64))).sum()) if n else 0
    if recorded_diff:
        notes.append(f"{recorded_diff} row(s) predicted a different class than the scan recorded")

    violations = tuple(
        Violation(k, str(ex.attack[k]), str(ex.threat[k]), check, detail)
        for k in range(n)
        for check, detail in bad[k]
    )
    cells: dict[tuple[str, str], list[int]] = {}
    for k in range(n):
        c = cells.setdefault((str(ex.attack[k]), str(ex.threat[k])), [0, 0, 0])
        if bool(ex.broken[k]):
            c[0] += 1
            c[1] += 0 if bad[k] else 1
        else:
            c[2] += 1
    cell_rows = tuple(CellCheck(a, t, c[0], c[1], c[2]) for (a, t), c in cells.items())
    return VerifyResult(
        path=path,
        rows=n,
        claimed=sum(c.claimed for c in cell_rows),
        verified=sum(c.verified for c in cell_rows),
        unbroken=sum(c.unbroken for c in cell_rows),
        violations=violations,
        cells=cell_rows,
        notes=tuple(notes),
        data_checked=data is not None,
    )
