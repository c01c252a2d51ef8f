"""robaudit's `autoattack` battery vs torchattacks' AutoAttack (standard), side by side.

    .venv/bin/python benchmarks/autoattack.py [--samples 200] [--device auto] [--repeat 1]

Same model, samples and eps; prints wall time and robust accuracy of each and the time ratio.
Both run all four members (APGD-CE, APGD-T, FAB-T, Square 5000 queries) as a cascade. Note
that torchattacks' "standard" AutoAttack runs APGD, APGD-T and FAB-T with its default 10
iterations, not the paper's 100; robaudit's battery defaults to the paper's 100. Two robaudit
rows per case: ``steps=10`` (the peer's budget: the like-for-like time ratio) and the default
``steps=100`` (AutoAttack as published). Target: <= 0.5x the peer's time at equal or lower
robust accuracy.

robaudit's time is the whole ``robaudit.scan`` (loading the checkpoint, the clean pass, every
member, verification, the report's tables); the peer's is its ``AutoAttack`` call on a model
loaded before the clock starts. Both libraries are imported before any clock starts (robaudit
imports its API lazily). With ``--repeat N`` each case runs N times, the three runs of a
round back to back so a busy machine slows them alike, and the fastest time of each is
reported (the least disturbed); a shared machine makes single runs noisy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import robaudit
import robaudit.api  # robaudit imports its API lazily: done before any clock starts
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("digits_cnn", "linf", 0.1),
    ("digits_cnn_robust", "linf", 0.2),
    ("digits_cnn_robust", "l2", 1.0),
]


def _ours(
    path: Path, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float, steps: int, device: str
) -> tuple[float, float, str]:
    """robaudit's battery: robust accuracy, seconds, and each member's own seconds."""
    cfg = {
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "attacks": [{"battery": "autoattack", "norm": norm, "eps": [eps], "steps": steps}],
        "report": {"examples": 0},
        "integrity": {"enabled": False},
    }
    t0 = time.perf_counter()
    report = robaudit.scan(path, (x, y), config=cfg, device=device)
    seconds = time.perf_counter() - t0
    frame = report.to_frame()
    members = " ".join(f"{a} {s:.1f}" for a, s in zip(frame["attack"], frame["seconds"], strict=True))
    return float(report.robust_accuracy(norm, eps)), seconds, members


def _peer(
    path: Path, x: torch.Tensor, y: torch.Tensor, norm: str, eps: float
) -> tuple[float, float]:
    """torchattacks' AutoAttack (standard): robust accuracy and seconds."""
    import torchattacks

    model = load_model(path).module
    dev = next(model.parameters()).device
    peer = torchattacks.AutoAttack(
        model,
        norm="Linf" if norm == "linf" else "L2",
        eps=eps,
        version="standard",
        n_classes=10,
        seed=0,
    )
    t0 = time.perf_counter()
    x_adv = peer(x.to(dev), y.to(dev))
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        robust = float((model(x_adv).argmax(1).cpu() == y).float().mean())
    return robust, seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--repeat", type=int, default=1, help="runs per case; the fastest is shown")
    ap.add_argument("--case", type=int, action="append", help="run only these cases (0, 1, 2)")
    args = ap.parse_args()
    import torchattacks  # noqa: F401  (imported before any clock starts, like robaudit)

    xs, ys = digits_arrays("test")
    x, y = torch.from_numpy(xs[: args.samples]), torch.from_numpy(ys[: args.samples])
    print(
        f"{args.samples} digits test images, torch {torch.__version__}, threads "
        f"{torch.get_num_threads()}, best of {args.repeat}"
    )
    for name, norm, eps in [c for i, c in enumerate(CASES) if args.case is None or i in args.case]:
        path = ROOT / "sample_models" / f"{name}.pt"
        times: dict[str, list[float]] = {"10": [], "100": [], "peer": []}
        robust: dict[str, float] = {}
        members: dict[str, str] = {}
        for _ in range(args.repeat):
            for key in ("10", "peer", "100"):
                if key == "peer":
                    robust[key], seconds = _peer(path, x, y, norm, eps)
                else:
                    robust[key], seconds, split = _ours(path, x, y, norm, eps, int(key), args.device)
                    if seconds < min(times[key], default=float("inf")):
                        members[key] = split  # of the fastest run, the one reported
                times[key].append(seconds)
        t10, t100, t_peer = min(times["10"]), min(times["100"]), min(times["peer"])
        print(
            f"{name} {norm} eps={eps}: torchattacks {robust['peer']:.3f} in {t_peer:.1f} s | "
            f"robaudit steps=10 {robust['10']:.3f} in {t10:.1f} s (ratio {t10 / t_peer:.2f}) | "
            f"robaudit steps=100 {robust['100']:.3f} in {t100:.1f} s (ratio {t100 / t_peer:.2f})"
        )
        print(f"    robaudit members, steps=10: {members['10']}; steps=100: {members['100']}")


if __name__ == "__main__":
    main()
