"""robaudit's `autoattack` battery vs torchattacks' AutoAttack (standard), side by side.

    .venv/bin/python benchmarks/autoattack.py [--samples 200] [--device auto]

Same model, samples and eps; prints wall time and robust accuracy of each and the time ratio.
Both run all four members (APGD-CE, APGD-T, FAB-T, Square 5000 queries) as a cascade. Note
that torchattacks' "standard" AutoAttack runs APGD, APGD-T and FAB-T with its default 10
iterations, not the paper's 100; robaudit's battery defaults to the paper's 100. Two robaudit
rows per case: ``steps=10`` (the peer's budget: the like-for-like time ratio) and the default
``steps=100`` (AutoAttack as published). Target: <= 0.5x the peer's time at equal or lower
robust accuracy.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch

import robaudit
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model

ROOT = Path(__file__).resolve().parents[1]
CASES = [
    ("digits_cnn", "linf", 0.1),
    ("digits_cnn_robust", "linf", 0.2),
    ("digits_cnn_robust", "l2", 1.0),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=200)
    ap.add_argument("--device", default="auto")
    args = ap.parse_args()
    import torchattacks

    xs, ys = digits_arrays("test")
    x, y = torch.from_numpy(xs[: args.samples]), torch.from_numpy(ys[: args.samples])
    print(
        f"{args.samples} digits test images, torch {torch.__version__}, threads {torch.get_num_threads()}"
    )
    for name, norm, eps in CASES:
        path = ROOT / "sample_models" / f"{name}.pt"
        runs = {}
        for steps in (10, 100):
            cfg = {
                "model": {"input_shape": [1, 8, 8], "num_classes": 10},
                "attacks": [{"battery": "autoattack", "norm": norm, "eps": [eps], "steps": steps}],
                "report": {"examples": 0},
                "integrity": {"enabled": False},
            }
            t0 = time.perf_counter()
            ra = robaudit.scan(path, (x, y), config=cfg, device=args.device).robust_accuracy(
                norm, eps
            )
            runs[steps] = (float(ra), time.perf_counter() - t0)
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
        t_peer = time.perf_counter() - t0
        with torch.no_grad():
            theirs = float((model(x_adv).argmax(1).cpu() == y).float().mean())
        (r10, t10), (r100, t100) = runs[10], runs[100]
        print(
            f"{name} {norm} eps={eps}: torchattacks {theirs:.3f} in {t_peer:.1f} s | "
            f"robaudit steps=10 {r10:.3f} in {t10:.1f} s (ratio {t10 / t_peer:.2f}) | "
            f"robaudit steps=100 {r100:.3f} in {t100:.1f} s (ratio {t100 / t_peer:.2f})"
        )


if __name__ == "__main__":
    main()
