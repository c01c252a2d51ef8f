"""The evaluated images, decoded batch by batch so memory stays bounded by the batch size.

A scan touches its images once per cell (attack × threat) and only ever a batch at a time, so
there is no need to hold 10 000 decoded ImageNet images (6 GB of float32) in memory.
:class:`Samples` looks like the N×C×H×W tensor to the engine (``shape``, ``len``, indexing
by a slice or by positions) but decodes on demand from the source: an ImageFolder keeps only
its file paths, array sources their raw (usually uint8, four times smaller) arrays.

Decoding every batch again in every cell costs time, so a set whose decoded size fits
``cache_bytes`` (``data.cache_mb`` in the config, 1024 by default) is decoded once and kept;
``cache_mb: 0`` streams everything. Either way every image is decoded and checked once at load
time, so bad data is reported before any attack runs, never half-way through.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

CHECK_CHUNK = 256  # samples decoded at a time by the load-time check


class Samples:
    """N inputs of one shape (C×H×W images, C×T sequences, F vectors), indexed like a tensor, decoded by ``decode(positions)``.

    ``decode`` receives positions 0 … N−1 of this set (not of the source) and returns float32
    k×C×H×W, already converted and checked. ``decoded`` counts the images decoded so far and
    ``largest`` the largest single request, which tests use to show what stays in memory.
    """

    def __init__(
        self,
        decode: Callable[[np.ndarray], np.ndarray],
        n: int,
        shape: tuple[int, ...],
        *,
        cache_bytes: int,
    ) -> None:
        self._decode = decode
        self._n = int(n)
        self._item = tuple(int(s) for s in shape)
        self._all: torch.Tensor | None = None
        self.decoded = 0
        self.largest = 0
        fits = self._n * int(np.prod(self._item)) * 4 <= cache_bytes
        keep = torch.empty(self._n, *self._item) if fits else None
        for start in range(0, self._n, CHECK_CHUNK):  # decode (and so check) everything once
            stop = min(start + CHECK_CHUNK, self._n)
            chunk = self._fetch(np.arange(start, stop))
            if keep is not None:
                keep[start:stop] = chunk
        self._all = keep

    @property
    def streamed(self) -> bool:
        """True when batches are decoded on demand rather than kept."""
        return self._all is None

    @property
    def shape(self) -> torch.Size:
        return torch.Size((self._n, *self._item))

    @property
    def dtype(self) -> torch.dtype:
        return torch.float32

    def __len__(self) -> int:
        return self._n

    def _fetch(self, pos: np.ndarray) -> torch.Tensor:
        self.decoded += len(pos)
        self.largest = max(self.largest, len(pos))
        arr = self._decode(pos)
        return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))

    def __getitem__(self, key: slice | int | torch.Tensor | np.ndarray | list[int]) -> torch.Tensor:
        if self._all is not None:
            return self._all[key]
        if isinstance(key, slice):
            pos = np.arange(*key.indices(self._n))
            return self._fetch(pos) if len(pos) else torch.empty(0, *self._item)
        t = torch.as_tensor(key)
        if t.dtype == torch.bool:
            t = t.nonzero().flatten()
        pos = t.cpu().numpy().astype(np.int64)
        if pos.size and (pos.min() < -self._n or pos.max() >= self._n):
            raise IndexError(f"index {key!r} out of range for {self._n} samples")
        pos = np.where(pos < 0, pos + self._n, pos)
        if pos.ndim == 0:  # one position (int, numpy or 0-d tensor): one image, like a tensor
            return self._fetch(pos.reshape(1))[0]
        return self._fetch(pos) if len(pos) else torch.empty(0, *self._item)

    def tensor(self) -> torch.Tensor:
        """All images at once (decoded now when streamed): for callers that need the whole set."""
        if self._all is not None:
            return self._all
        return self[0 : self._n]


# what the engine and the checks accept as the evaluated images
Images = torch.Tensor | Samples
