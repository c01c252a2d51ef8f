"""Image sources: ImageFolder directories and torchvision datasets already on disk.

Images are never resized (resizing changes the threat model) and never downloaded.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from robaudit.errors import DataError
from robaudit.loading.raw import TORCHVISION_DATASETS, Raw, layout, one_line, to_float


def folder_shape(root: Path, split: str) -> tuple[int, ...]:
    from PIL import Image, UnidentifiedImageError
    from torchvision.datasets.folder import IMG_EXTENSIONS

    sub = root / split
    base = sub if split and sub.is_dir() and _class_dirs(sub) else root
    for cls in _class_dirs(base):
        for f in sorted((base / cls).iterdir()):
            if f.suffix.lower() in IMG_EXTENSIONS and f.is_file():
                try:
                    with Image.open(f) as im:
                        c = 1 if im.mode in ("L", "1", "LA") or im.mode.startswith("I") else 3
                        return (c, im.size[1], im.size[0])
                except (OSError, UnidentifiedImageError) as exc:
                    raise DataError(f"image '{f}' cannot be read: {one_line(exc)}") from exc
    raise DataError(
        f"ImageFolder '{base}' has no images in class subfolders; expected DIR/<class>/<image>.png"
    )


# ---------------------------------------------------------------- ImageFolder


def image_folder(
    root: Path, split: str, shape: tuple[int, ...], bounds: tuple[float, float]
) -> Raw:
    """An ImageFolder tree; only chosen images are opened, each must already be HxW."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    c, h, w = shape
    if c not in (1, 3):
        raise DataError(
            f"ImageFolder '{root}': the model takes {c} channels; "
            "images can be loaded as 1 (L) or 3 (RGB)"
        )
    sub = root / split
    if split and sub.is_dir() and _class_dirs(sub):
        root = sub
    name = f"ImageFolder '{root}'"
    classes = _class_dirs(root)
    if not classes:
        raise DataError(
            f"{name} has no class subfolders; expected DIR/<class>/<image>.png "
            f"(or DIR/{split}/<class>/<image>.png)"
        )
    class_to_idx = {cls: i for i, cls in enumerate(classes)}
    try:
        items = make_dataset(str(root), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=True)
    except (OSError, ValueError) as exc:
        raise DataError(f"{name} cannot be listed: {one_line(exc)}") from exc
    paths = [p for p, _ in items]
    y = np.asarray([t for _, t in items], dtype=np.int64)
    mode = "L" if c == 1 else "RGB"

    def take(idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), c, h, w), dtype=np.uint8)
        for k, i in enumerate(idx):
            out[k] = _read_image(paths[int(i)], mode, (h, w))
        return to_float(out, bounds, name)

    return Raw(name, y, len(paths), take, tuple(classes))


def _class_dirs(root: Path) -> list[str]:
    """Sorted class folder names; hidden ones (.ipynb_checkpoints, .git) are not classes."""
    try:
        return sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise DataError(f"ImageFolder '{root}' cannot be read: {one_line(exc)}") from exc


def _read_image(path: str, mode: str, hw: tuple[int, int]) -> np.ndarray:
    """One 8-bit image as uint8 CxHxW in ``mode``; wrong size or 16-bit data is an error."""
    from PIL import Image, UnidentifiedImageError

    h, w = hw
    try:
        with Image.open(path) as im:
            if im.size != (w, h):
                raise DataError(
                    f"image '{path}' is {im.size[0]}x{im.size[1]} (WxH) but the model expects "
                    f"{w}x{h}; resize the data set beforehand (robaudit never resizes)"
                )
            if im.mode in ("I", "F") or im.mode.startswith("I;"):
                raise DataError(
                    f"image '{path}' has mode {im.mode} (16-bit or float); "
                    "save it as 8-bit L or RGB"
                )
            arr = np.asarray(im.convert(mode), dtype=np.uint8)
    except DataError:
        raise
    except (OSError, UnidentifiedImageError, ValueError) as exc:
        raise DataError(f"image '{path}' cannot be read: {one_line(exc)}") from exc
    return arr[None, :, :] if arr.ndim == 2 else np.moveaxis(arr, 2, 0)


# ---------------------------------------------------------------- torchvision


def torchvision_source(
    source: str, split: str, shape: tuple[int, ...], bounds: tuple[float, float]
) -> Raw:
    """``torchvision:NAME:ROOT`` read from the dataset's in-memory arrays, never downloaded."""
    parts = source.split(":", 2)
    if len(parts) != 3 or not parts[1] or not parts[2]:
        raise DataError(
            f"data source '{source}' should be torchvision:NAME:ROOT, "
            "e.g. torchvision:CIFAR10:/data/cifar"
        )
    _, ds_name, root_s = parts
    if ds_name not in TORCHVISION_DATASETS:
        raise DataError(
            f"data source '{source}': torchvision dataset '{ds_name}' is not supported; "
            f"use one of {', '.join(TORCHVISION_DATASETS)}"
        )
    if split not in ("train", "test"):
        raise DataError(
            f"data.split '{split}' is not valid for torchvision datasets; use test or train"
        )
    root = Path(root_s).expanduser()
    name = f"torchvision {ds_name} at '{root}'"
    import torchvision.datasets as tvd

    cls = getattr(tvd, ds_name)
    missing_msg = (
        f"{name} was not found or is incomplete; it must already be on disk in torchvision's "
        f"layout (robaudit never downloads): fetch it once with torchvision.datasets.{ds_name}"
        f"(root='{root}', download=True)"
    )
    if not root.is_dir():
        raise DataError(missing_msg)
    try:
        if ds_name == "SVHN":
            ds = cls(root=str(root), split=split, download=False)
        else:
            ds = cls(root=str(root), train=(split == "train"), download=False)
    except (RuntimeError, OSError, ValueError, EOFError) as exc:
        raise DataError(f"{missing_msg} ({one_line(exc)})") from exc

    if ds_name == "SVHN":  # uint8 Nx3x32x32, labels already 0..9
        x_all = np.asarray(ds.data)
        y_all = np.asarray(ds.labels)
        names: tuple[str, ...] | None = tuple(str(i) for i in range(10))
    else:  # MNIST family: uint8 tensor Nx28x28; CIFAR: uint8 ndarray Nx32x32x3
        data = ds.data
        x_all = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        targets = ds.targets
        y_all = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
        x_all = layout(x_all, shape, name)
        names = tuple(str(s) for s in getattr(ds, "classes", ())) or None
    x_all = np.asarray(x_all)

    def take(idx: np.ndarray) -> np.ndarray:
        return to_float(x_all[idx], bounds, name)

    return Raw(name, y_all, len(x_all), take, names)


