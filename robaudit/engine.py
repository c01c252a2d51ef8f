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
from dataclasses import asdict, dataclass, field, replace
from functools import partial

import torch

from robaudit.attacks.base import ACCESS_FOR_REQUIRES, Attack
from robaudit.checkpoint import CellStore
from robaudit.classifier import ACCESS_RANK, Classifier
from robaudit.control import INTERRUPTED, RunControl, StopRequested, interruptible
from robaudit.distributed import SINGLE, Shard
from robaudit.errors import ModelLoadError, RuntimeFailure
from robaudit.loading.samples import Images
from robaudit.progress import NullProgress, Progress, tally
from robaudit.threat import Threat
from robaudit.verdicts import Verdict
from robaudit.verify import TOLERANCE, verify_batch


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
    # bool[N]: attacked samples whose verdict the sequential test left open (randomized
    # models; None or all False otherwise); minimal-norm runs: at any norm, like adversarial
    undecided: torch.Tensor | None = None
    # targeted samples not attacked because the run stopped mid-cell (a partial cell)
    unfinished: int = 0


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
    # a partial run: the planned cells that did not run, and the failure that stopped it
    unrun: list[dict[str, object]] = field(default_factory=list)
    failure: str | None = None
    # randomized models: samples whose clean verdict stayed open (neither correct nor wrong),
    # and the level of each verdict (robaudit.verdicts); None for a deterministic model
    clean_undecided: torch.Tensor | None = None
    verdict_alpha: float | None = None


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
    undecided: torch.Tensor | None = None  # randomized models: verdicts left open


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
            p.threat.eps,
            p.attack.cost(),
            p.index,
        ),
    )


def describe(item: PlannedAttack) -> dict[str, object]:
    """A planned cell as the report lists it when it did not run."""
    return {"attack": item.attack.name, "attack_index": item.index, "threat": item.threat.key}


