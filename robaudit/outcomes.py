"""The engine's records: what is planned, what one cell did, what a pass returns.

Shared by the engine (robaudit.engine, which plans the order and runs the cells) and the cell
runner (robaudit.cell); nothing here runs a model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from robaudit.access import FOR_REQUIRES, RANK
from robaudit.attacks.base import Attack
from robaudit.checkpoint import CellStore
from robaudit.classifier import Classifier
from robaudit.control import RunControl
from robaudit.distributed import SINGLE, Shard
from robaudit.threat import Threat

if TYPE_CHECKING:
    from robaudit.tabular import Constraints


@dataclass(frozen=True)
class PlannedAttack:
    """An attack instance at one threat, with its position in the config."""

    index: int
    attack: Attack
    threat: Threat
    cascade: bool = False  # battery members only attack samples still unbroken at the threat
    # the classifier the attack searches on, when not the one verdicts come from (a defense's
    # non-adaptive evaluation searches on the bare model); compared by identity
    search: Classifier | None = field(default=None, compare=False)


@dataclass
class CellOutcome:
    """What one attack did at one threat, over all samples (masks are over the whole set)."""

    index: int
    attack: str
    threat: Threat
    attacked: torch.Tensor  # bool[N]: samples this attack ran on
    broken: torch.Tensor  # bool[N]: verified breaks
    norms: torch.Tensor  # float[N]: perturbation norm of each attacked sample's candidate
    adv_pred: torch.Tensor  # int64[N]: fresh prediction on the candidate (-1 if not attacked)
    queries: int
    grad_evals: int
    seconds: float
    budget_violations: int
    bounds_violations: int
    nonfinite: int
    loss_trace: list[float] | None
    adversarial: torch.Tensor | None = None  # minimal-norm attacks: fooled at any norm
    minimal_norm: bool = False
    shared_cost: bool = False  # cost booked on the smallest-eps row of a minimal-norm attack
    silent_failures: int = 0  # samples the attack saw fooled that verification did not
    # black-box attacks: queries spent per sample (-1: not attacked), exact against the
    # classifier's counter; query_mismatch > 0 means the attack misreported (it is a bug)
    sample_queries: torch.Tensor | None = None
    query_budget: int | None = None
    query_mismatch: int = 0
    access_used: str = "white-box"  # the Classifier view the attack ran through
    # decision-based minimal-norm attacks: queries -> per-sample distance the attack reached
    distance_trace: dict[int, torch.Tensor] | None = None
    # bool[N]: attacked samples whose verdict the sequential test left open (randomized
    # models; None or all False otherwise); minimal-norm runs: at any norm, like adversarial
    undecided: torch.Tensor | None = None
    # targeted samples not attacked because the run stopped mid-cell (a partial cell)
    unfinished: int = 0
    # tabular runs: candidates that broke a feature constraint (never counted as breaks) and
    # the constraints the first one broke; None for a run without a feature schema
    constraint_violations: int | None = None
    broken_constraints: tuple[str, ...] = ()
    # tabular runs: bool[N], samples whose naive candidate (robaudit.naive: no constraint
    # checks) is misclassified but breaks a constraint, and per such sample the constraints it
    # breaks; None where the cell had no naive candidate (image runs, gradient-free searches)
    naive: torch.Tensor | None = None
    naive_reasons: dict[int, list[str]] | None = None
    # bool[N]: those naive breaks undone by putting the immutable features back
    naive_hinge: torch.Tensor | None = None
    # tabular runs: the attack's candidates that, as returned (projected into the ball and the
    # box, before the engine's repair), broke no constraint, and those the engine repaired
    # (attacks that do not search inside the constraints); None without a feature schema
    feasible_candidates: int | None = None
    repaired: int | None = None
    # tabular runs: float[N, F], each attacked sample's verified candidate (projected, repaired;
    # NaN rows: not attacked), flattened; the report's feature_changes are counted off it
    # (robaudit.tabular.changes). None: image runs, or a tabular cell saved without it (its
    # breaks' features were not tallied)
    candidates: torch.Tensor | None = None


@dataclass
class Example:
    """One sample's clean and adversarial input, kept for the report's gallery."""

    sample: int
    threat_key: str
    attack: str
    x: torch.Tensor
    x_adv: torch.Tensor
    label: int
    clean_pred: int
    clean_conf: float
    adv_pred: int
    adv_conf: float


@dataclass
class EngineResult:
    """Clean predictions plus one outcome per cell, and a few examples per threat."""

    clean_pred: torch.Tensor
    clean_conf: torch.Tensor
    correct: torch.Tensor
    cells: list[CellOutcome]
    examples: list[Example] = field(default_factory=list)
    clean_seconds: float = 0.0
    # minimal-norm attacks: per-sample smallest verified breaking norm (NaN: none found)
    min_norms: dict[tuple[int, str, str, str], torch.Tensor] = field(default_factory=dict)
    # a partial run: the planned cells that did not run, and the failure that stopped it
    unrun: list[dict[str, object]] = field(default_factory=list)
    failure: str | None = None
    # randomized models: samples whose clean verdict stayed open (neither correct nor wrong),
    # and the level of each verdict (robaudit.verdicts); None for a deterministic model
    clean_undecided: torch.Tensor | None = None
    verdict_alpha: float | None = None
    # data.attack_only_class: bool[N], the samples of that true class (only they are attacked;
    # the others keep their clean verdict); None: every sample may be attacked
    attack_mask: torch.Tensor | None = None

    def targets(self) -> torch.Tensor:
        """The samples the attacks run on: correct clean and, with ``attack_mask``, in it."""
        return self.correct if self.attack_mask is None else self.correct & self.attack_mask


@dataclass(frozen=True)
class VerifiedBatch:
    """One batch of one cell after the engine's checks, for sinks such as example export.

    ``x_adv`` is projected into the ball and the bounds (minimal-norm attacks: only clipped to
    the bounds, their norm may exceed eps); ``pred`` is the fresh prediction; ``broken`` says
    whether it counts at ``threat``. All tensors are on the CPU; ``idx`` indexes the data set.
    """

    attack: str
    attack_index: int
    threat: Threat
    idx: torch.Tensor
    x_adv: torch.Tensor
    pred: torch.Tensor
    broken: torch.Tensor
    undecided: torch.Tensor | None = None  # randomized models: verdicts left open


BatchSink = Callable[[VerifiedBatch], None]


def attack_access(attack: Attack, threat: Threat) -> str:
    """The access level an attack runs at: what it needs, never more than the threat allows.

    A black-box attack runs through a restricted view even on a white-box model, so every
    query it makes is counted and a gradient call fails loudly.
    """
    need = FOR_REQUIRES.get(attack.requires, "white-box")
    return min(need, threat.access, key=RANK.__getitem__)


def attack_view(clf: Classifier, access: str) -> Classifier:
    """``clf`` itself for white-box attacks, else a separately counted view at ``access``."""
    return clf if access == "white-box" else clf.restricted(access)


def cell_seed(seed: int, *parts: object) -> int:
    """A seed derived from the run seed and the cell's identity (not from batch order)."""
    h = hashlib.sha256(repr((seed, *parts)).encode()).digest()
    return int.from_bytes(h[:8], "little") & 0x7FFF_FFFF_FFFF_FFFF


def describe(item: PlannedAttack) -> dict[str, object]:
    """A planned cell as the report lists it when it did not run."""
    return {"attack": item.attack.name, "attack_index": item.index, "threat": item.threat.key}


@dataclass
class EngineControl:
    """What a run may add to the engine: stopping early, saved cells, sharding.

    ``variant`` names the model variant in the saved cells' identities; ``constraints``: the
    run's feature constraints (tabular data), which every candidate must satisfy to count;
    ``attack_only``: the one true class whose samples are attacked ("can a fraud pass?").
    """

    control: RunControl | None = None
    store: CellStore | None = None
    shard: Shard = SINGLE
    variant: str = "model"
    constraints: Constraints | None = None
    attack_only: int | None = None  # data.attack_only_class: attack samples of this class only


Unit = tuple[CellOutcome, list[Example]]
