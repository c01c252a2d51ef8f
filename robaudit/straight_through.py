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
"""

from __future__ import annotations

import copy
import functools
import logging
import operator
import re
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.utils._pytree as pytree
from torch import Tensor, fx, nn

__all__ = ["NOTHING_FOUND", "Replacement", "StraightThrough", "straight_through_copy"]

_M = TypeVar("_M", bound=nn.Module)

log = logging.getLogger(__name__)

NOTHING_FOUND = "no gradient-killing operation found"


@dataclass(frozen=True)
class Replacement:
    """One gradient-killing operation and what the copy passes backward through it."""

    op: str  # as the graph names it: "aten.round.default", "aten::gt", "Tensor.float"
    where: str  # node name, module path and source line when the graph records them
    backward: str  # "identity", or the smooth surrogate whose gradient is used


@dataclass(frozen=True)
class StraightThrough:
    """The rewritten copy (None when there is nothing to rewrite or it cannot be done).

    ``reason`` is one line for the report whenever ``module`` is None. ``left`` lists
    gradient killers that were found but kept (no meaningful surrogate exists for them);
    ``graph`` says how the graph was captured: "torch.export", "fx.symbolic_trace",
    "torchscript" or None.
    """

    module: nn.Module | None
    replacements: tuple[Replacement, ...]
    reason: str | None
    left: tuple[Replacement, ...] = ()
    graph: str | None = None


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


# ------------------------------------------------------------------ surrogate helpers
# Plain torch code, so that the same functions serve as FX call targets and, scripted, as
# TorchScript subgraphs inlined into a module's IR. Scalars arrive as tensors in TorchScript.


def _ste(value: Tensor, surrogate: Tensor) -> Tensor:
    """``value`` forward, the gradient of ``surrogate`` backward.

    ``s.detach() - s`` is +0.0 for finite ``s``, so the added term is -0.0, which leaves every
    value (-0.0, inf and NaN included) unchanged; ``nan_to_num`` keeps a non-finite surrogate
    from turning that zero into NaN. The cast keeps the value's dtype. ``value`` is detached:
    its own gradient is zero, or missing (``floor_divide`` has no derivative at all).
    """
    s = torch.nan_to_num(surrogate, 0.0, 0.0, 0.0)
    return value.detach() + (s.detach() - s).neg().to(value.dtype)


def _ste_kept(value: Tensor, surrogate: Tensor) -> Tensor:
    """:func:`_ste` for arithmetic on a mask (``(x < t) + y``): ``value`` keeps the gradient
    its other operand gives it, and the mask's share is added."""
    s = torch.nan_to_num(surrogate, 0.0, 0.0, 0.0)
    return value + (s.detach() - s).neg().to(value.dtype)


def _st_identity(value: Tensor, x: Tensor) -> Tensor:
    """round/floor/ceil/trunc/sign(x), quantize→dequantize(x): identity backward."""
    return _ste(value, x)


def _st_step(value: Tensor, a: Tensor, b: Tensor, sign: float, scale: Tensor) -> Tensor:
    """A threshold step (a > b) times ``scale``: backward of ``sign * (a - b) * scale``."""
    return _ste_kept(value, (a - b) * sign * scale)


def _st_step_div(value: Tensor, a: Tensor, b: Tensor, sign: float, divisor: Tensor) -> Tensor:
    """A threshold step divided by ``divisor``: backward of ``sign * (a - b) / divisor``."""
    return _ste_kept(value, (a - b) * sign / divisor)


def _st_select(
    value: Tensor, a: Tensor, b: Tensor, sign: float, hi: Tensor, lo: Tensor
) -> Tensor:
    """``where(a > b, hi, lo)`` with constant branches: backward of ``(hi - lo) * (a - b)``."""
    return _ste(value, (a - b) * sign * (hi - lo))


