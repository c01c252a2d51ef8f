r"""AttackBench's local optimality ξ of every attack of one norm on one sample model.

    .venv/bin/python benchmarks/optimality.py --norm l1 --model sample_models/digits_cnn.pt \
        --samples 100 [--grid 30] [--refine 4] [--attacks apgd,apgd-t] [--no-peers] \
        [--curves out.csv] [--variant apgd:steps=25 ...]

Cinà et al. 2025 (AttackBench, arXiv 2404.19460): each attack gives, per sample, the smallest
perturbation it finds that the model misclassifies (0 for a sample misclassified clean, inf
where it finds none); its robust-accuracy-versus-eps curve counts the samples whose distance
exceeds eps. The reference is the per-sample best distance over *all* attacks run (robaudit's
and the peers'), ε₀ the eps where the reference curve reaches 0 (its largest finite distance),
ρ the clean accuracy, AUREC the area under a curve on [0, ε₀], and

    ξ = (ρ·ε₀ − AUREC_attack) / (ρ·ε₀ − AUREC_reference)  (1: as good as the best everywhere).

With per-sample distances AUREC is exact: the mean over samples of min(distance, ε₀).

How distances are measured:

- minimal-norm attacks (robaudit's ``minimal_norm`` rows and peers such as FMN and EAD) run
  once without a budget; the distance is the verified size of their answer;
- fixed-budget attacks run on a grid of ``--grid`` budgets ε_max·k/G (k = 1..G), each budget
  only on the samples no smaller budget broke; a sample's distance is the verified size of
  the candidate that first broke it. Then ``--refine`` more budgets, evenly spaced inside
  the grid step just below each sample's distance (samples grouped by step), may lower it:
  the resolution is a grid step / (refine + 1), and a fixed-budget attack's distance sits up
  to that much above what a per-sample bisection (AttackBench's way) would find. ε_max is
  1.05 × the largest distance the minimal-norm attacks found; without one, the budget at
  which the first fixed-budget attack breaks every sample, by doubling.

Every candidate, robaudit's or a peer's, is judged by robaudit's engine (inside the box, and
the ball for fixed budgets; a fresh forward pass). Peers run only if installed. Norms: linf,
l2, l1, l0; a norm's peers and grid rule are entries of ``PEERS`` and ``GRID_RULES`` (L0 budgets
are whole pixels: every count up to ε_max, exact, no refining).
"""

from __future__ import annotations

import argparse
import csv
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
import yaml
from torch import nn

from robaudit.attacks.base import Attack, registry
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.norms import get
from robaudit.threat import Threat
from robaudit.verification import verify_batch

INF = float("inf")
SKIP = {"transfer"}  # needs a surrogate model: not an attack on this model alone
# x_adv for (model, x, y, eps); eps None: a minimal-norm peer without a budget
PeerFn = Callable[[nn.Module, torch.Tensor, torch.Tensor, "float | None"], torch.Tensor]


@dataclass
class Outcome:
    """One attack's per-sample distances (0: misclassified clean, inf: nothing found)."""

    name: str
    source: str
    kind: str  # "minimal" or "fixed"
    dist: torch.Tensor
    seconds: float


@dataclass(frozen=True)
class Peer:
    name: str
    source: str
    kind: str
    run: PeerFn


def _foolbox(make: Callable[[object], object]) -> PeerFn:
    """A foolbox 3 attack as a PeerFn (``make(fb.attacks)`` builds it)."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | None) -> torch.Tensor:
        import foolbox as fb

        attack = make(fb.attacks)
        _, x_adv, _ = attack(fb.PyTorchModel(model, bounds=(0.0, 1.0)), x, y, epsilons=eps)  # type: ignore[operator]
        return x_adv.detach()

    return run


def _torchattacks(make: Callable[[object, nn.Module, float | None], object]) -> PeerFn:
    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | None) -> torch.Tensor:
        import torchattacks

        return make(torchattacks, model, eps)(x, y).detach()  # type: ignore[operator]

    return run


def _art_apgd(norm: float) -> PeerFn:
    """ART's AutoProjectedGradientDescent (AttackBench measured its L1 version at ξ 0.26)."""

    def run(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float | None) -> torch.Tensor:
        from art.attacks.evasion import AutoProjectedGradientDescent
        from art.estimators.classification import PyTorchClassifier

        est = PyTorchClassifier(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]),
                                nb_classes=10, clip_values=(0.0, 1.0))  # fmt: skip
        attack = AutoProjectedGradientDescent(est, norm=norm, eps=eps, eps_step=eps, max_iter=100,
                                              batch_size=len(x), verbose=False)  # fmt: skip
        return torch.from_numpy(attack.generate(x.numpy(), y=y.numpy()))

    return run


