"""Data sources: everything arrives as float32 NxCxHxW inside the declared bounds plus int64 labels.

Source forms (``data.source`` in the config):

- ``builtin:digits`` — scikit-learn's bundled ``load_digits()`` (1797 real 8x8 grayscale
  images, pixel values 0..16 divided by 16 into [0, 1], then mapped onto the bounds).
  The split is FIXED so that every run and every sample model agree on it::

      perm = np.random.RandomState(0).permutation(1797)
      test = perm[:500]      # 500 images
      train = perm[500:]     # 1297 images

  ``split`` is ``test``, ``train`` or ``all`` (the 1797 images in their original order).
- ``PATH.npz`` — arrays ``x`` and ``y`` (optional ``class_names``). Float ``x`` must be
  NxCxHxW and already inside the bounds; uint8 ``x`` (NxHxWxC, NxHxW or NxCxHxW) is
  scaled from 0..255 onto the bounds. ``split`` is recorded, not used.
- ``DIR`` — an ImageFolder directory (one subfolder per class, sorted names are the class
  indices, hidden folders skipped). If ``DIR/<split>`` holds class folders it is used,
  else ``DIR`` itself. Images are converted to the model's channel count (L or RGB) and
  must already have the model's HxW: robaudit never resizes, since resizing changes the
  threat model.
- ``torchvision:NAME:ROOT`` — MNIST, FashionMNIST, KMNIST, CIFAR10, CIFAR100 or SVHN
  already on disk under ROOT (``download=False`` always); ``split`` is ``train`` or ``test``.

Channel conversion: 1->3 repeats the channel, 3->1 uses ITU-R 601 luminance weights (what
PIL's ``convert("L")`` does). ``samples`` picks a seeded random subset without replacement,
kept in source order, so ImageFolder data sorted by class still gives a mix of classes.
Only the chosen samples are decoded, and value checks run on them.
"""

from __future__ import annotations

import functools
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robaudit.errors import DataError
from robaudit.inputs import InputSpec
from robaudit.loading.samples import Samples

__all__ = [
    "DIGITS_TEST_SIZE",
    "VALID_SOURCE_FORMS",
    "DataSet",
    "array_input_shape",
    "choose_subset",
    "dataset_from_arrays",
    "digits_arrays",
    "load_data",
    "peek_input_shape",
]

DIGITS_TOTAL = 1797
DIGITS_TEST_SIZE = 500
TORCHVISION_DATASETS = ("MNIST", "FashionMNIST", "KMNIST", "CIFAR10", "CIFAR100", "SVHN")
VALID_SOURCE_FORMS = (
    "'builtin:digits', a .npz file with arrays x and y, an ImageFolder directory, "
    "or 'torchvision:NAME:ROOT' (NAME one of " + ", ".join(TORCHVISION_DATASETS) + ")"
)
# ITU-R 601-2 luma, the weights PIL uses for RGB -> L.
_LUMA = (0.299, 0.587, 0.114)
_BOUNDS_TOL = 1e-6
DEFAULT_CACHE_MB = 1024  # a decoded set up to this size is kept; larger ones are streamed


@dataclass(frozen=True)
class DataSet:
    """The evaluation samples in pixel space, plus where they came from (for the report)."""

    samples: Samples  # float32, NxCxHxW, values inside bounds; decoded batch by batch
    y: torch.Tensor  # int64, N, each in [0, num_classes)
    indices: tuple[int, ...]  # position of each sample in the source split
    source: str
    split: str
    class_names: tuple[str, ...] | None

    @property
    def x(self) -> torch.Tensor:
        """All images as one tensor (decoded now if streamed); scans use ``samples``."""
        return self.samples.tensor()


@dataclass(frozen=True)
class _Raw:
    """A source before checks: all labels, and a way to decode only the chosen samples.

    ``take(idx)`` returns float32 NxCxHxW: 8-bit and unit data already mapped onto the
    bounds, user floats as given (checked afterwards).
    """

    name: str  # how error messages name the source, e.g. "data file 'a.npz'"
    y: np.ndarray
    n_x: int
    take: Callable[[np.ndarray], np.ndarray]
    class_names: tuple[str, ...] | None