def _st_ratio(value: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """Rounding division ``a // b``: backward of the true division ``a / b``."""
    return _ste(value, a / b)


def _st_onehot(value: Tensor, x: Tensor, dim: int, sign: float) -> Tensor:
    """``one_hot(argmax(x, dim))`` as floats: backward of ``softmax(x, dim)`` (classes last)."""
    return _ste(value, torch.softmax(x * sign, dim).movedim(dim, -1))


_HELPERS: dict[str, Callable[..., Tensor]] = {
    f.__name__: f
    for f in (_st_identity, _st_step, _st_step_div, _st_select, _st_ratio, _st_onehot)
}


# ------------------------------------------------------------------ the op vocabulary
# Names are normalized: namespace, overload and dunder stripped ("aten.gt.Scalar",
# "operator.gt", "Tensor.__gt__" and "aten::gt" are all "gt").

_IDENTITY = frozenset({"round", "floor", "ceil", "trunc", "fix", "sign", "sgn", "heaviside"})
_ROUNDING_DIV = frozenset({"floor_divide", "floordiv"})
_COMPARISONS = {
    "gt": 1.0, "greater": 1.0, "ge": 1.0, "greater_equal": 1.0,
    "lt": -1.0, "less": -1.0, "le": -1.0, "less_equal": -1.0,
}  # fmt: skip
_EQUALITIES = frozenset({"eq", "ne", "not_equal", "isclose"})
_CASTS = frozenset(
    {"to", "_to_copy", "type_as", "float", "double", "half", "bfloat16", "type",
     "convert_element_type"}
)  # fmt: skip
_MUL = frozenset({"mul", "multiply"})
_ADD = frozenset({"add"})
_SUB = frozenset({"sub", "subtract"})
_DIV = frozenset({"div", "divide", "true_divide", "truediv"})
_ARGMAX = {"argmax": 1.0, "argmin": -1.0}
_INDEXING = frozenset({"embedding", "index", "index_select", "gather", "getitem", "take"})
_QUANTIZE = frozenset({"quantize_per_tensor", "quantize_per_channel", "quantize_per_tensor_dynamic"})
_DEQUANTIZE = frozenset({"dequantize", "dequantize_per_tensor", "dequantize_per_channel"})
_BUCKETS = frozenset({"bucketize", "searchsorted"})
# ops whose output may alias their input: an in-place op on such a result is not rewritten
_VIEWS = frozenset(
    {"view", "reshape", "transpose", "permute", "select", "slice", "getitem", "narrow",
     "expand", "expand_as", "squeeze", "unsqueeze", "flatten", "unflatten", "t", "as_strided",
     "diagonal", "chunk", "split", "unbind", "detach", "alias", "view_as", "movedim", "T",
     "contiguous", "real", "imag", "swapaxes", "swapdims", "unfold"}
)  # fmt: skip
_FLOAT_SCALAR_TYPES = frozenset({5, 6, 7, 15})  # c10::ScalarType Half, Float, Double, BFloat16


def _is_fake_quant(name: str) -> bool:
    return "fake_quantize" in name or name.startswith("fused_moving_avg_obs_fake_quant")


# ------------------------------------------------------------------ the plan

_MISSING: Any = object()


@dataclass
class _Op:
    """A graph node the rules understand: its normalized name and where it sits."""

    node: Any  # fx.Node or torch._C.Node
    name: str
    label: str
    inplace: bool
    where: str


@dataclass
class _Ste:
    """Insert ``y = helper(value, *args)`` after ``anchor``; ``value``'s uses (all, or only
    ``uses``) read ``y``."""

    anchor: Any
    value: Any
    helper: Callable[..., Tensor]
    args: tuple[Any, ...]
    uses: tuple[Any, ...] | None
    replacement: Replacement


@dataclass
class _Bypass:
    """``detach(x)``: every use reads ``x`` instead."""

    node: Any
    replacement: Replacement


@dataclass
class _GradOn:
    """A ``torch.no_grad`` region that runs with gradients in the copy."""

    node: Any
    replacement: Replacement


@dataclass
class _OutOfPlace:
    """An in-place killer ``a.round_()``: computed out of place, then made straight-through;
    its result and every later use of ``a`` read the new value."""

    node: Any
    operand: Any
    helper: Callable[..., Tensor]
    args: tuple[Any, ...]  # after the new value: the helper's remaining arguments
    replacement: Replacement


_Action = _Ste | _Bypass | _GradOn | _OutOfPlace


@dataclass
class _Plan:
    actions: list[_Action] = field(default_factory=list)
    left: list[Replacement] = field(default_factory=list)
    refusal: str | None = None
    fake_quant: bool = False

    @property
    def replacements(self) -> tuple[Replacement, ...]:
        return tuple(a.replacement for a in self.actions)


class _View:
    """What the rules need from a graph; one subclass per IR (FX, TorchScript)."""

    def ops(self) -> Iterator[_Op]:
        raise NotImplementedError

    def op_of(self, node: Any) -> _Op | None:
        raise NotImplementedError

    def arg(self, op: _Op, pos: int, names: tuple[str, ...] = (), default: Any = _MISSING) -> Any:
        raise NotImplementedError

    def output(self, op: _Op) -> Any:
        raise NotImplementedError

    def is_value(self, x: Any) -> bool:
        """A graph value (as opposed to a Python constant)."""
        raise NotImplementedError

    def const(self, x: Any) -> Any:
        """The Python constant ``x`` stands for, or _MISSING."""
        raise NotImplementedError

    def producer(self, x: Any) -> _Op | None:
        raise NotImplementedError

    def produced_by_node(self, x: Any) -> bool:
        """False for graph inputs, parameters and constants."""
        raise NotImplementedError

    def uses(self, x: Any) -> list[tuple[Any, Any]]:
        """(user node, handle for redirecting that one use) for every use of value ``x``."""
        raise NotImplementedError

    def dep(self, x: Any) -> bool:
        """Whether ``x`` depends on the model's input."""
        raise NotImplementedError

    def is_float(self, x: Any) -> bool | None:
        """Floating-point tensor or number; None when the graph does not say."""
        raise NotImplementedError

    def cast_is_float(self, op: _Op) -> bool | None:
        raise NotImplementedError

    def is_after(self, a: Any, b: Any) -> bool:
        """Node ``a`` runs after node ``b``."""
        raise NotImplementedError

    def is_no_grad(self, op: _Op) -> bool:
        raise NotImplementedError

    def same(self, a: Any, b: Any) -> bool:
        return a is b


def _plan(view: _View) -> _Plan:
    """Decide every rewrite from the graph alone; nothing is changed yet."""
    plan = _Plan()
    for op in view.ops():
        name = op.name
        if name == "quantized_kernel":
            plan.refusal = (
                f"quantized kernels ({op.label}) compute on integer tensors and have no "
                "gradients; no rewrite"
            )
            return plan
        if _is_fake_quant(name):
            plan.fake_quant = True
        elif view.is_no_grad(op):
            plan.actions.append(_GradOn(op.node, _rep(op, "identity (region runs with gradients)")))
        elif name in _IDENTITY:
            _identity(view, op, plan)
        elif name in _ROUNDING_DIV or (name in _DIV and _rounding_mode(view, op)):
            _rounding_div(view, op, plan)
        elif name in _COMPARISONS:
            _comparison(view, op, plan)
        elif name in _EQUALITIES:
            a, b = view.arg(op, 0, ("self", "input")), view.arg(op, 1, ("other",))
            if _dep(view, a, b) and any(_float_use(view, op)):
                plan.left.append(
                    _rep(op, "none: equality of continuous values has no slope to pass")
                )
        elif name in _ARGMAX:
            _argmax(view, op, plan)
        elif name == "detach":
            x = view.arg(op, 0, ("self", "input"))
            if view.is_value(x) and view.dep(x) and view.is_float(x) is not False:
                plan.actions.append(_Bypass(op.node, _rep(op, "identity (detach removed)")))
        elif name in _DEQUANTIZE:
            q = view.arg(op, 0, ("self", "input"))
            qop = view.producer(q) if view.is_value(q) else None
            if qop is not None and qop.name in _QUANTIZE:
                x = view.arg(qop, 0, ("self", "input"))
                if view.is_value(x) and view.dep(x):
                    label = f"{qop.label} -> {op.label}"
                    plan.actions.append(
                        _Ste(op.node, view.output(op), _st_identity, (x,), None,
                             Replacement(label, op.where, "identity"))
                    )  # fmt: skip
        elif name in _BUCKETS:
            x = view.arg(op, 0, ("self", "input"))
            if view.is_value(x) and view.dep(x):
                plan.left.append(_rep(op, "none: an integer bucket index has no surrogate"))
    return plan


def _rep(op: _Op, backward: str) -> Replacement:
    return Replacement(op.label, op.where, backward)


def _dep(view: _View, *xs: Any) -> bool:
    return any(view.is_value(x) and view.dep(x) for x in xs)


def _identity(view: _View, op: _Op, plan: _Plan) -> None:
    """round, floor, ceil, trunc, sign, heaviside: identity backward."""
    x = view.arg(op, 0, ("self", "input"))
    if not (view.is_value(x) and view.dep(x)) or view.is_float(x) is False:
        return
    rep = _rep(op, "identity")
    if not op.inplace:
        plan.actions.append(_Ste(op.node, view.output(op), _st_identity, (x,), None, rep))
    elif _rewritable_inplace(view, op, x):
        plan.actions.append(_OutOfPlace(op.node, x, _st_identity, (x,), rep))
    else:
        plan.left.append(_rep(op, "none: in-place on a tensor that is read elsewhere"))


def _rounding_mode(view: _View, op: _Op) -> bool:
    mode = view.const(view.arg(op, 2, ("rounding_mode",), None))
    return mode in ("floor", "trunc")


def _rounding_div(view: _View, op: _Op, plan: _Plan) -> None:
    """``a // b`` and ``div(a, b, rounding_mode=...)``: backward of ``a / b``."""
    a, b = view.arg(op, 0, ("self", "input")), view.arg(op, 1, ("other",))
    if not _dep(view, a, b) or view.is_float(view.output(op)) is False:
        return
    rep = _rep(op, "d(a / b): the true division")
    if op.inplace:
        if _rewritable_inplace(view, op, a):
            plan.actions.append(_OutOfPlace(op.node, a, _st_ratio, (a, b), rep))
        else:
            plan.left.append(_rep(op, "none: in-place on a tensor that is read elsewhere"))
        return
    plan.actions.append(_Ste(op.node, view.output(op), _st_ratio, (a, b), None, rep))


def _rewritable_inplace(view: _View, op: _Op, x: Any) -> bool:
    """An in-place op can be made out-of-place when its operand is a fresh intermediate
    (not an input, a parameter or a view) that nothing reads before the op."""
    if not (view.is_value(x) and view.produced_by_node(x)):
        return False
    producer = view.producer(x)
    if producer is None or producer.name in _VIEWS:
        return False
    return all(user is op.node or view.is_after(user, op.node) for user, _ in view.uses(x))


def _float_use(view: _View, op: _Op) -> Iterator[bool]:
    """For each use of a boolean result: does it turn into floating-point arithmetic?"""
    for user, _ in view.uses(view.output(op)):
        uop = view.op_of(user)
        if uop is None:
            continue
        yield (uop.name in _CASTS and view.cast_is_float(uop) is not False) or uop.name in (
            _MUL | _ADD | _SUB | _DIV | {"rsub", "where"}
        )


def _comparison(view: _View, op: _Op, plan: _Plan) -> None:
    """``x > t`` turned into numbers: a step with an identity surrogate through ``x - t``.

    Where the mask only gates a value that keeps its own gradient (``x * (x > 0)``,
    ``where(x > 0, x, 0)``), the gradient is already informative and nothing changes.
    """
    a, b = view.arg(op, 0, ("self", "input")), view.arg(op, 1, ("other",))
    if not _dep(view, a, b) or (view.is_float(a) is False and view.is_float(b) is False):
        return
    sign = _COMPARISONS[op.name]
    through = "identity through (a - b)" if sign > 0 else "identity through (b - a)"
    mask = view.output(op)
    for user, _ in view.uses(mask):
        uop = view.op_of(user)
        if uop is None:
            continue
        if uop.name in _CASTS and view.cast_is_float(uop) is not False:
            cast = view.output(uop)
            uses = tuple(h for u, h in view.uses(cast) if not _is_gate(view, u, cast))
            if uses:
                every = len(uses) == len(view.uses(cast))
                rep = Replacement(f"{op.label} -> {uop.label}", op.where, f"step: {through}")
                plan.actions.append(
                    _Ste(uop.node, cast, _st_step, (a, b, sign, 1.0), None if every else uses, rep)
                )
        elif uop.name == "where" and view.same(view.arg(uop, 0, ("condition",)), mask):
            hi, lo = view.arg(uop, 1, ("self", "input")), view.arg(uop, 2, ("other",))
            if not _dep(view, hi, lo):
                rep = Replacement(
                    f"{op.label} -> {uop.label}", op.where, f"step: (hi - lo) * {through}"
                )
                plan.actions.append(
                    _Ste(uop.node, view.output(uop), _st_select, (a, b, sign, hi, lo), None, rep)
                )
        elif uop.name in _MUL | _ADD | _SUB | _DIV | {"rsub"}:
            _arith_mask(view, op, uop, mask, (a, b, sign), through, plan)


def _is_gate(view: _View, user: Any, mask: Any) -> bool:
    """``mask * y`` where ``y`` depends on the input and is not itself a mask."""
    uop = view.op_of(user)
    if uop is None or uop.name not in _MUL:
        return False
    x, y = view.arg(uop, 0, ("self", "input")), view.arg(uop, 1, ("other",))
    other = y if view.same(x, mask) else x
    return (
        view.is_value(other)
        and view.dep(other)
        and view.is_float(other) is not False
        and not _is_mask(view, other)
    )


def _is_mask(view: _View, x: Any) -> bool:
    """A comparison's result, or a cast of one."""
    p = view.producer(x)
    if p is not None and p.name in _CASTS:
        src = view.arg(p, 0, ("self", "input"))
        p = view.producer(src) if view.is_value(src) else None
    return p is not None and (p.name in _COMPARISONS or p.name in _EQUALITIES)


def _arith_mask(
    view: _View,
    op: _Op,
    uop: _Op,
    mask: Any,
    step: tuple[Any, Any, float],
    through: str,
    plan: _Plan,
) -> None:
    """A boolean mask used directly in arithmetic (``(x < t) * 1.0``): the result keeps its
    value, and the mask's share of the backward pass becomes the step surrogate."""
    a, b, sign = step
    x, y = view.arg(uop, 0, ("self", "input")), view.arg(uop, 1, ("other",))
    first = view.same(x, mask)
    other = y if first else x
    label = f"{op.label} -> {uop.label}"
    helper: Callable[..., Tensor]
    if uop.name in _MUL:
        if _is_gate(view, uop.node, mask):
            return
        helper, args = _st_step, (a, b, sign, other)
    elif uop.name in _ADD:
        helper, args = _st_step, (a, b, sign, 1.0)
    elif uop.name in _SUB or uop.name == "rsub":
        negate = (uop.name == "rsub") == first  # rsub(self, other) is other - self
        helper, args = _st_step, (a, b, -sign if negate else sign, 1.0)
    elif first:  # mask / other
        helper, args = _st_step_div, (a, b, sign, other)
    else:  # other / mask: infinite where the mask is off; no useful surrogate
        return
    rep = Replacement(label, op.where, f"step: {through}")
    plan.actions.append(_Ste(uop.node, view.output(uop), helper, args, None, rep))


def _argmax(view: _View, op: _Op, plan: _Plan) -> None:
    """``one_hot(argmax(x, dim)).float()``: a straight-through softmax over ``dim``."""
    x = view.arg(op, 0, ("self", "input"))
    if not (view.is_value(x) and view.dep(x)):
        return
    dim = view.const(view.arg(op, 1, ("dim",), None))
    keepdim = view.const(view.arg(op, 2, ("keepdim",), False))
    sign = _ARGMAX[op.name]
    for user, _ in view.uses(view.output(op)):
        uop = view.op_of(user)
        if uop is None:
            continue
        if uop.name == "one_hot":
            classes = view.const(view.arg(uop, 1, ("num_classes",), -1))
            casts = [
                c
                for c in (view.op_of(u) for u, _ in view.uses(view.output(uop)))
                if c is not None and c.name in _CASTS
            ]
            usable = isinstance(dim, int) and keepdim is False and isinstance(classes, int)
            if not usable or classes < 1 or not casts:
                plan.left.append(
                    _rep(op, "none: one_hot needs a fixed dim, keepdim=False, num_classes > 0")
                )
                continue
            for cast in casts:
                if view.cast_is_float(cast) is False:
                    continue
                rep = Replacement(
                    f"{op.label} -> {uop.label} -> {cast.label}",
                    op.where,
                    f"softmax over dim {dim}" if sign > 0 else f"softmax(-x) over dim {dim}",
                )
                plan.actions.append(
                    _Ste(cast.node, view.output(cast), _st_onehot, (x, dim, sign), None, rep)
                )
        elif uop.name in _INDEXING:
            plan.left.append(
                _rep(op, "none: an index has no surrogate (one_hot(...).float() would get a "
                         "straight-through softmax)")
            )  # fmt: skip


# ------------------------------------------------------------------ FX (export / trace)

_TORCH_DIR = str(Path(torch.__file__).parent)
_ASSERT_METADATA = getattr(
    getattr(torch.ops.aten, "_assert_tensor_metadata", None), "default", None
)
_OPERATOR_NAMES = {"floordiv": "floor_divide", "truediv": "div"}
_TORCH_NAMESPACES: tuple[Any, ...] = (torch, torch.nn.functional, torch._C._nn, torch.special)


def _fx_name(node: fx.Node, root: nn.Module) -> tuple[str, str, bool] | None:
    """(normalized name, label, in-place) for a node the rules may care about."""
    target = node.target
    if node.op == "call_function":
        if isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
            qual = (
                target._schema.name
                if isinstance(target, torch._ops.OpOverload)
                else target._qualified_op_name
            )
            namespace, _, name = qual.partition("::")
            if namespace == "quantized":
                return "quantized_kernel", str(target), False
            if namespace not in ("aten", "prims", "quantized_decomposed"):
                return None
            label = str(target)
        elif isinstance(target, torch._ops.HigherOrderOperator):
            return target.name(), f"higher_order.{target.name()}", False
        elif target is torch._C._set_grad_enabled:
            return "set_grad_enabled", "torch._C._set_grad_enabled", False
        else:
            name = getattr(target, "__name__", "")
            if getattr(operator, name, None) is target:
                label = f"operator.{name}"
                name = _OPERATOR_NAMES.get(name, name)
            elif any(getattr(ns, name, None) is target for ns in _TORCH_NAMESPACES):
                label = f"torch.{name}"
            else:
                return None
    elif node.op == "call_method" and isinstance(target, str):
        name, label = target, f"Tensor.{target}"
    elif node.op == "call_module" and isinstance(target, str):
        mod = root.get_submodule(target)
        kind = type(mod).__module__
        if kind.startswith(("torch.ao.nn.quantized", "torch.nn.quantized")) and not (
            kind.startswith(("torch.ao.nn.quantized.reference",))
        ):
            return "quantized_kernel", f"{type(mod).__name__} ({target})", False
        if "fake_quantize" in kind:
            return "fake_quantize", type(mod).__name__, False
        return None
    else:
        return None
    if name.startswith("__") and name.endswith("__"):
        name = name[2:-2]
        name = _OPERATOR_NAMES.get(name, name)
    inplace = name.endswith("_") and not name.startswith("_")
    return (name[:-1] if inplace else name), label, inplace


_SHAPE_METHODS = frozenset({"size", "dim", "ndimension", "numel", "nelement", "stride"})
_SHAPE_ATTRS = frozenset({"shape", "ndim", "dtype", "device", "is_cuda", "layout"})


def _is_shape_query(node: fx.Node) -> bool:
    """A node that reads a tensor's metadata (shape, size, dtype), not its values."""
    target = node.target
    if node.op == "call_method":
        return target in _SHAPE_METHODS
    if node.op != "call_function":
        return False
    if target is getattr:
        return len(node.args) > 1 and node.args[1] in _SHAPE_ATTRS
    if target is len:
        return True
    if isinstance(target, torch._ops.OpOverload | torch._ops.OpOverloadPacket):
        return str(target).startswith(("aten.sym_", "aten.size", "aten.dim", "aten.numel"))
    return False


class _FxView(_View):
    """One FX graph (a GraphModule's or a higher-order op's subgraph)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        self.gm = gm
        self.nodes = list(gm.graph.nodes)
        self.index = {n: i for i, n in enumerate(self.nodes)}
        self._ops: dict[fx.Node, _Op | None] = {}
        self._dep: dict[fx.Node, bool] = {}
        for n in self.nodes:
            if n.op == "placeholder":
                self._dep[n] = True
            elif n.op == "get_attr" or _is_shape_query(n):
                self._dep[n] = False  # x.shape[0] // 2 is integer bookkeeping, not a killer
            else:
                self._dep[n] = any(self._dep.get(a, False) for a in n.all_input_nodes)

    def ops(self) -> Iterator[_Op]:
        for n in self.nodes:
            op = self.op_of(n)
            if op is not None:
                yield op

    def op_of(self, node: Any) -> _Op | None:
        if node not in self._ops:
            named = _fx_name(node, self.gm) if isinstance(node, fx.Node) else None
            self._ops[node] = (
                None if named is None else _Op(node, named[0], named[1], named[2], _fx_where(node))
            )
        return self._ops[node]

    def arg(self, op: _Op, pos: int, names: tuple[str, ...] = (), default: Any = _MISSING) -> Any:
        node: fx.Node = op.node
        if pos < len(node.args):
            return node.args[pos]
        for name in names:
            if name in node.kwargs:
                return node.kwargs[name]
        return None if default is _MISSING else default

    def output(self, op: _Op) -> Any:
        return op.node

    def is_value(self, x: Any) -> bool:
        return isinstance(x, fx.Node)

    def const(self, x: Any) -> Any:
        return _MISSING if isinstance(x, fx.Node) else x

    def producer(self, x: Any) -> _Op | None:
        return self.op_of(x) if isinstance(x, fx.Node) else None

    def produced_by_node(self, x: Any) -> bool:
        return isinstance(x, fx.Node) and x.op not in ("placeholder", "get_attr")

    def uses(self, x: Any) -> list[tuple[Any, Any]]:
        return [(u, u) for u in x.users] if isinstance(x, fx.Node) else []

    def dep(self, x: Any) -> bool:
        return isinstance(x, fx.Node) and self._dep.get(x, False)

    def is_float(self, x: Any) -> bool | None:
        if isinstance(x, bool | int):
            return False
        if isinstance(x, float):
            return True
        if not isinstance(x, fx.Node):
            return None
        if "val" not in x.meta:
            return None
        val = x.meta["val"]
        # a SymInt or other non-tensor is shape arithmetic: never a gradient path
        return bool(val.dtype.is_floating_point) if isinstance(val, torch.Tensor) else False

    def cast_is_float(self, op: _Op) -> bool | None:
        node: fx.Node = op.node
        known = self.is_float(node)
        if known is not None:
            return known
        if op.name in ("float", "double", "half", "bfloat16"):
            return True
        dtypes = [a for a in (*node.args[1:], *node.kwargs.values()) if isinstance(a, torch.dtype)]
        if dtypes:
            return bool(dtypes[0].is_floating_point)
        if op.name == "to" and not any(isinstance(a, fx.Node) for a in node.args[1:]):
            return False  # .to(device) only
        return None

    def is_after(self, a: Any, b: Any) -> bool:
        return self.index.get(a, -1) > self.index.get(b, -1)

    def is_no_grad(self, op: _Op) -> bool:
        node: fx.Node = op.node
        if op.name in ("wrap_with_set_grad_enabled", "set_grad_enabled"):
            return bool(node.args) and node.args[0] is False
        return False


def _fx_where(node: fx.Node) -> str:
    """``name in module.path at file.py:LINE`` from the node's FX metadata."""
    parts = [node.name]
    stack = node.meta.get("nn_module_stack")
    if isinstance(stack, dict) and stack:
        path = list(stack.values())[-1]
        path = path[0] if isinstance(path, tuple) else path
        if isinstance(path, str) and path and not path.startswith("L__self__"):
            parts.append(f"in {path}")
    trace = node.meta.get("stack_trace")
    if isinstance(trace, str):
        frames = [
            f
            for f in re.findall(r'File "([^"]+)", line (\d+)', trace)
            if not f[0].startswith(_TORCH_DIR)  # symbolic_trace ends in torch.fx's own frames
        ]
        if frames:
            file, line = frames[-1]
            parts.append(f"at {Path(file).name}:{line}")
    return " ".join(parts)


def _fx_apply(gm: fx.GraphModule, actions: Sequence[_Action]) -> None:
    """Carry out the plan on ``gm``'s graph (order as in :func:`_ordered`), then recompile."""
    graph = gm.graph
    for act in _ordered(actions):
        if isinstance(act, _Ste):
            with graph.inserting_after(act.anchor):
                y = graph.call_function(act.helper, (act.value, *act.args))
            if act.uses is None:
                act.value.replace_all_uses_with(y, delete_user_cb=lambda u, y=y: u is not y)
            else:
                for user in act.uses:
                    user.replace_input_with(act.value, y)
        elif isinstance(act, _OutOfPlace):
            node = act.node
            with graph.inserting_before(node):
                fresh = graph.create_node(
                    node.op, _fx_out_of_place(node), node.args, dict(node.kwargs)
                )
                y = graph.call_function(act.helper, (fresh, *act.args))
            later = [u for u in act.operand.users if u not in (fresh, y) and _after(u, node)]
            node.replace_all_uses_with(y)
            for user in later:
                user.replace_input_with(act.operand, y)
            graph.erase_node(node)
        elif isinstance(act, _Bypass):
            act.node.replace_all_uses_with(act.node.args[0])
            graph.erase_node(act.node)
        elif isinstance(act, _GradOn):
            if act.node.target is torch._C._set_grad_enabled:
                graph.erase_node(act.node)
            else:
                act.node.args = (True, *act.node.args[1:])
    graph.lint()
    gm.recompile()


def _after(a: fx.Node, b: fx.Node) -> bool:
    n = b.next
    while n.op != "root":
        if n is a:
            return True
        n = n.next
    return False


def _fx_out_of_place(node: fx.Node) -> Any:
    """The out-of-place twin of an in-place target: ``aten.round_.default`` -> round."""
    target = node.target
    if isinstance(target, str):
        return target.rstrip("_")
    if isinstance(target, torch._ops.OpOverload):
        packet = getattr(torch.ops.aten, target._schema.name.split("::")[1].rstrip("_"))
        return getattr(packet, target._overloadname, packet)
    name = getattr(target, "__name__", "").rstrip("_")
    return getattr(torch, name)


def _fx_rewrite(gm: fx.GraphModule) -> _Plan:
    """Plan and rewrite ``gm`` and every subgraph of its higher-order ops, in place."""
    total = _Plan()
    for sub in gm.modules():
        if not isinstance(sub, fx.GraphModule):
            continue
        plan = _plan(_FxView(sub))
        if plan.refusal:
            return plan
        total.fake_quant |= plan.fake_quant
        total.left.extend(plan.left)
        if plan.actions:
            _fx_apply(sub, plan.actions)
            total.actions.extend(plan.actions)
    if total.actions:
        for sub in gm.modules():
            if isinstance(sub, fx.GraphModule) and _drop_metadata_asserts(sub.graph):
                sub.recompile()
    return total


def _drop_metadata_asserts(graph: fx.Graph) -> bool:
    """Remove export's dtype/device assertions, which would pin the copy to the example's
    device and dtype (a copy is moved with ``.to()`` like any model); True if any went."""
    found = [n for n in graph.nodes if n.target is _ASSERT_METADATA and not n.users]
    for node in found:
        graph.erase_node(node)
    return bool(found)


# ------------------------------------------------------------------ TorchScript


@functools.cache
def _ts_helper(name: str) -> torch._C.Graph:
    """The helper's TorchScript graph, inlined, ready for ``Graph.insertGraph``."""
    fn: Any = torch.jit.script(_HELPERS[name])
    graph: torch._C.Graph = fn.graph.copy()
    torch._C._jit_pass_inline(graph)
    torch._C._jit_pass_dce(graph)
    return graph


class _TsView(_View):
    """An inlined TorchScript graph, nested blocks (if/loop bodies) included."""

    def __init__(self, graph: torch._C.Graph) -> None:
        self.graph = graph
        self.nodes: list[torch._C.Node] = []
        self._collect(graph.nodes())
        self._ops: dict[torch._C.Node, _Op | None] = {}
        inputs = list(graph.inputs())
        self._dep: set[torch._C.Value] = set(inputs[1:])  # inputs[0] is the module itself
        self._propagate(graph.nodes())

    def _collect(self, nodes: Any) -> None:
        for n in nodes:
            self.nodes.append(n)
            for block in n.blocks():
                self._collect(block.nodes())

    def _propagate(self, nodes: Any) -> None:
        for n in nodes:
            blocks = list(n.blocks())
            if not blocks:
                if any(v in self._dep for v in n.inputs()):
                    self._dep.update(n.outputs())
                continue
            for _ in range(4):  # loop-carried values: iterate to a fixpoint
                before = len(self._dep)
                if any(v in self._dep for v in n.inputs()):
                    for block in blocks:
                        self._dep.update(block.inputs())
                for block in blocks:
                    self._propagate(block.nodes())
                    outs = list(block.outputs())
                    if n.kind() == "prim::Loop":
                        params = list(block.inputs())[1:]
                        for o, p in zip(outs[1:], params, strict=False):
                            if o in self._dep:
                                self._dep.add(p)
                    for o, r in zip(
                        outs[1:] if n.kind() == "prim::Loop" else outs, n.outputs(), strict=False
                    ):
                        if o in self._dep:
                            self._dep.add(r)
                if len(self._dep) == before:
                    break

    def ops(self) -> Iterator[_Op]:
        for n in self.nodes:
            op = self.op_of(n)
            if op is not None:
                yield op

    def op_of(self, node: Any) -> _Op | None:
        if node not in self._ops:
            self._ops[node] = self._make_op(node)
        return self._ops[node]

    def _make_op(self, node: torch._C.Node) -> _Op | None:
        kind = node.kind()
        namespace, _, name = kind.partition("::")
        where = _ts_where(node)
        if namespace == "quantized":
            return _Op(node, "quantized_kernel", kind, False, where)
        if kind == "prim::Enter" and self._is_no_grad_region(node):
            return _Op(node, "no_grad", "torch.no_grad", False, where)
        if namespace != "aten":
            return None
        if name.startswith("__") and name.endswith("__"):
            name = name[2:-2]
        inplace = name.endswith("_") and not name.startswith("_")
        return _Op(node, name[:-1] if inplace else name, kind, inplace, where)

    @staticmethod
    def _is_no_grad_region(node: torch._C.Node) -> bool:
        """``with torch.no_grad():`` (not ``as name``, whose value could be read)."""
        return "grad_mode.no_grad" in str(node.inputsAt(0).type()) and not node.output().uses()

    def arg(self, op: _Op, pos: int, names: tuple[str, ...] = (), default: Any = _MISSING) -> Any:
        node: torch._C.Node = op.node
        if pos < node.inputsSize():
            return node.inputsAt(pos)
        return None if default is _MISSING else default

    def output(self, op: _Op) -> Any:
        return op.node.output()

    def is_value(self, x: Any) -> bool:
        return isinstance(x, torch._C.Value) and x.node().kind() != "prim::Constant"

    def const(self, x: Any) -> Any:
        if not isinstance(x, torch._C.Value):
            return x
        if x.node().kind() != "prim::Constant":
            return _MISSING
        return x.toIValue()

    def producer(self, x: Any) -> _Op | None:
        return self.op_of(x.node()) if isinstance(x, torch._C.Value) else None

    def produced_by_node(self, x: Any) -> bool:
        return isinstance(x, torch._C.Value) and x.node().kind() not in (
            "prim::Param",
            "prim::Constant",
            "prim::GetAttr",
        )

    def uses(self, x: Any) -> list[tuple[Any, Any]]:
        if not isinstance(x, torch._C.Value):
            return []
        return [(u.user, (u.user, u.offset)) for u in x.uses()]

    def dep(self, x: Any) -> bool:
        return isinstance(x, torch._C.Value) and x in self._dep

    def is_float(self, x: Any) -> bool | None:
        if isinstance(x, torch._C.Value):
            if x.node().kind() == "prim::Constant":
                x = x.toIValue()
            else:
                t = x.type()
                if not isinstance(t, torch._C.TensorType):
                    return False  # a Python number (.item(), sizes): autograd never reaches it
                dtype = t.dtype()
                return None if dtype is None else bool(dtype.is_floating_point)
        if isinstance(x, torch.Tensor):
            return bool(x.dtype.is_floating_point)
        if isinstance(x, bool | int):
            return False
        return True if isinstance(x, float) else None

    def cast_is_float(self, op: _Op) -> bool | None:
        node: torch._C.Node = op.node
        known = self.is_float(node.output())
        if known is not None:
            return known
        if op.name == "to":
            for i, argument in enumerate(_ts_schema(node).arguments):
                if argument.name == "dtype" and i < node.inputsSize():
                    code = self.const(node.inputsAt(i))
                    if isinstance(code, int):
                        return code in _FLOAT_SCALAR_TYPES
                    return False if code is None else None
            return None if node.inputsSize() > 1 and _is_tensor(node.inputsAt(1)) else False
        return None

    def is_after(self, a: Any, b: Any) -> bool:
        return bool(a.isAfter(b))

    def is_no_grad(self, op: _Op) -> bool:
        return op.name == "no_grad"

    def same(self, a: Any, b: Any) -> bool:
        if isinstance(a, torch._C.Value) and isinstance(b, torch._C.Value):
            return bool(a.unique() == b.unique())
        return a is b


def _is_tensor(v: torch._C.Value) -> bool:
    return isinstance(v.type(), torch._C.TensorType)


def _ts_schema(node: torch._C.Node) -> Any:
    try:
        return torch._C.parse_schema(node.schema())
    except RuntimeError:
        return torch._C.parse_schema("aten::unknown() -> ()")


def _ts_where(node: torch._C.Node) -> str:
    """``%name in module.path at file.py:LINE`` from the node's scope and source range."""
    out = node.outputsAt(0).debugName() if node.outputsSize() else node.kind()
    parts = [f"%{out}"]
    scope = node.scopeName()
    if scope:
        last = scope.split("/")[-1].removeprefix("__module.")
        if last and last != "__module":
            parts.append(f"in {last}")
    try:
        source = str(node.sourceRange())
    except RuntimeError:
        source = ""
    # scripted: 'File "model.py", line 12'; traced: 'model.py(12): forward'
    m = re.search(r'File "([^"]+)", line (\d+)', source) or re.match(r"(.+?)\((\d+)\): ", source)
    if m:
        parts.append(f"at {Path(m.group(1)).name}:{m.group(2)}")
    return " ".join(parts)


_TS_REFUSED = {
    "prim::PythonOp": "calls a Python function (prim::PythonOp)",
    "prim::CallMethod": "calls a method that could not be inlined (prim::CallMethod)",
    "prim::CallFunction": "calls a function that could not be inlined (prim::CallFunction)",
    "prim::fork": "forks asynchronous work (prim::fork)",
    "prim::rpc_async": "makes remote calls (prim::rpc_async)",
}


def _ts_refusal(view: _TsView) -> str | None:
    for node in view.nodes:
        why = _TS_REFUSED.get(node.kind())
        if why is not None:
            return f"TorchScript graph {why}; no rewrite"
    return None


class _TsInserter:
    """Builds helper calls into a TorchScript graph right after a given node."""

    def __init__(self, graph: torch._C.Graph) -> None:
        self.graph: Any = graph  # the stubs lack insert / insertConstant

    def after(self, node: torch._C.Node) -> torch._C.Node:
        """The node just after ``node`` in its block (the block's return node at the end)."""
        block = node.owningBlock()
        found = False
        for n in block.nodes():
            if found:
                return n
            found = n == node
        return block.returnNode()

    def call(
        self, helper: Callable[..., Tensor], args: Sequence[Any], before: torch._C.Node
    ) -> torch._C.Value:
        callee = _ts_helper(helper.__name__)
        kinds = [inp.type() for inp in callee.inputs()]
        with self.graph.insert_point_guard(before):
            values = [self._as(a, kind) for a, kind in zip(args, kinds, strict=True)]
            (out,) = self.graph.insertGraph(callee, values)
        return out

    def _as(self, x: Any, kind: Any) -> torch._C.Value:
        """``x`` as a value of the helper's parameter type (scalars become 0-dim tensors)."""
        tensor_param = isinstance(kind, torch._C.TensorType)
        if isinstance(x, torch._C.Value):
            if not tensor_param or _is_tensor(x):
                return x
            if x.node().kind() == "prim::Constant":
                x = x.toIValue()
            else:
                return self.graph.insert("aten::scalar_tensor", [x])
        if tensor_param and not isinstance(x, torch.Tensor):
            x = torch.tensor(x)
        return self.graph.insertConstant(x)


def _ts_apply(graph: torch._C.Graph, actions: Sequence[_Action]) -> None:
    """Carry out the plan on an inlined TorchScript graph, in place.

    Order matters: straight-through values first, then in-place killers, then detach and
    no_grad removal, because later steps redirect the uses that earlier ones created.
    """
    ins = _TsInserter(graph)
    for act in _ordered(actions):
        if isinstance(act, _Ste):
            y = ins.call(act.helper, (act.value, *act.args), ins.after(act.anchor))
            if act.uses is None:
                act.value.replaceAllUsesAfterNodeWith(y.node(), y)
            else:
                for user, offset in act.uses:
                    user.replaceInput(offset, y)
        elif isinstance(act, _OutOfPlace):
            node: torch._C.Node = act.node
            with graph.insert_point_guard(node):
                fresh = ins.graph.insert(node.kind().rstrip("_"), list(node.inputs()))
            y = ins.call(act.helper, (fresh, *act.args), node)
            later = [
                (u.user, u.offset)
                for u in act.operand.uses()
                if u.user != node and u.user.isAfter(node)
            ]
            node.output().replaceAllUsesWith(y)
            for user, offset in later:
                user.replaceInput(offset, y)
            node.destroy()
        elif isinstance(act, _Bypass):
            act.node.output().replaceAllUsesWith(act.node.inputsAt(0))
            act.node.destroy()
        elif isinstance(act, _GradOn):
            ctx = act.node.inputsAt(0)
            exits = [u.user for u in ctx.uses() if u.user.kind() == "prim::Exit"]
            for n in (act.node, *exits):
                if not any(o.uses() for o in n.outputs()):
                    n.destroy()
    torch._C._jit_pass_lint(graph)


def _ordered(actions: Sequence[_Action]) -> list[_Action]:
    """Straight-through insertions, then in-place rewrites, then detach / no_grad removal."""
    rank = {_Ste: 0, _OutOfPlace: 1, _Bypass: 2, _GradOn: 3}
    return sorted(actions, key=lambda a: rank[type(a)])


class _ScriptedCopy(nn.Module):
    """A TorchScript module run through a rewritten copy of its inlined forward graph.

    The scripted module stays a child, so ``.to()``, ``.eval()`` and ``.double()`` reach its
    parameters; the rewritten graph is a TorchScript function that takes the module as its
    first argument, so it runs in the TorchScript interpreter at the original's speed.
    """

    def __init__(self, scripted: torch.jit.ScriptModule, fn: Any) -> None:
        super().__init__()
        self.scripted = scripted
        self._fn = fn

    def forward(self, *args: Any) -> Any:
        return self._fn(self.scripted, *args)

    def __deepcopy__(self, memo: dict[int, Any]) -> _ScriptedCopy:
        """The function holds no state of its own: a copy shares it over a copied module."""
        out = _ScriptedCopy(_owned_copy(self.scripted), self._fn)
        out.train(self.training)
        return out


def _owned_copy(model: _M) -> _M:
    """A deep copy that owns its parameters. Outside no_grad, TorchScript parameters would be
    copied as clones whose grad_fn reaches back into the original's; inside it they lose
    requires_grad, which is put back."""
    with torch.no_grad():
        out = copy.deepcopy(model)
    for src, dst in zip(model.parameters(), out.parameters(), strict=True):
        dst.requires_grad_(src.requires_grad)
    return out


def _torchscript(model: torch.jit.ScriptModule) -> tuple[nn.Module | None, _Plan]:
    if not hasattr(model, "forward") or not hasattr(model.forward, "graph"):
        return None, _Plan(refusal="TorchScript module has no scripted forward; no rewrite")
    scripted = _owned_copy(model)
    forward: Any = scripted.forward
    graph = forward.graph.copy()
    torch._C._jit_pass_inline(graph)
    view = _TsView(graph)
    refusal = _ts_refusal(view)
    if refusal:
        return None, _Plan(refusal=refusal)
    plan = _plan(view)
    if plan.refusal or not plan.actions:
        return None, plan
    _ts_apply(graph, plan.actions)
    fn = torch._C._create_function_from_graph("forward", graph)
    out = _ScriptedCopy(scripted, fn)
    out.train(False)
    return out, plan


# ------------------------------------------------------------------ entry point


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


def _capture(model: nn.Module, example: Tensor) -> tuple[fx.GraphModule, str] | str:
    """An FX graph of ``model`` that owns copies of its parameters: ``torch.export`` with a
    dynamic batch dimension, else ``fx.symbolic_trace``; a one-line reason if neither works."""
    batch = example if example.dim() == 0 or example.shape[0] > 1 else example.repeat(
        2, *([1] * (example.dim() - 1))
    )  # export specializes a batch of 1 to a constant
    errors = []
    try:
        program = torch.export.export(
            model,
            (batch,),
            dynamic_shapes=({0: torch.export.Dim.DYNAMIC},) if batch.dim() else None,
            strict=False,
        )
        gm = program.module()
        if isinstance(gm, fx.GraphModule):
            return _owned_copy(gm), "torch.export"  # export shares the model's parameters
        errors.append(f"torch.export: module() gave a {type(gm).__name__}")
    except Exception as exc:  # export raises many types for what it cannot capture
        errors.append(f"torch.export: {_one_line(exc, 120)}")
    try:
        tracer = fx.Tracer()
        tracer.record_stack_traces = True  # source lines for Replacement.where
        graph = tracer.trace(model)
        traced = fx.GraphModule(tracer.root, graph, type(model).__name__)
        return _owned_copy(traced), "fx.symbolic_trace"
    except Exception as exc:
        errors.append(f"fx.symbolic_trace: {_one_line(exc, 120)}")
    return "could not capture a graph (" + "; ".join(errors) + ")"


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


def _one_line(exc: BaseException | str, limit: int = 200) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."
