"""The defense protocol, how an attacker differentiates through a defense, and the registry.

A defense is audited as a *variant* of the model: the same checkpoint behind an input
transformation (JPEG, bit-depth reduction, smoothing, random resize-and-pad, noise) or a
different model built from it (an ensemble). Every variant is attacked twice: non-adaptively
(gradients of the bare model, the naive evaluation) and adaptively, the way Athalye et al.
2018 break such defenses: exact gradients where the transform is differentiable, BPDA (the
real transform forward, a differentiable approximation backward) where it is not, and EOT
(gradients averaged over the defense's randomness) where it is random.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Generic, Literal, TypeVar, cast

import torch
from pydantic import BaseModel, ConfigDict
from torch import nn

from robaudit import Registry
from robaudit.defenses.catalog import CATALOG

Backward = Literal["auto", "exact", "bpda", "eot"]


class DefenseParams(BaseModel):
    """Typed, validated parameters of one defense; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


P = TypeVar("P", bound=DefenseParams)


class Defense(ABC, Generic[P]):
    """One defense. Subclasses implement :meth:`apply`; the type argument is their ``Params``
    class, so ``self.params`` is typed without a cast. :func:`register` sets the class
    variables below from the defense's row in :mod:`robaudit.defenses.catalog`.

    ``needs_image`` marks a defense that only works on images: inputs of rank 3 (C x H x W,
    batches N x C x H x W), e.g. JPEG or a spatial filter. Read it from the class, as in
    ``defense_registry()[name].needs_image``, to refuse such a defense for a model with
    another input rank (tabular ``[F]``, sequences ``[C, T]``) before anything runs.
    """

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]
    Params: ClassVar[type[DefenseParams]] = DefenseParams
    differentiable: ClassVar[bool] = True  # exact gradients flow through apply()
    randomized: ClassVar[bool] = False  # apply() draws fresh randomness on every call
    needs_image: ClassVar[bool] = False  # apply() needs N x C x H x W batches

    def __init__(self, params: P | None = None) -> None:
        self.params: P = params if params is not None else cast(P, self.Params())

    @abstractmethod
    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The real transformation, pixel space in and out (batched, on ``x.device``)."""

    def approx(self, x: torch.Tensor) -> torch.Tensor:
        """A differentiable stand-in for BPDA's backward pass (identity unless overridden)."""
        return x

    def wrap_model(self, module: nn.Module) -> nn.Module:
        """The model the variant runs (an ensemble replaces it; transforms keep it)."""
        return module

    def default_backward(self) -> str:
        """How an adaptive attacker gets gradients when the config says ``auto``."""
        if self.randomized:
            return "eot"
        return "exact" if self.differentiable else "bpda"

    def label(self) -> str:
        """A short variant name such as ``jpeg(quality=75)``."""
        shown = {
            k: v for k, v in self.params.model_dump().items() if not isinstance(v, (list, dict))
        }
        inner = ", ".join(f"{k}={v}" for k, v in shown.items())
        return f"{self.name}({inner})" if inner else self.name


def straight_through(real: torch.Tensor, surrogate: torch.Tensor) -> torch.Tensor:
    """``real`` in the forward pass, ``surrogate``'s gradient in the backward pass (BPDA)."""
    return surrogate + (real - surrogate).detach()


class Transform:
    """The pixel-space transform a variant's Classifier applies before preprocessing.

    ``backward`` is "exact" (differentiate the real transform), "bpda" (real forward,
    :meth:`Defense.approx` backward) or "eot" (exact or BPDA per the defense, with the
    Classifier averaging gradients over draws).
    """

    def __init__(
        self, defense: Defense, backward: str, bounds: tuple[float, float] = (0.0, 1.0)
    ) -> None:
        self.defense = defense
        self.backward = backward
        self.bpda = backward == "bpda" or (backward == "eot" and not defense.differentiable)
        self.lo, self.span = bounds[0], bounds[1] - bounds[0]

    def _apply(self, x: torch.Tensor) -> torch.Tensor:
        """Defenses work on [0, 1] images: map the model's bounds there and back."""
        if self.lo == 0.0 and self.span == 1.0:
            return self.defense.apply(x)
        return self.defense.apply((x - self.lo) / self.span) * self.span + self.lo

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.bpda or not torch.is_grad_enabled() or not x.requires_grad:
            return self._apply(x)
        with torch.no_grad():
            real = self._apply(x)
        return straight_through(real, self.defense.approx(x))


_DEFENSES: Registry[Defense] = Registry("defense", CATALOG.values(), "robaudit.defenses")

# class decorator: ``@register("name")`` gives a defense its catalogue row and makes it available
# by that name to configs and the CLI
register = _DEFENSES.register


def defense_registry() -> dict[str, type[Defense]]:
    """All registered defenses by name (importing the built-in ones first)."""
    return _DEFENSES.classes()

