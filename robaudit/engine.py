"""Runs a plan of attacks on a classifier and returns verified, per-sample outcomes.

The engine owns every invariant: it seeds each cell, moves data to the device, counts
queries, records any budget or bounds violation an attack returned (then projects), and
counts a sample as broken only when a fresh forward pass outside the attack misclassifies
the returned input. Attacks never decide success.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch

from robaudit.attacks.base import ACCESS_FOR_REQUIRES, Attack
from robaudit.attacks.projections import clip_to_ball, flat_norm
from robaudit.classifier import ACCESS_RANK, Classifier
from robaudit.errors import ModelLoadError, RuntimeFailure
from robaudit.progress import NullProgress, Progress
from robaudit.threat import Threat

TOLERANCE = 1e-6


@dataclass(frozen=True)
class PlannedAttack:
    """An attack instance at one threat, with its position in the config."""

    index: int
    attack: Attack
    threat: Threat
    cascade: bool = False  # battery members only attack samples still unbroken at the threat
    # the classifier the attack searches on, when not the one verdicts come from (a defense's
    # non-adaptive evaluation searches on the bare model); compared by identity
    search: Classifier | None = field(default=None, compare=False)


@dataclass
class CellOutcome:
    """What one attack did at one threat, over all samples (masks are over the whole set)."""

    index: int
    attack: str
    threat: Threat
    attacked: torch.Tensor  # bool[N]: samples this attack ran on
    broken: torch.Tensor  # bool[N]: verified breaks
    norms: torch.Tensor  # float[N]: perturbation norm of each attacked sample's candidate
    adv_pred: torch.Tensor  # int64[N]: fresh prediction on the candidate (-1 if not attacked)
    queries: int
    grad_evals: int
    seconds: float
    budget_violations: int
    bounds_violations: int
    nonfinite: int
    loss_trace: list[float] | None
    adversarial: torch.Tensor | None = None  # minimal-norm attacks: fooled at any norm
    minimal_norm: bool = False
    shared_cost: bool = False  # cost booked on the smallest-eps row of a minimal-norm attack
    silent_failures: int = 0  # samples the attack saw fooled that verification did not
    # black-box attacks: queries spent per sample (-1: not attacked), exact against the
    # classifier's counter; query_mismatch > 0 means the attack misreported (it is a bug)
    sample_queries: torch.Tensor | None = None
    query_budget: int | None = None
    query_mismatch: int = 0
    access_used: str = "white-box"  # the Classifier view the attack ran through
    # decision-based minimal-norm attacks: queries -> per-sample distance the attack reached
    distance_trace: dict[int, torch.Tensor] | None = None


@dataclass
class Example:
    """One sample's clean and adversarial input, kept for the report's gallery."""

    sample: int
    threat_key: str
    attack: str
    x: torch.Tensor
    x_adv: torch.Tensor
    label: int
    clean_pred: int
    clean_conf: float
    adv_pred: int
    adv_conf: float


@dataclass
class EngineResult:
    """Clean predictions plus one outcome per cell, and a few examples per threat."""

    clean_pred: torch.Tensor
    clean_conf: torch.Tensor
    correct: torch.Tensor
    cells: list[CellOutcome]
    examples: list[Example] = field(default_factory=list)
    clean_seconds: float = 0.0
    # minimal-norm attacks: per-sample smallest verified breaking norm (NaN: none found)
    min_norms: dict[tuple[int, str, str, str], torch.Tensor] = field(default_factory=dict)


@dataclass(frozen=True)
class VerifiedBatch:
    """One batch of one cell after the engine's checks, for sinks such as example export.

    ``x_adv`` is projected into the ball and the bounds (minimal-norm attacks: only clipped to
    the bounds, their norm may exceed eps); ``pred`` is the fresh prediction; ``broken`` says
    whether it counts at ``threat``. All tensors are on the CPU; ``idx`` indexes the data set.
    """

    attack: str
    attack_index: int
    threat: Threat
    idx: torch.Tensor
    x_adv: torch.Tensor
    pred: torch.Tensor
    broken: torch.Tensor


BatchSink = Callable[[VerifiedBatch], None]


def attack_access(attack: Attack, threat: Threat) -> str:
    """The access level an attack runs at: what it needs, never more than the threat allows.

    A black-box attack runs through a restricted view even on a white-box model, so every
    query it makes is counted and a gradient call fails loudly.
    """
    need = ACCESS_FOR_REQUIRES.get(attack.requires, "white-box")
    return min(need, threat.access, key=ACCESS_RANK.__getitem__)


def attack_view(clf: Classifier, access: str) -> Classifier:
    """``clf`` itself for white-box attacks, else a separately counted view at ``access``."""
    return clf if access == "white-box" else clf.restricted(access)


def cell_seed(seed: int, *parts: object) -> int:
    """A seed derived from the run seed and the cell's identity (not from batch order)."""
    h = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def order_plan(plan: list[PlannedAttack]) -> list[PlannedAttack]:
    """Threats in (access, norm, eps) order; within a threat, cheap attacks first."""
    return sorted(
        plan, key=lambda p: (p.threat.access, p.threat.norm, p.threat.eps, p.attack.cost(), p.index)
    )


