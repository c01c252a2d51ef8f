"""robaudit: robustness audits of image classifiers, with a report and a CI gate.

The Python API is loaded on first use (``robaudit.scan``, ``robaudit.verify``,
``robaudit.Report``, ``robaudit.harden_model``), so ``import robaudit`` and the pytest plugin
stay cheap: torch is imported only when an audit is actually run.
"""

from __future__ import annotations

import importlib
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

try:
    __version__ = version("robaudit")
except PackageNotFoundError:  # running from a source tree without installing
    __version__ = "0.0.0+unknown"

if TYPE_CHECKING:
    from robaudit.api import Report, RobustAccuracy, UnknownThreatError, scan, verify
    from robaudit.errors import RobauditError
    from robaudit.harden import HardenOptions, HardenResult, harden_model

_LAZY = {
    "scan": "robaudit.api",
    "verify": "robaudit.api",
    "Report": "robaudit.api",
    "RobustAccuracy": "robaudit.api",
    "UnknownThreatError": "robaudit.api",
    "RobauditError": "robaudit.errors",
    "harden_model": "robaudit.harden",
    "HardenOptions": "robaudit.harden",
    "HardenResult": "robaudit.harden",
}


def __getattr__(name: str) -> Any:
    """Import the public API on first access (PEP 562)."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'robaudit' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "HardenOptions",
    "HardenResult",
    "Report",
    "RobauditError",
    "RobustAccuracy",
    "UnknownThreatError",
    "__version__",
    "harden_model",
    "scan",
    "verify",
]