@dataclass
class EngineControl:
    """What a run may add to the engine: stopping early, saved cells, sharding.

    ``variant`` names the model variant in the saved cells' identities.
    """

    control: RunControl | None = None
    store: CellStore | None = None
    shard: Shard = SINGLE
    variant: str = "model"


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
    n, bs = int(x.shape[0]), max(1, clf.batch_size)
    mine: list[tuple[int, torch.Tensor]] = []
    error: str | None = None
    for k, start in enumerate(range(0, n, bs)):
        if not shard.owns(k):
            continue
        if seed is not None:
            torch.manual_seed(cell_seed(seed, "clean", start))
        if not shard.active:  # one process: the model's own exception, as it was raised
            mine.append((k, clf.verification_logits(x[start : start + bs])))
            continue
        try:  # a rank must not leave the others waiting in the gather below
            mine.append((k, clf.verification_logits(x[start : start + bs]).cpu()))
        except Exception as exc:  # reported on every rank after the gather below
            error = f"the model raised on clean batch {k} (first sample {start}): {exc}"
            break
    if shard.active:
        gathered = shard.gather((mine, error))
        errors = [e for _, e in gathered if e is not None]
        if errors:
            raise RuntimeFailure(errors[0])
        mine = sorted((p for part, _ in gathered for p in part), key=lambda t: t[0])
    parts = [t for _, t in mine]
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
    n, bs = int(x.shape[0]), max(1, clf.batch_size)
    mine: list[tuple[int, Verdict]] = []
    error: str | None = None
    for k, start in enumerate(range(0, n, bs)):
        if not shard.owns(k):
            continue
        if seed is not None:
            torch.manual_seed(cell_seed(seed, "clean", start))
        try:
            mine.append((k, clf.verdict(x[start : start + bs], y[start : start + bs], alpha).cpu()))
        except Exception as exc:
            if not shard.active:  # one process: the model's own exception, as it was raised
                raise
            error = f"the model raised on clean batch {k} (first sample {start}): {exc}"
            break
    if shard.active:
        gathered = shard.gather((mine, error))
        errors = [e for _, e in gathered if e is not None]
        if errors:
            raise RuntimeFailure(errors[0])
        mine = sorted((p for part, _ in gathered for p in part), key=lambda t: t[0])
    parts = [v for _, v in mine]
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
    n = int(x.shape[0])
    t0 = time.perf_counter()
    test = clf.verdict_test()
    if clean is not None:
        result = EngineResult(clean.clean_pred, clean.clean_conf, clean.correct, [])
        result.clean_undecided, result.verdict_alpha = clean.clean_undecided, clean.verdict_alpha
    else:
        # Bonferroni over the verdicts a sample may get: its clean verdict and one per cell
        alpha = test.alpha_for(1 + (verdicts or len(plan))) if test is not None else None
        clean_pred, clean_conf, correct, undecided = clean_pass(
            clf, x, y, seed=seed, shard=ctl.shard, alpha=alpha
        )
        result = EngineResult(
            clean_pred, clean_conf, correct, [], clean_seconds=time.perf_counter() - t0
        )
        if test is not None:
            result.clean_undecided, result.verdict_alpha = undecided, alpha
    correct = result.correct
    # verified breaks per threat key; a cell's targets inherit the breaks at every smaller
    # eps of the same family (balls are nested), whatever order the cells run in
    broken_at: dict[str, torch.Tensor] = {}
    threats: dict[str, Threat] = {}
    kept: dict[str, int] = {}
    minimal: dict[tuple[int, str, str], tuple[CellOutcome, list[Example]]] = {}
    ordered = order_plan(plan)
    for pos, item in enumerate(ordered):
        threat = item.threat
        stopping = ctl.control.should_stop() if ctl.control is not None else False
        if ctl.shard.any(stopping):
            result.unrun = [describe(p) for p in ordered[pos:]]
            break
        threats[threat.key] = threat
        done = _inherited(broken_at, threats, threat, n)
        room = max(0, examples - kept.get(threat.key, 0))
        try:
            if item.attack.minimal_norm:
                key = (item.index, threat.access, threat.norm)
                first = key not in minimal
                if first:
                    # a cascade skips samples already broken at this (the smallest) eps of the
                    # family: the balls are nested, so they stay broken at every larger eps
                    targets = correct & ~done if (cascade or item.cascade) else correct.clone()
                    unit = _run_minimal(
                        clf, x, y, item, plan, targets, seed, batch_size, progress, examples,
                        result, on_batch, search, ctl,
                    )
                    if unit is None:
                        result.unrun = [describe(p) for p in ordered[pos:]]
                        break
                    minimal[key] = unit
                    full = unit[0]
                    assert full.adversarial is not None
                    result.min_norms[(item.index, item.attack.name, *key[1:])] = torch.where(
                        full.adversarial, full.norms, torch.full_like(full.norms, float("nan"))
                    )
                cell, shown = _derive_minimal(minimal[key], threat, first, done, room)
            else:
                targets = correct.clone()
                if cascade or item.cascade:
                    targets &= ~done
                ran = _stored_or_run(
                    ctl, (ctl.variant, item.index, item.attack.name, threat.key),
                    partial(
                        _run_cell, clf, x, y, item, targets, seed, batch_size, progress, done,
                        room, result, on_batch, search, ctl,
                    ),
                )
                if ran is None:
                    result.unrun = [describe(p) for p in ordered[pos:]]
                    break
                cell, shown = ran
                if cell.unfinished:  # stopped mid-cell: keep its finished samples, then stop
                    result.examples.extend(shown[: max(0, room)])
                    result.cells.append(cell)
                    result.unrun = [
                        {**describe(item), "samples_left": cell.unfinished},
                        *(describe(p) for p in ordered[pos + 1 :]),
                    ]
                    break
        except RuntimeFailure as exc:
            result.failure = str(exc)
            result.unrun = [describe(p) for p in ordered[pos:]]
            break
        kept[threat.key] = kept.get(threat.key, 0) + len(shown)
        result.examples.extend(shown)
        result.cells.append(cell)
        broken_at[threat.key] = done | cell.broken
    return result


