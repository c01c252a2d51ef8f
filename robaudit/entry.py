"""The ``robaudit`` command's entry point: settle OpenMP's waiting before torch loads.

PyTorch's OpenMP threads spin while they wait for work (``OMP_WAIT_POLICY=ACTIVE`` in effect).
On a shared CI runner whose cores other jobs keep busy, a spinning thread steals the time the
thread it waits for needs: measured here, ``robaudit selftest`` took 210 s with two threads
beside a busy 2-thread neighbour and 6.5 s with passive waits (6.4 s on one thread). So the
command asks for passive waits unless the user chose a policy; it must happen before the first
``import torch`` in the process, hence this module imports nothing heavy. The Python API runs
in the caller's process and leaves the caller's OpenMP settings alone.
"""

from __future__ import annotations

import os
import sys


def passive_waits() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless set already or torch is loaded; True if set now."""
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True


def main() -> None:
    """Console-script entry point (``robaudit`` and ``python -m robaudit``)."""
    passive_waits()
    from robaudit.cli import app

    app()
