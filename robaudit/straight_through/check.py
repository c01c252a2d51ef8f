"""The self-check: a rewritten copy is returned only if its outputs equal the original's.

Owns turning a plan and a copy into the final :class:`StraightThrough`, with the one-line
reason whenever no copy is returned.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
import torch.utils._pytree as pytree
from torch import Tensor, nn

from robaudit.straight_through.plan import _Plan
from robaudit.straight_through.result import NOTHING_FOUND, StraightThrough, _one_line

log = logging.getLogger(__name__)


def _finish(
    model: nn.Module,
    module: nn.Module | None,
    plan: _Plan,
    example: Tensor,
    graph_kind: str | None,
) -> StraightThrough:
    replacements, left = plan.replacements, tuple(plan.left)
    if plan.refusal:
        return StraightThrough(None, replacements, plan.refusal, left, graph_kind)
    if module is None:
        if left:
            kept = ", ".join(sorted({r.op for r in left}))
            reason = f"gradient-killing operations found but none can be rewritten: {kept}"
        elif plan.fake_quant:
            reason = f"{NOTHING_FOUND} (fake_quantize already passes gradients straight through)"
        else:
            reason = NOTHING_FOUND
        return StraightThrough(None, (), reason, left, graph_kind)
    mismatch = _compare(model, module, example)
    if mismatch:
        return StraightThrough(None, replacements, mismatch, left, graph_kind)
    return StraightThrough(module, replacements, None, left, graph_kind)


def _compare(model: nn.Module, copy_: nn.Module, example: Tensor) -> str | None:
    """None if the copy's outputs equal the original's on ``example`` (same RNG draws)."""
    try:
        want = _seeded(model, example)
    except Exception as exc:
        return f"the model fails on the example input ({_one_line(exc, 160)}); no rewrite"
    try:
        got = _seeded(copy_, example)
    except Exception as exc:
        return f"the rewritten copy fails to run ({_one_line(exc, 160)}); not used"
    a, b = pytree.tree_leaves(want), pytree.tree_leaves(got)
    if len(a) != len(b):
        return "the rewritten copy returns a different structure; not used"
    for x, y in zip(a, b, strict=True):
        if not isinstance(x, torch.Tensor):
            if x != y:
                return "the rewritten copy's outputs differ from the model's; not used"
            continue
        if not isinstance(y, torch.Tensor) or x.shape != y.shape or x.dtype != y.dtype:
            return "the rewritten copy's outputs have another shape or dtype; not used"
        if torch.equal(x, y) or bool(((x == y) | (x.isnan() & y.isnan())).all()):
            continue
        diff = float((x.double() - y.double()).abs().nan_to_num(0.0).max())
        scale = float(x.double().abs().nan_to_num(0.0, 0.0, 0.0).max())
        if x.device.type != "cpu" and diff <= 1e-5 * max(scale, 1.0):
            # GPU fusers (TorchScript's NNC) may contract the copy's extra ops differently;
            # verdicts come from the original, so a last-bit difference is harmless
            log.debug("straight-through copy differs from the model by %.3g on %s", diff, x.device)
            continue
        return (
            f"the rewritten copy's outputs differ from the model's (max |diff| {diff:.3g}); "
            "not used"
        )
    return None


def _seeded(module: nn.Module, x: Tensor) -> Any:
    """One forward pass under a fixed seed, so randomized models draw the same noise twice."""
    devices = [x.device.index or 0] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        torch.manual_seed(0)
        return module(x)
