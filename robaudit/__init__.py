"""robaudit: robustness audits of image classifiers, with a report and a CI gate.

The Python API is loaded on first use (``robaudit.scan``, ``robaudit.verify``,
``robaudit.Report``, ``robaudit.harden_model``), so ``import robaudit`` and the pytest plugin
stay cheap: torch is imported only when an audit is actually run.

The package also holds the two helpers its subpackages share, which need nothing but the
standard library and so sit below every layer: :func:`lazy_exports` (this lazy loading) and
:class:`Registry` (the attacks and the defenses by name, from their catalogues).
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Iterable
from dataclasses import fields
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

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


def lazy_exports(package: str, names: dict[str, str]) -> Callable[[str], Any]:
    """A PEP 562 ``__getattr__`` for ``package``: each of ``names`` is imported from its module
    on first access and then kept in the package, so importing the package stays cheap."""
    namespace = sys.modules[package].__dict__

    def __getattr__(name: str) -> Any:
        if name in names:
            value = getattr(importlib.import_module(names[name]), name)
            namespace[name] = value
            return value
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__


__getattr__ = lazy_exports(__name__, _LAZY)

_C = TypeVar("_C")
_K = TypeVar("_K")


class Registry(Generic[_C]):
    """Classes by name for configs and the CLI (the attacks, the defenses), each given its
    catalogue row when it registers: every field of the row (a dataclass with a ``name``)
    becomes a class attribute, so ``cls.summary`` and the rest read the same everywhere.
    """

    def __init__(self, kind: str, rows: Iterable[Any], package: str) -> None:
        self.kind, self.package = kind, package  # the package whose import registers them all
        self.rows = {row.name: row for row in rows}
        self._classes: dict[str, type[_C]] = {}

    def register(self, name: str) -> Callable[[_K], _K]:
        """Class decorator: catalogue row ``name`` onto the class, and the class by ``name``."""
        row = self.rows[name]

        def add(cls: _K) -> _K:
            if self._classes.get(name, cls) is not cls:
                raise ValueError(f"{self.kind} name {name!r} registered twice")
            for field in fields(row):
                setattr(cls, field.name, getattr(row, field.name))
            self._classes[name] = cast("type[_C]", cls)
            return cls

        return add

    def classes(self) -> dict[str, type[_C]]:
        """Every registered class by name, sorted (importing the built-in ones first)."""
        importlib.import_module(self.package)
        return dict(sorted(self._classes.items()))


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
