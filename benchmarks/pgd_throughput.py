"""PGD-10 throughput, side by side in one run: robaudit vs torchattacks vs a bare loop.

    make bench        # or: .venv/bin/python benchmarks/pgd_throughput.py [--device cuda]

Model: a CIFAR-shaped CNN (3×32×32, random weights), 512 inputs, Linf eps 8/255.
- robaudit: the full engine path (seeded random start, 10 steps, projection, the engine's
  budget checks and its fresh verification forward pass), early stopping off.
- torchattacks: torchattacks.PGD, same eps, step size, steps and random start.
- bare loop: 10 forward+backward passes w.r.t. the input and a sign step, nothing else.
Then: how much early stopping saves on the plain digits sample model (PGD-50).
Prints the median of several repeats and the ratios; timing belongs here, not in tests.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.classifier import Classifier, resolve_device
from robaudit.engine import PlannedAttack, run_plan
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.threat import Threat

ROOT = Path(__file__).resolve().parents[1]


def cifar_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(64, 128, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(128 * 8 * 8, 256),
        nn.ReLU(),
        nn.Linear(256, 10),
    ).eval()


def _once(fn: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def timed(fn: Callable[[], object], device: torch.device, repeats: int) -> float:
    fn()  # warm-up
    return statistics.median(_once(fn, device) for _ in range(repeats))


def interleaved(
    fns: dict[str, Callable[[], object]], device: torch.device, repeats: int
) -> dict[str, float]:
    """Median time of each function, run in rounds (A B C A B C ...) so drift hits all alike."""
    for fn in fns.values():
        fn()  # warm-up
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            times[k].append(_once(fn, device))
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--n", type=int, default=512)
    args = ap.parse_args()
    device = resolve_device(args.device)
    model = cifar_cnn().to(device)
    n, eps, steps = args.n, 8 / 255, 10
    alpha = 2.5 * eps / steps
    x = torch.rand(n, 3, 32, 32, device=device)
    with torch.no_grad():
        y = model(x).argmax(1)  # every sample starts correctly classified
    clf = Classifier(model, num_classes=10, device=device, batch_size=n)
    plan = [
        PlannedAttack(
            0, PGD(PGDParams(steps=steps, step_size=alpha, early_stop=False)), Threat("linf", eps)
        )
    ]

    cell_times: list[float] = []

    def ours() -> None:
        res = run_plan(clf, x, y, plan, seed=0, batch_size=n)
        cell_times.append(res.cells[0].seconds)

    def bare() -> None:
        xa = x + (torch.rand_like(x) * 2 - 1) * eps
        for _ in range(steps):
            xa = xa.detach().requires_grad_(True)
            loss = nn.functional.cross_entropy(model(xa), y)
            (g,) = torch.autograd.grad(loss, xa)
            xa = torch.min(torch.max(xa + alpha * g.sign(), x - eps), x + eps).clamp(0, 1)

    fns: dict[str, Callable[[], object]] = {
        "bare loop (10 fwd+bwd)": bare,
        "robaudit audit (clean+PGD-10)": ours,
    }
    try:
        import torchattacks

        peer = torchattacks.PGD(model, eps=eps, alpha=alpha, steps=steps, random_start=True)

        def peer_with_eval() -> None:
            # the same number robaudit reports needs a clean and an adversarial forward pass
            with torch.no_grad():
                (model(x).argmax(1) == y).float().mean()
            x_adv = peer(x, y)
            with torch.no_grad():
                (model(x_adv).argmax(1) == y).float().mean()

        fns["torchattacks PGD-10"] = lambda: peer(x, y)
        fns["torchattacks clean+PGD-10+eval"] = peer_with_eval
    except ImportError:
        print("torchattacks not installed (pip install -e '.[bench]'): peer column skipped")
    rows = list(interleaved(fns, device, args.repeats).items())
    # the attack cell alone: PGD-10, the engine's budget checks and its verification forward
    rows.insert(1, ("robaudit PGD-10 cell", statistics.median(cell_times[1:])))
    print(
        f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, "
        f"{n} inputs 3x32x32, PGD-10 Linf 8/255, median of {args.repeats}"
    )
    base = dict(rows)
    for name, t in rows:
        print(f"  {name:32s} {t * 1000:9.1f} ms   {n / t:9.1f} samples/s")
    r = base["robaudit PGD-10 cell"]
    bare_t = base["bare loop (10 fwd+bwd)"]
    print(f"  ratio robaudit cell / bare loop     {r / bare_t:.3f}  (target <= 1.15)")
    if "torchattacks PGD-10" in base:
        print(
            f"  ratio robaudit cell / torchattacks  {r / base['torchattacks PGD-10']:.3f}  (target <= 1.0)"
        )
        whole = base["robaudit audit (clean+PGD-10)"] / base["torchattacks clean+PGD-10+eval"]
        print(f"  ratio whole audit / torchattacks with the same evals  {whole:.3f}")

    # early stopping on the plain sample model
    xs, ys = digits_arrays("test")
    xd, yd = torch.from_numpy(xs).to(device), torch.from_numpy(ys).to(device)
    dclf = Classifier(
        load_model(ROOT / "sample_models" / "digits_cnn.pt").module, 10, device=device
    )
    for e in (0.1, 0.2):
        res = {}
        for es in (False, True):
            p = [PlannedAttack(0, PGD(PGDParams(steps=50, early_stop=es)), Threat("linf", e))]
            t = timed(lambda p=p: run_plan(dclf, xd, yd, p, seed=0, batch_size=500), device, 3)
            out = run_plan(dclf, xd, yd, p, seed=0, batch_size=500)
            res[es] = (t, out.cells[0].grad_evals, int(out.cells[0].broken.sum()))
        (t0, g0, b0), (t1, g1, b1) = res[False], res[True]
        print(
            f"early stopping, digits_cnn PGD-50 Linf {e}: {t0 * 1000:.0f} ms -> {t1 * 1000:.0f} ms "
            f"({1 - t1 / t0:.0%} saved), grad evals {g0} -> {g1}, broken {b0} -> {b1}"
        )


if __name__ == "__main__":
    main()
