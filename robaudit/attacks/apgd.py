"""Auto-PGD and its targeted version (Croce & Hein 2020, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks"), Linf and L2; at L1 the same
search follows l1-APGD's rules (Croce & Hein 2021, :mod:`robaudit.attacks.apgd_l1`).

APGD is PGD without a step size to tune: it starts at 2·eps, adds momentum (0.75), and at
checkpoints ``w_j = ceil(p_j · steps)`` (p_0 = 0, p_1 = 0.22,
p_{j+1} = p_j + max(p_j − p_{j−1} − 0.03, 0.06)) halves a sample's step size and restarts it
from its best point when (1) fewer than ``rho`` of its steps since the last checkpoint raised
the loss, or (2) neither its step size nor its best loss changed since the last checkpoint.
Steps are sign(grad) for Linf and grad/‖grad‖₂ for L2, each projected onto the ball and the
bounds. APGD-T runs the same search with the targeted DLR loss against each of the ``targets``
most likely wrong classes in turn, each time on the samples still standing.

Inputs are pixel-space batches N×C×H×W inside the classifier's bounds; the output is, per
sample, the first misclassified iterate found, else the highest-loss one. Like PGD, a sample
leaves the active batch once it is misclassified (``early_stop``), so the only host sync in
the step loop is that compaction.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, Literal

import torch
from pydantic import Field

from robaudit.attacks import apgd_l1
from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.common import mean_trace, ranked_wrong
from robaudit.attacks.feasible import mask_gradient, project, restrict
from robaudit.attacks.losses import TargetedLossFn, dlr_targeted, get_loss, with_targets
from robaudit.attacks.projections import (
    per_sample,
    random_point,
    steepest_direction,
)
from robaudit.classifier import Classifier, LossFn
from robaudit.norms import get as get_norm
from robaudit.threat import Threat

MOMENTUM = 0.75  # α in the paper: weight of the new gradient step against the last move


def checkpoints(steps: int) -> list[int]:
    """The iterations ``w_j`` (below ``steps``) at which APGD may halve a step size, from 0.

    Computed with exact fractions so ``0.22 · 100`` is 22, not 23 after float rounding.
    """
    ps = [Fraction(0), Fraction(22, 100)]
    while ps[-1] < 1:
        ps.append(ps[-1] + max(ps[-1] - ps[-2] - Fraction(3, 100), Fraction(6, 100)))
    return sorted({w for w in (math.ceil(p * steps) for p in ps) if w < steps})


class _StepSizeRules(AttackParams):
    """What APGD and APGD-T share: the step-size rule, early stop, the L1 eps schedule."""

    rho: float = Field(
        0.75, gt=0, le=1, description="halve the step when fewer than this share of steps helped"
    )
    early_stop: bool = Field(True, description="drop a sample once its iterate fools the model")
    eps_schedule: bool = Field(
        True, description="L1 only: 30%/30%/40% of the steps at 3·eps, 2·eps, eps (AutoAttack)"
    )


class APGDParams(_StepSizeRules):
    steps: int = Field(100, ge=1, le=100_000, description="iterations per restart")
    restarts: int = Field(1, ge=1, le=1000, description="random restarts on unbroken samples")
    loss: Literal["ce", "dlr"] = Field(
        "ce", description="loss to ascend: ce or dlr (Difference of Logits Ratio, scale-invariant)"
    )

    def cost(self) -> float:
        return float(self.steps * self.restarts)


class APGDTParams(_StepSizeRules):
    steps: int = Field(100, ge=1, le=100_000, description="iterations per restart and target")
    restarts: int = Field(1, ge=1, le=1000, description="random restarts per target class")
    targets: int = Field(
        9, ge=1, le=1000, description="most likely wrong classes tried in turn (≤ classes − 1)"
    )

    def cost(self) -> float:
        return float(self.steps * self.restarts * self.targets)


@dataclass
class _Found:
    """Per sample: its best point, that point's loss (+inf once fooled), whether it fooled the
    model. One search's answer, and the running answer over restarts and targets."""

    x: torch.Tensor
    loss: torch.Tensor
    fooled: torch.Tensor

    @staticmethod
    def empty(x: torch.Tensor) -> _Found:
        n = int(x.shape[0])
        return _Found(
            x=x.clone(),
            loss=torch.full((n,), float("-inf"), device=x.device, dtype=x.dtype),
            fooled=torch.zeros(n, dtype=torch.bool, device=x.device),
        )

    def settle(self, idx: torch.Tensor, xa: torch.Tensor, fooled: torch.Tensor,
               early_stop: bool) -> torch.Tensor | None:  # fmt: skip
        """Record misclassified iterates; with early stopping, return the mask of those kept."""
        if early_stop:
            if not bool(fooled.any()):  # the one host sync per step: active-set compaction
                return None
            hit = idx[fooled]
            self.x[hit] = xa[fooled]
            self.loss[hit] = float("inf")
            self.fooled[hit] = True
            return ~fooled
        new = fooled & ~self.fooled[idx]
        self.x[idx] = torch.where(per_sample(new, xa), xa, self.x[idx])
        self.fooled[idx] = self.fooled[idx] | fooled
        return None

    def merge(self, idx: torch.Tensor, found: _Found) -> torch.Tensor:
        """Keep each sample's better point (fooled beats any loss); return the idx still standing."""
        upd = found.loss > self.loss[idx]
        self.x[idx] = torch.where(per_sample(upd, found.x), found.x, self.x[idx])
        self.loss[idx] = torch.where(upd, found.loss, self.loss[idx])
        self.fooled[idx] = self.fooled[idx] | found.fooled
        return idx[~found.fooled]

    def restarts(
        self, standing: torch.Tensor, restarts: int, search: Callable[[torch.Tensor], _Found]
    ) -> torch.Tensor:
        """Up to ``restarts`` searches, each on the samples still standing; those left."""
        for _ in range(restarts):
            if standing.numel() == 0:
                break
            standing = self.merge(standing, search(standing))
        return standing

    def output(self, trace: list[torch.Tensor]) -> AttackOutput:
        # ``fooled``: the attack saw the model misclassify this sample's point (a claim)
        return AttackOutput(x_adv=self.x, loss_trace=mean_trace(trace), claimed=self.fooled)