PEERS: dict[str, list[Peer]] = {
    "l1": [
        Peer("L1 PGD", "foolbox", "fixed", _foolbox(lambda a: a.L1ProjectedGradientDescentAttack(steps=100))),  # type: ignore[attr-defined]
        Peer("SparseL1Descent", "foolbox", "fixed", _foolbox(lambda a: a.SparseL1DescentAttack(steps=100))),  # type: ignore[attr-defined]
        Peer("APGD L1", "art", "fixed", _art_apgd(1)),
        Peer("FMN L1", "foolbox", "minimal", _foolbox(lambda a: a.L1FMNAttack())),  # type: ignore[attr-defined]
        Peer("EAD", "foolbox", "minimal", _foolbox(lambda a: a.EADAttack(steps=1000))),  # type: ignore[attr-defined]
        Peer("EADL1", "torchattacks", "minimal", _torchattacks(lambda t, m, e: t.EADL1(m, max_iterations=100))),  # type: ignore[attr-defined]
    ],
    "l2": [
        Peer("APGD L2", "torchattacks", "fixed", _torchattacks(lambda t, m, e: t.APGD(m, norm="L2", eps=e, steps=100))),  # type: ignore[attr-defined]
        Peer("FMN L2", "foolbox", "minimal", _foolbox(lambda a: a.L2FMNAttack())),  # type: ignore[attr-defined]
        Peer("DDN", "foolbox", "minimal", _foolbox(lambda a: a.DDNAttack(steps=100))),  # type: ignore[attr-defined]
    ],
    "l0": [
        Peer("Pointwise", "foolbox", "minimal", _foolbox(lambda a: a.PointwiseAttack())),  # type: ignore[attr-defined]
        Peer("FMN L0", "foolbox", "minimal", _foolbox(lambda a: a.L0FMNAttack())),  # type: ignore[attr-defined]
    ],
    "linf": [
        Peer("APGD Linf", "torchattacks", "fixed", _torchattacks(lambda t, m, e: t.APGD(m, norm="Linf", eps=e, steps=100))),  # type: ignore[attr-defined]
        Peer("FMN Linf", "foolbox", "minimal", _foolbox(lambda a: a.LInfFMNAttack())),  # type: ignore[attr-defined]
    ],
}  # fmt: skip

def linear_grid(eps_max: float, points: int) -> list[float]:
    return [eps_max * k / points for k in range(1, points + 1)]


def count_grid(eps_max: float, points: int) -> list[float]:
    """Whole pixels: every count up to ε_max when there are at most ``points`` of them (then
    the grid is exact and needs no refining), else ``points`` counts spread up to ε_max."""
    top = max(1, math.ceil(eps_max))
    if top <= points:
        return [float(k) for k in range(1, top + 1)]
    return sorted({float(math.ceil(top * k / points)) for k in range(1, points + 1)})


# budgets k·ε_max/G by default; a norm counted in whole units (L0) counts pixels
GRID_RULES: dict[str, Callable[[float, int], list[float]]] = {"l0": count_grid}


def variants(specs: list[str], norm: str) -> dict[str, Attack]:
    """``NAME:key=value,key=value`` -> a robaudit attack with those parameters, shown as
    ``NAME[key=value,...]``: the same attack tuned cheaper, to time it at a peer's strength."""
    out: dict[str, Attack] = {}
    for spec in specs:
        name, _, rest = spec.partition(":")
        cls = registry()[name]
        if norm not in cls.norms:
            raise SystemExit(f"--variant {spec}: {name} has no {norm} mode")
        kv = dict(item.split("=", 1) for item in rest.split(",") if item)
        params = cls.Params.model_validate({k: yaml.safe_load(v) for k, v in kv.items()})
        out[f"{name}[{rest}]"] = cls(params)
    return out


