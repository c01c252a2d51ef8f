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
import csv
import io
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.classifier import Classifier
from robaudit.errors import ModelLoadError, UserInputError
from robaudit.harden.data import TrainingData
from robaudit.harden.export import atomic_torch_save, atomic_write_text
from robaudit.harden.methods import STAGE_LOSS, BatchContext
from robaudit.harden.options import ADVERSARIAL, HardenOptions
from robaudit.progress import NullProgress, Progress
from robaudit.threat import Threat

CHECKPOINT_FORMAT = "robaudit-harden-checkpoint/1"
CHECKPOINT_DIR = "checkpoints"
CO_DROP = 0.2  # fast-at: held-out PGD robust accuracy this far below its best = catastrophic
CYCLE_PEAK = 0.4  # fast-at's learning rate peaks at this share of training (Wong et al. 2020)
EVAL_BATCH = 256
EVAL_SEED_OFFSET = 7919  # the held-out check's random starts: the same every epoch

LOG_COLUMNS = (
    "epoch", "stage", "loss", "train_clean_acc", "train_adv_acc", "heldout_clean_acc",
    "heldout_robust_acc", "heldout_robust_ce", "heldout_robust_margin", "eps", "lr", "seconds",
    "catastrophic_overfitting", "selected",
)


@dataclass(frozen=True)
class EpochRecord:
    """One row of the training log."""

    epoch: int  # 1-based over all stages
    stage: str  # "train", or distill's "teacher" / "student"
    loss: float  # mean batch loss
    train_clean_acc: float  # clean accuracy on the training batches (before the update)
    train_adv_acc: float | None  # accuracy on the batches' adversarial examples (None: none)
    heldout_clean_acc: float
    heldout_robust_acc: float  # worst case over PGD-CE and PGD-margin, per sample
    heldout_robust_ce: float
    heldout_robust_margin: float
    eps: float  # the training eps of this epoch (ramped during warm-up)
    lr: float  # learning rate at the epoch's last batch
    seconds: float
    catastrophic_overfitting: bool | None = None  # fast-at only


@dataclass(frozen=True)
class BatchStats:
    """Running figures of the current epoch, for progress displays."""

    epoch: int
    total_epochs: int
    stage: str
    loss: float
    clean_acc: float
    adv_acc: float | None


@dataclass(frozen=True)
class TrainOutcome:
    """What training produced; the module passed in holds the selected epoch's weights."""

    records: tuple[EpochRecord, ...]
    best_epoch: int
    stopped: str | None  # why training ended before its last epoch, if it did
    catastrophic_epoch: int | None
    seconds: float
    resumed_from: int | None  # the epoch a --resume continued after
    notes: tuple[str, ...] = ()


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
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        out: torch.Tensor = self.module(x)
        return out


def _stat(v: Sequence[float] | None) -> torch.Tensor | None:
    return None if v is None else torch.tensor(list(v), dtype=torch.float32).view(1, -1, 1, 1)