def _inherited(
    broken_at: dict[str, torch.Tensor], threats: dict[str, Threat], threat: Threat, n: int
) -> torch.Tensor:
    """Samples already broken at ``threat``: its own breaks and those at any smaller eps of
    its family."""
    done = torch.zeros(n, dtype=torch.bool)
    for key, mask in broken_at.items():
        t = threats[key]
        if t.same_ball_family(threat) and t.eps <= threat.eps:
            done |= mask
    return done


Unit = tuple[CellOutcome, list[Example]]


def _stored_or_run(
    ctl: EngineControl, key: tuple[object, ...], run: Callable[[Unit | None], Unit | None]
) -> Unit | None:
    """A cell saved by an earlier run of the same audit, else run it (and save it).

    A partial cell saved by an interrupted run is continued: ``run`` gets it as ``prior``.
    """
    found = ctl.store.load(key) if ctl.store is not None else None
    if ctl.shard.active:
        found = ctl.shard.broadcast(found)  # rank 0 holds the folder
    prior = _unit_from_dict(found) if found is not None else None
    if prior is not None and prior[0].unfinished == 0:
        return prior
    unit = run(prior)
    if unit is not None and ctl.store is not None:
        ctl.store.save(key, _unit_to_dict(unit))
    return unit


def _unit_to_dict(unit: Unit) -> dict[str, object]:
    """Plain tensors, numbers and dicts only: safe to load with ``weights_only=True``."""
    cell, shown = unit
    return {"cell": asdict(cell), "shown": [asdict(e) for e in shown]}


def _unit_from_dict(d: dict[str, object]) -> Unit:
    raw = dict(d["cell"])  # type: ignore[call-overload]
    raw["threat"] = Threat(**raw["threat"])
    shown = [Example(**e) for e in d["shown"]]  # type: ignore[attr-defined]
    return CellOutcome(**raw), shown


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


def _merge(parts: list[_Part], room: int) -> _Part:
    """The ranks' shares as one: each sample's outcome comes from the rank that attacked it."""
    if len(parts) == 1:
        return parts[0]
    out = parts[0]
    for p in parts[1:]:
        m = p.owned
        out.broken[m] = p.broken[m]
        out.adversarial[m] = p.adversarial[m]
        out.undecided[m] = p.undecided[m]
        out.norms[m] = p.norms[m]
        out.adv_pred[m] = p.adv_pred[m]
        if out.sample_queries is not None and p.sample_queries is not None:
            out.sample_queries[m] = p.sample_queries[m]
        for q, dist in p.dist_trace.items():
            mine = out.dist_trace.setdefault(q, torch.full_like(dist, float("nan")))
            mine[m] = dist[m]
        out.shown = out.shown + p.shown
        out.trace = out.trace if out.trace is not None else p.trace
        for k, v in p.counts.items():
            out.counts[k] = out.counts.get(k, 0) + v
        out.seconds = max(out.seconds, p.seconds)
        out.owned = out.owned | m
    # a single process keeps the first new breaks in sample order; so does the merge
    out.shown = sorted(out.shown, key=lambda e: e.sample)[:room]
    return out


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


