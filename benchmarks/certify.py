"""CERTIFY throughput, side by side in one run: robaudit.certify vs a naive per-sample loop.

    .venv/bin/python benchmarks/certify.py [--n 10000] [--samples 100] [--device cpu]

Model: the plain digits sample model, the first ``--samples`` test digits, sigma 0.25,
n0 = 100, alpha = 0.001, 1000 noisy inputs per forward batch for both.
- robaudit: :func:`robaudit.certify.certify` — all (sample, draw) pairs in one sequence,
  batches that mix samples, counts by ``bincount``, vectorized Clopper–Pearson.
- naive loop: Cohen et al.'s reference structure — one sample at a time, its n0 then n draws in
  batches of ``x.repeat``, one ``scipy`` bound per sample — through the same Classifier.
Prints seconds (median over ``--repeats`` interleaved runs), noisy draws per second, the ratio,
and the certified-accuracy curve of each (they agree up to Monte-Carlo noise). Timing belongs
here, not in tests.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import beta, norm

from robaudit.certify import ABSTAIN, Certificate, SmoothingParams, certify
from robaudit.classifier import Classifier, resolve_device
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model

ROOT = Path(__file__).resolve().parents[1]


def naive_certify(
    clf: Classifier,
    x: torch.Tensor,
    y: torch.Tensor,
    p: SmoothingParams,
    generator: torch.Generator,
) -> Certificate:
    """One sample at a time, batches of draws of that sample only (the reference loop)."""
    t0 = time.perf_counter()
    c = clf.num_classes
    preds, tops, radii, lowers, counts = [], [], [], [], []
    for i in range(x.shape[0]):
        xi = x[i : i + 1].to(clf.device)

        def sample(num: int, xi: torch.Tensor = xi) -> np.ndarray:
            total = torch.zeros(c, dtype=torch.int64)
            left = num
            while left > 0:
                b = min(p.batch_size, left)
                batch = xi.repeat(b, 1, 1, 1)
                noise = torch.randn(batch.shape, generator=generator).to(clf.device)
                total += torch.bincount(clf.predict(batch + p.sigma * noise).cpu(), minlength=c)
                left -= b
            return total.numpy()

        top = int(sample(p.n0).argmax())
        n_a = int(sample(p.n)[top])
        lower = float(beta.ppf(p.alpha, n_a, p.n - n_a + 1)) if n_a > 0 else 0.0
        ok = lower >= 0.5
        preds.append(top if ok else ABSTAIN)
        tops.append(top)
        radii.append(p.sigma * float(norm.ppf(lower)) if ok else math.nan)
        lowers.append(lower)
        counts.append(n_a)
    return Certificate(
        pred=torch.tensor(preds),
        top=torch.tensor(tops),
        label=y.clone(),
        radius=torch.tensor(radii, dtype=torch.float64),
        p_lower=torch.tensor(lowers, dtype=torch.float64),
        count=torch.tensor(counts),
        params=p,
        seconds=time.perf_counter() - t0,
        draws=int(x.shape[0]) * (p.n0 + p.n),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=100)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-size", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1)
    args = ap.parse_args()

    device = resolve_device(args.device)
    model = load_model(ROOT / "sample_models" / "digits_cnn.pt").module
    clf = Classifier(model, num_classes=10, device=device, batch_size=args.batch_size)
    xs, ys = digits_arrays("test")
    x, y = torch.from_numpy(xs[: args.samples]), torch.from_numpy(ys[: args.samples])
    p = SmoothingParams(sigma=0.25, n0=100, n=args.n, alpha=0.001, batch_size=args.batch_size)
    print(
        f"device {device}, torch threads {torch.get_num_threads()}, {args.samples} samples, "
        f"n0 {p.n0}, n {p.n}, sigma {p.sigma}, alpha {p.alpha}, batch {p.batch_size}"
    )

    fns = {"robaudit": certify, "naive loop": naive_certify}
    warm = p.model_copy(update={"n": 2 * p.batch_size})
    for fn in fns.values():  # TorchScript specializes on its first shapes: warm both up
        fn(clf, x[:3], y[:3], warm, torch.Generator())
    results: dict[str, Certificate] = {}
    seconds: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(args.repeats):  # interleaved, so load on a shared machine hits both
        for name, fn in fns.items():
            results[name] = fn(clf, x, y, p, torch.Generator().manual_seed(0))
            seconds[name].append(results[name].seconds)
    med = {name: statistics.median(v) for name, v in seconds.items()}
    for name, cert in results.items():
        print(
            f"{name:>11}: {med[name]:7.2f} s  {cert.draws / med[name]:10,.0f} draws/s  "
            f"({cert.draws:,} draws; median of {args.repeats})"
        )
    print(f"      ratio: naive / robaudit = {med['naive loop'] / med['robaudit']:.2f}x")
    radii = [0.0, 0.25, 0.5, 0.75, 1.0]
    for name, cert in results.items():
        curve = "  ".join(f"r={r:g}: {a:.2f}" for r, a in cert.curve(radii))
        print(
            f"{name:>11}: {curve}  abstentions {cert.abstentions}  "
            f"mean radius {cert.mean_radius:.3f}"
        )


if __name__ == "__main__":
    main()
