"""ONNX models through onnxruntime (the optional ``onnx`` extra): query access only.

An ONNX file in a serving stack gives scores, not gradients, so it is loaded as a ``score``
access model: white-box attacks in the config are skipped (with the reason in the report) and
the black-box ones run through counted queries, exactly as against a PyTorch model audited
with ``--access score``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from robaudit.errors import ModelLoadError

ONNX_MAGIC_HINT = "an ONNX file (.onnx) needs the optional extra: pip install 'robaudit[onnx]'"


def looks_like_onnx(p: Path) -> bool:
    """ONNX files are protobufs with no magic number: trust the suffix."""
    return p.suffix.lower() == ".onnx"


class OnnxModule(nn.Module):
    """An onnxruntime session behind the nn.Module interface the Classifier expects.

    It has no parameters and no autograd graph: a gradient taken through it would be zero, so
    robaudit never asks (the model's access level is ``score``).
    """

    def __init__(self, session: Any, path: str) -> None:
        super().__init__()
        self._session = session
        self._input = session.get_inputs()[0].name
        self._path = path
        self._output, self._log = scores_output(session.get_outputs(), path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        arr = x.detach().to("cpu", torch.float32).contiguous().numpy()
        try:
            (out,) = self._session.run([self._output], {self._input: arr})
        except Exception as exc:  # onnxruntime raises its own types; say which input failed
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise RuntimeError(f"ONNX model {self._path} failed on input {list(arr.shape)}: {first}") from None
        scores = torch.from_numpy(np.asarray(out, dtype=np.float32))
        if self._log:  # probabilities: their logs are logits with the same softmax
            scores = scores.clamp_min(torch.finfo(torch.float32).tiny).log()
        return scores.to(x.device)


def scores_output(outputs: list[Any], path: str) -> tuple[str, bool]:
    """The output holding the class scores, and whether it holds probabilities.

    Converted scikit-learn, XGBoost and LightGBM classifiers (skl2onnx, onnxmltools) have two
    outputs, the predicted ``label`` (int64 [N]) and ``probabilities`` (float [N, K]); the
    attacks need the scores, as logits: robaudit takes log p, whose softmax is p again, so the
    decision threshold and every margin read the same. A model with one output is taken as it
    is (logits). A ZipMap output (a list of dicts) is refused by name.
    """
    if len(outputs) == 1:
        return outputs[0].name, False
    floats = [o for o in outputs if str(o.type).startswith("tensor(float")]
    probs = [o for o in floats if "prob" in o.name.lower()]
    if probs:
        return probs[0].name, True
    if floats:
        return floats[0].name, False
    kinds = ", ".join(f"{o.name}: {o.type}" for o in outputs)
    raise ModelLoadError(
        f"model file '{path}': no float score output among {kinds}; export the classifier "
        "with its probabilities as a tensor (skl2onnx: options={id(model): {'zipmap': False}})"
    )


def load_onnx(p: Path) -> nn.Module:
    """An :class:`OnnxModule` for the file; a missing runtime or a broken file is one line."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ModelLoadError(f"model file '{p}': {ONNX_MAGIC_HINT}") from None
    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: its warnings would mix with our output
    try:
        session = ort.InferenceSession(str(p), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:
        msg = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise ModelLoadError(f"model file '{p}' is not a loadable ONNX model: {msg}") from None
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ModelLoadError(
            f"model file '{p}': ONNX model has {len(inputs)} inputs ({names}); robaudit needs "
            "exactly one input (the batch of samples)"
        )
    return OnnxModule(session, str(p)).eval()