def _run_cell(
    clf: Classifier,
    x: Images,
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
    ctl: EngineControl | None = None,
    prior: Unit | None = None,
    keep_partial: bool = True,
) -> Unit | None:
    """Run one cell on this rank's batches, merge the ranks' shares, and judge it.

    A stop requested mid-cell (on any rank) drops the batch in flight; the cell's finished
    batches come back as a partial cell (``unfinished`` > 0), or None with ``keep_partial``
    off. ``prior``: the partial cell an interrupted run saved; only its unfinished samples
    run now, in the same batches an uninterrupted run would have formed.
    """
    ctl = ctl or EngineControl()
    shard = ctl.shard
    threat, attack = item.threat, item.attack
    minimal = attack.minimal_norm
    n = int(x.shape[0])
    left = targets & ~prior[0].attacked if prior is not None else targets
    idx_all = left.nonzero().flatten()
    total = int(idx_all.numel())
    batches = [
        (k, idx_all[start : start + batch_size])
        for k, start in enumerate(range(0, total, batch_size))
        if shard.owns(k)
    ]
    part = _Part(
        owned=torch.zeros(n, dtype=torch.bool),
        broken=torch.zeros(n, dtype=torch.bool),
        adversarial=torch.zeros(n, dtype=torch.bool),
        undecided=torch.zeros(n, dtype=torch.bool),
        norms=torch.full((n,), float("nan")),
        adv_pred=torch.full((n,), -1, dtype=torch.long),
        sample_queries=None,
        dist_trace={},
        shown=[],
        trace=None,
        counts=dict.fromkeys(
            ("budget", "bounds", "nonfinite", "silent", "mismatch", "queries", "grad_evals"), 0
        ),
        seconds=0.0,
    )
    label = f"{attack.name} {threat.norm} eps={threat.label}"
    progress.start(label, sum(int(b.numel()) for _, b in batches))
    access = attack_access(attack, threat)
    base = item.search or search or clf
    view = attack_view(base, access)
    separate = view is not clf  # its counters hold only the attack's own work
    black_box = access != "white-box"
    if black_box:
        part.sample_queries = torch.full((n,), -1, dtype=torch.long)
    q0, _ = clf.counters.snapshot()
    vq0, vg0 = view.counters.snapshot()
    verify_queries = 0
    t0 = time.perf_counter()

    def attack_batch(number: int, idx: torch.Tensor) -> None:
        nonlocal verify_queries
        xb = x[idx].to(clf.device)
        yb = y[idx].to(clf.device)
        bseed = cell_seed(seed, item.index, attack.name, threat.key, int(idx[0]))
        gen = torch.Generator().manual_seed(bseed)
        torch.manual_seed(bseed)  # models drawing from the global RNG: batch-keyed draws
        vq_batch = view.counters.queries
        try:
            # CPU convolutions in channels-last order; a stop lands within one model call
            with view.fast_layout(), interruptible(ctl.control):
                out = attack.run(view, xb, yb, threat, gen)
        except RuntimeError as exc:
            if _is_oom(exc):
                raise
            raise RuntimeFailure(f"{label}: the model raised during the attack: {exc}") from exc
        if part.sample_queries is not None:
            spent = view.counters.queries - vq_batch
            if out.queries is None or int(out.queries.sum()) != spent:
                part.counts["mismatch"] += int(idx.numel())
                # unreported or misreported: spread the counted total evenly (an estimate)
                part.sample_queries[idx] = spent // max(1, int(idx.numel()))
            else:
                part.sample_queries[idx] = out.queries.detach().cpu().long()
        for q, dist in out.distance_trace or []:
            tr = part.dist_trace.setdefault(q, torch.full((n,), float("nan")))
            tr[idx] = dist.detach().cpu()
        if out.x_adv.shape != xb.shape:
            raise RuntimeFailure(
                f"{label}: attack returned shape {list(out.x_adv.shape)}, expected "
                f"{list(xb.shape)}"
            )
        q_before = clf.counters.queries
        # one fresh pass, or on a randomized model the sequential test (one query per sample);
        # a long sequential test stops promptly too
        with interruptible(ctl.control):
            checked = verify_batch(
                clf, xb, out.x_adv, yb, threat, minimal=minimal, alpha=res.verdict_alpha
            )
        verify_queries += clf.counters.queries - q_before
        xa, size, verdict, b = checked.x_adv, checked.norms, checked.verdict, checked.broken
        part.counts["nonfinite"] += checked.nonfinite
        part.counts["bounds"] += checked.bounds
        part.counts["budget"] += checked.budget
        broken_out = verdict.nonfinite
        if bool(broken_out.any()):  # never count a NaN output as a break (or as robust)
            first = int(idx[broken_out][0])
            raise RuntimeFailure(
                f"{label}: the model returned NaN or inf logits on {int(broken_out.sum())} "
                f"candidate(s) of batch {number + 1} (first: sample {first})"
            )
        conf, pred = verdict.conf, verdict.pred
        if out.loss_trace is not None and part.trace is None:
            part.trace = out.loss_trace
        part.adversarial[idx] = checked.adversarial
        part.broken[idx] = b
        part.undecided[idx] = verdict.undecided  # minimal-norm: at any norm, like adversarial
        part.owned[idx] = True
        if out.claimed is not None:  # an open verdict contradicts no claim
            part.counts["silent"] += int((out.claimed.cpu() & verdict.right).sum())
        new = (b & ~done[idx]).nonzero().flatten()[: room - len(part.shown)]
        part.shown.extend(
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
        part.adv_pred[idx] = pred
        part.norms[idx] = size
        if on_batch is not None:
            fits = size <= threat.eps + TOLERANCE if minimal else torch.ones_like(b)
            on_batch(
                VerifiedBatch(
                    attack.name, item.index, threat, idx.cpu(), xa.cpu(), pred, b.cpu(),
                    verdict.undecided & fits,
                )
            )
        progress.advance(int(idx.numel()))

    def attack_split(number: int, idx: torch.Tensor) -> None:
        """Attack ``idx`` in chunks that fit; on out-of-memory halve the chunk and retry."""
        limit = ctl.control.max_batch if ctl.control is not None else None
        size = min(int(idx.numel()), limit or int(idx.numel()))
        start = 0
        while start < idx.numel():
            chunk = idx[start : start + size]
            try:
                attack_batch(number, chunk)
            except RuntimeError as exc:
                if not _is_oom(exc) or size <= 1:
                    if _is_oom(exc):
                        raise RuntimeFailure(
                            f"{label}: out of memory even at batch size 1 (batch {number + 1})"
                        ) from exc
                    raise
                size = max(1, size // 2)
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                if ctl.control is None:
                    ctl.control = RunControl()
                ctl.control.record_oom(label, size)
                continue
            start += size

    for number, idx in batches:
        if ctl.control is not None and ctl.control.should_stop():
            part.stopped = True
            break
        try:
            attack_split(number, idx)
        except StopRequested:  # the batch in flight is dropped; finished ones stay
            part.stopped = True
            break
        except RuntimeFailure as exc:
            part.error = (number, str(exc))
            break
    q1, _ = clf.counters.snapshot()
    part.counts["queries"] = view.counters.queries - vq0 if separate else q1 - q0 - verify_queries
    part.counts["grad_evals"] = view.counters.grad_evals - vg0
    part.seconds = time.perf_counter() - t0
    parts = shard.gather(part)
    errors = sorted(p.error for p in parts if p.error is not None)
    if errors:
        progress.finish()
        raise RuntimeFailure(errors[0][1])
    stopped = any(p.stopped for p in parts)
    if stopped:
        if ctl.control is not None and not ctl.control.should_stop():
            ctl.control.request_stop(INTERRUPTED, "another process of the run stopped")
        if not keep_partial or not any(bool(p.owned.any()) for p in parts):
            progress.finish()
            return prior if keep_partial else None  # nothing new finished
    merged = _merge(parts, room)
    # the running robust accuracy at this threat, over every rank, for the cell's log line
    broken_now = done | merged.broken
    if prior is not None:
        broken_now |= prior[0].broken
    tally(progress, int((res.correct & ~broken_now).sum()), n)
    progress.finish()
    attacked = left & merged.owned if stopped else left.clone()
    budget = getattr(attack.params, "queries", None)
    cell = CellOutcome(
        index=item.index,
        attack=attack.name,
        threat=threat,
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
        adversarial=merged.adversarial if minimal else None,
        minimal_norm=minimal,
        silent_failures=merged.counts["silent"],
        sample_queries=merged.sample_queries,
        query_budget=int(budget) if isinstance(budget, int) else None,
        query_mismatch=merged.counts["mismatch"],
        access_used=access,
        distance_trace=merged.dist_trace or None,
        undecided=merged.undecided,
        unfinished=int((left & ~attacked).sum()),
    )
    if prior is not None:
        return _combine(prior, (cell, merged.shown), room)
    return cell, merged.shown


def _combine(prior: Unit, new: Unit, room: int) -> Unit:
    """A resumed partial cell: the earlier run's finished samples plus this run's."""
    old, new_cell = prior[0], new[0]
    was = old.attacked

    def both(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return torch.where(was.view(-1, *([1] * (a.dim() - 1))), a, b)

    def pick(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
        if a is None or b is None:
            return b if a is None else a
        return both(a, b)

    traces = dict(new_cell.distance_trace or {})
    for q, dist in (old.distance_trace or {}).items():
        traces[q] = both(dist, traces.get(q, torch.full_like(dist, float("nan"))))
    cell = replace(
        new_cell,
        attacked=was | new_cell.attacked,
        broken=both(old.broken, new_cell.broken),
        norms=both(old.norms, new_cell.norms),
        adv_pred=both(old.adv_pred, new_cell.adv_pred),
        adversarial=pick(old.adversarial, new_cell.adversarial),
        sample_queries=pick(old.sample_queries, new_cell.sample_queries),
        undecided=pick(old.undecided, new_cell.undecided),
        distance_trace=traces or None,
        queries=old.queries + new_cell.queries,
        grad_evals=old.grad_evals + new_cell.grad_evals,
        seconds=old.seconds + new_cell.seconds,
        budget_violations=old.budget_violations + new_cell.budget_violations,
        bounds_violations=old.bounds_violations + new_cell.bounds_violations,
        nonfinite=old.nonfinite + new_cell.nonfinite,
        silent_failures=old.silent_failures + new_cell.silent_failures,
        query_mismatch=old.query_mismatch + new_cell.query_mismatch,
        loss_trace=old.loss_trace if old.loss_trace is not None else new_cell.loss_trace,
    )
    shown = sorted(prior[1] + new[1], key=lambda e: e.sample)[:room]
    return cell, shown


def _run_minimal(
    clf: Classifier,
    x: Images,
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
    ctl: EngineControl | None = None,
) -> Unit | None:
    """Run a minimal-norm attack once per norm, at the largest eps any of its threats asks for."""
    ctl = ctl or EngineControl()
    t = item.threat
    eps = max(
        p.threat.eps
        for p in plan
        if p.index == item.index and p.threat.norm == t.norm and p.threat.access == t.access
    )
    run_threat = Threat(t.norm, eps, t.access)
    none_done = torch.zeros_like(targets)
    return _stored_or_run(
        ctl,
        (ctl.variant, "minimal", item.index, item.attack.name, run_threat.key),
        lambda _prior: _run_cell(  # never partial: its derived cells need every sample
            clf, x, y, PlannedAttack(item.index, item.attack, run_threat, search=item.search),
            targets, seed, batch_size, progress, none_done, examples, res, on_batch, search, ctl,
            keep_partial=False,
        ),
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
    inside = cell.norms <= threat.eps + TOLERANCE
    fits = cell.adversarial & inside
    shown = [
        replace(e, threat_key=threat.key)
        for e in pool
        if bool(fits[e.sample]) and not bool(done[e.sample])
    ][:room]
    derived = replace(
        cell,
        threat=threat,
        broken=fits,
        undecided=cell.undecided & inside if cell.undecided is not None else None,
        queries=cell.queries if first else 0,
        grad_evals=cell.grad_evals if first else 0,
        seconds=cell.seconds if first else 0.0,
        shared_cost=not first,
    )
    return derived, shown
