"""What training reports: one record per epoch, running batch figures, the outcome, and the
training log (``training_log.csv``) written from the records."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from robaudit.harden.export import atomic_write_text

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
