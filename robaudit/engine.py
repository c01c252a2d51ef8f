"""Runs a plan of attacks on a classifier and returns verified, per-sample outcomes.

The engine owns every invariant: it seeds each cell, moves data to the device, counts
queries, records any budget or bounds violation an attack returned (then projects), and
counts a sample as broken only when a fresh forward pass outside the attack misclassifies
the returned input. Attacks never decide success. This module orders the plan, runs the
clean pass and walks the cells (the cascade, inherited breaks, minimal-norm attacks, stops);
robaudit.cell runs one cell, robaudit.verification checks a batch, robaudit.outcomes holds the
records.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from functools import partial
from typing import TypeVar

import torch

from robaudit.cell import CellContext, run_cell
from robaudit.classifier import Classifier
from robaudit.distributed import SINGLE, Shard
from robaudit.errors import ModelLoadError, RuntimeFailure
from robaudit.loading.samples import Images
from robaudit.minimal import derive_minimal, run_minimal
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
    describe,
)
from robaudit.progress import NullProgress, Progress
from robaudit.stored_cells import stored_or_run
from robaudit.threat import Threat
from robaudit.verdicts import Verdict

__all__ = [  # the records are defined in robaudit.outcomes; the engine is their front door
    "BatchSink",
    "CellOutcome",
    "EngineControl",
    "EngineResult",
    "Example",
    "PlannedAttack",
    "Unit",
    "VerifiedBatch",
    "attack_access",
    "attack_view",
    "cell_seed",
    "clean_pass",
    "describe",
    "order_plan",
    "run_plan",
]


CHEAP = 10.0  # attacks at most this costly run first at every threat (priority under a budget)


def order_plan(plan: list[PlannedAttack]) -> list[PlannedAttack]:
    """Priority order: cheap attacks at every threat first, then the rest; within a tier,
    threats in (access, norm, eps) order and cheap attacks first.

    Under a time budget every threat then has at least its cheap attacks done before any
    expensive one starts. The cascade stays sound in any order (see :func:`run_plan`).
    """
    return sorted(
        plan,
        key=lambda p: (
            p.attack.cost() > CHEAP,
            p.threat.access,
            p.threat.norm,
            p.threat.ball_size,
            p.attack.cost(),
            p.index,
        ),
    )


T = TypeVar("T")


def _in_batch_order(shard: Shard, mine: list[tuple[int, T]], error: str | None) -> list[T]:
    """This process's batches or, sharded, every rank's in batch order; a rank's error is
    raised on every rank (none may be left waiting in a gather)."""
    if shard.active:
        gathered = shard.gather((mine, error))
        errors = [e for _, e in gathered if e is not None]
        if errors:
            raise RuntimeFailure(errors[0])
        mine = sorted((p for part, _ in gathered for p in part), key=lambda t: t[0])
    return [t for _, t in mine]


def _per_clean_batch(
    clf: Classifier,
    n: int,
    one: Callable[[int, int], T],
    *,
    seed: int | None,
    shard: Shard,
) -> list[T]:
    """``one(start, stop)`` on each of the clean pass's batches this rank owns, reseeded per
    batch with ``seed``; every rank's answers in batch order (see :func:`_in_batch_order`)."""
    bs = max(1, clf.batch_size)
    mine: list[tuple[int, T]] = []
    error: str | None = None
    for k, start in enumerate(range(0, n, bs)):
        if not shard.owns(k):
            continue
        if seed is not None:
            torch.manual_seed(cell_seed(seed, "clean", start))
        try:  # a rank must not leave the others waiting in the gather
            mine.append((k, one(start, start + bs)))
        except Exception as exc:
            if not shard.active:  # one process: the model's own exception, as it was raised
                raise
            error = f"the model raised on clean batch {k} (first sample {start}): {exc}"
            break
    return _in_batch_order(shard, mine, error)