def clean_pass(clf: Classifier, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Clean predictions and confidences; refuses NaN/inf outputs or a wrong output shape."""
    logits = clf.verification_logits(x)
    if logits.dim() != 2 or logits.shape[1] != clf.num_classes:
        raise RuntimeFailure(
            f"model output has shape {list(logits.shape)}, expected N x {clf.num_classes} "
            "(model.num_classes)"
        )
    if not torch.isfinite(logits).all():
        bad = int((~torch.isfinite(logits)).any(dim=1).sum())
        raise ModelLoadError(
            f"model returned NaN or inf logits on {bad} of {logits.shape[0]} clean sample(s); "
            "check the checkpoint and model.mean/std"
        )
    probs = logits.softmax(dim=1)
    conf, pred = probs.max(dim=1)
    pred, conf = pred.cpu(), conf.cpu()
    return pred, conf, pred == y.cpu()


def run_plan(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    plan: list[PlannedAttack],
    *,
    seed: int,
    batch_size: int,
    cascade: bool = False,
    examples: int = 8,
    progress: Progress | None = None,
    on_batch: BatchSink | None = None,
    search: Classifier | None = None,
) -> EngineResult:
    """Attack every correctly classified sample with every planned attack, verify, record.

    ``on_batch`` receives every verified batch (for exporting adversarial examples) so the
    engine itself never holds more than one batch of candidates. ``search``: the classifier
    the attacks see when it is not ``clf`` (a defense's non-adaptive evaluation: attacks use
    the bare model, verdicts come from the defended one).
    """
    progress = progress or NullProgress()
    n = int(x.shape[0])
    t0 = time.perf_counter()
    clean_pred, clean_conf, correct = clean_pass(clf, x, y)
    result = EngineResult(
        clean_pred, clean_conf, correct, [], clean_seconds=time.perf_counter() - t0
    )
    # broken[family] holds verified breaks at the largest eps done so far (balls are nested)
    broken_family: dict[tuple[str, str], torch.Tensor] = {}
    broken_at: dict[str, torch.Tensor] = {}
    kept: dict[str, int] = {}
    minimal: dict[tuple[int, str, str], tuple[CellOutcome, list[Example]]] = {}
    for item in order_plan(plan):
        threat = item.threat
        fam = (threat.access, threat.norm)
        done = broken_at.setdefault(
            threat.key, broken_family.get(fam, torch.zeros(n, dtype=torch.bool)).clone()
        )
        room = max(0, examples - kept.get(threat.key, 0))
        if item.attack.minimal_norm:
            key = (item.index, threat.access, threat.norm)
            first = key not in minimal
            if first:
                # a cascade skips samples already broken at this (the smallest) eps of the
                # family: the balls are nested, so they stay broken at every larger eps
                targets = correct & ~done if (cascade or item.cascade) else correct.clone()
                minimal[key] = _run_minimal(
                    clf, x, y, item, plan, targets, seed, batch_size, progress, examples,
                    result, on_batch, search,
                )
                full = minimal[key][0]
                assert full.adversarial is not None
                result.min_norms[(item.index, item.attack.name, *key[1:])] = torch.where(
                    full.adversarial, full.norms, torch.full_like(full.norms, float("nan"))
                )
            cell, shown = _derive_minimal(minimal[key], threat, first, done, room)
        else:
            targets = correct.clone()
            if cascade or item.cascade:
                targets &= ~done
            cell, shown = _run_cell(
                clf, x, y, item, targets, seed, batch_size, progress, done, room, result, on_batch,
                search,
            )
        kept[threat.key] = kept.get(threat.key, 0) + len(shown)
        result.examples.extend(shown)
        result.cells.append(cell)
        done |= cell.broken
        broken_family[fam] = done.clone()
    return result


def _run_cell(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    item: PlannedAttack,
    targets: torch.Tensor,
    seed: int,
    batch_size: int,
    progress: Progress,
    done: torch.Tensor,
    room: int,
    res: EngineResult,
    on_batch: BatchSink | None = None,
    search: Classifier | None = None,
) -> tuple[CellOutcome, list[Example]]:
    threat, attack = item.threat, item.attack
    minimal = attack.minimal_norm
    n = int(x.shape[0])
    idx_all = targets.nonzero().flatten()
    broken = torch.zeros(n, dtype=torch.bool)
    adversarial = torch.zeros(n, dtype=torch.bool)
    norms = torch.full((n,), float("nan"))
    adv_pred = torch.full((n,), -1, dtype=torch.long)
    viol_budget = viol_bounds = nonfinite = silent = 0
    trace: list[float] | None = None
    shown: list[Example] = []
    label = f"{attack.name} {threat.norm} eps={threat.label}"
    progress.start(label, int(idx_all.numel()))
    access = attack_access(attack, threat)
    base = item.search or search or clf
    view = attack_view(base, access)
    separate = view is not clf  # its counters hold only the attack's own work
    black_box = access != "white-box"
    sample_queries = torch.full((n,), -1, dtype=torch.long) if black_box else None
    mismatch = 0
    dist_trace: dict[int, torch.Tensor] = {}
    q0, _ = clf.counters.snapshot()
    vq0, vg0 = view.counters.snapshot()
    verify_queries = 0
    t0 = time.perf_counter()
    lo, hi = clf.bounds
    for start in range(0, int(idx_all.numel()), batch_size):
        idx = idx_all[start : start + batch_size]
        xb = x[idx].to(clf.device)
        yb = y[idx].to(clf.device)
        gen = torch.Generator().manual_seed(
            cell_seed(seed, item.index, attack.name, threat.key, int(idx[0]))
        )
        vq_batch = view.counters.queries
        try:
            out = attack.run(view, xb, yb, threat, gen)
        except torch.cuda.OutOfMemoryError as exc:  # pragma: no cover - GPU only
            raise RuntimeFailure(f"{label}: out of GPU memory at batch size {batch_size}") from exc
        except RuntimeError as exc:
            raise RuntimeFailure(f"{label}: the model raised during the attack: {exc}") from exc
        if sample_queries is not None:
            spent = view.counters.queries - vq_batch
            if out.queries is None or int(out.queries.sum()) != spent:
                mismatch += int(idx.numel())
                # unreported or misreported: spread the counted total evenly (an estimate)
                sample_queries[idx] = spent // max(1, int(idx.numel()))
            else:
                sample_queries[idx] = out.queries.detach().cpu().long()
        for q, dist in out.distance_trace or []:
            dist_trace.setdefault(q, torch.full((n,), float("nan")))[idx] = dist.detach().cpu()
        xa = out.x_adv.detach()
        if xa.shape != xb.shape:
            raise RuntimeFailure(
                f"{label}: attack returned shape {list(xa.shape)}, expected {list(xb.shape)}"
            )
        finite = torch.isfinite(xa.flatten(1)).all(dim=1)
        nonfinite += int((~finite).sum())
        xa = torch.where(finite.view(-1, *([1] * (xa.dim() - 1))), xa, xb)
        flat = xa.flatten(1)
        viol_bounds += int(((flat < lo - TOLERANCE) | (flat > hi + TOLERANCE)).any(dim=1).sum())
        if minimal:  # its answer is a norm, not a point in one ball: only the bounds apply
            xa = xa.clamp(lo, hi)
        else:
            d = flat_norm(xa - xb, threat.norm)
            viol_budget += int((d > threat.eps + TOLERANCE).sum())
            xa = clip_to_ball(xa, xb, threat.norm, threat.eps, clf.bounds)
        size = flat_norm(xa - xb, threat.norm).cpu()
        q_before = clf.counters.queries
        vlogits = clf.verification_logits(xa)
        verify_queries += clf.counters.queries - q_before
        broken_out = ~torch.isfinite(vlogits).all(dim=1)
        if bool(broken_out.any()):  # never count a NaN output as a break (or as robust)
            first = int(idx[broken_out.cpu()][0])
            raise RuntimeFailure(
                f"{label}: the model returned NaN or inf logits on {int(broken_out.sum())} "
                f"candidate(s) of batch {start // batch_size + 1} (first: sample {first})"
            )
        probs = vlogits.softmax(dim=1).cpu()
        conf, pred = probs.max(dim=1)
        if out.loss_trace is not None and trace is None:
            trace = out.loss_trace
        adv = pred != y[idx]
        b = adv & (size <= threat.eps + TOLERANCE) if minimal else adv
        adversarial[idx] = adv
        broken[idx] = b
        if out.claimed is not None:
            silent += int((out.claimed.cpu() & ~adv).sum())
        new = (b & ~done[idx]).nonzero().flatten()[: room - len(shown)]
        shown.extend(
            Example(
                sample=int(idx[j]),
                threat_key=threat.key,
                attack=attack.name,
                x=xb[j].cpu().clone(),
                x_adv=xa[j].cpu().clone(),
                label=int(y[idx[j]]),
                clean_pred=int(res.clean_pred[idx[j]]),
                clean_conf=float(res.clean_conf[idx[j]]),
                adv_pred=int(pred[j]),
                adv_conf=float(conf[j]),
            )
            for j in new.tolist()
        )
        adv_pred[idx] = pred
        norms[idx] = size
        if on_batch is not None:
            on_batch(
                VerifiedBatch(attack.name, item.index, threat, idx.cpu(), xa.cpu(), pred, b.cpu())
            )
        progress.advance(int(idx.numel()))
    progress.finish()
    q1, _ = clf.counters.snapshot()
    queries = view.counters.queries - vq0 if separate else q1 - q0 - verify_queries
    budget = getattr(attack.params, "queries", None)
    cell = CellOutcome(
        index=item.index,
        attack=attack.name,
        threat=threat,
        attacked=targets.clone(),
        broken=broken,
        norms=norms,
        adv_pred=adv_pred,
        queries=queries,
        grad_evals=view.counters.grad_evals - vg0,
        seconds=time.perf_counter() - t0,
        budget_violations=viol_budget,
        bounds_violations=viol_bounds,
        nonfinite=nonfinite,
        loss_trace=trace,
        adversarial=adversarial if minimal else None,
        minimal_norm=minimal,
        silent_failures=silent,
        sample_queries=sample_queries,
        query_budget=int(budget) if isinstance(budget, int) else None,
        query_mismatch=mismatch,
        access_used=access,
        distance_trace=dist_trace or None,
    )
    return cell, shown


def _run_minimal(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    item: PlannedAttack,
    plan: list[PlannedAttack],
    targets: torch.Tensor,
    seed: int,
    batch_size: int,
    progress: Progress,
    examples: int,
    res: EngineResult,
    on_batch: BatchSink | None,
    search: Classifier | None = None,
) -> tuple[CellOutcome, list[Example]]:
    """Run a minimal-norm attack once per norm, at the largest eps any of its threats asks for."""
    t = item.threat
    eps = max(
        p.threat.eps
        for p in plan
        if p.index == item.index and p.threat.norm == t.norm and p.threat.access == t.access
    )
    run_threat = Threat(t.norm, eps, t.access)
    none_done = torch.zeros_like(targets)
    return _run_cell(
        clf, x, y, PlannedAttack(item.index, item.attack, run_threat, search=item.search),
        targets, seed,
        batch_size, progress, none_done, examples, res, on_batch, search,
    )


def _derive_minimal(
    full: tuple[CellOutcome, list[Example]],
    threat: Threat,
    first: bool,
    done: torch.Tensor,
    room: int,
) -> tuple[CellOutcome, list[Example]]:
    """The cell of a minimal-norm attack at one eps: broken where the verified norm fits."""
    cell, pool = full
    assert cell.adversarial is not None
    fits = cell.adversarial & (cell.norms <= threat.eps + TOLERANCE)
    shown = [
        replace(e, threat_key=threat.key)
        for e in pool
        if bool(fits[e.sample]) and not bool(done[e.sample])
    ][:room]
    derived = replace(
        cell,
        threat=threat,
        broken=fits,
        queries=cell.queries if first else 0,
        grad_evals=cell.grad_evals if first else 0,
        seconds=cell.seconds if first else 0.0,
        shared_cost=not first,
    )
    return derived, shown