def robaudit_attacks(norm: str, only: list[str] | None) -> dict[str, Attack]:
    """Every registered attack of ``norm`` with its default parameters (or those in ``only``),
    less baselines (random noise) and attacks that need more than the model."""
    out: dict[str, Attack] = {}
    for name, cls in registry().items():
        wanted = name in only if only else cls.strength != "baseline" and name not in SKIP
        if norm in cls.norms and wanted:
            out[name] = cls()
    return out


# (sample indices, ascending budgets) -> float64 distances of those samples (inf: unbroken)
FixedFn = Callable[[torch.Tensor, list[float]], torch.Tensor]


def ours_fixed(clf: Classifier, x: torch.Tensor, y: torch.Tensor, attack: Attack, norm: str,
               seed: int) -> FixedFn:  # fmt: skip
    """robaudit's attack through its engine, each budget on what smaller ones left standing."""

    def run(idx: torch.Tensor, budgets: list[float]) -> torch.Tensor:
        plan = [PlannedAttack(0, attack, Threat(norm, e)) for e in budgets]
        res = run_plan(clf, x[idx], y[idx], plan, seed=seed, batch_size=len(idx), cascade=True)
        dist = torch.full((len(idx),), INF, dtype=torch.float64)
        for cell in sorted(res.cells, key=lambda c: c.threat.eps):
            new = cell.broken & dist.isinf()
            dist[new] = cell.norms[new].double()
        return dist

    return run


def peer_fixed(clf: Classifier, model: nn.Module, x: torch.Tensor, y: torch.Tensor, peer: Peer,
               norm: str) -> FixedFn:  # fmt: skip
    """A fixed-budget peer, its candidates judged by robaudit's verify_batch."""

    def run(idx: torch.Tensor, budgets: list[float]) -> torch.Tensor:
        dist = torch.full((len(idx),), INF, dtype=torch.float64)
        for eps in budgets:
            left = dist.isinf().nonzero().flatten()
            if left.numel() == 0:
                break
            xs, ys = x[idx[left]], y[idx[left]]
            v = verify_batch(clf, xs, peer.run(model, xs, ys, eps), ys, Threat(norm, eps))
            dist[left[v.broken]] = v.norms[v.broken].double()
        return dist

    return run


def grid_search(
    run: FixedFn, correct: torch.Tensor, grid: list[float], refine: int
) -> torch.Tensor:
    """Per-sample distances from the grid, then ``refine`` extra budgets evenly inside the
    grid step below each sample's distance (samples grouped by that step)."""
    idx = correct.nonzero().flatten()
    dist = torch.where(correct, INF, 0.0).double()
    dist[idx] = run(idx, grid)
    if refine < 1:
        return dist
    steps = torch.tensor([0.0, *grid], dtype=torch.float64)
    level = torch.searchsorted(steps, dist, right=False).clamp(max=len(grid))  # steps[l-1] < d
    for k in range(1, len(grid) + 1):
        group = idx[(level[idx] == k) & dist[idx].isfinite()]
        if group.numel() == 0:
            continue
        lo, hi = float(steps[k - 1]), float(steps[k])
        sub = [lo + (hi - lo) * j / (refine + 1) for j in range(1, refine + 1)]
        dist[group] = torch.minimum(dist[group], run(group, sub))
    return dist


