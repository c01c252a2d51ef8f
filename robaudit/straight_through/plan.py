"""The graph-independent plan: what the rules decide, and the view of a graph they read.

Owns the planned actions (:class:`_Ste`, :class:`_Bypass`, :class:`_GradOn`,
:class:`_OutOfPlace`), the :class:`_Plan` that collects them, the :class:`_View` interface
that each IR (FX, TorchScript) implements, and the order in which actions are applied.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor

from robaudit.straight_through.result import Replacement

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


def _ordered(actions: Sequence[_Action]) -> list[_Action]:
    """Straight-through insertions, then in-place rewrites, then detach / no_grad removal."""
    rank = {_Ste: 0, _OutOfPlace: 1, _Bypass: 2, _GradOn: 3}
    return sorted(actions, key=lambda a: rank[type(a)])
