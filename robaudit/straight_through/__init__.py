"""Straight-through (BPDA) copies of a model, made by rewriting its graph.

A model that rounds, thresholds or detaches its input inside ``forward`` (an input quantizer,
``inner(torch.round(3 * x) / 3)``) has zero input gradients almost everywhere, so every
gradient attack stalls and the audit overstates robustness. Backward Pass Differentiable
Approximation (Athalye, Carlini & Wagner 2018, "Obfuscated Gradients Give a False Sense of
Security") attacks a copy in which each such operation keeps its forward value but passes a
surrogate gradient backward; verdicts still come from the unmodified model.

:func:`straight_through_copy` finds those operations in the model's graph (a ``torch.export``
program, an FX trace, or the TorchScript IR) and rewrites a copy. Each replacement computes

    y = value + (s.detach() - s).neg()        # s: the surrogate, e.g. the op's input

whose forward value is ``value`` bit for bit (the added term is -0.0, the IEEE identity) and
whose gradient is that of ``s``. The original model is never modified; the copy owns its
parameters, and its outputs are checked against the original's before it is returned.

This module owns the public API and picks the path for a model. The package:

- ``result``: :class:`Replacement`, :class:`StraightThrough`, :data:`NOTHING_FOUND`
- ``surrogates``: the straight-through autograd helpers the rewritten graphs call
- ``vocabulary``: the normalized op names the rules recognize
- ``plan``: the planned actions and the :class:`~.plan._View` a graph is read through
- ``rules``: which gradient killers a graph holds and what replaces each (IR-independent)
- ``fx_graph``: capture with torch.export / fx, and the FX view and rewrite
- ``torchscript``: the TorchScript IR view and rewrite
- ``copies``: deep copies that own their parameters
- ``check``: the final comparison of the copy's outputs with the original's
"""

from __future__ import annotations

import logging
import warnings

import torch
from torch import Tensor, fx, nn

from robaudit.straight_through.check import _finish
from robaudit.straight_through.copies import _owned_copy
from robaudit.straight_through.fx_graph import _capture, _fx_rewrite
from robaudit.straight_through.result import (
    NOTHING_FOUND,
    Replacement,
    StraightThrough,
    _one_line,
)
from robaudit.straight_through.torchscript import _torchscript

__all__ = ["NOTHING_FOUND", "Replacement", "StraightThrough", "straight_through_copy"]

log = logging.getLogger(__name__)


def straight_through_copy(model: nn.Module, example: Tensor) -> StraightThrough:
    """A copy of ``model`` whose gradient-killing operations pass gradients straight through.

    ``example`` is one input batch on the device the copy will run on (it drives
    ``torch.export``, which records devices, and the final check that the copy's outputs equal
    the original's). ``model`` must be in eval mode. Never raises: anything that cannot be
    rewritten comes back as ``module=None`` with a one-line ``reason``.
    """
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit / torch.export deprecation notices
            return _straight_through(model, example)
    except Exception as exc:  # a rewrite must never take the audit down with it
        log.debug("straight-through rewrite failed", exc_info=True)
        return StraightThrough(None, (), f"straight-through rewrite failed: {_one_line(exc)}")


def _straight_through(model: nn.Module, example: Tensor) -> StraightThrough:
    from robaudit.loading.model import _ExportedModule
    from robaudit.loading.onnx import OnnxModule

    if not isinstance(example, torch.Tensor):
        return StraightThrough(None, (), "the example input is not a tensor; no rewrite")
    example = example.detach()
    if isinstance(model, OnnxModule):
        return StraightThrough(
            None, (), "ONNX models run in onnxruntime, outside autograd; no graph to rewrite"
        )
    wrapped = isinstance(model, _ExportedModule)
    program = model.program if wrapped else model
    if isinstance(program, fx.GraphModule) and (wrapped or hasattr(program, "_in_spec")):
        # ExportedProgram.module(): a static graph, whatever its training flag says
        gm, graph_kind = _owned_copy(program), "torch.export"
    elif model.training:
        # a forward pass in training mode would update the original's batch-norm statistics
        return StraightThrough(None, (), "model is in training mode; call .eval() first")
    elif isinstance(model, torch.jit.ScriptModule):
        scripted, ts_plan = _torchscript(model)
        return _finish(model, scripted, ts_plan, example, "torchscript")
    elif isinstance(model, fx.GraphModule):
        gm, graph_kind = _owned_copy(model), "fx"
    else:
        captured = _capture(model, example)
        if isinstance(captured, str):
            return StraightThrough(None, (), captured)
        gm, graph_kind = captured
    plan = _fx_rewrite(gm)
    module: nn.Module | None = None
    if not plan.refusal and plan.actions:
        # exported graph modules refuse .eval(); robaudit's loader wraps them the same way
        module = _ExportedModule(gm) if graph_kind == "torch.export" else gm
        module.train(False)
    return _finish(model, module, plan, example, graph_kind)
