"""Audio sources: a folder of WAV files in class subfolders, read as ``[C, T]`` waveforms.

Like an ImageFolder, sorted class-folder names are the label indices (hidden folders skipped),
and ``DIR/<split>`` is used when it holds the class folders. Files are PCM WAV read with the
standard library's :mod:`wave` (8-bit unsigned, 16-, 24- and 32-bit signed), scaled to
[-1, 1) and mapped linearly onto the model's bounds. The sample rate is declared
(``data.sample_rate``): a file at another rate is an error naming it, never resampled (that
would change what is audited). A file of another length is an error too unless
``data.fit: pad_or_crop`` (zeros appended at the end, or the end cut off).
"""

from __future__ import annotations

import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from robaudit.errors import DataError
from robaudit.loading.raw import Raw, one_line

FITS = ("exact", "pad_or_crop")


@dataclass(frozen=True)
class AudioOptions:
    """How waveforms must arrive: the declared sample rate, and what to do with other lengths."""

    sample_rate: int | None = None
    fit: str = "exact"


def is_wav_folder(root: Path, split: str) -> bool:
    """Whether ``root`` (or ``root/split``) holds ``.wav`` files in class subfolders."""
    return _first_wav(_base(root, split)) is not None


def wav_folder_shape(root: Path, split: str) -> tuple[int, ...]:
    """The ``[C, T]`` of the first file (every file is checked against the model's when read)."""
    first = _first_wav(_base(root, split))
    if first is None:
        raise DataError(f"WAV folder '{root}' has no .wav files in class subfolders")
    x, _ = read_wav(first)
    return tuple(int(d) for d in x.shape)


def waveform_source(source: str, split: str) -> tuple[tuple[int, ...], int | None] | None:
    """``[C, T]`` and the sample rate of a source of waveforms (``robaudit init`` picks the
    audio starter by it): a WAV folder (its first file), or a ``.npz`` whose ``x`` is N x C x T
    and that carries a ``sample_rate`` (without one, an N x C x T array reads as images). None
    for anything else."""
    path = Path(source).expanduser()
    if path.is_dir():
        first = _first_wav(_base(path, split))
        if first is None:
            return None
        x, rate = read_wav(first)
        return tuple(int(d) for d in x.shape), int(rate)
    if path.suffix.lower() != ".npz" or not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f.files or "sample_rate" not in f.files:
                return None
            arr, rates = f["x"], np.asarray(f["sample_rate"]).reshape(-1)
            if arr.ndim != 3:
                return None
            return tuple(int(d) for d in arr.shape[1:]), int(rates[0]) if rates.size else None
    except (OSError, ValueError, EOFError):
        return None  # loading the data names the problem


def wav_folder(
    root: Path, split: str, shape: tuple[int, ...], bounds: tuple[float, float],
    options: AudioOptions,
) -> Raw:  # fmt: skip
    """A WAV folder as a source; only the chosen files are decoded, each checked on the way."""
    base = _base(root, split)
    name = f"WAV folder '{base}'"
    if len(shape) != 2:
        raise DataError(
            f"{name} holds waveforms, but the model's input shape is {list(shape)}; "
            "set model.input_shape to [channels, samples]"
        )
    if options.sample_rate is None:
        raise DataError(f"{name}: declare the files' sample rate as data.sample_rate (e.g. 16000)")
    classes = _class_dirs(base)
    files: list[Path] = []
    labels: list[int] = []
    for k, cls in enumerate(classes):
        found = sorted(f for f in (base / cls).iterdir() if f.suffix.lower() == ".wav")
        files.extend(found)
        labels.extend([k] * len(found))
    lo, hi = bounds

    def take(idx: np.ndarray) -> np.ndarray:
        out = np.empty((len(idx), *shape), dtype=np.float32)
        for j, i in enumerate(idx.tolist()):
            wav = _fitted(files[i], shape, options)
            out[j] = lo + (wav + 1.0) * ((hi - lo) / 2.0)
        return out

    return Raw(name, np.asarray(labels, dtype=np.int64), len(files), take, tuple(classes))


