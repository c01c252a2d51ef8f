"""robaudit's `autoattack` battery vs torchattacks' AutoAttack (standard), side by side.

    .venv/bin/python benchmarks/autoattack.py [--samples 200] [--device auto]

Same model, samples and eps; prints wall time and robust accuracy of each and the time ratio.
robaudit's battery currently runs APGD-CE and APGD-T (FAB-T and Square not yet available); the
peer runs all four. Target: <= 0.5x the peer's time at equal or lower robust accuracy.
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
        cfg = {
            "model": {"input_shape": [1, 8, 8], "num_classes": 10},
            "attacks": [{"battery": "autoattack", "norm": norm, "eps": [eps]}],
            "report": {"examples": 0},
            "integrity": {"enabled": False},
        }
        t0 = time.perf_counter()
        ours = robaudit.scan(path, (x, y), config=cfg, device=args.device).robust_accuracy(
            norm, eps
        )
        t_ours = time.perf_counter() - t0
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
        print(
            f"{name} {norm} eps={eps}: robaudit {float(ours):.3f} in {t_ours:.1f} s | "
            f"torchattacks {theirs:.3f} in {t_peer:.1f} s | time ratio {t_ours / t_peer:.2f}"
        )


if __name__ == "__main__":
    main()
