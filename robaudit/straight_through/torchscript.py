"""The TorchScript path: view an inlined TorchScript IR for the rules and rewrite a copy.

Owns the TorchScript implementation of :class:`~robaudit.straight_through.plan._View`
(if/loop blocks included), the graphs the refusal covers, inserting the scripted helpers
into the IR, and :class:`_ScriptedCopy`, the module that runs the rewritten graph.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

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
from robaudit.straight_through.rules import _plan
from robaudit.straight_through.surrogates import _HELPERS
from robaudit.straight_through.vocabulary import _FLOAT_SCALAR_TYPES


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