@dataclass
class _State:
    """Everything a checkpoint holds besides the weights and the optimizer."""

    epoch: int = 0  # finished epochs
    records: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_key: tuple[float, float] = (-1.0, -1.0)
    best_weights: dict[str, torch.Tensor] | None = None
    best_robust_seen: float = -1.0
    stale: int = 0
    stopped: str | None = None
    catastrophic_epoch: int | None = None
    elapsed: float = 0.0


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
    module.to(device)
    params = trainable_parameters(module, model_name)
    net = Preprocessed(module, mean, std).to(device)
    clf = Classifier(net, num_classes=num_classes, bounds=bounds, device=device)
    initial = _clone(module.state_dict()) if opts.method == "distill" else None
    teacher: Preprocessed | None = None
    optimizer = torch.optim.Adam(params, lr=opts.learning_rate)
    data_gen = torch.Generator().manual_seed(seed)
    attack_gen = torch.Generator().manual_seed(seed + 1)
    torch.manual_seed(seed)  # models that draw from the global generator (dropout)
    state = _State()
    fingerprint = {"options": opts.fingerprint(), "identity": {"--seed": seed, **(identity or {})}}
    ckpt_dir = out / CHECKPOINT_DIR if out is not None else None
    resumed_from = None
    if resume:
        if ckpt_dir is None:
            raise UserInputError("--resume needs an output folder with checkpoints")
        ck = load_checkpoint(ckpt_dir, fingerprint)
        module.load_state_dict(ck["model"])
        optimizer.load_state_dict(ck["optimizer"])
        data_gen.set_state(ck["rng"]["data"])
        attack_gen.set_state(ck["rng"]["attack"])
        torch.set_rng_state(ck["rng"]["torch"])
        if ck.get("initial") is not None:
            initial = ck["initial"]
        if ck.get("teacher") is not None:
            teacher = _make_teacher(module, ck["teacher"], net)
        state = _state_from(ck["state"])
        resumed_from = state.epoch
    steps_per_epoch = math.ceil(data.n_train / opts.batch_size)
    total = opts.total_epochs
    final_stage = opts.stages[-1]
    while state.epoch < total and state.stopped is None:
        epoch = state.epoch  # 0-based over all stages
        stage_i, e_in_stage = divmod(epoch, opts.num_epochs)
        stage = opts.stages[stage_i]
        if stage == "student" and e_in_stage == 0 and teacher is None:
            # the teacher is done: freeze it, and start the student from the original weights
            teacher = _make_teacher(module, _clone(module.state_dict()), net)
            assert initial is not None
            module.load_state_dict(initial)
            optimizer = torch.optim.Adam(params, lr=opts.learning_rate)
        eps = _warm_eps(threat.eps, e_in_stage, opts.warmup_epochs())
        t_epoch = Threat(threat.norm, eps, threat.access)
        loss_fn = STAGE_LOSS[(opts.method, stage)]
        t0 = time.perf_counter()
        bar.start(f"epoch {epoch + 1}/{total} {opts.method}" + (f" ({stage})" if stage != "train" else ""),
                  steps_per_epoch)
        perm = torch.randperm(data.n_train, generator=data_gen)
        tot_loss, n_seen, n_clean, n_adv, n_adv_ok = 0.0, 0, 0, 0, 0
        lr = opts.learning_rate
        for b in range(steps_per_epoch):
            idx = perm[b * opts.batch_size : (b + 1) * opts.batch_size]
            xb, yb = data.x[idx].to(device), data.y[idx].to(device)
            lr = _lr(opts, e_in_stage * steps_per_epoch + b, opts.num_epochs * steps_per_epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            net.train()
            ctx = BatchContext(net, clf, t_epoch, opts, attack_gen, teacher)
            res = loss_fn(ctx, xb, yb)
            optimizer.zero_grad(set_to_none=True)
            res.loss.backward()
            optimizer.step()
            tot_loss += float(res.loss.detach()) * res.n
            n_seen += res.n
            n_clean += res.clean_correct
            n_adv += res.n_adv
            n_adv_ok += res.adv_correct
            bar.advance(1)
            if on_batch is not None:
                on_batch(BatchStats(epoch + 1, total, stage, tot_loss / n_seen, n_clean / n_seen,
                                    n_adv_ok / n_adv if n_adv else None))
        bar.finish()
        net.eval()
        clean_acc, r_ce, r_margin, r_worst = heldout_accuracy(
            clf, data.x_held, data.y_held, threat, opts.eval_steps, seed + EVAL_SEED_OFFSET
        )
        co = None
        if opts.method == "fast-at":
            co = state.best_robust_seen >= 0 and r_worst < state.best_robust_seen - CO_DROP
        record = EpochRecord(
            epoch=epoch + 1, stage=stage, loss=tot_loss / max(1, n_seen),
            train_clean_acc=n_clean / max(1, n_seen),
            train_adv_acc=(n_adv_ok / n_adv) if n_adv else None,
            heldout_clean_acc=clean_acc, heldout_robust_acc=r_worst, heldout_robust_ce=r_ce,
            heldout_robust_margin=r_margin,
            eps=eps if opts.method in ADVERSARIAL else 0.0, lr=lr,
            seconds=time.perf_counter() - t0, catastrophic_overfitting=co,
        )
        state.records.append(record)
        state.epoch += 1
        if stage == final_stage:
            _select(state, record, module, opts)
            if co:
                state.catastrophic_epoch = record.epoch
                state.stopped = (
                    f"catastrophic overfitting at epoch {record.epoch}: held-out PGD robust "
                    f"accuracy fell from {state.best_robust_seen:.1%} to {r_worst:.1%}"
                )
            state.best_robust_seen = max(state.best_robust_seen, r_worst)
        state.elapsed += time.perf_counter() - t0
        if ckpt_dir is not None:
            _save_checkpoint(ckpt_dir, fingerprint, module, optimizer, data_gen, attack_gen,
                             state, initial, teacher)
        if out is not None:
            write_log(out / "training_log.csv", state.records, state.best_epoch)
        if on_epoch is not None:
            on_epoch(record)
    if state.best_weights is not None:
        module.load_state_dict(state.best_weights)
    module.eval()
    for p in params:
        p.requires_grad_(True)  # as loaded models come: gradients for white-box attacks
    notes = []
    if state.stopped is None and len(state.records) < total:
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


def _select(state: _State, record: EpochRecord, module: nn.Module, opts: HardenOptions) -> None:
    """Keep the epoch with the best :func:`selection_key` (the earliest among equals)."""
    key = selection_key(record, opts.method)
    if key > state.best_key:
        state.best_key = key
        state.best_epoch = record.epoch
        state.best_weights = _clone(module.state_dict())
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


def _clone(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in sd.items()}


def _make_teacher(
    module: nn.Module, weights: dict[str, torch.Tensor], net: Preprocessed
) -> Preprocessed:
    """A frozen copy of the model with the teacher's weights, preprocessing included."""
    inner = copy.deepcopy(module)
    inner.load_state_dict(weights)
    teacher = Preprocessed(inner, None, None)
    teacher.mean, teacher.std = net.mean, net.std
    return teacher.eval()  # used under no_grad only


# ----------------------------------------------------------------------------- checkpoints


def checkpoint_files(ckpt_dir: Path) -> list[Path]:
    """Epoch checkpoints in the folder, oldest first."""
    return sorted(ckpt_dir.glob("epoch-*.pt")) if ckpt_dir.is_dir() else []


def load_checkpoint(ckpt_dir: Path, fingerprint: dict[str, Any]) -> dict[str, Any]:
    """The last epoch checkpoint; it must come from a run with the same settings and model."""
    files = checkpoint_files(ckpt_dir)
    if not files:
        raise UserInputError(f"--resume: no epoch checkpoint in {ckpt_dir}; run without --resume")
    path = files[-1]
    try:
        ck: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise UserInputError(f"--resume: {path} cannot be read ({type(exc).__name__})") from None
    if not isinstance(ck, dict) or ck.get("format") != CHECKPOINT_FORMAT:
        raise UserInputError(f"--resume: {path} is not a robaudit harden checkpoint")
    mine, theirs = fingerprint, ck.get("fingerprint", {})
    for part in ("identity", "options"):
        a, b = mine.get(part, {}), theirs.get(part, {})
        for k in dict.fromkeys([*a, *b]):  # field order: --method first
            if a.get(k) != b.get(k):
                flag = k if part == "identity" else "--" + k.replace("_", "-")
                raise UserInputError(
                    f"--resume: the checkpoint in {ckpt_dir} was made with {flag} "
                    f"{b.get(k)!r}, this run has {a.get(k)!r}; use the same settings or another --out"
                )
    return ck


def _save_checkpoint(
    ckpt_dir: Path,
    fingerprint: dict[str, Any],
    module: nn.Module,
    optimizer: torch.optim.Optimizer,
    data_gen: torch.Generator,
    attack_gen: torch.Generator,
    state: _State,
    initial: dict[str, torch.Tensor] | None,
    teacher: Preprocessed | None,
) -> None:
    """Write this epoch's checkpoint atomically, then drop the older ones."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    teacher_sd = _clone(teacher.module.state_dict()) if teacher is not None else None
    payload = {
        "format": CHECKPOINT_FORMAT,
        "fingerprint": fingerprint,
        "model": _clone(module.state_dict()),
        "optimizer": optimizer.state_dict(),
        "rng": {
            "data": data_gen.get_state(),
            "attack": attack_gen.get_state(),
            "torch": torch.get_rng_state(),
        },
        "initial": initial,
        "teacher": teacher_sd,
        "state": _state_dict(state),
    }
    path = ckpt_dir / f"epoch-{state.epoch:04d}.pt"
    atomic_torch_save(payload, path)
    for old in checkpoint_files(ckpt_dir):
        if old != path:
            old.unlink(missing_ok=True)


def _state_dict(s: _State) -> dict[str, Any]:
    return {
        "epoch": s.epoch,
        "records": [asdict(r) for r in s.records],
        "best_epoch": s.best_epoch,
        "best_key": list(s.best_key),
        "best_weights": s.best_weights,
        "best_robust_seen": s.best_robust_seen,
        "stale": s.stale,
        "stopped": s.stopped,
        "catastrophic_epoch": s.catastrophic_epoch,
        "elapsed": s.elapsed,
    }


def _state_from(d: dict[str, Any]) -> _State:
    return _State(
        epoch=int(d["epoch"]),
        records=[EpochRecord(**r) for r in d["records"]],
        best_epoch=int(d["best_epoch"]),
        best_key=(float(d["best_key"][0]), float(d["best_key"][1])),
        best_weights=d["best_weights"],
        best_robust_seen=float(d["best_robust_seen"]),
        stale=int(d["stale"]),
        stopped=d["stopped"],
        catastrophic_epoch=d["catastrophic_epoch"],
        elapsed=float(d["elapsed"]),
    )


# ----------------------------------------------------------------------------- the log


def render_log(records: Sequence[EpochRecord], selected: int) -> str:
    """The training log as CSV text: one row per epoch, the selected epoch marked."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(LOG_COLUMNS), lineterminator="\n")
    w.writeheader()
    for r in records:
        row: dict[str, Any] = {**asdict(r), "selected": r.epoch == selected}
        for k, v in row.items():
            if v is None:
                row[k] = ""
            elif isinstance(v, float) and k != "eps" and k != "lr":
                row[k] = round(v, 6)
        w.writerow(row)
    return buf.getvalue()


def write_log(path: Path, records: Sequence[EpochRecord], selected: int) -> None:
    atomic_write_text(path, render_log(records, selected))