def _fitted(path: Path, shape: tuple[int, ...], options: AudioOptions) -> np.ndarray:
    """One file as ``[C, T]`` in [-1, 1], at the declared rate and the model's length."""
    x, rate = read_wav(path)
    c, t = shape
    if rate != options.sample_rate:
        raise DataError(
            f"WAV file '{path}' has sample rate {rate} Hz; data.sample_rate declares "
            f"{options.sample_rate} Hz (robaudit never resamples: convert the file)"
        )
    if x.shape[0] != c:
        raise DataError(f"WAV file '{path}' has {x.shape[0]} channel(s); the model takes {c}")
    if x.shape[1] != t:
        if options.fit != "pad_or_crop":
            raise DataError(
                f"WAV file '{path}' has {x.shape[1]} samples; the model takes {t} "
                "(set data.fit: pad_or_crop to pad with silence or cut the end)"
            )
        x = np.pad(x[:, :t], ((0, 0), (0, max(0, t - x.shape[1]))))
    return x


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file as float32 ``[C, T]`` in [-1, 1) and its sample rate."""
    try:
        with wave.open(str(path), "rb") as w:
            c, width, rate = w.getnchannels(), w.getsampwidth(), w.getframerate()
            raw = w.readframes(w.getnframes())
    except (OSError, EOFError, wave.Error) as exc:
        raise DataError(f"WAV file '{path}' cannot be read as PCM WAV: {one_line(exc)}") from exc
    data = _pcm(raw, width, path)
    return data.reshape(-1, c).T.copy(), rate


def _pcm(raw: bytes, width: int, path: Path) -> np.ndarray:
    """Little-endian PCM bytes as float32 in [-1, 1) (8-bit WAV is unsigned, the rest signed)."""
    if width == 1:
        return (np.frombuffer(raw, np.uint8).astype(np.float32) - 128.0) / 128.0
    if width == 2:
        return np.frombuffer(raw, "<i2").astype(np.float32) / 32768.0
    if width == 3:
        b = np.frombuffer(raw, np.uint8).reshape(-1, 3).astype(np.int32)
        v = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
        v = np.where(v >= 1 << 23, v - (1 << 24), v)
        return (v / float(1 << 23)).astype(np.float32)
    if width == 4:
        return (np.frombuffer(raw, "<i4").astype(np.float64) / float(1 << 31)).astype(np.float32)
    raise DataError(f"WAV file '{path}' has {8 * width}-bit samples; expected 8, 16, 24 or 32")


def write_wav(path: Path, x: np.ndarray, rate: int) -> None:
    """``[C, T]`` in [-1, 1] as a 16-bit PCM WAV file (sample data, tests)."""
    with wave.open(str(path), "wb") as w:
        w.setnchannels(int(x.shape[0]))
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(pcm16(x))


def pcm16(x: np.ndarray) -> bytes:
    """``[C, T]`` in [-1, 1] as interleaved little-endian 16-bit PCM frames."""
    v = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32767.0), -32768, 32767)
    return v.T.astype("<i2").tobytes()


def _base(root: Path, split: str) -> Path:
    sub = root / split
    return sub if split and sub.is_dir() and _class_dirs(sub) else root


def _class_dirs(root: Path) -> list[str]:
    try:
        return sorted(e.name for e in root.iterdir() if e.is_dir() and not e.name.startswith("."))
    except OSError as exc:
        raise DataError(f"folder '{root}' cannot be read: {one_line(exc)}") from exc


def _first_wav(base: Path) -> Path | None:
    for cls in _class_dirs(base):
        for f in sorted((base / cls).iterdir()):
            if f.suffix.lower() == ".wav" and f.is_file():
                return f
    return None
