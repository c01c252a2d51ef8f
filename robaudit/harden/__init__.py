"""Hardening: adversarial training (PGD-AT, fast-AT, TRADES, mixed batches) and defensive
distillation, then the same audit of the original and the hardened model side by side.

Modules, one job each: :mod:`~robaudit.harden.options` (settings and their checks),
:mod:`~robaudit.harden.data` (train / held-out split), :mod:`~robaudit.harden.methods` (one
batch loss per method), :mod:`~robaudit.harden.trainer` (the loop and model selection),
:mod:`~robaudit.harden.records` (epoch records, the log), :mod:`~robaudit.harden.checkpoints`
(``--resume``), :mod:`~robaudit.harden.export` (model files), :mod:`~robaudit.harden.compare`
(compare.json / compare.html) and :mod:`~robaudit.harden.api` (:func:`harden_model`, what
``robaudit harden`` calls).

The names below load on first use, so importing :mod:`robaudit.harden.options` (the CLI
does, for its flag defaults) does not pull in the training code.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from robaudit import lazy_exports

if TYPE_CHECKING:
    from robaudit.harden.api import HardenResult, harden_model
    from robaudit.harden.options import METHODS, HardenOptions
    from robaudit.harden.trainer import BatchStats, EpochRecord, TrainOutcome

_LAZY = {
    "HardenResult": "robaudit.harden.api",
    "harden_model": "robaudit.harden.api",
    "METHODS": "robaudit.harden.options",
    "HardenOptions": "robaudit.harden.options",
    "BatchStats": "robaudit.harden.trainer",
    "EpochRecord": "robaudit.harden.trainer",
    "TrainOutcome": "robaudit.harden.trainer",
}


__getattr__ = lazy_exports(__name__, _LAZY)

__all__ = [
    "METHODS",
    "BatchStats",
    "EpochRecord",
    "HardenOptions",
    "HardenResult",
    "TrainOutcome",
    "harden_model",
]
