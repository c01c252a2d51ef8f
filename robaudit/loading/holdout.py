"""Training images for a universal patch: never the samples the audit judges.

A universal patch (Brown et al. 2017) is trained on one set of images and judged on another;
trained on the audited samples themselves it would be a per-sample attack in disguise. The
audit's ``data.split`` is ``test`` for the sources that have a training split (builtin digits,
torchvision datasets, ImageFolder ``DIR/train``): the patch trains on ``train``. Any other
source (an ``.npz`` file, a folder without splits, an audited ``train`` split) gives the
patch the samples of the same split that the seeded subset left out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from robaudit.errors import DataError
from robaudit.loading.data import DataSet, load_data


@dataclass(frozen=True)
class Holdout:
    """The images a universal patch trains on, and where they came from (for the report)."""

    x: torch.Tensor
    y: torch.Tensor
    split: str
    why: str


def has_train_split(source: str) -> bool:
    """Whether ``split: train`` gives other images than ``test`` (an .npz file ignores the split,
    a folder without ``train/`` is the same folder)."""
    if source.startswith(("builtin:", "torchvision:")):
        return True
    return (Path(source).expanduser() / "train").is_dir()


def universal_training_data(
    source: str,
    split: str,
    *,
    input_shape: tuple[int, ...],
    bounds: tuple[float, float],
    num_classes: int,
    audited: tuple[int, ...],
    limit: int | None = None,
    seed: int = 0,
) -> Holdout:
    """Up to ``limit`` images disjoint from the audited ones (``audited``: their positions in
    ``split``); a DataError when the source has none left."""

    def load(which: str, samples: int | None) -> DataSet:
        return load_data(source, split=which, input_shape=input_shape, bounds=bounds,
                         num_classes=num_classes, samples=samples, seed=seed)  # fmt: skip

    if split == "test" and has_train_split(source):
        data = load("train", limit)
        return Holdout(data.x, data.y, "train", "the source's train split")
    data = load(split, None)
    seen = set(audited)
    keep = [i for i, pos in enumerate(data.indices) if pos not in seen]
    if not keep:
        raise DataError(
            f"universal patch: data source '{source}' ({split}) has no samples outside the "
            f"{len(seen)} audited ones to train on; audit fewer (data.samples) or give a "
            "source with a train split"
        )
    if limit is not None and len(keep) > limit:
        g = torch.Generator().manual_seed(seed)
        keep = sorted(torch.tensor(keep)[torch.randperm(len(keep), generator=g)[:limit]].tolist())
    idx = torch.tensor(keep)
    why = f"the {len(keep)} samples of split '{split}' not audited"
    return Holdout(data.x[idx], data.y[idx], split, why)
