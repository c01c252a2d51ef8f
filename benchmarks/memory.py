"""Peak memory of a scan with the decoded images kept vs streamed batch by batch, side by side.

    .venv/bin/python benchmarks/memory.py [--samples 40000] [--batch 256]

Writes a synthetic CIFAR-shaped data set (uint8 N×32×32×3 in a .npz) and a small untrained
3×32×32 CNN (TorchScript), then runs the same FGSM scan in fresh processes with
``data.cache_mb`` large enough to keep every decoded image and with ``cache_mb: 0``
(streamed), and prints each process's peak resident memory, wall time and whether the two
reports agree. The raw uint8 arrays of a .npz stay in memory either way (a quarter of the
float32 set); an ImageFolder source holds only its file paths.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CHILD = r"""
import json, resource, sys, time
import robaudit
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()
r = robaudit.scan(sys.argv[2], data=sys.argv[3], config=cfg, progress=None)
doc = r.to_dict()
print(json.dumps({
    "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    "seconds": time.perf_counter() - t0,
    "robust": [t["robust_accuracy"] for t in doc["threats"]],
    "clean": doc["clean_accuracy"],
}))
"""


def _model(path: Path) -> None:
    torch.manual_seed(0)
    net = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(4),
        torch.nn.Flatten(), torch.nn.Linear(8 * 8 * 8, 10),
    ).eval()  # fmt: skip
    torch.jit.save(torch.jit.trace(net, torch.zeros(1, 3, 32, 32)), str(path))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=40_000)
    ap.add_argument("--batch", type=int, default=256)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        rs = np.random.RandomState(0)
        x = rs.randint(0, 256, size=(args.samples, 32, 32, 3), dtype=np.uint8)
        np.savez(d / "data.npz", x=x, y=rs.randint(0, 10, size=args.samples))
        del x
        _model(d / "model.pt")
        decoded_mb = args.samples * 3 * 32 * 32 * 4 / 2**20
        print(
            f"{args.samples} images 3x32x32: raw uint8 {decoded_mb / 4:.0f} MB, decoded float32 "
            f"{decoded_mb:.0f} MB; FGSM at 2 eps, batch {args.batch}, torch {torch.__version__}"
        )
        rows = {}
        runs = (("floor", 1 << 20, args.batch), ("kept", 1 << 20, None), ("streamed", 0, None))
        for label, cache, samples in runs:
            cfg = {
                "model": {"input_shape": [3, 32, 32], "num_classes": 10},
                "data": {"batch_size": args.batch, "cache_mb": cache, "samples": samples},
                "attacks": [{"name": "fgsm", "norm": "linf", "eps": [2 / 255, 8 / 255]}],
                "integrity": {"enabled": False},
                "report": {"examples": 0},
            }
            t0 = time.perf_counter()
            out = subprocess.run(
                [sys.executable, "-c", CHILD, json.dumps(cfg), str(d / "model.pt"), str(d / "data.npz")],
                check=True, capture_output=True, text=True,
            )  # fmt: skip
            rows[label] = json.loads(out.stdout.strip().splitlines()[-1])
            rows[label]["wall"] = time.perf_counter() - t0
        k, s, f = rows["kept"], rows["streamed"], rows["floor"]
        for label, r in rows.items():
            print(f"  {label:9s} peak RSS {r['peak_mb']:7.0f} MB   scan {r['seconds']:6.1f} s")
        print(f"  (floor: the same scan on one batch of {args.batch} images: torch, model, arrays)")
        print(
            f"above the floor: kept {k['peak_mb'] - f['peak_mb']:.0f} MB, streamed "
            f"{s['peak_mb'] - f['peak_mb']:.0f} MB; streamed/kept: memory "
            f"{s['peak_mb'] / k['peak_mb']:.2f}x, time "
            f"{s['seconds'] / k['seconds']:.2f}x; reports agree: "
            f"{k['robust'] == s['robust'] and k['clean'] == s['clean']}"
        )


if __name__ == "__main__":
    main()
