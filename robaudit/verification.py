"""The engine's invariant, as one function: nothing counts as a break unless it is checked.

(Named ``verification``, not ``verify``: a submodule called ``robaudit.verify`` would shadow
the public ``robaudit.verify()`` once imported.)

Whatever an attack returns, :func:`verify_batch` replaces non-finite candidates by the clean
input, counts (and then removes) every excursion outside the input box and outside the threat's
ball, projects onto ball ∩ box, and judges the result with a fresh forward pass of the model
(on a randomized model, the sequential test of robaudit.verdicts). Attacks are never trusted
to do any of this themselves; the report's violation counts say when one did not.

On a tabular model (a feature schema, :mod:`robaudit.tabular`) the candidate must also be a
real record: a candidate that breaks a constraint (an immutable feature moved, a fractional
count, two categories at once, a broken relation) is never a break. Candidates of attacks that
do not search inside the constraints themselves are first repaired onto them (within the
ball), the engine's projection for constraints, as norm.clip is for the ball.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from robaudit.classifier import Classifier
from robaudit.norms import get as get_norm
from robaudit.threat import Threat
from robaudit.verdicts import Verdict

if TYPE_CHECKING:
    from robaudit.tabular import Constraints

TOLERANCE = 1e-6  # float slack on the budget and the bounds


@dataclass(frozen=True)
class Verification:
    """One verified batch: the candidates as judged, their sizes and the verdicts (CPU)."""

    x_adv: torch.Tensor  # projected into ball ∩ box (minimal-norm: into the box only)
    norms: torch.Tensor  # per-sample size of the perturbation in budget units (snr: dB)
    verdict: Verdict  # the fresh judgement of each candidate
    broken: torch.Tensor  # misclassified (minimal-norm: and within eps)
    nonfinite: int  # candidates with NaN/inf entries (replaced by the clean input)
    bounds: int  # candidates outside the input box
    budget: int  # candidates outside the ball (never for minimal-norm attacks)
    # tabular runs: candidates that break a feature constraint (never breaks), and the names
    # of the constraints the first of them breaks; None without a schema
    infeasible: torch.Tensor | None = None
    broken_constraints: tuple[str, ...] = ()
    # tabular runs: candidates that, as the attack returned them (finite, projected into the
    # ball and the box, before any repair), broke no constraint; and those the engine repaired
    feasible: int | None = None
    repaired: int = 0

    @property
    def adversarial(self) -> torch.Tensor:
        """Misclassified at any size (what a minimal-norm attack claims), and feasible."""
        if self.infeasible is None:
            return self.verdict.wrong
        return self.verdict.wrong & ~self.infeasible


def verify_batch(
    clf: Classifier,
    x: torch.Tensor,
    x_adv: torch.Tensor,
    y: torch.Tensor,
    threat: Threat,
    *,
    minimal: bool = False,
    alpha: float | None = None,
    constraints: Constraints | None = None,
    repair: bool = False,
) -> Verification:
    """Check and judge an attack's candidates ``x_adv`` for clean inputs ``x`` with labels ``y``.

    ``minimal``: the attack answers with a norm, not a point in one ball, so only the box
    applies and ``broken`` also needs the size to fit ``threat.eps``. ``alpha``: the error
    level of each randomized verdict. ``constraints``: the run's feature constraints; every
    candidate that breaks one is not a break (``repair``: first repair the candidates onto
    them, for attacks that do not search inside them). A shape mismatch is the caller's to
    report.
    """
    lo, hi = clf.bounds
    norm = get_norm(threat.norm)
    xa = x_adv.detach()
    finite = torch.isfinite(xa.flatten(1)).all(dim=1)
    nonfinite = int((~finite).sum())
    xa = torch.where(finite.view(-1, *([1] * (xa.dim() - 1))), xa, x)
    flat = xa.flatten(1)
    bounds = int(((flat < lo - TOLERANCE) | (flat > hi + TOLERANCE)).any(dim=1).sum())
    budget = 0
    if minimal:
        xa = xa.clamp(lo, hi)
    else:
        # the ball's radius per sample (snr: set by each clean input's energy); the size in
        # float64: a float32 sum of D absolute values (L1) drifts by more than TOLERANCE
        radius = norm.radius(x, threat.eps)
        size64 = norm.measure64(xa.double() - x.double())
        limit = torch.as_tensor(radius, dtype=torch.float64, device=size64.device)
        budget = int((size64 > limit + TOLERANCE).sum())
        xa = norm.clip(xa, x, threat.eps, clf.bounds)
    infeasible: torch.Tensor | None = None
    names: tuple[str, ...] = ()
    feasible: int | None = None
    repaired = 0
    if constraints is not None:
        # the attack's own candidates: how many are real records (no extra forward pass)
        bad = constraints.violated(xa, x)
        feasible = int((~bad.cpu() & finite.cpu()).sum())
        if repair:
            repaired = int(bad.sum())
            eps = None if minimal else threat.eps
            xa = constraints.repair(xa, x, norm=threat.norm, eps=eps).to(x.device)
            bad = constraints.violated(xa, x)
        if bool(bad.any()):
            first = int(bad.nonzero()[0])
            names = tuple(constraints.violations(xa[first : first + 1], x[first : first + 1])[0])
        infeasible = bad.cpu()
    size = norm.size(xa - x, x).cpu()  # in budget units (snr: dB)
    verdict = clf.verdict(xa, y, alpha).cpu()
    broken = verdict.wrong & norm.fits(size, threat.eps, TOLERANCE) if minimal else verdict.wrong
    if infeasible is not None:
        broken = broken & ~infeasible
    return Verification(
        xa, size, verdict, broken, nonfinite, bounds, budget, infeasible, names, feasible,
        repaired,
    )
