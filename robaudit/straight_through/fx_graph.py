"""The torch.export / FX path: capture a graph, view it for the rules, and rewrite it.

Owns graph capture (``torch.export``, else ``fx.symbolic_trace``), the FX implementation of
:class:`~robaudit.straight_through.plan._View`, and applying a plan to a GraphModule and the
subgraphs of its higher-order ops.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx, nn

from robaudit.straight_through.copies import _owned_copy
from robaudit.straight_through.plan import (
    _MISSING,
    _Action,
    _Bypass,
    _GradOn,
    _Op,
    _ordered,
    _OutOfPlace,
    _Plan,
    _Ste,
    _View,
)
from robaudit.straight_through.result import _one_line
from robaudit.straight_through.rules import _plan

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
