"""The hardening loop: epochs of a method's batch loss, a held-out check after each epoch,
model selection on the best held-out robust accuracy, epoch checkpoints for ``--resume``,
and the training log.

Model selection follows Rice, Wong & Kolter 2020 ("Overfitting in adversarially robust deep
learning"): robust accuracy on held-out data peaks and then falls while training loss keeps
dropping, so the model kept is the epoch with the best held-out robust accuracy, not the last.
The held-out check attacks with PGD under both cross-entropy and the C&W margin loss and
counts a sample robust only if neither broke it (robaudit's worst case), so a method that
merely masks cross-entropy gradients (distillation) is not selected for it. For fast-at the
same check detects catastrophic overfitting (Wong et al. 2020): a sudden collapse of PGD
robust accuracy, after which training stops.

TorchScript modules train in place (their parameters; a module traced in eval mode keeps its
batch-norm statistics fixed, as tracing froze them). Determinism: one seed drives the data order, the attacks' random starts and torch's global
generator; all three generator states go into every checkpoint, so an interrupted run
resumed from epoch k ends with the same weights as an uninterrupted one (on CPU).
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.classifier import Classifier
from robaudit.errors import ModelLoadError, UserInputError
from robaudit.harden.checkpoints import (
    CHECKPOINT_DIR,
    CHECKPOINT_FORMAT,
    TrainState,
    checkpoint_files,
    clone_weights,
    load_checkpoint,
    save_checkpoint,
    state_from_dict,
)
from robaudit.harden.data import TrainingData
from robaudit.harden.methods import STAGE_LOSS, BatchContext, BatchOutcome
from robaudit.harden.options import ADVERSARIAL, HardenOptions
from robaudit.harden.records import (
    LOG_COLUMNS,
    BatchStats,
    EpochRecord,
    TrainOutcome,
    render_log,
    write_log,
)
from robaudit.progress import NullProgress, Progress
from robaudit.threat import Threat

__all__ = [  # the checkpoint and record names moved out of this module stay importable here
    "CHECKPOINT_DIR",
    "CHECKPOINT_FORMAT",
    "LOG_COLUMNS",
    "BatchStats",
    "EpochRecord",
    "Preprocessed",
    "TrainOutcome",
    "checkpoint_files",
    "heldout_accuracy",
    "load_checkpoint",
    "render_log",
    "selection_key",
    "train",
    "trainable_parameters",
    "write_log",
]

CO_DROP = 0.2  # fast-at: held-out PGD robust accuracy this far below its best = catastrophic
CYCLE_PEAK = 0.4  # fast-at's learning rate peaks at this share of training (Wong et al. 2020)
EVAL_BATCH = 256
EVAL_SEED_OFFSET = 7919  # the held-out check's random starts: the same every epoch



class Preprocessed(nn.Module):
    """The model as attacks see it: pixel-space input, the config's mean/std inside."""

    mean: torch.Tensor | None
    std: torch.Tensor | None

    def __init__(
        self, module: nn.Module, mean: Sequence[float] | None, std: Sequence[float] | None
    ) -> None:
        super().__init__()
        self.module = module
        self.register_buffer("mean", _stat(mean), persistent=False)
        self.register_buffer("std", _stat(std), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mean is not None:
            x = x - _per_channel(self.mean, x)
        if self.std is not None:
            x = x / _per_channel(self.std, x)
        out: torch.Tensor = self.module(x)
        return out


def _stat(v: Sequence[float] | None) -> torch.Tensor | None:
    return None if v is None else torch.tensor(list(v), dtype=torch.float32)


def _per_channel(stat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """One value per entry of dim 1 (the channels of N x C x ..., the features of N x F),
    broadcast over the other dims of any input rank."""
    return stat.view(1, -1, *([1] * (x.dim() - 2)))


def trainable_parameters(module: nn.Module, name: str) -> list[nn.Parameter]:
    """The floating-point parameters (all switched to requires_grad); none is an error."""
    params = [p for p in module.parameters() if p.is_floating_point()]
    if not params:
        raise ModelLoadError(
            f"{name}: the model has no floating-point parameters, so it cannot be trained "
            "(harden needs a TorchScript file, a state_dict with model.arch, or a .pt2 program)"
        )
    for p in params:
        p.requires_grad_(True)
    return params



@dataclass
class _Run:
    """What a training run carries from epoch to epoch (a checkpoint saves all of it)."""

    module: nn.Module
    params: list[nn.Parameter]
    net: Preprocessed
    clf: Classifier
    optimizer: torch.optim.Optimizer
    data_gen: torch.Generator
    attack_gen: torch.Generator
    initial: dict[str, torch.Tensor] | None  # distill: the student starts from these weights
    device: torch.device
    teacher: Preprocessed | None = None
    state: TrainState = field(default_factory=TrainState)


def train(
    module: nn.Module,
    data: TrainingData,
    opts: HardenOptions,
    threat: Threat,
    *,
    num_classes: int,
    bounds: tuple[float, float],
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    seed: int = 0,
    device: torch.device | None = None,
    out: Path | None = None,
    resume: bool = False,
    identity: dict[str, Any] | None = None,
    model_name: str = "model",
    progress: Progress | None = None,
    on_batch: Callable[[BatchStats], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainOutcome:
    """Train ``module`` in place with ``opts.method`` and leave the selected epoch's weights
    in it. With ``out``, every epoch writes a checkpoint under ``out/checkpoints`` and the
    log to ``out/training_log.csv``; ``resume`` continues from the last checkpoint there.
    ``identity`` (e.g. the input model's sha256) must match the checkpoint's on resume.
    """
    device = device or torch.device("cpu")
    bar = progress or NullProgress()
    t_start = time.perf_counter()
    run = _start(module, opts, num_classes, bounds, mean, std, seed, device, model_name)
    fingerprint = {"options": opts.fingerprint(), "identity": {"--seed": seed, **(identity or {})}}
    ckpt_dir = out / CHECKPOINT_DIR if out is not None else None
    resumed_from = None
    if resume:
        if ckpt_dir is None:
            raise UserInputError("--resume needs an output folder with checkpoints")
        _resume(run, load_checkpoint(ckpt_dir, fingerprint))
        resumed_from = run.state.epoch
    while run.state.epoch < opts.total_epochs and run.state.stopped is None:
        record = _epoch(run, data, opts, threat, seed, bar, on_batch)
        if ckpt_dir is not None:
            save_checkpoint(
                ckpt_dir, fingerprint, run.module, run.optimizer, run.data_gen, run.attack_gen,
                run.state, run.initial, run.teacher.module if run.teacher is not None else None,
            )
        if out is not None:
            write_log(out / "training_log.csv", run.state.records, run.state.best_epoch)
        if on_epoch is not None:
            on_epoch(record)
    return _finish(run, opts, t_start, resumed_from)


def _start(
    module: nn.Module, opts: HardenOptions, num_classes: int, bounds: tuple[float, float],
    mean: Sequence[float] | None, std: Sequence[float] | None, seed: int, device: torch.device,
    model_name: str,
) -> _Run:
    """The model on its device, the optimizer, and the seeded generators of a fresh run."""
    module.to(device)
    params = trainable_parameters(module, model_name)
    net = Preprocessed(module, mean, std).to(device)
    clf = Classifier(net, num_classes=num_classes, bounds=bounds, device=device)
    initial = clone_weights(module.state_dict()) if opts.method == "distill" else None
    optimizer = torch.optim.Adam(params, lr=opts.learning_rate)
    data_gen = torch.Generator().manual_seed(seed)
    attack_gen = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed)  # models that draw from the global generator (dropout)
    return _Run(module, params, net, clf, optimizer, data_gen, attack_gen, initial, device)


def _resume(run: _Run, ck: dict[str, Any]) -> None:
    """Put the weights, the optimizer, every generator and the loop's state back."""
    run.module.load_state_dict(ck["model"])
    run.optimizer.load_state_dict(ck["optimizer"])
    run.data_gen.set_state(ck["rng"]["data"])
    run.attack_gen.set_state(ck["rng"]["attack"])
    torch.set_rng_state(ck["rng"]["torch"])
    if ck.get("initial") is not None:
        run.initial = ck["initial"]
    if ck.get("teacher") is not None:
        run.teacher = _make_teacher(run.module, ck["teacher"], run.net)
    run.state = state_from_dict(ck["state"])


@dataclass
class _Tally:
    """An epoch's running sums over its batches."""

    loss: float = 0.0
    seen: int = 0
    clean: int = 0
    adv: int = 0
    adv_ok: int = 0
    lr: float = 0.0  # the learning rate of the last batch

    def add(self, res: BatchOutcome) -> None:
        self.loss += float(res.loss.detach()) * res.n
        self.seen += res.n
        self.clean += res.clean_correct
        self.adv += res.n_adv
        self.adv_ok += res.adv_correct


def _epoch(
    run: _Run, data: TrainingData, opts: HardenOptions, threat: Threat, seed: int,
    bar: Progress, on_batch: Callable[[BatchStats], None] | None,
) -> EpochRecord:
    """One epoch: the batches, the held-out check, the log record and model selection."""
    state = run.state
    epoch = state.epoch  # 0-based over all stages
    stage_i, e_in_stage = divmod(epoch, opts.num_epochs)
    stage = opts.stages[stage_i]
    if stage == "student" and e_in_stage == 0 and run.teacher is None:
        # the teacher is done: freeze it, and start the student from the original weights
        run.teacher = _make_teacher(run.module, clone_weights(run.module.state_dict()), run.net)
        assert run.initial is not None
        run.module.load_state_dict(run.initial)
        run.optimizer = torch.optim.Adam(run.params, lr=opts.learning_rate)
    eps = _warm_eps(threat.eps, e_in_stage, opts.warmup_epochs())
    t0 = time.perf_counter()
    tally = _batches(run, data, opts, Threat(threat.norm, eps, threat.access), stage, bar, on_batch)
    run.net.eval()
    clean_acc, r_ce, r_margin, r_worst = heldout_accuracy(
        run.clf, data.x_held, data.y_held, threat, opts.eval_steps, seed + EVAL_SEED_OFFSET
    )
    co = None
    if opts.method == "fast-at":
        co = state.best_robust_seen >= 0 and r_worst < state.best_robust_seen - CO_DROP
    record = EpochRecord(
        epoch=epoch + 1, stage=stage, loss=tally.loss / max(1, tally.seen),
        train_clean_acc=tally.clean / max(1, tally.seen),
        train_adv_acc=(tally.adv_ok / tally.adv) if tally.adv else None,
        heldout_clean_acc=clean_acc, heldout_robust_acc=r_worst, heldout_robust_ce=r_ce,
        heldout_robust_margin=r_margin,
        eps=eps if opts.method in ADVERSARIAL else 0.0, lr=tally.lr,
        seconds=time.perf_counter() - t0, catastrophic_overfitting=co,
    )
    state.records.append(record)
    state.epoch += 1
    if stage == opts.stages[-1]:
        _select(state, record, run.module, opts)
        if co:
            state.catastrophic_epoch = record.epoch
            state.stopped = (
                f"catastrophic overfitting at epoch {record.epoch}: held-out PGD robust "
                f"accuracy fell from {state.best_robust_seen:.1%} to {r_worst:.1%}"
            )
        state.best_robust_seen = max(state.best_robust_seen, r_worst)
    state.elapsed += time.perf_counter() - t0
    return record


def _batches(
    run: _Run, data: TrainingData, opts: HardenOptions, t_epoch: Threat, stage: str,
    bar: Progress, on_batch: Callable[[BatchStats], None] | None,
) -> _Tally:
    """The epoch's optimizer steps over a fresh permutation of the training data."""
    epoch, total = run.state.epoch, opts.total_epochs
    e_in_stage = epoch % opts.num_epochs
    steps_per_epoch = math.ceil(data.n_train / opts.batch_size)
    loss_fn = STAGE_LOSS[(opts.method, stage)]
    bar.start(f"epoch {epoch + 1}/{total} {opts.method}" + (f" ({stage})" if stage != "train" else ""),
              steps_per_epoch)
    perm = torch.randperm(data.n_train, generator=run.data_gen)
    tally = _Tally(lr=opts.learning_rate)
    for b in range(steps_per_epoch):
        idx = perm[b * opts.batch_size : (b + 1) * opts.batch_size]
        xb, yb = data.x[idx].to(run.device), data.y[idx].to(run.device)
        tally.lr = _lr(opts, e_in_stage * steps_per_epoch + b, opts.num_epochs * steps_per_epoch)
        for group in run.optimizer.param_groups:
            group["lr"] = tally.lr
        run.net.train()
        ctx = BatchContext(run.net, run.clf, t_epoch, opts, run.attack_gen, run.teacher)
        res = loss_fn(ctx, xb, yb)
        run.optimizer.zero_grad(set_to_none=True)
        res.loss.backward()
        run.optimizer.step()
        tally.add(res)
        bar.advance(1)
        if on_batch is not None:
            on_batch(BatchStats(epoch + 1, total, stage, tally.loss / tally.seen, tally.clean / tally.seen,
                                tally.adv_ok / tally.adv if tally.adv else None))
    bar.finish()
    return tally


def _finish(run: _Run, opts: HardenOptions, t_start: float, resumed_from: int | None) -> TrainOutcome:
    """Leave the selected epoch's weights in the model, in eval mode, with gradients on."""
    state = run.state
    if state.best_weights is not None:
        run.module.load_state_dict(state.best_weights)
    run.module.eval()
    for p in run.params:
        p.requires_grad_(True)  # as loaded models come: gradients for white-box attacks
    notes = []
    if state.stopped is None and len(state.records) < opts.total_epochs:
        notes.append("training ended early")
    return TrainOutcome(
        records=tuple(state.records),
        best_epoch=state.best_epoch,
        stopped=state.stopped,
        catastrophic_epoch=state.catastrophic_epoch,
        seconds=state.elapsed if resumed_from is not None else time.perf_counter() - t_start,
        resumed_from=resumed_from,
        notes=tuple(notes),
    )


def selection_key(record: EpochRecord, method: str) -> tuple[float, float]:
    """What model selection maximises: held-out robust accuracy, ties broken by clean accuracy.

    Distillation trains against no attacker, so its worst-case held-out robust accuracy stays
    at the undefended level and differs between epochs by noise only: it selects on clean
    accuracy (what the distilled model must keep), robust accuracy breaking ties.
    """
    if method in ADVERSARIAL:
        return (record.heldout_robust_acc, record.heldout_clean_acc)
    return (record.heldout_clean_acc, record.heldout_robust_acc)


def _select(state: TrainState, record: EpochRecord, module: nn.Module, opts: HardenOptions) -> None:
    """Keep the epoch with the best :func:`selection_key` (the earliest among equals)."""
    key = selection_key(record, opts.method)
    if key > state.best_key:
        state.best_key = key
        state.best_epoch = record.epoch
        state.best_weights = clone_weights(module.state_dict())
        state.stale = 0
    else:
        state.stale += 1
        if opts.patience is not None and state.stale >= opts.patience:
            state.stopped = (
                f"early stop: no better held-out robust accuracy for {opts.patience} epoch(s) "
                f"after epoch {state.best_epoch}"
            )


def _warm_eps(eps: float, epoch_in_stage: int, warmup: int) -> float:
    """Linear eps ramp over the first ``warmup`` epochs (full eps from then on)."""
    if warmup <= 0:
        return eps
    return eps * min(1.0, (epoch_in_stage + 1) / warmup)


def _lr(opts: HardenOptions, step: int, total_steps: int) -> float:
    """Constant, or fast-at's triangular cycle: 0 -> lr at 40% of training -> 0."""
    if opts.method != "fast-at":
        return opts.learning_rate
    t = (step + 1) / total_steps
    if t <= CYCLE_PEAK:
        return opts.learning_rate * t / CYCLE_PEAK
    return opts.learning_rate * max(0.0, 1.0 - t) / (1.0 - CYCLE_PEAK)


def heldout_accuracy(
    clf: Classifier, x: torch.Tensor, y: torch.Tensor, threat: Threat, steps: int, seed: int
) -> tuple[float, float, float, float]:
    """Clean, PGD-CE, PGD-margin and worst-case robust accuracy on held-out data, each break
    confirmed by a fresh forward pass (as the audit's engine does)."""
    gen = torch.Generator().manual_seed(seed)
    n = int(y.numel())
    ok_clean = ok_ce = ok_margin = ok_both = 0
    attacks = [PGD(PGDParams(steps=steps, loss=loss)) for loss in ("ce", "margin")]
    for i in range(0, n, EVAL_BATCH):
        xb, yb = x[i : i + EVAL_BATCH].to(clf.device), y[i : i + EVAL_BATCH].to(clf.device)
        correct = clf.predict(xb) == yb
        standing = []
        for attack in attacks:
            x_adv = attack.run(clf, xb, yb, threat, gen).x_adv
            standing.append(correct & (clf.predict(x_adv) == yb))
        ok_clean += int(correct.sum())
        ok_ce += int(standing[0].sum())
        ok_margin += int(standing[1].sum())
        ok_both += int((standing[0] & standing[1]).sum())
    return ok_clean / n, ok_ce / n, ok_margin / n, ok_both / n


def _make_teacher(
    module: nn.Module, weights: dict[str, torch.Tensor], net: Preprocessed
) -> Preprocessed:
    """A frozen copy of the model with the teacher's weights, preprocessing included."""
    inner = copy.deepcopy(module)
    inner.load_state_dict(weights)
    teacher = Preprocessed(inner, None, None)
    teacher.mean, teacher.std = net.mean, net.std
    return teacher.eval()  # used under no_grad only