def clean_pass(
    clf: Classifier,
    x: Images,
    y: torch.Tensor,
    *,
    seed: int | None = None,
    shard: Shard = SINGLE,
    alpha: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Clean predictions, confidences, correct and undecided masks; refuses NaN/inf outputs
    or a wrong output shape.

    Batch by batch, so streamed samples are decoded one batch at a time; with ``shard`` the
    batches are dealt round-robin to the ranks like a cell's and the logits gathered, so no
    rank repeats the whole pass. Each batch is the same slice whatever the rank count, and with
    ``seed`` the global RNG is reseeded per batch, so a randomized model's draws do not depend
    on which rank ran the batch either. A randomized model's clean verdicts come from the
    sequential test at level ``alpha`` (:meth:`Classifier.verdict`): "correct" means shown
    correct, and samples it leaves open are the fourth mask (all False otherwise).
    """
    if clf.verdict_test() is not None:
        return _clean_sequential(clf, x, y, seed=seed, shard=shard, alpha=alpha)
    n = int(x.shape[0])

    def logits_of(start: int, stop: int) -> torch.Tensor:
        out = clf.verification_logits(x[start:stop])
        return out.cpu() if shard.active else out  # ranks gather on the CPU

    parts = _per_clean_batch(clf, n, logits_of, seed=seed, shard=shard)
    logits = torch.cat(parts) if parts else clf.verification_logits(x[0:0])
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
    return pred, conf, pred == y.cpu(), torch.zeros(n, dtype=torch.bool)


def _clean_sequential(
    clf: Classifier,
    x: Images,
    y: torch.Tensor,
    *,
    seed: int | None,
    shard: Shard,
    alpha: float | None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`clean_pass` on a randomized model: sequential verdicts, batch by batch."""
    n = int(x.shape[0])

    def verdict_of(start: int, stop: int) -> Verdict:
        return clf.verdict(x[start:stop], y[start:stop], alpha).cpu()

    parts = _per_clean_batch(clf, n, verdict_of, seed=seed, shard=shard)
    v = Verdict.cat(parts) if parts else clf.verdict(x[0:0], y[0:0], alpha).cpu()
    if bool(v.nonfinite.any()):
        raise ModelLoadError(
            f"model returned NaN or inf logits on {int(v.nonfinite.sum())} of {n} clean "
            "sample(s); check the checkpoint and model.mean/std"
        )
    return v.pred, v.conf, v.right, v.undecided


def run_plan(
    clf: Classifier,
    x: Images,
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
    ctl: EngineControl | None = None,
    clean: EngineResult | None = None,
    verdicts: int | None = None,
) -> EngineResult:
    """Attack every correctly classified sample with every planned attack, verify, record.

    ``on_batch`` receives every verified batch (for exporting adversarial examples) so the
    engine itself never holds more than one batch of candidates. ``search``: the classifier
    the attacks see when it is not ``clf`` (a defense's non-adaptive evaluation: attacks use
    the bare model, verdicts come from the defended one). ``ctl``: stop early, save and
    resume finished cells, shard batches over ranks. A stop or a runtime failure ends the
    loop with the finished cells kept and the rest listed in ``unrun`` (``failure`` says why
    when the model failed); the result is then a partial one. ``clean``: an earlier run on
    the same classifier and data whose clean verdicts (and verdict level) this one reuses, so
    two plans judged apart share one clean pass. ``verdicts``: the cells a sample may be
    judged in over every such run (default: this plan's), for the randomized verdicts' level.
    """
    ctl = ctl or EngineControl()
    progress = progress or NullProgress()
    result = _clean_result(clf, x, y, seed, ctl, clean, verdicts or len(plan))
    if ctl.attack_only is not None:
        result.attack_mask = y.cpu() == ctl.attack_only
    ordered = order_plan(plan)
    ctx = CellContext(clf, x, y, seed, batch_size, progress, result, on_batch, search, ctl)
    walk = _CascadeWalk(ctx, plan, cascade, examples)
    for pos, item in enumerate(ordered):
        stopping = ctl.control.should_stop() if ctl.control is not None else False
        if ctl.shard.any(stopping):
            result.unrun = [describe(p) for p in ordered[pos:]]
            break
        try:
            left = walk.step(item)
        except RuntimeFailure as exc:
            result.failure = str(exc)
            left = []
        if left is not None:  # stopped: this cell (or what it left of its samples), the rest
            rest = [describe(p) for p in ordered[pos + 1 :]]
            result.unrun = [*left, *rest] if left else [describe(item), *rest]
            break
    return result


def _clean_result(
    clf: Classifier, x: Images, y: torch.Tensor, seed: int, ctl: EngineControl,
    clean: EngineResult | None, cells: int,
) -> EngineResult:
    """The clean pass (or an earlier run's, reused) as the start of this run's result."""
    if clean is not None:
        result = EngineResult(clean.clean_pred, clean.clean_conf, clean.correct, [])
        result.clean_undecided, result.verdict_alpha = clean.clean_undecided, clean.verdict_alpha
        return result
    t0 = time.perf_counter()
    test = clf.verdict_test()
    # Bonferroni over the verdicts a sample may get: its clean verdict and one per cell
    alpha = test.alpha_for(1 + cells) if test is not None else None
    clean_pred, clean_conf, correct, undecided = clean_pass(
        clf, x, y, seed=seed, shard=ctl.shard, alpha=alpha
    )
    result = EngineResult(
        clean_pred, clean_conf, correct, [], clean_seconds=time.perf_counter() - t0
    )
    if test is not None:
        result.clean_undecided, result.verdict_alpha = undecided, alpha
    return result


class _CascadeWalk:
    """The cells in order, each attacking what is still standing at its threat.

    Verified breaks are kept per threat key; a cell's targets inherit the breaks at every
    smaller eps of the same family (balls are nested), whatever order the cells run in.
    """

    def __init__(
        self, ctx: CellContext, plan: list[PlannedAttack], cascade: bool, examples: int
    ) -> None:
        self.ctx, self.plan, self.cascade, self.examples = ctx, plan, cascade, examples
        self.result = ctx.res
        self.n = ctx.n
        self.broken_at: dict[str, torch.Tensor] = {}
        self.threats: dict[str, Threat] = {}
        self.kept: dict[str, int] = {}
        self.minimal: dict[tuple[int, str, str], tuple[CellOutcome, list[Example]]] = {}

    def step(self, item: PlannedAttack) -> list[dict[str, object]] | None:
        """Run one cell; None when it finished, else what it left (a stop or a failure):
        ``[]`` for the whole cell, or the cell with its ``samples_left``."""
        threat, result = item.threat, self.result
        self.threats[threat.key] = threat
        done = _inherited(self.broken_at, self.threats, threat, self.n)
        room = max(0, self.examples - self.kept.get(threat.key, 0))
        if item.attack.minimal_norm:
            unit = self._minimal(item, done)
            if unit is None:
                return []
            cell, shown = derive_minimal(unit[0], threat, unit[1], done, room)
        else:
            targets = result.targets().clone()
            if self.cascade or item.cascade:
                targets &= ~done
            ctl = self.ctx.ctl
            ran = stored_or_run(
                ctl, (ctl.variant, item.index, item.attack.name, threat.key),
                partial(run_cell, self.ctx, item, targets, done, room),
            )
            if ran is None:
                return []
            cell, shown = ran
            if cell.unfinished:  # stopped mid-cell: keep its finished samples, then stop
                result.examples.extend(shown[: max(0, room)])
                result.cells.append(cell)
                return [{**describe(item), "samples_left": cell.unfinished}]
        self.kept[threat.key] = self.kept.get(threat.key, 0) + len(shown)
        result.examples.extend(shown)
        result.cells.append(cell)
        self.broken_at[threat.key] = done | cell.broken
        return None

    def _minimal(
        self, item: PlannedAttack, done: torch.Tensor
    ) -> tuple[tuple[CellOutcome, list[Example]], bool] | None:
        """A minimal-norm attack runs once per (entry, access, norm), at the family's first
        (smallest) eps; every eps of the family reads its cell off that run."""
        threat = item.threat
        key = (item.index, threat.access, threat.norm)
        first = key not in self.minimal
        if first:
            # a cascade skips samples already broken at this (the smallest) eps of the
            # family: the balls are nested, so they stay broken at every larger eps
            correct = self.result.targets()
            targets = correct & ~done if (self.cascade or item.cascade) else correct.clone()
            unit = run_minimal(self.ctx, item, self.plan, targets, self.examples)
            if unit is None:
                return None
            self.minimal[key] = unit
            full = unit[0]
            assert full.adversarial is not None
            self.result.min_norms[(item.index, item.attack.name, *key[1:])] = torch.where(
                full.adversarial, full.norms, torch.full_like(full.norms, float("nan"))
            )
        return self.minimal[key], first


def _inherited(
    broken_at: dict[str, torch.Tensor], threats: dict[str, Threat], threat: Threat, n: int
) -> torch.Tensor:
    """Samples already broken at ``threat``: its own breaks and those at any smaller eps of
    its family."""
    done = torch.zeros(n, dtype=torch.bool)
    for key, mask in broken_at.items():
        t = threats[key]
        if t.within(threat):
            done |= mask
    return done

