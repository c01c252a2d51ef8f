"""Train a CIFAR-sized ResNet-18 on scikit-learn's digits upsampled to 3x32x32, on CPU, offline.

    .venv/bin/python sample_models/train_resnet18.py [--out out/resnet18] [--epochs 4]

Why: the README quotes each preset's wall time on a CIFAR-sized model (benchmarks/presets.py),
and robaudit may download nothing (no CIFAR-10, no pretrained weights). Scikit-learn's bundled
8x8 digits, upsampled to 32x32 and repeated to three channels, give a 3x32x32 input, so the
presets pick the ``cifar`` profile (Linf 8/255, 16/255; L2 0.5), and a ResNet-18 of the usual
CIFAR shape makes the attacks cost what they cost on a RobustBench-style model. The accuracy
is not the point: the time per gradient is.

The model is ``torchvision.models.resnet18(weights=None, num_classes=10)`` with the usual CIFAR
stem instead of the ImageNet one: ``conv1`` is 3x3 with stride 1 (not 7x7, stride 2) and the
max-pool is removed, so a 32x32 input keeps its resolution into ``layer1`` (He et al. 2016's
CIFAR practice, as in RobustBench's ResNet-18s). Plain training (no adversarial examples):
Adam, batch 128, a few epochs, random shifts of up to 2 px, seeded, on 2 threads, on the fixed
``train`` split only (``robaudit.loading.data.digits_arrays``); the ``test`` split is never seen.

Writes into ``--out`` (git-ignored ``out/``; the weights are never committed):

- ``resnet18_digits32.pt``: TorchScript (``torch.jit.trace``, eval mode);
- ``digits32_test.npz``: the 500-image test split, ``x`` float32 Nx3x32x32 in [0, 1] and
  ``y`` int64, upsampled the same way (``robaudit scan ... --data out/resnet18/digits32_test.npz``).
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import torchvision

from robaudit.loading.data import digits_arrays

ROOT = Path(__file__).resolve().parents[1]
MODEL_FILE = "resnet18_digits32.pt"
DATA_FILE = "digits32_test.npz"
SIDE = 32


def upsample(x: np.ndarray) -> torch.Tensor:
    """Nx1x8x8 in [0, 1] -> Nx3x32x32 in [0, 1]: bilinear (a convex mix, so it stays in range)."""
    t = F.interpolate(torch.from_numpy(x), size=(SIDE, SIDE), mode="bilinear", align_corners=False)
    return t.clamp(0.0, 1.0).repeat(1, 3, 1, 1).contiguous()


def build() -> torch.nn.Module:
    """torchvision's ResNet-18, untrained, with the CIFAR stem (3x3 stride-1 conv1, no max-pool)."""
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    model.conv1 = torch.nn.Conv2d(3, 64, kernel_size=3, stride=1, padding=1, bias=False)
    model.maxpool = torch.nn.Identity()
    return model


def shift(x: torch.Tensor, gen: torch.Generator, pad: int = 2) -> torch.Tensor:
    """Random translation by up to ``pad`` px (zero padding, random crop): the one augmentation."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    return torch.stack(
        [padded[i, :, int(dy[i]) : int(dy[i]) + h, int(dx[i]) : int(dx[i]) + w] for i in range(n)]
    )


@torch.no_grad()
def accuracy(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 250) -> float:
    """Top-1 accuracy in eval mode."""
    model.eval()
    correct = sum(
        int((model(x[i : i + batch]).argmax(1) == y[i : i + batch]).sum())
        for i in range(0, len(x), batch)
    )
    return correct / len(x)


def train(epochs: int, batch_size: int, lr: float, seed: int) -> torch.nn.Module:
    """Plain cross-entropy training with Adam and a cosine learning-rate decay, seeded."""
    torch.manual_seed(seed)
    xs, ys = digits_arrays("train")
    x, y = upsample(xs), torch.from_numpy(ys)
    model = build()
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    steps = epochs * ((len(x) + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    gen = torch.Generator().manual_seed(seed)
    for epoch in range(epochs):
        model.train()
        t0, total = time.perf_counter(), 0.0
        perm = torch.randperm(len(x), generator=gen)
        for i in range(0, len(x), batch_size):
            b = perm[i : i + batch_size]
            loss = F.cross_entropy(model(shift(x[b], gen)), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(b)
        print(
            f"epoch {epoch + 1}/{epochs}: loss {total / len(x):.4f}, "
            f"{time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "resnet18")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    model = train(args.epochs, args.batch_size, args.lr, args.seed)
    seconds = time.perf_counter() - t0

    xt, yt = digits_arrays("test")
    x_test, y_test = upsample(xt), torch.from_numpy(yt)
    acc = accuracy(model, x_test, y_test)
    with warnings.catch_warnings():  # robaudit loads TorchScript; the deprecation is torch's
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model, torch.zeros(2, 3, SIDE, SIDE))
    traced.save(str(args.out / MODEL_FILE))
    np.savez(
        args.out / DATA_FILE,
        x=x_test.numpy().astype(np.float32),
        y=y_test.numpy().astype(np.int64),
    )
    print(f"training time: {seconds:.0f} s ({args.epochs} epochs, {args.threads} threads)")
    print(f"clean test accuracy: {acc:.1%} ({len(y_test)} images)")
    print(f"wrote {args.out / MODEL_FILE} and {args.out / DATA_FILE}")


if __name__ == "__main__":
    main()
