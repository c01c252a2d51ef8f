"""Which ONNX output robaudit reads as the class scores (robaudit/loading/onnx.py)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from robaudit.errors import ModelLoadError
from robaudit.loading.onnx import scores_output


def out(name: str, kind: str) -> SimpleNamespace:
    return SimpleNamespace(name=name, type=kind)


def test_one_output_is_taken_as_logits() -> None:
    assert scores_output([out("logits", "tensor(float)")], "m.onnx") == ("logits", False)


def test_converted_classifier_gives_its_probabilities_as_log_scores() -> None:
    outs = [out("label", "tensor(int64)"), out("probabilities", "tensor(float)")]
    assert scores_output(outs, "m.onnx") == ("probabilities", True)
    lgbm = [out("label", "tensor(int64)"), out("output_probability", "tensor(float)")]
    assert scores_output(lgbm, "m.onnx") == ("output_probability", True)
    other = [out("label", "tensor(int64)"), out("scores", "tensor(float)")]
    assert scores_output(other, "m.onnx") == ("scores", False)


def test_zipmap_output_is_refused_by_name() -> None:
    outs = [out("output_label", "tensor(int64)"),
            out("output_probability", "seq(map(int64,tensor(float)))")]  # fmt: skip
    with pytest.raises(ModelLoadError, match="zipmap") as err:
        scores_output(outs, "m.onnx")
    assert "\n" not in str(err.value) and "m.onnx" in str(err.value)
