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
from robaudit.loading.audio import AudioOptions
from robaudit.loading.data import (
    DataSet,
    array_input_shape,
    choose_subset,
    dataset_from_arrays,
    load_data,
    peek_input_shape,
)
from robaudit.loading.tabular import is_tabular, read_tabular

DataInput: TypeAlias = (
    "str | os.PathLike[str] | tuple[Any, Any] | torch.utils.data.Dataset[Any] | "
    "torch.utils.data.DataLoader[Any] | None"
)


def data_shape(
    data: DataInput,
    source: str,
    split: str,
    *,
    cfg: Config | None = None,
    config_path: str | None = None,
) -> tuple[tuple[int, ...], str]:
    """The input shape the data implies, and how the report names where it came from (a
    CSV/Parquet source: its schema's columns, which needs ``cfg``'s data section)."""
    if data is None or isinstance(data, (str, os.PathLike)):
        src = source if data is None else str(data)
        if cfg is not None and is_tabular(src):
            info, _, _ = read_tabular(src, cfg.data.label, cfg.data.schema_, config_path)
            return (len(info.columns),), f"the data's schema ({src})"
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
    data: DataInput,
    cfg: Config,
    samples: int | None,
    data_seed: int,
    source: str,
    config_path: str | None = None,
) -> DataSet:
    """Every accepted data form, through the loaders' own checks (a CSV/Parquet source with its
    feature schema: :mod:`robaudit.loading.tabular`)."""
    target: dict[str, Any] = {
        "input_shape": cfg.model.shape,
        "bounds": cfg.model.bounds,
        "num_classes": cfg.model.classes,
        "cache_mb": cfg.data.cache_mb,
    }
    if data is None or isinstance(data, (str, os.PathLike)):
        src = source if data is None else str(data)
        if is_tabular(src):
            return _tabular(src, cfg, samples, data_seed, config_path, target)
        _no_tabular_keys(cfg, src)
        audio = AudioOptions(cfg.data.sample_rate, cfg.data.fit)
        return load_data(
            src, split=cfg.data.split, samples=samples, seed=data_seed, audio=audio, **target
        )
    _no_tabular_keys(cfg, "in-memory data")
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


def _tabular(
    src: str, cfg: Config, samples: int | None, data_seed: int, config_path: str | None,
    target: dict[str, Any],
) -> DataSet:
    """A CSV/Parquet table, scaled to [0, 1] with its schema, which travels with the data set
    (the engine checks every candidate against its constraints)."""
    lo, hi = (float(b) for b in cfg.model.bounds)
    if (lo, hi) != (0.0, 1.0):
        raise DataError(
            f"{src}: tabular features are min-max scaled to [0, 1]; model.bounds must be "
            f"[0, 1], not [{lo:g}, {hi:g}]"
        )
    info, x, y = read_tabular(src, cfg.data.label, cfg.data.schema_, config_path)
    ds = dataset_from_arrays(
        x, y, samples=samples, seed=data_seed, source=src, split=cfg.data.split,
        name=f"data file '{src}'", **target,
    )
    return replace(ds, tabular=info)


def _no_tabular_keys(cfg: Config, src: str) -> None:
    """data.label and data.schema describe a table; elsewhere they would be silently unused."""
    keys = [k for k, v in (("data.label", cfg.data.label), ("data.schema", cfg.data.schema_)) if v]
    if keys:
        raise DataError(
            f"{' and '.join(keys)} apply to a CSV or Parquet source; {src} is not one"
        )


def _not_data(data: Any) -> DataError:
    return DataError(
        f"data must be None, a source string or path, (x, y) tensors or arrays, a torch "
        f"Dataset or a DataLoader, not {type(data).__name__}"
    )
