"""One cell: one attack at one threat over its target samples, batch by batch.

:func:`run_cell` seeds each batch, runs the attack through the view its access allows,
accounts every query, hands the candidates to :func:`robaudit.verify.verify_batch` (the
engine's invariant), keeps a few examples, halves the batch on out-of-memory, stops within
one model call when asked, and merges the ranks' shares. The pass-wide inputs travel in a
:class:`CellContext` instead of a long parameter list.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import torch

from robaudit.attacks.feasible import constrained_to
from robaudit.classifier import Classifier
from robaudit.control import INTERRUPTED, RunControl, StopRequested, interruptible
from robaudit.entries import cell_label
from robaudit.errors import RuntimeFailure
from robaudit.loading.samples import Images
from robaudit.naive import NaiveShare, measured, naive_batch
from robaudit.outcomes import (
    BatchSink,
    CellOutcome,
    EngineControl,
    EngineResult,
    Example,
    PlannedAttack,
    Unit,
    VerifiedBatch,
    attack_access,
    attack_view,
    cell_seed,
)
from robaudit.progress import Progress, tally
from robaudit.stored_cells import combine
from robaudit.threat import Threat
from robaudit.verification import TOLERANCE, verify_batch


@dataclass
class _Part:
    """One rank's share of a cell, before the ranks' shares are merged."""

    owned: torch.Tensor
    broken: torch.Tensor
    adversarial: torch.Tensor
    undecided: torch.Tensor
    norms: torch.Tensor
    adv_pred: torch.Tensor
    sample_queries: torch.Tensor | None
    dist_trace: dict[int, torch.Tensor]
    shown: list[Example]
    trace: list[float] | None
    counts: dict[str, int]
    seconds: float
    error: tuple[int, str] | None = None  # (batch number, message)
    stopped: bool = False
    broken_constraints: tuple[str, ...] = ()  # of the first infeasible candidate
    naive: NaiveShare | None = None  # tabular runs: what a naive audit counts (robaudit.naive)
    naive_seconds: float = 0.0  # spent on the naive comparison, not the attack's own time
    candidates: torch.Tensor | None = None  # tabular runs: float[N, F], verified candidates


# a share's per-sample tensors ([N] or [N, F]; absent ones are None) and a sample's value
# there until its batch is kept: what a dropped batch is reset to, what the merge copies
_UNSET: dict[str, float] = {
    "broken": False, "adversarial": False, "undecided": False, "norms": float("nan"),
    "adv_pred": -1, "sample_queries": -1, "candidates": float("nan"),
}  # fmt: skip


def _merge(parts: list[_Part], room: int) -> _Part:
    """The ranks' shares as one: each sample's outcome comes from the rank that attacked it."""
    if len(parts) == 1:
        return parts[0]
    out = parts[0]
    for p in parts[1:]:
        m = p.owned
        for name in _UNSET:
            mine, theirs = getattr(out, name), getattr(p, name)
            if mine is not None and theirs is not None:
                mine[m] = theirs[m]
        for q, dist in p.dist_trace.items():
            mine = out.dist_trace.setdefault(q, torch.full_like(dist, float("nan")))
            mine[m] = dist[m]
        out.shown = out.shown + p.shown
        out.trace = out.trace if out.trace is not None else p.trace
        for k, v in p.counts.items():
            out.counts[k] = out.counts.get(k, 0) + v
        out.seconds = max(out.seconds, p.seconds)
        out.owned = out.owned | m
        out.broken_constraints = out.broken_constraints or p.broken_constraints
        if out.naive is not None and p.naive is not None:
            out.naive.merge(p.naive)
    # a single process keeps the first new breaks in sample order; so does the merge
    out.shown = sorted(out.shown, key=lambda e: e.sample)[:room]
    return out


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


@dataclass
class CellContext:
    """What every cell of one engine pass shares (the pass's data, classifier and controls)."""

    clf: Classifier
    x: Images
    y: torch.Tensor
    seed: int
    batch_size: int
    progress: Progress
    res: EngineResult  # the pass's clean verdicts (and the randomized verdicts' level)
    on_batch: BatchSink | None = None
    search: Classifier | None = None
    ctl: EngineControl = field(default_factory=EngineControl)

    @property
    def n(self) -> int:
        return int(self.x.shape[0])


@dataclass
class _Cell:
    """One cell while it runs: what it attacks, through which view, and its tallies."""

    item: PlannedAttack
    label: str
    view: Classifier
    access: str
    done: torch.Tensor  # samples already broken at this threat (examples skip them)
    room: int  # examples this cell may still add to the gallery
    part: _Part
    verify_queries: int = 0

    @property
    def threat(self) -> Threat:
        return self.item.threat

    @property
    def minimal(self) -> bool:
        return self.item.attack.minimal_norm


def _empty_part(n: int, black_box: bool) -> _Part:
    return _Part(
        owned=torch.zeros(n, dtype=torch.bool),
        broken=torch.zeros(n, dtype=torch.bool),
        adversarial=torch.zeros(n, dtype=torch.bool),
        undecided=torch.zeros(n, dtype=torch.bool),
        norms=torch.full((n,), float("nan")),
        adv_pred=torch.full((n,), -1, dtype=torch.long),
        sample_queries=torch.full((n,), -1, dtype=torch.long) if black_box else None,
        dist_trace={},
        shown=[],
        trace=None,
        counts=dict.fromkeys(
            ("budget", "bounds", "nonfinite", "silent", "mismatch", "queries", "grad_evals",
             "constraint", "feasible", "repaired"),
            0,
        ),
        seconds=0.0,
    )


def run_cell(
    ctx: CellContext,
    item: PlannedAttack,
    targets: torch.Tensor,
    done: torch.Tensor,
    room: int,
    prior: Unit | None = None,
    keep_partial: bool = True,
) -> Unit | None:
    """Run one cell on this rank's batches, merge the ranks' shares, and judge it.

    A stop requested mid-cell (on any rank) drops the batch in flight; the cell's finished
    batches come back as a partial cell (``unfinished`` > 0), or None with ``keep_partial``
    off. ``prior``: the partial cell an interrupted run saved; only its unfinished samples
    run now, in the same batches an uninterrupted run would have formed.
    """
    clf, ctl = ctx.clf, ctx.ctl
    threat, attack = item.threat, item.attack
    left = targets & ~prior[0].attacked if prior is not None else targets
    idx_all = left.nonzero().flatten()
    batches = [
        (k, idx_all[start : start + ctx.batch_size])
        for k, start in enumerate(range(0, int(idx_all.numel()), ctx.batch_size))
        if ctl.shard.owns(k)
    ]
    access = attack_access(attack, threat)
    st = _Cell(
        item=item,
        label=cell_label(attack.name, threat, ctl.variant, item.index),
        view=attack_view(item.search or ctx.search or clf, access),
        access=access,
        done=done,
        room=room,
        part=_empty_part(ctx.n, access != "white-box"),
    )
    if ctl.constraints is not None and measured(attack, access):
        st.part.naive = NaiveShare.empty(ctx.n)
    if ctl.constraints is not None:  # tabular runs: the breaks' feature changes, per sample
        width = math.prod(ctx.x.shape[1:])
        st.part.candidates = torch.full((ctx.n, width), float("nan"), dtype=ctx.x.dtype)
    ctx.progress.start(st.label, sum(int(b.numel()) for _, b in batches))

    def tallies() -> tuple[int, int, int, int, dict[str, int]]:
        return (
            clf.counters.queries, st.view.counters.queries, st.view.counters.grad_evals,
            st.verify_queries, dict(st.part.counts),
        )

    start = finished = tallies()  # ``finished``: as of the last batch that was kept
    t0 = time.perf_counter()
    for number, idx in batches:
        if ctl.control is not None and ctl.control.should_stop():
            st.part.stopped = True
            break
        try:
            _split_on_oom(ctx, st, number, idx)
        except StopRequested:  # the batch in flight is dropped; finished ones stay
            st.part.stopped = True
            _forget(st.part, idx)
            break
        except RuntimeFailure as exc:
            st.part.error = (number, str(exc))
            break
        finished = tallies()
    # a dropped batch's queries and gradients are not the cell's: --resume runs it again
    end = finished if st.part.stopped else tallies()
    q0, vq0, vg0 = start[0], start[1], start[2]
    q1, vq1, vg1, st.verify_queries, st.part.counts = end
    separate = st.view is not clf  # its counters hold only the attack's own work
    st.part.counts["queries"] = vq1 - vq0 if separate else q1 - q0 - st.verify_queries
    st.part.counts["grad_evals"] = vg1 - vg0
    st.part.seconds = time.perf_counter() - t0 - st.part.naive_seconds
    return _settle(ctx, st, left, prior, keep_partial)


def _forget(part: _Part, idx: torch.Tensor) -> None:
    """Undo everything a dropped batch wrote (chunks verified before an OOM split included):
    the cell's tallies are rolled back to before it, and ``--resume`` runs it whole again."""
    part.owned[idx] = False
    for name, unset in _UNSET.items():
        if (values := getattr(part, name)) is not None:
            values[idx] = unset
    for trace in part.dist_trace.values():
        trace[idx] = float("nan")
    if part.naive is not None:
        part.naive.forget(idx)
    dropped = set(idx.tolist())
    part.shown = [e for e in part.shown if e.sample not in dropped]


def _settle(
    ctx: CellContext, st: _Cell, left: torch.Tensor, prior: Unit | None, keep_partial: bool
) -> Unit | None:
    """Gather the ranks' shares and make the cell's outcome (combined with ``prior``)."""
    ctl = ctx.ctl
    parts = ctl.shard.gather(st.part)
    errors = sorted(p.error for p in parts if p.error is not None)
    if errors:
        ctx.progress.finish()
        raise RuntimeFailure(errors[0][1])
    stopped = any(p.stopped for p in parts)
    if stopped:
        if ctl.control is not None and not ctl.control.should_stop():
            ctl.control.request_stop(INTERRUPTED, "another process of the run stopped")
        if not keep_partial or not any(bool(p.owned.any()) for p in parts):
            ctx.progress.finish()
            return prior if keep_partial else None  # nothing new finished
    merged = _merge(parts, st.room)
    # the running robust accuracy at this threat, over every rank, for the cell's log line
    broken_now = st.done | merged.broken
    if prior is not None:
        broken_now |= prior[0].broken
    tally(ctx.progress, int((ctx.res.correct & ~broken_now).sum()), ctx.n)
    ctx.progress.finish()
    attacked = left & merged.owned if stopped else left.clone()
    cell = _outcome(st, merged, attacked, int((left & ~attacked).sum()))
    if ctl.constraints is not None:
        cell.constraint_violations = merged.counts["constraint"]
        cell.broken_constraints = merged.broken_constraints
        cell.feasible_candidates = merged.counts["feasible"]
        cell.repaired = merged.counts["repaired"]
        cell.candidates = merged.candidates
    if merged.naive is not None:
        cell.naive, cell.naive_reasons = merged.naive.hit, merged.naive.reasons
        cell.naive_hinge = merged.naive.hinge
    if prior is not None:
        return combine(prior, (cell, merged.shown), st.room)
    return cell, merged.shown


def _outcome(st: _Cell, merged: _Part, attacked: torch.Tensor, unfinished: int) -> CellOutcome:
    attack = st.item.attack
    budget = getattr(attack.params, "queries", None)
    return CellOutcome(
        index=st.item.index,
        attack=attack.name,
        threat=st.threat,
        attacked=attacked,
        broken=merged.broken,
        norms=merged.norms,
        adv_pred=merged.adv_pred,
        queries=merged.counts["queries"],
        grad_evals=merged.counts["grad_evals"],
        seconds=merged.seconds,
        budget_violations=merged.counts["budget"],
        bounds_violations=merged.counts["bounds"],
        nonfinite=merged.counts["nonfinite"],
        loss_trace=merged.trace,
        adversarial=merged.adversarial if st.minimal else None,
        minimal_norm=st.minimal,
        silent_failures=merged.counts["silent"],
        sample_queries=merged.sample_queries,
        query_budget=int(budget) if isinstance(budget, int) else None,
        query_mismatch=merged.counts["mismatch"],
        access_used=st.access,
        distance_trace=merged.dist_trace or None,
        undecided=merged.undecided,
        unfinished=unfinished,
    )


def _split_on_oom(ctx: CellContext, st: _Cell, number: int, idx: torch.Tensor) -> None:
    """Attack ``idx`` in chunks that fit; on out-of-memory halve the chunk and retry."""
    ctl = ctx.ctl
    limit = ctl.control.max_batch if ctl.control is not None else None
    size = min(int(idx.numel()), limit or int(idx.numel()))
    start = 0
    while start < idx.numel():
        chunk = idx[start : start + size]
        try:
            _attack_batch(ctx, st, number, chunk)
        except RuntimeError as exc:
            if not _is_oom(exc) or size <= 1:
                if _is_oom(exc):
                    raise RuntimeFailure(
                        f"{st.label}: out of memory even at batch size 1 (batch {number + 1})"
                    ) from exc
                raise
            size = max(1, size // 2)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            if ctl.control is None:
                ctl.control = RunControl()
            ctl.control.record_oom(st.label, size)
            continue
        start += size


def _attack_batch(ctx: CellContext, st: _Cell, number: int, idx: torch.Tensor) -> None:
    """Attack one batch, verify it, and record it in the cell's share."""
    clf, part, threat, attack = ctx.clf, st.part, st.threat, st.item.attack
    xb = ctx.x[idx].to(clf.device)
    yb = ctx.y[idx].to(clf.device)
    bseed = cell_seed(ctx.seed, st.item.index, attack.name, threat.key, int(idx[0]))
    gen = torch.Generator().manual_seed(bseed)
    torch.manual_seed(bseed)  # models drawing from the global RNG: batch-keyed draws
    vq_batch = st.view.counters.queries
    try:
        # CPU convolutions in channels-last order; a stop lands within one model call
        # tabular runs: constrained attacks search inside the constraints (attacks.feasible)
        with st.view.fast_layout(), interruptible(ctx.ctl.control), constrained_to(
            ctx.ctl.constraints
        ):
            out = attack.run_samples(st.view, xb, yb, threat, gen, idx)
    except RuntimeError as exc:
        if _is_oom(exc):
            raise
        raise RuntimeFailure(f"{st.label}: the model raised during the attack: {exc}") from exc
    _account_queries(ctx, st, idx, out.queries, st.view.counters.queries - vq_batch)
    for q, dist in out.distance_trace or []:
        tr = part.dist_trace.setdefault(q, torch.full((ctx.n,), float("nan")))
        tr[idx] = dist.detach().cpu()
    if out.x_adv.shape != xb.shape:
        raise RuntimeFailure(
            f"{st.label}: attack returned shape {list(out.x_adv.shape)}, expected "
            f"{list(xb.shape)}"
        )
    q_before = clf.counters.queries
    # one fresh pass, or on a randomized model the sequential test (one query per sample);
    # a long sequential test stops promptly too
    with interruptible(ctx.ctl.control):
        checked = verify_batch(
            clf, xb, out.x_adv, yb, threat, minimal=st.minimal, alpha=ctx.res.verdict_alpha,
            constraints=ctx.ctl.constraints, repair=not attack.constrained,
        )
    st.verify_queries += clf.counters.queries - q_before
    verdict, b = checked.verdict, checked.broken
    part.counts["nonfinite"] += checked.nonfinite
    part.counts["bounds"] += checked.bounds
    part.counts["budget"] += checked.budget
    if checked.infeasible is not None:
        part.counts["constraint"] += int(checked.infeasible.sum())
        part.counts["feasible"] += checked.feasible or 0
        part.counts["repaired"] += checked.repaired
        part.broken_constraints = part.broken_constraints or checked.broken_constraints
    broken_out = verdict.nonfinite
    if bool(broken_out.any()):  # never count a NaN output as a break (or as robust)
        first = int(idx[broken_out][0])
        raise RuntimeFailure(
            f"{st.label}: the model returned NaN or inf logits on {int(broken_out.sum())} "
            f"candidate(s) of batch {number + 1} (first: sample {first})"
        )
    if out.loss_trace is not None and part.trace is None:
        part.trace = out.loss_trace
    part.adversarial[idx] = checked.adversarial
    part.broken[idx] = b
    part.undecided[idx] = verdict.undecided  # minimal-norm: at any norm, like adversarial
    part.owned[idx] = True
    if out.claimed is not None:  # an open verdict contradicts no claim
        part.counts["silent"] += int((out.claimed.cpu() & verdict.right).sum())
    _keep_examples(ctx, st, idx, xb, checked.x_adv, verdict.conf, verdict.pred, b)
    _naive(ctx, st, idx, xb, yb, out.x_adv, bseed)
    part.adv_pred[idx] = verdict.pred
    part.norms[idx] = checked.norms
    if part.candidates is not None:
        part.candidates[idx] = checked.x_adv.reshape(int(idx.numel()), -1).to(part.candidates)
    if ctx.on_batch is not None:
        fits = checked.norms <= threat.eps + TOLERANCE if st.minimal else torch.ones_like(b)
        ctx.on_batch(
            VerifiedBatch(
                attack.name, st.item.index, threat, idx.cpu(), checked.x_adv.cpu(),
                verdict.pred, b.cpu(), verdict.undecided & fits,
            )
        )
    ctx.progress.advance(int(idx.numel()))


def _naive(
    ctx: CellContext, st: _Cell, idx: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor,
    x_adv: torch.Tensor, bseed: int,
) -> None:
    """Tabular runs: what a naive audit would count on this batch (robaudit.naive)."""
    part, cons = st.part, ctx.ctl.constraints
    if part.naive is None or cons is None:
        return
    t0 = time.perf_counter()
    with interruptible(ctx.ctl.control):
        found = naive_batch(
            ctx.clf, st.view, st.item.attack, xb, yb, st.threat, x_adv, bseed, cons,
            minimal=st.minimal, alpha=ctx.res.verdict_alpha,
        )
    part.naive.record(idx, found)
    part.naive_seconds += time.perf_counter() - t0


def _account_queries(
    ctx: CellContext, st: _Cell, idx: torch.Tensor, claimed: torch.Tensor | None, spent: int
) -> None:
    """Black-box cells: each sample's queries, exact against the view's own counter."""
    part = st.part
    if part.sample_queries is None:
        return
    if claimed is None or int(claimed.sum()) != spent:
        part.counts["mismatch"] += int(idx.numel())
        # unreported or misreported: spread the counted total evenly (an estimate)
        part.sample_queries[idx] = spent // max(1, int(idx.numel()))
    else:
        part.sample_queries[idx] = claimed.detach().cpu().long()


def _keep_examples(
    ctx: CellContext,
    st: _Cell,
    idx: torch.Tensor,
    xb: torch.Tensor,
    xa: torch.Tensor,
    conf: torch.Tensor,
    pred: torch.Tensor,
    broken: torch.Tensor,
) -> None:
    """The first new breaks (not already broken at this threat) for the report's gallery."""
    part, res = st.part, ctx.res
    new = (broken & ~st.done[idx]).nonzero().flatten()[: st.room - len(part.shown)]
    part.shown.extend(
        Example(
            sample=int(idx[j]),
            threat_key=st.threat.key,
            attack=st.item.attack.name,
            x=xb[j].cpu().clone(),
            x_adv=xa[j].cpu().clone(),
            label=int(ctx.y[idx[j]]),
            clean_pred=int(res.clean_pred[idx[j]]),
            clean_conf=float(res.clean_conf[idx[j]]),
            adv_pred=int(pred[j]),
            adv_conf=float(conf[j]),
        )
        for j in new.tolist()
    )