def load_data(
    source: str,
    *,
    split: str,
    input_shape: tuple[int, ...],
    bounds: tuple[float, float],
    num_classes: int,
    samples: int | None,
    seed: int,
    cache_mb: int = DEFAULT_CACHE_MB,
) -> DataSet:
    """Load ``source`` as checked float tensors in ``bounds``; DataError on anything unusable.

    Every chosen image is decoded and checked here; it is kept decoded only if the whole set
    fits ``cache_mb`` megabytes, else streamed batch by batch (see robaudit.loading.samples).
    """
    shape, bnds = _check_target(input_shape, bounds, num_classes, samples)

    if source.startswith("builtin:"):
        raw = _builtin(source, split, bnds)
    elif source.startswith("torchvision:"):
        _image_source(source, shape)
        raw = _torchvision(source, split, shape, bnds)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(
                f"data source '{source}' not found: no such file or directory "
                f"(valid forms: {VALID_SOURCE_FORMS})"
            )
        if path.is_dir():
            _image_source(f"ImageFolder '{source}'", shape)
            raw = _image_folder(path, split, shape, bnds)
        elif path.suffix.lower() == ".npz" or zipfile.is_zipfile(path):
            raw = _npz(path, shape, bnds)
        else:
            raise DataError(
                f"data source '{source}' is not a known source form "
                f"(valid forms: {VALID_SOURCE_FORMS})"
            )

    return _finish(raw, source, split, shape, bnds, num_classes, samples, seed, cache_mb)


def _image_source(source: str, shape: tuple[int, ...]) -> None:
    """Image datasets give images: a model with another input kind cannot read them."""
    if len(shape) != 3:
        spec = InputSpec.of(shape)
        raise DataError(
            f"data source {source} holds images, but the model's input is a {spec.describe()} "
            f"[{spec.axes()}]; give a .npz with x of shape N x {' x '.join(map(str, shape))}"
        )


def peek_input_shape(source: str, split: str) -> tuple[int, ...]:
    """The C x H x W of one sample of ``source``, read without decoding the set.

    For a config that leaves ``model.input_shape`` out: builtin digits are 1x8x8; a .npz
    gives its array's shape (uint8 channel-last arrays read as such); an ImageFolder its
    first image (grayscale files give 1 channel, anything else 3); torchvision sets their
    arrays'. Every sample is still checked against this shape when the data is loaded.
    """
    if source.startswith("builtin:"):
        _builtin(source, "all", (0.0, 1.0))  # an unknown builtin is named here
        return (1, 8, 8)
    if source.startswith("torchvision:"):
        name = source.split(":", 2)[1] if source.count(":") >= 2 else ""
        known = {"MNIST": (1, 28, 28), "FashionMNIST": (1, 28, 28), "KMNIST": (1, 28, 28)}
        return known.get(name, (3, 32, 32))  # CIFAR10, CIFAR100, SVHN; others fail on load
    path = Path(source).expanduser()
    if path.is_dir():
        return _folder_shape(path, split)
    if path.is_file() and (path.suffix.lower() == ".npz" or zipfile.is_zipfile(path)):
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                if "x" in f.files:
                    return array_input_shape(_npz_array(f, "x", f"data file '{path}'"), str(path))
        except (OSError, ValueError, zipfile.BadZipFile, EOFError):
            pass  # load_data names the problem
    raise DataError(
        f"data source '{source}': cannot tell the input shape without reading it as data "
        f"(valid forms: {VALID_SOURCE_FORMS}); set model.input_shape"
    )


def array_input_shape(x: Any, name: str = "data") -> tuple[int, ...]:
    """One input's shape from an array of samples.

    NxF is F-feature vectors; images are NxCxHxW, NxHxW (one channel) or uint8 NxHxWxC. A
    3-D array reads as one-channel images: a sequence model ([C, T]) sets model.input_shape.
    """
    shape = tuple(int(d) for d in np.shape(x))
    dtype = getattr(x, "dtype", None)
    if len(shape) == 2:
        return (shape[1],)
    if len(shape) == 3:
        return (1, shape[1], shape[2])
    if len(shape) == 4:
        channel_last = (
            str(dtype) in ("uint8", "torch.uint8")
            and shape[3] in (1, 3, 4)
            and shape[1] not in (1, 3, 4)
        )
        return (shape[3], shape[1], shape[2]) if channel_last else (shape[1], shape[2], shape[3])
    raise DataError(
        f"{name}: x has shape {list(shape)}; expected N x F (feature vectors), N x C x T with "
        "model.input_shape [C, T] (sequences), or N x C x H x W (images)"
    )


