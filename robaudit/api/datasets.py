"""Every form of data the API takes (a source, arrays, a Dataset, a DataLoader) as a
:class:`~robaudit.loading.data.DataSet`, through the loaders' own checks."""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import replace
from typing import Any, TypeAlias

import numpy as np
import torch

from robaudit.config import Config
from robaudit.errors import DataError
from robaudit.loading.data import (
    DataSet,
    array_input_shape,
    choose_subset,
    dataset_from_arrays,
    load_data,
    peek_input_shape,
)

DataInput: TypeAlias = (
    "str | os.PathLike[str] | tuple[Any, Any] | torch.utils.data.Dataset[Any] | "
    "torch.utils.data.DataLoader[Any] | None"
)


def data_shape(data: DataInput, source: str, split: str) -> tuple[tuple[int, ...], str]:
    """The input shape the data implies, and how the report names where it came from."""
    if data is None or isinstance(data, (str, os.PathLike)):
        src = source if data is None else str(data)
        return peek_input_shape(src, split), f"the data ({src})"
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return array_input_shape(data[0], "data x"), "the data arrays"
    first: Any = None
    if isinstance(data, torch.utils.data.DataLoader):
        first = _item_xy(next(iter(data)), "DataLoader")[0]
        return array_input_shape(first, "DataLoader batch"), "the DataLoader's first batch"
    if isinstance(data, torch.utils.data.Dataset):
        item = data[0] if hasattr(data, "__getitem__") else next(iter(data))
        first = _item_xy(item, "Dataset")[0]
        return array_input_shape(np.asarray(first)[None], "Dataset item"), "the Dataset's first item"
    raise _not_data(data)



def _numpy(a: Any, what: str) -> np.ndarray:
    """A tensor, array or nested sequence as a numpy array (half floats widened)."""
    if isinstance(a, torch.Tensor):
        t = a.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        return t.numpy()
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} cannot be turned into an array: {exc}") from None


def _item_xy(item: Any, where: str) -> tuple[Any, Any]:
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise DataError(
        f"{where} yields {type(item).__name__}; expected (x, y) pairs (image, label)"
    )


def _stack(pairs: Iterable[Any], what: str, batched: bool) -> tuple[np.ndarray, np.ndarray]:
    """Every (x, y) pair (a batch each when ``batched``) stacked into one x and one y array."""
    xs, ys = [], []
    for pair in pairs:
        px, py = _item_xy(pair, what)
        xs.append(px)
        ys.append(py)
    if not xs:
        raise DataError(f"{what} contains no samples")
    try:
        if batched:
            x = np.concatenate([_numpy(v, f"{what} x") for v in xs])
            y = np.concatenate([_numpy(v, f"{what} y").reshape(-1) for v in ys])
        else:
            x = np.stack([_numpy(v, f"{what} x") for v in xs])
            y = np.asarray([_numpy(v, f"{what} y").reshape(()) for v in ys])
    except ValueError as exc:
        raise DataError(f"{what}: samples cannot be stacked into one array ({exc})") from None
    return x, y


def resolve_data(
    data: DataInput, cfg: Config, samples: int | None, data_seed: int, source: str
) -> DataSet:
    """Every accepted data form, through the loaders' own checks."""
    target: dict[str, Any] = {
        "input_shape": cfg.model.shape,
        "bounds": cfg.model.bounds,
        "num_classes": cfg.model.classes,
        "cache_mb": cfg.data.cache_mb,
    }
    if data is None or isinstance(data, (str, os.PathLike)):
        src = source if data is None else str(data)
        return load_data(src, split=cfg.data.split, samples=samples, seed=data_seed, **target)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = _numpy(data[0], "data x"), _numpy(data[1], "data y")
        return dataset_from_arrays(
            x, y, samples=samples, seed=data_seed, source="<arrays>", name="data (x, y)", **target
        )
    if isinstance(data, torch.utils.data.DataLoader):
        what = f"DataLoader of {type(data.dataset).__name__}"
        x, y = _stack(data, what, batched=True)
        return dataset_from_arrays(
            x, y, samples=samples, seed=data_seed, source=f"<{what}>", name=what, **target
        )
    if isinstance(data, torch.utils.data.Dataset):
        what = f"Dataset {type(data).__name__}"
        if hasattr(data, "__len__") and not isinstance(data, torch.utils.data.IterableDataset):
            n = len(data)
            if n == 0:
                raise DataError(f"{what} contains no samples")
            chosen = choose_subset(n, samples, data_seed)  # decode only the chosen items
            items: Iterable[Any] = (data[int(i)] for i in chosen)
        else:
            chosen = None
            items = iter(data)
        x, y = _stack(items, what, batched=False)
        ds = dataset_from_arrays(
            x, y, samples=samples if chosen is None else None, seed=data_seed,
            source=f"<{what}>", name=what, **target,
        )
        if chosen is not None:
            ds = replace(ds, indices=tuple(int(i) for i in chosen))
        return ds
    raise _not_data(data)


def _not_data(data: Any) -> DataError:
    return DataError(
        f"data must be None, a source string or path, (x, y) tensors or arrays, a torch "
        f"Dataset or a DataLoader, not {type(data).__name__}"
    )
