"""The attack protocol, its parameter models, and the registry.

Attacks only *search*: they return candidate inputs. Projection onto the ball, bounds,
verification by a fresh forward pass and success counting belong to the engine, so no
attack can overstate robustness by trusting its own success flag (foolbox 3's lesson).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from types import UnionType
from typing import (
    TYPE_CHECKING,
    Any,
    ClassVar,
    Generic,
    Literal,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
)

import torch
from pydantic import BaseModel, ConfigDict

from robaudit import Registry
from robaudit.access import FOR_REQUIRES
from robaudit.attacks.catalog import CATALOG

if TYPE_CHECKING:
    from robaudit.classifier import Classifier
    from robaudit.threat import Threat


class AttackParams(BaseModel):
    """Typed, validated parameters of one attack; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def cost(self) -> float | None:
        """Passes per sample these settings take, where they decide it (None: ``cost_rank``)."""
        return None


@dataclass
class AttackOutput:
    """What an attack hands back: one candidate per input, plus an optional loss trace.

    ``loss_trace`` is the mean attack loss over the batch per step (for integrity checks).
    """

    x_adv: torch.Tensor
    loss_trace: list[float] | None = None
    # optional: which samples the attack itself saw misclassified (checked against the engine's
    # verification; a disagreement is finding RA006, never a break)
    claimed: torch.Tensor | None = None
    # black-box attacks (requires "scores" or "labels") must set this: int64[N], the model
    # queries the attack spent on each sample. A score-based attack stops querying a sample once
    # it sees it fooled, so for fooled samples this is the queries-to-success. The engine checks
    # the sum against the classifier's own counter (an attack cannot under-report its cost).
    queries: torch.Tensor | None = None
    # decision-based minimal-norm attacks: (queries spent so far, float[N] best verified-by-the-
    # attack distance, inf where none) checkpoints, for the distance-vs-queries curve
    distance_trace: list[tuple[int, torch.Tensor]] | None = None


P = TypeVar("P", bound=AttackParams)


class Attack(ABC, Generic[P]):
    """One algorithm. Subclasses implement :meth:`run`; the type argument is their ``Params``
    class, so ``self.params`` is typed without a check. :func:`register` sets the class
    variables below from the attack's row in :mod:`robaudit.attacks.catalog`, which says what
    each one means (an unregistered subclass, such as a test double, sets them itself)."""

    name: ClassVar[str]
    summary: ClassVar[str]
    paper: ClassVar[str]
    norms: ClassVar[tuple[str, ...]]
    requires: ClassVar[str] = "gradients"  # "gradients" | "scores" | "labels"
    needs_image: ClassVar[bool] = False
    Params: ClassVar[type[AttackParams]] = AttackParams
    cost_rank: ClassVar[int] = 50
    minimal_norm: ClassVar[bool] = False
    strength: ClassVar[str] = "strong"
    search: ClassVar[bool] = True
    # projects its iterates onto the active feasible set itself (robaudit.attacks.feasible);
    # the engine repairs the candidates of the others once, at the end
    constrained: ClassVar[bool] = False

    def __init__(self, params: P | None = None) -> None:
        self.params: P = params if params is not None else cast(P, self.Params())

    @abstractmethod
    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        """Search the threat's ball around each ``x`` for an input ``clf`` misclassifies."""

    def run_samples(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
        positions: torch.Tensor,
    ) -> AttackOutput:
        """What the engine calls: :meth:`run` on the samples at ``positions`` in the audited set.
        An attack whose draws belong to each sample (a universal patch's placements) overrides
        it, so a sample's draws do not depend on its batch."""
        del positions
        return self.run(clf, x, y, threat, generator)

    def cost(self) -> float:
        """A rough number of forward+backward passes per sample, for cheap-first ordering."""
        from_params = self.params.cost()
        return float(self.cost_rank) if from_params is None else from_params

    def check_norm(self, norm: str) -> None:
        """A ValueError unless the attack declares ``norm`` (for attacks with per-norm rules)."""
        if norm not in self.norms:
            told = f"only the {self.norms[0]} norm" if len(self.norms) == 1 else " and ".join(self.norms)
            raise ValueError(f"{self.name} supports {told}, not {norm!r}")

    @classmethod
    def config_problem(cls, params: AttackParams) -> str | None:
        """A problem with ``params`` that only a whole config can reveal (a required file)."""
        del params
        return None


# the access level an attack needs: the engine hands it a Classifier view of exactly this level
ACCESS_FOR_REQUIRES: dict[str, str] = FOR_REQUIRES  # defined in robaudit.access

_ATTACKS: Registry[Attack] = Registry("attack", CATALOG.values(), "robaudit.attacks")

# class decorator: ``@register("name")`` gives an attack its catalogue row and makes it available
# by that name to configs and the CLI
register = _ATTACKS.register


def registry() -> dict[str, type[Attack]]:
    """All registered attacks by name (importing the built-in families first)."""
    return _ATTACKS.classes()


def get_attack(name: str) -> type[Attack]:
    """Look up an attack class by name; KeyError when unknown."""
    return registry()[name]


def _type_name(ann: Any) -> str:
    """Readable type names: ``ce|margin`` for a Literal, ``float|None`` for an Optional."""
    origin = get_origin(ann)
    if origin is Literal:
        return "|".join(str(a) for a in get_args(ann))
    if origin in (Union, UnionType):
        return "|".join(_type_name(a) for a in get_args(ann))
    if ann is type(None):
        return "None"
    return getattr(ann, "__name__", None) or str(ann).replace("typing.", "")


def param_table(cls: type[Attack]) -> list[dict[str, Any]]:
    """Rows (name, type, default, description) describing an attack's parameters."""
    rows = []
    for fname, field in cls.Params.model_fields.items():
        tname = _type_name(field.annotation)
        rows.append(
            {
                "name": fname,
                "type": tname,
                "default": field.default,
                "description": field.description or "",
            }
        )
    return rows