def _folder_shape(root: Path, split: str) -> tuple[int, ...]:
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
                    raise DataError(f"image '{f}' cannot be read: {_one_line(exc)}") from exc
    raise DataError(
        f"ImageFolder '{base}' has no images in class subfolders; expected DIR/<class>/<image>.png"
    )


def dataset_from_arrays(
    x: np.ndarray,
    y: np.ndarray,
    *,
    input_shape: tuple[int, ...],
    bounds: tuple[float, float],
    num_classes: int,
    samples: int | None,
    seed: int,
    source: str = "<arrays>",
    split: str = "memory",
    name: str = "data arrays",
    class_names: tuple[str, ...] | None = None,
    cache_mb: int = DEFAULT_CACHE_MB,
) -> DataSet:
    """In-memory ``x``/``y`` with exactly the checks a ``.npz`` file gets (the npz loader uses it).

    ``x``: float NxCxHxW inside the bounds, or uint8 (NxHxW, NxHxWxC, NxCxHxW) scaled onto them.
    """
    shape, bnds = _check_target(input_shape, bounds, num_classes, samples)
    raw = _arrays_raw(np.asarray(x), np.asarray(y), shape, bnds, name, class_names)
    return _finish(raw, source, split, shape, bnds, num_classes, samples, seed, cache_mb)


def _check_target(
    input_shape: tuple[int, ...],
    bounds: tuple[float, float],
    num_classes: int,
    samples: int | None,
) -> tuple[tuple[int, ...], tuple[float, float]]:
    """What the model expects must itself make sense before any data is judged against it."""
    if samples is not None and samples <= 0:
        raise DataError(f"data.samples is {samples}; give a positive number, or omit it for all")
    lo, hi = float(bounds[0]), float(bounds[1])
    if not lo < hi:
        raise DataError(
            f"bounds [{lo:g}, {hi:g}] are empty; the lower bound must be below the upper"
        )
    if num_classes < 1:
        raise DataError(f"num_classes is {num_classes}; it must be at least 1")
    try:
        shape = InputSpec.of(input_shape).shape
    except ValueError as exc:
        raise DataError(f"input_shape: {exc}") from None
    return shape, (lo, hi)


def _finish(
    raw: _Raw,
    source: str,
    split: str,
    shape: tuple[int, ...],
    bounds: tuple[float, float],
    num_classes: int,
    samples: int | None,
    seed: int,
    cache_mb: int,
) -> DataSet:
    """The checks every source gets: labels, counts, seeded subset, shape, values, channels."""
    lo, hi = bounds
    y = _check_labels(raw.y, raw.name, num_classes)
    if raw.n_x != len(y):
        raise DataError(
            f"{raw.name}: x has {raw.n_x} samples but y has {len(y)} labels; they must match"
        )
    if len(y) == 0:
        raise DataError(f"{raw.name} contains no samples")
    idx = _choose(len(y), samples, seed)

    def decode(pos: np.ndarray) -> np.ndarray:
        x = raw.take(idx[pos])
        _check_shape(x, shape, raw.name)
        _check_values(x, bounds, raw.name, idx[pos])
        x = _convert_channels(x, shape[0])
        np.clip(x, lo, hi, out=x)  # only rounding-level moves remain after the checks above
        return x

    return DataSet(
        samples=Samples(decode, len(idx), shape, cache_bytes=max(0, cache_mb) << 20),
        y=torch.from_numpy(np.ascontiguousarray(y[idx], dtype=np.int64)),
        indices=tuple(int(i) for i in idx),
        source=source,
        split=split,
        class_names=raw.class_names,
    )


# ---------------------------------------------------------------- builtin:digits


@functools.lru_cache(maxsize=1)
def _digits_all() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digits as float32 Nx1x8x8 in [0, 1] and int64 labels; cached, never mutated."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (np.asarray(d.images, dtype=np.float64) / 16.0).astype(np.float32)[:, None, :, :]
    y = np.asarray(d.target, dtype=np.int64)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """The fixed builtin digits split (module docstring): x float32 Nx1x8x8 in [0, 1], y int64."""
    x, y = _digits_all()
    if split == "all":
        return x.copy(), y.copy()
    perm = np.random.RandomState(0).permutation(DIGITS_TOTAL)
    if split == "test":
        sel = perm[:DIGITS_TEST_SIZE]
    elif split == "train":
        sel = perm[DIGITS_TEST_SIZE:]
    else:
        raise DataError(
            f"data.split '{split}' is not valid for builtin:digits; use test, train or all"
        )
    return x[sel], y[sel]


