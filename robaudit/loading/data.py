"""Data sources: everything arrives as float32 N x input shape inside the bounds, int64 labels.

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
- ``DIR`` of ``.wav`` files in class subfolders — waveforms ``[C, T]`` at the declared
  ``data.sample_rate`` (:mod:`robaudit.loading.audio`). A ``.npz`` of waveforms may carry a
  ``sample_rate`` array, which must then match the declared one.

Channel conversion: 1->3 repeats the channel, 3->1 uses ITU-R 601 luminance weights (what
PIL's ``convert("L")`` does). ``samples`` picks a seeded random subset without replacement,
kept in source order, so ImageFolder data sorted by class still gives a mix of classes.
Only the chosen samples are decoded, and value checks run on them.
"""

from __future__ import annotations

import functools
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from robaudit.errors import DataError
from robaudit.inputs import InputSpec
from robaudit.loading.audio import AudioOptions, is_wav_folder, wav_folder, wav_folder_shape
from robaudit.loading.checks import (
    check_labels,
    check_shape,
    check_values,
    choose,
    choose_subset,
    convert_channels,
)
from robaudit.loading.image_sources import folder_shape, image_folder, torchvision_source
from robaudit.loading.raw import TORCHVISION_DATASETS, Raw, layout, one_line, to_float
from robaudit.loading.samples import Samples

if TYPE_CHECKING:
    from robaudit.loading.tabular import TabularInput

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
VALID_SOURCE_FORMS = (
    "'builtin:digits', a .npz file with arrays x and y, an ImageFolder directory, a folder "
    "of WAV files in class sub-folders, a .csv or .parquet table (with data.label), "
    "or 'torchvision:NAME:ROOT' (NAME one of " + ", ".join(TORCHVISION_DATASETS) + ")"
)
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
    tabular: TabularInput | None = None  # CSV/Parquet: schema, scaler, constraints

    @property
    def x(self) -> torch.Tensor:
        """All images as one tensor (decoded now if streamed); scans use ``samples``."""
        return self.samples.tensor()


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
    audio: AudioOptions | None = None,
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
        raw = torchvision_source(source, split, shape, bnds)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(
                f"data source '{source}' not found: no such file or directory "
                f"(valid forms: {VALID_SOURCE_FORMS})"
            )
        if path.is_dir() and is_wav_folder(path, split):
            raw = wav_folder(path, split, shape, bnds, audio or AudioOptions())
        elif path.is_dir():
            _image_source(f"ImageFolder '{source}'", shape)
            raw = image_folder(path, split, shape, bnds)
        elif path.suffix.lower() == ".npz" or zipfile.is_zipfile(path):
            raw = _npz(path, shape, bnds, audio)
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
    if not path.exists():
        raise DataError(
            f"data source '{source}' not found: no such file or directory "
            f"(valid forms: {VALID_SOURCE_FORMS})"
        )
    if path.is_dir() and is_wav_folder(path, split):
        return wav_folder_shape(path, split)
    if path.is_dir():
        return folder_shape(path, split)
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
    raw: Raw,
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
    y = check_labels(raw.y, raw.name, num_classes)
    if raw.n_x != len(y):
        raise DataError(
            f"{raw.name}: x has {raw.n_x} samples but y has {len(y)} labels; they must match"
        )
    if len(y) == 0:
        raise DataError(f"{raw.name} contains no samples")
    idx = choose(len(y), samples, seed)

    def decode(pos: np.ndarray) -> np.ndarray:
        x = raw.take(idx[pos])
        check_shape(x, shape, raw.name)
        check_values(x, bounds, raw.name, idx[pos])
        x = convert_channels(x, shape[0])
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


def _builtin(source: str, split: str, bounds: tuple[float, float]) -> Raw:
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

    return Raw(f"data source '{source}'", y, len(x01), take, tuple(str(i) for i in range(10)))


# ---------------------------------------------------------------- .npz


def _npz(
    path: Path, shape: tuple[int, ...], bounds: tuple[float, float], audio: AudioOptions | None
) -> Raw:
    """A .npz with ``x`` and ``y``; float x is taken as is (then checked), uint8 x is scaled.
    A ``sample_rate`` array (waveforms) must match a declared ``data.sample_rate``."""
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
            rate = _npz_array(f, "sample_rate", name) if "sample_rate" in keys else None
    except DataError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{name} is not a readable .npz (np.savez) file: {one_line(exc)}") from exc

    class_names = None
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "US":
            raise DataError(
                f"{name}: class_names must be a 1-D array of strings, got {names.dtype}"
            )
        class_names = tuple(str(s) for s in names.tolist())
    declared = None if audio is None else audio.sample_rate
    if rate is not None and declared is not None and int(rate.reshape(-1)[0]) != declared:
        raise DataError(
            f"{name} holds waveforms at {int(rate.reshape(-1)[0])} Hz; data.sample_rate declares "
            f"{declared} Hz (robaudit never resamples)"
        )
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
) -> Raw:
    """Arrays already in memory (from a .npz or from Python): layout now, values on take."""
    x = layout(x, shape, name)

    def take(idx: np.ndarray) -> np.ndarray:
        return to_float(x[idx], bounds, f"{name} x")

    return Raw(name, y, len(x), take, class_names)