def run_minimal(clf: Classifier, x: torch.Tensor, y: torch.Tensor, name: str,
                candidates: torch.Tensor | None, attack: Attack | None, norm: str,
                seed: int) -> torch.Tensor:  # fmt: skip
    """Distances of a minimal-norm attack run once without a budget: robaudit's through its
    engine (``attack``), a peer's ``candidates`` through verify_batch."""
    correct = clf.predict(x) == y
    dist = torch.where(correct, INF, 0.0).double()
    if attack is not None:
        res = run_plan(clf, x, y, [PlannedAttack(0, attack, Threat(norm, INF, label="inf"))],
                       seed=seed, batch_size=len(y))  # fmt: skip
        found = res.min_norms[(0, attack.name, "white-box", norm)].double()
        hit = correct & ~found.isnan()
        dist[hit] = found[hit]
    else:
        assert candidates is not None
        v = verify_batch(clf, x, candidates, y, Threat(norm, INF), minimal=True)
        hit = v.adversarial & correct
        dist[hit] = v.norms[hit].double()
    return dist


def timed(name: str, source: str, kind: str, fn: Callable[[], torch.Tensor]) -> Outcome:
    torch.manual_seed(0)  # the peers draw their random starts from torch's global generator
    t0 = time.perf_counter()
    dist = fn()
    return Outcome(name, source, kind, dist, time.perf_counter() - t0)


def eps_max_by_doubling(clf: Classifier, x: torch.Tensor, y: torch.Tensor, attack: Attack,
                        norm: str, seed: int) -> float:  # fmt: skip
    """The budget, doubling from 1/256 of the box-covering radius, at which ``attack``
    breaks every correctly classified sample (or the covering radius)."""
    cover = get(norm).covering(1.0, tuple(x.shape[1:]))
    eps = cover / 256
    while eps < cover:
        res = run_plan(clf, x, y, [PlannedAttack(0, attack, Threat(norm, eps))], seed=seed,
                       batch_size=len(y))  # fmt: skip
        if bool((~res.correct | res.cells[0].broken).all()):
            return eps
        eps *= 2
    return cover


@dataclass(frozen=True)
class Row:
    outcome: Outcome
    success: float  # share of the clean-correct samples with a finite distance
    median: float
    aurec: float
    xi: float
    curve: list[float]  # robust accuracy at each eps of the grid


def score(
    outcomes: list[Outcome], correct: torch.Tensor, grid: list[float]
) -> tuple[float, list[Row]]:
    """ε₀ and, per attack, success, median distance, AUREC and ξ against the per-sample best."""
    best = torch.stack([o.dist for o in outcomes]).amin(dim=0)
    finite = best[correct & best.isfinite()]
    eps0 = float(finite.max()) if finite.numel() else grid[-1]
    if bool((correct & best.isinf()).any()):
        eps0 = max(eps0, grid[-1])  # the reference curve never reaches 0: stop at the grid's end
    rho = float(correct.double().mean())

    def aurec(d: torch.Tensor) -> float:
        return float(d.clamp(max=eps0).mean())

    gap_best = rho * eps0 - aurec(best)
    rows = []
    for o in outcomes:
        found = o.dist[correct]
        ok = found[found.isfinite()]
        xi = (rho * eps0 - aurec(o.dist)) / gap_best if gap_best > 0 else math.nan
        curve = [float((o.dist > e).double().mean()) for e in grid]
        rows.append(Row(o, float(ok.numel() / max(1, found.numel())),
                        float(ok.median()) if ok.numel() else math.nan, aurec(o.dist), xi, curve))  # fmt: skip
    return eps0, rows


def print_table(rows: list[Row], eps0: float, header: str) -> None:
    print(header)
    print(f"{'attack':<30} {'source':<13} {'kind':<8} {'success':>8} {'median d':>9} "
          f"{'AUREC':>8} {'xi':>6} {'seconds':>8}")  # fmt: skip
    for r in sorted(rows, key=lambda r: -r.xi if not math.isnan(r.xi) else 0):
        o = r.outcome
        print(f"{o.name:<30} {o.source:<13} {o.kind:<8} {r.success:>8.0%} {r.median:>9.3f} "
              f"{r.aurec:>8.4f} {r.xi:>6.3f} {o.seconds:>8.1f}")  # fmt: skip
    print(f"reference: the per-sample best of these {len(rows)} attacks; eps0 = {eps0:.4g}")


