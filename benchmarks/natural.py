"""The 15 corruptions x 5 severities on N CIFAR-sized inputs through a model, end to end:
robaudit's natural-robustness stage (batched corruptions in torch plus one forward pass per
batch) vs imagecorruptions applied image by image, then the same batched forward passes.

    .venv/bin/python benchmarks/natural.py --model out/resnet18/resnet18_digits32.pt \
        --data out/resnet18/digits32_test.npz [--n 1000] [--threads 1]

Both sides see the same images (the .npz's float images, repeated up to N) and the same model
(TorchScript). imagecorruptions only has ImageNet-C's constants, so the peer does ImageNet
severities on 32 px images while robaudit does CIFAR-10-C's: the work per image is of the same
kind, not identical. Prints seconds per corruption for both sides, and the ratios with and
without the forward passes (the forward passes are timed once and shared by both columns).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.corruptions import oracle
from robaudit.natural.corruptions import corruption_names
from robaudit.natural.run import corruption_rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=250)
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    model = torch.jit.load(args.model).eval()
    d = np.load(args.data)
    reps = -(-args.n // len(d["x"]))
    x = torch.from_numpy(np.concatenate([d["x"]] * reps)[: args.n]).float()
    y = torch.from_numpy(np.concatenate([d["y"]] * reps)[: args.n]).long()
    names = [n for n in corruption_names() if n != "frost" or oracle() is not None]
    sev = [1, 2, 3, 4, 5]

    def predict(xb: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            return model(xb)

    def one_pass() -> float:
        t0 = time.perf_counter()
        for s in range(0, len(x), args.batch):
            predict(x[s : s + args.batch])
        return time.perf_counter() - t0

    for _ in range(2):  # TorchScript profiles and optimises on its first calls
        one_pass()
    # the forward passes both sides make: one per (corruption, severity), fastest of three
    forward = min(one_pass() for _ in range(3)) * len(names) * len(sev)
    ours: dict[str, float] = {}
    for name in names:
        t0 = time.perf_counter()
        corruption_rows(predict, x, y, list(range(len(x))), [name], sev, seed=0, bounds=(0.0, 1.0),
                        batch_size=args.batch, device=torch.device("cpu"), keep_gallery=False)
        ours[name] = time.perf_counter() - t0
    ic = oracle()
    theirs: dict[str, float] = {}
    if ic is not None:
        from PIL import Image

        imgs = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        pil = [Image.fromarray(im) for im in imgs]
        np.random.seed(0)
        for name in names:
            fn = getattr(ic, name)
            t0 = time.perf_counter()
            for s in sev:
                out = np.stack([np.clip(np.asarray(fn(im, s), dtype=np.float32), 0, 255) for im in pil])
                xc = torch.from_numpy(out / 255.0).permute(0, 3, 1, 2).contiguous()
                for b in range(0, len(xc), args.batch):
                    predict(xc[b : b + args.batch])
            theirs[name] = time.perf_counter() - t0
    print(f"{len(x)} inputs {tuple(x.shape[1:])}, {len(names)} corruptions x {len(sev)} severities, "
          f"{torch.get_num_threads()} torch thread(s); forward passes alone {forward:.1f} s")
    print(f"{'corruption':18s} {'robaudit s':>10s} {'peer s':>10s} {'ratio':>7s}")
    for name in names:
        t = theirs.get(name)
        print(f"{name:18s} {ours[name]:10.2f} {t if t is not None else float('nan'):10.2f} "
              f"{(t / ours[name]) if t else float('nan'):7.1f}x")
    a, b = sum(ours.values()), sum(theirs.values())
    print(f"{'total':18s} {a:10.2f} {b:10.2f} {b / a if b else float('nan'):7.1f}x  (with forward passes)")
    if b:
        print(f"{'corruptions only':18s} {a - forward:10.2f} {b - forward:10.2f} "
              f"{(b - forward) / max(a - forward, 1e-9):7.1f}x")


if __name__ == "__main__":
    main()