def _builtin(source: str, split: str, bounds: tuple[float, float]) -> _Raw:
    """``builtin:NAME``; only digits exists, it ships with scikit-learn so needs no download."""
    if source != "builtin:digits":
        raise DataError(
            f"data source '{source}' is not a known builtin; the only one is builtin:digits"
        )
    x01, y = digits_arrays(split)
    lo, hi = bounds

    def take(idx: np.ndarray) -> np.ndarray:
        out: np.ndarray = (lo + x01[idx] * (hi - lo)).astype(np.float32)
        return out

    return _Raw(f"data source '{source}'", y, len(x01), take, tuple(str(i) for i in range(10)))


# ---------------------------------------------------------------- .npz


def _npz(path: Path, shape: tuple[int, ...], bounds: tuple[float, float]) -> _Raw:
    """A .npz with ``x`` and ``y``; float x is taken as is (then checked), uint8 x is scaled."""
    name = f"data file '{path}'"
    try:
        # an open handle of our own: np.load leaks its handle when the zip is corrupt
        with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
            keys = list(f.files)
            missing = [k for k in ("x", "y") if k not in keys]
            if missing:
                raise DataError(
                    f"{name} has arrays {keys or 'none'}; "
                    "it needs arrays 'x' (images) and 'y' (labels)"
                )
            x = _npz_array(f, "x", name)
            y = _npz_array(f, "y", name)
            names = _npz_array(f, "class_names", name) if "class_names" in keys else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{name} is not a readable .npz (np.savez) file: {_one_line(exc)}") from exc

    class_names = None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(
                f"{name}: class_names must be a 1-D array of strings, got {names.dtype}"
            )
        class_names = tuple(str(s) for s in names.tolist())
    return _arrays_raw(x, y, shape, bounds, name, class_names)


def _npz_array(f: Any, key: str, name: str) -> np.ndarray:
    """One array of an open .npz; object arrays (ragged data, pickles) are refused by name."""
    try:
        arr: np.ndarray = f[key]
    except ValueError as exc:
        if "allow_pickle" not in str(exc):
            raise
        raise DataError(
            f"{name}: array '{key}' is an object array (ragged, e.g. images of different sizes, "
            "or pickled Python objects), which robaudit does not unpickle; store it as one "
            "numeric array (x: NxCxHxW float or NxHxW[xC] uint8, y: N integers)"
        ) from None
    return arr


def _arrays_raw(
    x: np.ndarray,
    y: np.ndarray,
    shape: tuple[int, ...],
    bounds: tuple[float, float],
    name: str,
    class_names: tuple[str, ...] | None,
) -> _Raw:
    """Arrays already in memory (from a .npz or from Python): layout now, values on take."""
    x = _layout(x, shape, name)

    def take(idx: np.ndarray) -> np.ndarray:
        return _to_float(x[idx], bounds, f"{name} x")

    return _Raw(name, y, len(x), take, class_names)


