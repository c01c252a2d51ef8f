"""Query-only audits: the ONNX export of a sample model, ``--access score|decision`` on the
TorchScript file, and the transfer attack (gray box: a surrogate's gradients, no target queries)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import robaudit
from tests.helpers import one_thread

ROOT = Path(__file__).resolve().parents[2]
PLAIN = ROOT / "sample_models" / "digits_cnn.pt"
ONNX = ROOT / "sample_models" / "digits_cnn.onnx"
ROBUST = ROOT / "sample_models" / "digits_cnn_robust.pt"


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def _cfg(attacks: list[dict[str, Any]], samples: int = 80) -> dict[str, Any]:
    return {
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "data": {"samples": samples},
        "attacks": attacks,
        "engine": {"device": "cpu"},
        "report": {"examples": 0},
    }


BLACK_BOX = [
    {"name": "pgd", "norm": "linf", "eps": [0.2], "steps": 10},
    {"name": "noise", "norm": "linf", "eps": [0.2], "draws": 10},
    {"name": "square", "norm": "linf", "eps": [0.2], "queries": 200},
]


def _rows(r: robaudit.Report) -> list[tuple[Any, ...]]:
    return [
        (a.attack, a.threat_key, a.broken, a.queries, a.queries_per_success_median)
        for a in r.result.attacks
    ]


@pytest.fixture(scope="module")
def onnx_and_torchscript() -> tuple[robaudit.Report, robaudit.Report]:
    pytest.importorskip("onnxruntime")
    onnx = robaudit.scan(ONNX, config=_cfg(BLACK_BOX))
    ts = robaudit.scan(PLAIN, config=_cfg(BLACK_BOX), access="score")
    return onnx, ts


def test_onnx_matches_torchscript_clean_and_black_box(onnx_and_torchscript: tuple) -> None:
    onnx, ts = onnx_and_torchscript
    assert onnx.result.model.format == "onnx"
    assert onnx.clean_accuracy == ts.clean_accuracy
    assert _rows(onnx) == _rows(ts)  # same seed, same candidates, same verdicts and costs
    assert [t.robust for t in onnx.result.threats] == [t.robust for t in ts.result.threats]


def test_white_box_attacks_are_skipped_with_a_reason(onnx_and_torchscript: tuple) -> None:
    onnx, ts = onnx_and_torchscript
    for r, why in ((onnx, "onnx model answers queries only"), (ts, "--access score")):
        assert [s.attack for s in r.result.skipped] == ["pgd"]
        assert why in r.result.skipped[0].reason
        assert {t.access for t in r.result.threats} == {"score"}
        assert "RA015" in {f.id for f in r.findings}
        assert all(a.access_used in ("score", "decision") for a in r.result.attacks)


def test_decision_access_keeps_only_label_attacks() -> None:
    r = robaudit.scan(PLAIN, config=_cfg(BLACK_BOX, samples=30), access="decision")
    assert sorted(s.attack for s in r.result.skipped) == ["pgd", "square"]
    assert [a.attack for a in r.result.attacks] == ["noise"]


def test_transfer_breaks_without_target_queries() -> None:
    cfg = _cfg(
        [{"name": "transfer", "norm": "linf", "eps": [0.2, 0.3], "surrogate": str(ROBUST), "steps": 20}],
        samples=100,
    )
    r = robaudit.scan(PLAIN, config=cfg)
    rows = {a.eps: a for a in r.result.attacks}
    assert all(a.queries == 0 and a.grad_evals == 0 for a in rows.values())
    assert all(a.access_used == "decision" for a in rows.values())
    # PGD on the robust twin transfers to the plain model: far from nothing, less than white-box
    assert rows[0.2].broken >= 10
    assert rows[0.3].broken >= rows[0.2].broken


def test_transfer_needs_a_surrogate() -> None:
    with pytest.raises(robaudit.errors.ConfigError, match=r"attacks\[0\]\.surrogate: required"):
        robaudit.scan(PLAIN, config=_cfg([{"name": "transfer", "eps": 0.1}]))
    with pytest.raises(robaudit.errors.ConfigError, match=r"surrogate model file 'nope\.pt' not found"):
        robaudit.scan(PLAIN, config=_cfg([{"name": "transfer", "eps": 0.1, "surrogate": "nope.pt"}]))


def test_a_config_with_nothing_runnable_is_bad_input() -> None:
    cfg = _cfg([{"name": "pgd", "eps": 0.1, "steps": 2}], samples=10)
    with pytest.raises(robaudit.errors.ConfigError, match="no attack can run at score access"):
        robaudit.scan(ONNX, config=cfg)
