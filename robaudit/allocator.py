"""glibc's malloc tuned for attack loops on the CPU: freed memory stays, but within a bound.

An attack's inner loop allocates and frees the same few activation tensors thousands of
times. By default glibc serves blocks above a dynamic threshold (128 KiB at start) with
``mmap`` and gives the top of the heap back to the system once more than twice that is free,
so each iteration's fresh activations page-fault again: measured on the digits CNN, the ReLU
after the second convolution took 410 µs per call instead of 60 µs and the whole forward pass
2.0 ms instead of 1.6 ms; a ResNet-18 gradient at 32x32 takes 12 ms a sample with small-block
``mmap`` against 6 ms from the heap. Raising both thresholds keeps those pages mapped.
PyTorch's CPU performance guide suggests jemalloc or tcmalloc for the same reason; this needs
no extra library. Set ``ROBAUDIT_KEEP_MALLOC=1`` to leave malloc as it is.

The price of a heap is fragmentation: as the cascade and early stopping shrink the active
batch step by step, every activation has a new size, and glibc's heap keeps growing with free
holes it never hands back (a ResNet-18 scan grew about 0.4 GiB a minute, 14 GiB in half an
hour; glibc's own defaults grow too, only more slowly). :func:`relieve`, called on every
forward pass, bounds that: every few calls it reads the resident size and, once it has grown
well past what the last trim left, calls ``malloc_trim(0)``, which hands the free pages inside
the heap back to the system (``madvise``) without moving a live tensor.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys
from dataclasses import dataclass
from typing import Any

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 << 20  # free memory kept at the top of the heap before giving it back
CHECK_EVERY = 8  # forward passes between two looks at the resident size (~10 µs a look)
SLACK_BYTES = 1 << 30  # growth tolerated above what the last trim left, at least ...
SLACK_FRACTION = 1.0  # ... or as much again, whichever is larger
_PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096


@functools.lru_cache(maxsize=1)
def _libc() -> Any | None:
    """glibc, or None off Linux, on other C libraries (musl has no mallopt) and when opted out."""
    if os.environ.get("ROBAUDIT_KEEP_MALLOC") == "1" or not sys.platform.startswith("linux"):
        return None
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        libc.mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
        libc.mallopt.restype = ctypes.c_int
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
    except (OSError, AttributeError):
        return None
    return libc


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if they were raised.

    A no-op (False) off Linux, on other C libraries, and when ``ROBAUDIT_KEEP_MALLOC=1`` is set.
    """
    libc = _libc()
    if libc is None:
        return False
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )


def resident_bytes() -> int | None:
    """This process's resident set size from /proc (None where there is no /proc)."""
    try:
        with open("/proc/self/statm", "rb") as fh:
            return int(fh.read().split()[1]) * _PAGE
    except (OSError, ValueError, IndexError):
        return None


@dataclass
class _Watch:
    calls: int = 0
    limit: int | None = None  # resident bytes that trigger the next trim
    trims: int = 0


_WATCH = _Watch()


def _limit_after(resident: int) -> int:
    return resident + max(SLACK_BYTES, int(resident * SLACK_FRACTION))


def relieve() -> bool:
    """Give the heap's free pages back once it has grown well past the last trim; True if so.

    Cheap enough for every forward pass: it reads /proc only every ``CHECK_EVERY`` calls, and
    does nothing unless :func:`keep_freed_memory` raised the thresholds in this process.
    """
    _WATCH.calls += 1
    if _WATCH.calls % CHECK_EVERY or not keep_freed_memory():
        return False
    resident = resident_bytes()
    if resident is None:
        return False
    if _WATCH.limit is None:
        _WATCH.limit = _limit_after(resident)
        return False
    if resident <= _WATCH.limit:
        return False
    libc = _libc()
    if libc is None:  # pragma: no cover - keep_freed_memory() is True only with glibc
        return False
    libc.malloc_trim(0)
    _WATCH.trims += 1
    # never lower the bar: right after a trim the heap's working set faults back in at once,
    # and a bar set from the trimmed size would trim again every few calls (~9% slower)
    _WATCH.limit = max(_WATCH.limit, _limit_after(resident_bytes() or resident))
    return True


def trims() -> int:
    """How many times :func:`relieve` trimmed the heap in this process (for tests and logs)."""
    return _WATCH.trims