@dataclass
class _State:
    """Everything APGD tracks per active sample; ``select`` compacts it in one go."""

    idx: torch.Tensor  # position in the search's batch
    x0: torch.Tensor  # clean input (centre of the ball)
    y: torch.Tensor
    t: torch.Tensor | None  # target class (APGD-T) or None
    xk: torch.Tensor  # current iterate x^(k)
    xprev: torch.Tensor  # previous iterate x^(k−1) (for the momentum term)
    f: torch.Tensor  # loss at x^(k)
    g: torch.Tensor  # gradient at x^(k)
    x_max: torch.Tensor  # best iterate so far and its loss and gradient
    f_max: torch.Tensor
    g_max: torch.Tensor
    eta: torch.Tensor  # step size
    helped: torch.Tensor  # steps since the last checkpoint that raised the loss
    f_max_check: torch.Tensor  # f_max at the last checkpoint
    halved_last: torch.Tensor  # bool: the step size was halved at the last checkpoint
    topk: torch.Tensor | None = None  # L1: share of the coordinates a step moves
    sparsity: torch.Tensor | None = None  # L1: L0 of the best point at the last checkpoint

    @staticmethod
    def start(x: torch.Tensor, y: torch.Tensor, t: torch.Tensor | None, xs: torch.Tensor,
              f: torch.Tensor, g: torch.Tensor, eta: float | torch.Tensor) -> _State:  # fmt: skip
        """The state at the starting point ``xs`` (loss ``f``, gradient ``g``), first step
        ``eta`` (per sample where the ball's radius is: snr)."""
        n = int(x.shape[0])
        return _State(
            idx=torch.arange(n, device=x.device), x0=x, y=y, t=t, xk=xs, xprev=xs, f=f, g=g,
            x_max=xs, f_max=f, g_max=g,
            eta=torch.as_tensor(eta, device=x.device, dtype=x.dtype).expand(n).clone(),
            helped=torch.zeros(n, device=x.device, dtype=torch.int64),
            f_max_check=f,
            halved_last=torch.zeros(n, dtype=torch.bool, device=x.device),
        )  # fmt: skip

    def select(self, keep: torch.Tensor) -> _State:
        fields: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            fields[f.name] = None if v is None else v[keep]
        return _State(**fields)

    def record(self, xn: torch.Tensor, fn: torch.Tensor, gn: torch.Tensor) -> None:
        """Move to x^(k+1) = ``xn`` (loss ``fn``, gradient ``gn``), tracking the best iterate."""
        better = fn > self.f_max
        bx = per_sample(better, xn)
        self.helped = self.helped + (fn > self.f).long()
        self.x_max = torch.where(bx, xn, self.x_max)
        self.g_max = torch.where(bx, gn, self.g_max)
        self.f_max = torch.where(better, fn, self.f_max)
        self.xprev, self.xk, self.f, self.g = self.xk, xn, fn, gn

    def checkpoint(self, rho: float, window: int) -> None:
        """Halve the step and go back to the best point where the last ``window`` steps
        helped too rarely, or where neither the step nor the best loss changed."""
        cond1 = self.helped < rho * window
        cond2 = ~self.halved_last & (self.f_max == self.f_max_check)
        halve = cond1 | cond2
        hx = per_sample(halve, self.xk)
        self.eta = torch.where(halve, self.eta / 2, self.eta)
        self.xk = torch.where(hx, self.x_max, self.xk)  # x^(k+1) <- x_max; x^(k) stays
        self.f = torch.where(halve, self.f_max, self.f)
        self.g = torch.where(hx, self.g_max, self.g)
        self.halved_last = halve
        self.f_max_check = self.f_max
        self.helped = torch.zeros_like(self.helped)