def _layout(x: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Bring x to N x shape without copying values; uint8 may be channel-last, floats must not be."""
    if len(shape) != 3:
        return _layout_flat(x, shape, name)
    c, h, w = shape
    if x.dtype == np.uint8:
        if x.ndim == 3:
            return x[:, None, :, :]
        if x.ndim == 4:
            if x.shape[1:3] == (h, w) and x.shape[3] in (1, 3, 4):
                return np.moveaxis(x, 3, 1)  # NxHxWxC, the usual layout of 8-bit arrays
            if x.shape[2:4] == (h, w) or x.shape[3] not in (1, 3, 4):
                return x  # NxCxHxW, or a wrong shape that _check_shape reports
            return np.moveaxis(x, 3, 1)
        raise DataError(
            f"{name}: uint8 x has shape {x.shape}; expected NxHxW, NxHxWxC or NxCxHxW "
            f"for input_shape {shape}"
        )
    if x.dtype.kind == "f":
        if x.ndim == 3 and c == 1:
            return x[:, None, :, :]
        if x.ndim == 4:
            if x.shape[1:] != shape and x.shape[1:3] == (h, w) and x.shape[3] in (1, 3, 4):
                raise DataError(
                    f"{name}: float x has shape {x.shape}, which looks channel-last (NxHxWxC); "
                    f"float x must be NxCxHxW, here Nx{c}x{h}x{w}"
                )
            return x
        raise DataError(f"{name}: float x has shape {x.shape}; expected NxCxHxW (Nx{c}x{h}x{w})")
    raise DataError(
        f"{name}: x has dtype {x.dtype}; expected float (already within bounds) or uint8 (0..255)"
    )


def _layout_flat(x: np.ndarray, shape: tuple[int, ...], name: str) -> np.ndarray:
    """Vectors (NxF) and sequences (NxCxT, or NxT for one channel) as stored, nothing moved."""
    if x.dtype != np.uint8 and x.dtype.kind != "f":
        raise DataError(
            f"{name}: x has dtype {x.dtype}; expected float (already within bounds) or uint8"
        )
    if len(shape) == 2 and shape[0] == 1 and x.ndim == 2:
        return x[:, None, :]
    if x.shape[1:] != shape:
        spec = InputSpec.of(shape)
        raise DataError(
            f"{name}: x has shape {x.shape}; the model's input is a {spec.describe()}, so x "
            f"must be N x {' x '.join(map(str, shape))}"
        )
    return x


def _to_float(x: np.ndarray, bounds: tuple[float, float], what: str) -> np.ndarray:
    """uint8 -> bounds by lo + x/255·(hi-lo); floats -> float32 unchanged (checked later)."""
    if x.dtype == np.uint8:
        lo, hi = bounds
        return (lo + x.astype(np.float32) * np.float32((hi - lo) / 255.0)).astype(np.float32)
    if x.dtype.kind == "f":
        return np.array(x, dtype=np.float32, copy=True)
    raise DataError(f"{what} has dtype {x.dtype}; expected float or uint8")


# ---------------------------------------------------------------- ImageFolder


def _image_folder(
    root: Path, split: str, shape: tuple[int, ...], bounds: tuple[float, float]
) -> _Raw:
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
        raise DataError(f"{name} cannot be listed: {_one_line(exc)}") from exc
    paths = [p for p, _ in items]
    y = np.asarray([t for _, t in items], dtype=np.int64)
    mode = "L" if c == 1 else "RGB"

    def take(idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), c, h, w), dtype=np.uint8)
        for k, i in enumerate(idx):
            out[k] = _read_image(paths[int(i)], mode, (h, w))
        return _to_float(out, bounds, name)

    return _Raw(name, y, len(paths), take, tuple(classes))


def _class_dirs(root: Path) -> list[str]:
    """Sorted class folder names; hidden ones (.ipynb_checkpoints, .git) are not classes."""
    try:
        return sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise DataError(f"ImageFolder '{root}' cannot be read: {_one_line(exc)}") from exc


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
        raise DataError(f"image '{path}' cannot be read: {_one_line(exc)}") from exc
    return arr[None, :, :] if arr.ndim == 2 else np.moveaxis(arr, 2, 0)


# ---------------------------------------------------------------- torchvision


def _torchvision(
    source: str, split: str, shape: tuple[int, ...], bounds: tuple[float, float]
) -> _Raw:
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
        raise DataError(f"{missing_msg} ({_one_line(exc)})") from exc

    if ds_name == "SVHN":  # uint8 Nx3x32x32, labels already 0..9
        x_all = np.asarray(ds.data)
        y_all = np.asarray(ds.labels)
        names: tuple[str, ...] | None = tuple(str(i) for i in range(10))
    else:  # MNIST family: uint8 tensor Nx28x28; CIFAR: uint8 ndarray Nx32x32x3
        data = ds.data
        x_all = data.numpy() if isinstance(data, torch.Tensor) else np.asarray(data)
        targets = ds.targets
        y_all = targets.numpy() if isinstance(targets, torch.Tensor) else np.asarray(targets)
        x_all = _layout(x_all, shape, name)
        names = tuple(str(s) for s in getattr(ds, "classes", ())) or None
    x_all = np.asarray(x_all)

    def take(idx: np.ndarray) -> np.ndarray:
        return _to_float(x_all[idx], bounds, name)

    return _Raw(name, y_all, len(x_all), take, names)


# ---------------------------------------------------------------- checks


def _check_labels(y: np.ndarray, name: str, num_classes: int) -> np.ndarray:
    """Labels as int64 1-D; floats are accepted only when every value is a whole number."""
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1:
        hint = " (one-hot? store class indices, e.g. y.argmax(1))" if y.ndim == 2 else ""
        raise DataError(
            f"{name}: y has shape {y.shape}; expected a 1-D array of class indices{hint}"
        )
    if y.dtype.kind in "iu":
        y64 = y.astype(np.int64)
    elif y.dtype.kind == "f" and len(y) > 0:
        bad = ~np.isfinite(y) | (y != np.round(y))
        if bad.any():
            i = int(np.argmax(bad))
            raise DataError(
                f"{name}: y holds non-integer label {y[i].item()!r} at position {i}; "
                "labels must be integer class indices"
            )
        y64 = y.astype(np.int64)
    elif y.dtype.kind == "f":
        y64 = y.astype(np.int64)
    else:
        raise DataError(f"{name}: y has dtype {y.dtype}; labels must be integer class indices")
    out = (y64 < 0) | (y64 >= num_classes)
    if out.any():
        i = int(np.argmax(out))
        raise DataError(
            f"{name}: label {int(y64[i])} at position {i} is outside [0, {num_classes}) "
            f"({int(out.sum())} labels out of range; num_classes is {num_classes})"
        )
    return y64


def choose_subset(n: int, samples: int | None, seed: int) -> np.ndarray:
    """All positions, or a seeded subset without replacement, sorted back into source order.

    Public so that sources decoded lazily elsewhere (a torch Dataset) pick the same subset.
    """
    if samples is None or samples >= n:
        return np.arange(n, dtype=np.int64)
    rs = np.random.RandomState(seed)
    return np.sort(rs.choice(n, size=samples, replace=False)).astype(np.int64)


_choose = choose_subset


def _check_shape(x: np.ndarray, shape: tuple[int, ...], name: str) -> None:
    """HxW must match exactly; channels must match or be convertible (1<->3).

    Vectors and sequences must match exactly: their channels are not colours.
    """
    if len(shape) != 3:
        if tuple(int(s) for s in x.shape[1:]) != shape:
            raise DataError(
                f"{name}: samples have shape {tuple(x.shape[1:])} but the model's input_shape "
                f"is {shape}"
            )
        return
    c, h, w = shape
    got = tuple(int(s) for s in x.shape[1:])
    if x.ndim != 4 or got[1:] != (h, w):
        raise DataError(
            f"{name}: samples have shape {got} (CxHxW) but the model's input_shape is {shape}"
        )
    if got[0] != c and {got[0], c} != {1, 3}:
        raise DataError(
            f"{name}: samples have {got[0]} channels but the model takes {c}; "
            "only 1->3 and 3->1 channel conversion is supported"
        )


def _check_values(
    x: np.ndarray, bounds: tuple[float, float], name: str, positions: np.ndarray
) -> None:
    """Finite and inside the bounds, with a hint for the two usual mistakes.

    ``positions``: each row's position in the source, for the message (x is one chunk).
    """
    finite = np.isfinite(x)
    if not finite.all():
        bad = int((~finite).sum())
        first = int(positions[int(np.argmax(~finite.reshape(len(x), -1).all(axis=1)))])
        raise DataError(f"{name}: x contains {bad} NaN/inf values (first in sample {first})")
    lo, hi = bounds
    mn, mx = float(x.min()), float(x.max())
    if mn < lo - _BOUNDS_TOL or mx > hi + _BOUNDS_TOL:
        hint = ""
        if mn < 0 and lo == 0:
            hint = (
                "; data looks already normalized (mean/std): give pixel values, robaudit applies "
                "the normalization inside the model wrapper"
            )
        elif mx > 1.5 and (lo, hi) == (0.0, 1.0):
            hint = "; looks like 0-255 data: divide by 255 or store x as uint8"
        raise DataError(
            f"{name}: x values span [{mn:.6g}, {mx:.6g}], outside the declared bounds "
            f"[{lo:g}, {hi:g}]{hint}"
        )


def _convert_channels(x: np.ndarray, c: int) -> np.ndarray:
    """1->3 by repeat, 3->1 by luminance; same count (and any non-image) is a no-op."""
    have = x.shape[1]
    if have == c or x.ndim != 4:
        return x
    if have == 1 and c == 3:
        return np.repeat(x, 3, axis=1)
    if have == 3 and c == 1:
        wts = np.asarray(_LUMA, dtype=np.float32).reshape(1, 3, 1, 1)
        gray: np.ndarray = (x * wts).sum(axis=1, keepdims=True, dtype=np.float32)
        return gray
    raise DataError(f"cannot convert {have} channels to {c}")  # _check_shape rules this out


def _one_line(exc: BaseException | str) -> str:
    """Collapse an underlying message to one short line for our own one-line errors."""
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."
