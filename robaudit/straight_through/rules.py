"""The rewrite rules: which gradient killers a graph holds and what replaces each one.

Reads a graph only through :class:`~robaudit.straight_through.plan._View`, so the same rules
serve the FX and TorchScript paths; :func:`_plan` decides every rewrite and changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor

from robaudit.straight_through.plan import (
    _Bypass,
    _GradOn,
    _Op,
    _OutOfPlace,
    _Plan,
    _Ste,
    _View,
)
from robaudit.straight_through.result import Replacement
from robaudit.straight_through.surrogates import (
    _st_identity,
    _st_onehot,
    _st_ratio,
    _st_select,
    _st_step,
    _st_step_div,
)
from robaudit.straight_through.vocabulary import (
    _ADD,
    _ARGMAX,
    _BUCKETS,
    _CASTS,
    _COMPARISONS,
    _DEQUANTIZE,
    _DIV,
    _EQUALITIES,
    _IDENTITY,
    _INDEXING,
    _MUL,
    _QUANTIZE,
    _ROUNDING_DIV,
    _SUB,
    _VIEWS,
    _is_fake_quant,
)


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