class _Rules:
    """How APGD starts, steps and adapts at Linf and L2 (Croce & Hein 2020)."""

    momentum = True
    eta_start = 2.0  # the first step, in units of eps

    def phases(self, eps: float, steps: int, schedule: bool) -> list[tuple[float, int]]:
        return [(eps, steps)]

    def marks(self, steps: int) -> list[int]:
        return checkpoints(steps)

    def start(self, x: torch.Tensor, norm: str, eps: float, bounds: tuple[float, float],
              generator: torch.Generator) -> torch.Tensor:  # fmt: skip
        return random_point(x, norm, eps, bounds, generator)

    def begin(self, st: _State, fresh: bool) -> None:
        """Per-sample settings a phase starts with (none here)."""

    def direction(self, st: _State, g: torch.Tensor, norm: str,
                  bounds: tuple[float, float]) -> torch.Tensor:  # fmt: skip
        return steepest_direction(g, norm)

    def checkpoint(self, st: _State, rho: float, window: int, eps: float) -> None:
        st.checkpoint(rho, window)


Rules = _Rules | apgd_l1.L1Rules
RULES: dict[str, Rules] = {"l1": apgd_l1.L1Rules()}  # any other norm: _Rules()


class _Search:
    """One APGD phase's fixed parts (model, ball, loss, rules, early stopping) and what it
    found. ``counts``: misclassified iterates are answers (False in a phase whose ball is
    larger than the threat's)."""

    def __init__(self, clf: Classifier, x: torch.Tensor, threat: Threat, eps: float,
                 loss: LossFn | None, targeted_loss: TargetedLossFn | None, early_stop: bool,
                 trace: list[torch.Tensor] | None, counts: bool = True) -> None:  # fmt: skip
        self.clf, self.norm, self.eps, self.bounds = clf, threat.norm, eps, clf.bounds
        self.rules: Rules = RULES.get(threat.norm, _Rules())
        self.loss, self.targeted_loss = loss, targeted_loss
        self.early_stop, self.trace, self.counts = early_stop and counts, trace, counts
        self.out = _Found.empty(x)

    def evaluate(
        self, xa: torch.Tensor, yy: torch.Tensor, tt: torch.Tensor | None, grad: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Loss (and gradient if ``grad``) at ``xa`` and which points fool the model (none
        when this phase's points do not count)."""
        if tt is None:
            assert self.loss is not None
            fn = self.loss
        else:
            assert self.targeted_loss is not None
            fn = with_targets(self.targeted_loss, tt)
        if grad:
            f, g, logits = self.clf.loss_and_grad(xa, yy, fn)
        else:
            logits = self.clf.logits(xa)
            f, g = fn(logits, yy), None
        if self.trace is not None:
            self.trace.append(f.mean())
        return f, g, (logits.argmax(dim=1) != yy) & self.counts

    def first(self, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor | None,
              generator: torch.Generator, init: torch.Tensor | None = None) -> _State:  # fmt: skip
        """The state at a random start in the ball (at ``init`` projected into it, when an
        earlier phase left one), less the samples it already fools."""
        if init is None:
            start = self.rules.start(x, self.norm, self.eps, self.bounds, generator)
        else:
            start = project(init, x, self.norm, self.eps, self.bounds)
        start = restrict(start, x, self.norm, self.eps)
        f0, g0, fooled0 = self.evaluate(start, y, targets, grad=True)
        assert g0 is not None
        radius = get_norm(self.norm).radius(x, self.eps)  # eps; per sample at snr
        st = _State.start(x, y, targets, start, f0, g0, self.rules.eta_start * radius)
        self.rules.begin(st, fresh=init is None)
        keep = self.out.settle(st.idx, start, fooled0, self.early_stop)
        return st if keep is None else st.select(keep)

    def advance(self, st: _State, k: int, with_grad: bool) -> _State:
        """Compute x^(k+1) (a momentum step from x^(k)); the state without the samples it
        fools (early stopping), empty when none is left."""
        norm, eps, bounds = self.norm, self.eps, self.bounds
        eta = per_sample(st.eta, st.xk)
        step = eta * self.rules.direction(st, mask_gradient(st.g), norm, bounds)
        xn = project(st.xk + step, st.x0, norm, eps, bounds)
        if self.rules.momentum:
            a = 1.0 if k == 0 else MOMENTUM
            xn = st.xk + a * (xn - st.xk) + (1 - a) * (st.xk - st.xprev)
            xn = project(xn, st.x0, norm, eps, bounds)
        fn, gn, fooled = self.evaluate(xn, st.y, st.t, grad=with_grad)
        if gn is None:
            gn = st.g  # placeholder of the right shape; never used for a step
        keep = self.out.settle(st.idx, xn, fooled, self.early_stop)
        if keep is not None:
            st, xn, fn, gn = st.select(keep), xn[keep], fn[keep], gn[keep]
            if st.idx.numel() == 0:
                return st
        st.record(xn, fn, gn)
        return st

    def run(self, st: _State, steps: int, rho: float) -> _Found:
        """``steps`` steps with the rules' checkpoints; then what :meth:`finish` gives."""
        marks = self.rules.marks(steps)
        last_mark = 0
        for k in range(steps):  # computes x^(k+1)
            if st.idx.numel() == 0:
                break
            # the last iterate needs its loss, not its gradient
            st = self.advance(st, k, with_grad=k + 1 < steps)
            if st.idx.numel() == 0:
                break
            if k + 1 in marks:
                self.rules.checkpoint(st, rho, k + 1 - last_mark, self.eps)
                last_mark = k + 1
        return self.finish(st)

    def finish(self, st: _State) -> _Found:
        """Samples still standing keep their highest-loss iterate as their best point."""
        out = self.out
        keep_found = per_sample(out.fooled[st.idx], st.x_max)
        out.x[st.idx] = torch.where(keep_found, out.x[st.idx], st.x_max)
        out.loss[st.idx] = torch.where(out.fooled[st.idx], float("inf"), st.f_max)
        return out


def apgd_search(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    threat: Threat,
    generator: torch.Generator,
    *,
    loss: LossFn | None = None,
    targeted_loss: TargetedLossFn | None = None,
    targets: torch.Tensor | None = None,
    steps: int = 100,
    rho: float = 0.75,
    early_stop: bool = True,
    trace: list[torch.Tensor] | None = None,
    eps_schedule: bool = True,
) -> _Found:
    """One APGD run from a random start in the ball (one restart, one target per sample).

    Give ``loss`` (untargeted) or ``targeted_loss`` with ``targets``. Uses ``steps`` gradient
    evaluations plus one forward pass for the last iterate of each phase (one phase, but for
    L1's ``eps_schedule``); appends the mean loss of every evaluated iterate to ``trace``.
    """
    plan = RULES.get(threat.norm, _Rules()).phases(threat.eps, steps, eps_schedule)
    init: torch.Tensor | None = None
    found = _Found.empty(x)
    for i, (eps, n) in enumerate(plan):
        last = i == len(plan) - 1
        search = _Search(clf, x, threat, eps, loss, targeted_loss, early_stop, trace, last)
        found = search.run(search.first(x, y, targets, generator, init), n, rho)
        init = found.x  # the next phase starts at this one's highest-loss point
    return found


@register("apgd")
class APGD(Attack[APGDParams]):
    """Auto-PGD: parameter-free step sizes, momentum and restarts from the best point (inside
    the active tabular constraints too, as CAPGD: :mod:`robaudit.attacks.feasible`)."""

    Params = APGDParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        p = self.params
        best = _Found.empty(x)
        trace: list[torch.Tensor] = []

        def search(s: torch.Tensor) -> _Found:
            return apgd_search(
                clf, x[s], y[s], threat, generator, loss=get_loss(p.loss),
                steps=p.steps, rho=p.rho, early_stop=p.early_stop, trace=trace,
                eps_schedule=p.eps_schedule,
            )  # fmt: skip

        best.restarts(torch.arange(x.shape[0], device=x.device), p.restarts, search)
        return best.output(trace)


@register("apgd-t")
class APGDT(Attack[APGDTParams]):
    """Targeted Auto-PGD with the targeted DLR loss, over the most likely wrong classes."""

    Params = APGDTParams

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        p = self.params
        n = int(x.shape[0])
        best = _Found.empty(x)
        trace: list[torch.Tensor] = []
        k = min(p.targets, clf.num_classes - 1)
        if n == 0 or k < 1:
            return best.output(trace)
        # wrong classes ranked by the clean logits, most likely first
        ranked = ranked_wrong(clf.logits(x), y, k)
        standing = torch.arange(n, device=x.device)
        for target in ranked.unbind(dim=1):  # each sample's j-th most likely wrong class

            def search(s: torch.Tensor, t: torch.Tensor = target) -> _Found:
                return apgd_search(
                    clf, x[s], y[s], threat, generator, targeted_loss=dlr_targeted, targets=t[s],
                    steps=p.steps, rho=p.rho, early_stop=p.early_stop, trace=trace,
                    eps_schedule=p.eps_schedule,
                )  # fmt: skip

            standing = best.restarts(standing, p.restarts, search)
        return best.output(trace)
