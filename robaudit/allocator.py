"""glibc's malloc tuned for attack loops on the CPU: freed memory stays in the process.

An attack's inner loop allocates and frees the same few activation tensors thousands of
times. By default glibc serves blocks above a dynamic threshold (128 KiB at start) with
``mmap`` and gives the top of the heap back to the system once more than twice that is free,
so each iteration's fresh activations page-fault again: measured on the digits CNN, the ReLU
after the second convolution took 410 µs per call instead of 60 µs and the whole forward pass
2.0 ms instead of 1.6 ms. Raising both thresholds keeps those pages mapped (the peak is held,
not grown). PyTorch's CPU performance guide suggests jemalloc or tcmalloc for the same reason;
this needs no extra library. Set ``ROBAUDIT_KEEP_MALLOC=1`` to leave malloc as it is.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import sys

_M_TRIM_THRESHOLD = -1  # glibc's mallopt parameter numbers (malloc.h)
_M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20  # glibc's largest allowed value on 64-bit systems
TRIM_THRESHOLD = 256 << 20  # free memory kept at the top of the heap before giving it back


@functools.lru_cache(maxsize=1)
def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds once per process; True if they were raised.

    A no-op (False) off Linux, on other C libraries (musl has no mallopt), and when
    ``ROBAUDIT_KEEP_MALLOC=1`` is set.
    """
    if os.environ.get("ROBAUDIT_KEEP_MALLOC") == "1" or not sys.platform.startswith("linux"):
        return False
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    mallopt.restype = ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(
        mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD)
    )
