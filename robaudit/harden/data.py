"""Training data for hardening: the config's source at split ``train`` (or ``--train-data``),
split once, by seed, into the part trained on and a held-out part for model selection.

The held-out part comes from the training data, never from the test split the audits use
(Rice, Wong & Kolter 2020 select on held-out *training* data for exactly that reason).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from robaudit.config import Config
from robaudit.errors import DataError, UserInputError
from robaudit.loading.data import load_data


@dataclass(frozen=True)
class TrainingData:
    """Pixel-space tensors (float32 NxCxHxW in the bounds, int64 labels) and their origin."""

    x: torch.Tensor
    y: torch.Tensor
    x_held: torch.Tensor
    y_held: torch.Tensor
    source: str
    split: str

    @property
    def n_train(self) -> int:
        return int(self.y.numel())

    @property
    def n_held(self) -> int:
        return int(self.y_held.numel())


def check_audit_split(cfg: Config, config_name: str) -> None:
    """The before/after audits must run on data the training never sees."""
    if cfg.data.split in ("train", "all"):
        raise UserInputError(
            f"{config_name}: data.split is {cfg.data.split!r}, but the audits must run on held-out "
            "data; set data.split: test (harden trains on the train split)"
        )


def training_source(cfg: Config, train_data: str | None) -> str:
    """Where the training data come from; a source without a separate train split is refused
    (training on the file the audit evaluates would make the comparison meaningless)."""
    if train_data is not None:
        if not train_data.startswith(("builtin:", "torchvision:")) and not Path(train_data).exists():
            raise UserInputError(f"--train-data {train_data}: not found")
        return train_data
    src = cfg.data.source
    if src.startswith(("builtin:", "torchvision:")):
        return src
    path = Path(src).expanduser()
    if path.is_dir() and (path / "train").is_dir():
        return src
    raise UserInputError(
        f"--train-data: the config's data source '{src}' has no separate train split (a .npz "
        "file or a folder without train/ holds one set, the one the audit evaluates); give "
        "--train-data PATH"
    )


def load_training_data(
    cfg: Config, source: str, *, holdout: float, samples: int | None, seed: int
) -> TrainingData:
    """Load split ``train`` of ``source`` with the loaders' checks, then hold out a share."""
    ds = load_data(
        source,
        split="train",
        input_shape=cfg.model.shape,
        bounds=cfg.model.bounds,
        num_classes=cfg.model.classes,
        samples=samples,
        seed=seed,
    )
    n = int(ds.y.numel())
    n_held = max(1, round(holdout * n))
    if n - n_held < 1:
        raise DataError(
            f"training data '{source}' has {n} sample(s): too few to hold {n_held} out for "
            "model selection and still train"
        )
    perm = torch.from_numpy(np.random.RandomState(seed).permutation(n))
    held, train = perm[:n_held], perm[n_held:]
    return TrainingData(
        x=ds.x[train], y=ds.y[train], x_held=ds.x[held], y_held=ds.y[held],
        source=source, split="train",
    )
