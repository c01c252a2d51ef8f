"""pytest plugin (entry point ``pytest11``): gate robustness inside the test suite a team runs.

    def test_model_is_robust(robaudit_scan):
        report = robaudit_scan("model.pt", config="configs/strict.yaml")
        assert report.robust_accuracy("linf", 8/255) >= 0.40

``robaudit_scan`` takes the arguments of :func:`robaudit.scan`, writes each scan's report
files under the test's ``tmp_path`` (or ``--robaudit-out DIR/<test id>/``) and returns the
:class:`robaudit.api.Report`. A failed comparison on a robust accuracy explains itself:
threat, value, limit, and the path of the HTML report written for that test.

Nothing heavy is imported until a test uses robaudit, so installing robaudit does not slow
down the start of unrelated test suites.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from robaudit.api import ConfigInput, DataInput, ModelInput, Report

_FLIP = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


class ScanFixture(Protocol):
    """The ``robaudit_scan`` fixture: :func:`robaudit.scan` plus saved report files."""

    def __call__(
        self, model: ModelInput, data: DataInput = None, *, config: ConfigInput, **kwargs: Any
    ) -> Report: ...


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robaudit", "robustness audits (robaudit)")
    group.addoption(
        "--robaudit-out",
        metavar="DIR",
        default=None,
        help="write robaudit_scan reports under DIR/<test id>/ instead of each test's tmp_path "
        "(to keep them as CI artifacts)",
    )
    group.addoption(
        "--robaudit-device",
        metavar="DEVICE",
        default=None,
        help="device for robaudit_scan when a test passes none (auto, cpu, cuda, cuda:N)",
    )


def _safe_id(nodeid: str) -> str:
    """A test id as one folder name."""
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", nodeid).strip("_")[:150] or "test"


@pytest.fixture
def robaudit_scan(request: pytest.FixtureRequest, tmp_path: Path) -> ScanFixture:
    """Run an audit like ``robaudit.scan(...)``, save its reports, return the Report."""
    out_opt = request.config.getoption("robaudit_out")
    device_opt = request.config.getoption("robaudit_device")
    root = Path(out_opt).resolve() if out_opt else tmp_path
    base = root / _safe_id(request.node.nodeid) if out_opt else root / "robaudit"
    counter = itertools.count()

    def run(
        model: ModelInput, data: DataInput = None, *, config: ConfigInput, **kwargs: Any
    ) -> Report:
        from robaudit.api import scan

        if device_opt is not None and kwargs.get("device") is None:
            kwargs["device"] = device_opt
        report = scan(model, data, config=config, **kwargs)
        report.save(base / f"scan{next(counter)}")
        return report

    return run


def pytest_assertrepr_compare(
    config: pytest.Config, op: str, left: object, right: object
) -> list[str] | None:
    """Explain a failed comparison of a robust accuracy with a limit, in words."""
    if _is_robust_accuracy(left) and isinstance(right, (int, float)):
        return left.explain(op, float(right))  # type: ignore[attr-defined]
    if _is_robust_accuracy(right) and isinstance(left, (int, float)) and op in _FLIP:
        return right.explain(_FLIP[op], float(left))  # type: ignore[attr-defined]
    return None


def _is_robust_accuracy(value: object) -> bool:
    """True for robaudit.api.RobustAccuracy, checked without importing robaudit.api (torch)."""
    cls = type(value)
    return cls.__name__ == "RobustAccuracy" and cls.__module__ == "robaudit.api"