def write_curves(path: Path, rows: list[Row], grid: list[float]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["attack", "source", "eps", "robust_accuracy"])
        for r in rows:
            for e, ra in zip(grid, r.curve, strict=True):
                w.writerow([r.outcome.name, r.outcome.source, f"{e:.6g}", f"{ra:.4f}"])


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--norm", required=True, choices=sorted(PEERS))
    ap.add_argument("--model", type=Path, required=True, help="a digits sample model (1x8x8)")
    ap.add_argument("--samples", type=int, default=100, help="first N digits of the test split")
    ap.add_argument("--grid", type=int, default=30, help="budgets per fixed-budget attack")
    ap.add_argument("--refine", type=int, default=4, help="extra budgets per grid step")
    ap.add_argument("--attacks", help="comma-separated robaudit attacks (default: all)")
    ap.add_argument("--no-peers", action="store_true", help="robaudit's attacks only")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME:K=V,...",
                    help="also run a robaudit attack with other parameters (repeatable)")
    ap.add_argument("--eps-max", type=float, help="largest grid budget (default: see above)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--curves", type=Path, help="write every robust-accuracy curve as CSV")
    ap.add_argument("--threads", type=int, default=1, help="torch intra-op threads")
    return ap.parse_args()


def main() -> None:
    args = parse_args()
    torch.set_num_threads(args.threads)
    xs, ys = digits_arrays("test")
    x, y = torch.from_numpy(xs[: args.samples].copy()), torch.from_numpy(ys[: args.samples].copy())
    model = load_model(args.model).module
    clf = Classifier(model, num_classes=10)
    norm, seed = args.norm, args.seed
    ours = robaudit_attacks(norm, args.attacks.split(",") if args.attacks else None)
    ours.update(variants(args.variant, norm))
    peers = [] if args.no_peers else [p for p in PEERS[norm] if _installed(p.source)]
    outcomes = [
        timed(n, "robaudit", "minimal", partial(run_minimal, clf, x, y, n, None, a, norm, seed))
        for n, a in ours.items() if a.minimal_norm
    ] + [
        timed(p.name, p.source, "minimal",
              lambda p=p: run_minimal(clf, x, y, p.name, p.run(model, x, y, None), None, norm, seed))
        for p in peers if p.kind == "minimal"
    ]  # fmt: skip
    eps_max = args.eps_max or _eps_max(outcomes, clf, x, y, ours, args)
    grid = GRID_RULES.get(norm, linear_grid)(eps_max, args.grid)
    correct = clf.predict(x) == y
    fixed = [(n, "robaudit", ours_fixed(clf, x, y, a, norm, seed))
             for n, a in ours.items() if not a.minimal_norm]  # fmt: skip
    fixed += [(p.name, p.source, peer_fixed(clf, model, x, y, p, norm))
              for p in peers if p.kind == "fixed"]  # fmt: skip
    refine = 0 if get(norm).counts else args.refine  # whole pixels: nothing between steps
    for name, source, run in fixed:
        outcomes.append(
            timed(name, source, "fixed", partial(grid_search, run, correct, grid, refine))
        )
    eps0, rows = score(outcomes, correct, grid)
    print_table(rows, eps0, f"local optimality at {get(norm).title} · {args.model.name} · "
                f"{args.samples} digits (clean {float(correct.double().mean()):.0%}) · fixed "
                f"budgets: grid of {len(grid)} from {grid[0]:.4g} up to {grid[-1]:.4g}, refined "
                f"{refine}x below each distance")  # fmt: skip
    if args.curves:
        write_curves(args.curves, rows, grid)


def _eps_max(outcomes: list[Outcome], clf: Classifier, x: torch.Tensor, y: torch.Tensor,
             ours: dict[str, Attack], args: argparse.Namespace) -> float:  # fmt: skip
    if outcomes:
        best = torch.stack([o.dist for o in outcomes]).amin(dim=0)
        if bool(best.isfinite().any()):
            return 1.05 * float(best[best.isfinite()].max())
    fixed = next(a for a in ours.values() if not a.minimal_norm)
    return eps_max_by_doubling(clf, x, y, fixed, args.norm, args.seed)


def _installed(source: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(source) is not None


if __name__ == "__main__":
    main()
