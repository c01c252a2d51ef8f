"""The 15 common corruptions x 5 severities on N CIFAR-sized inputs: robaudit (batched, torch)
vs imagecorruptions (image by image, numpy; ImageNet-C constants, which it only has).

    .venv/bin/python benchmarks/corruptions.py [--n 1000] [--device cpu] [--threads 1] [--extras]

Prints seconds per corruption (all five severities) for each side and the overall ratio. The
peer column is left out when imagecorruptions is not installed. Both sides get the same
uint8 images (3x32x32); robaudit's side includes moving the batch to and from ``--device``.
``--threads`` sets torch's intra-op threads (default 1, like the numpy peer: on a shared
machine torch's one-thread-per-core default can be far slower; 0 keeps torch's default).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robaudit.natural.corruptions import CORRUPTIONS, corruption_names


def oracle() -> Any:
    if importlib.util.find_spec("imagecorruptions") is None:
        return None
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "peer"))
    from test_corruptions_oracle import load_oracle  # the compatibility shims

    warnings.filterwarnings("ignore")
    return load_oracle()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--extras", action="store_true", help="also the 4 opt-in extras")
    args = parser.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    low = rng.uniform(0, 255, (args.n, 3, 8, 8))
    x = torch.nn.functional.interpolate(torch.from_numpy(low), size=(32, 32), mode="bilinear")
    images = x.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    batch = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 255.0
    ic = oracle()
    from PIL import Image

    pil = [Image.fromarray(img) for img in images] if ic is not None else []
    print(f"{args.n} images 3x32x32, torch threads {torch.get_num_threads()}, "
          f"device {args.device}")
    print(f"{'corruption':20s} {'robaudit s':>11s} {'peer s':>9s} {'peer/ours':>9s}")
    total_ours = total_peer = 0.0
    for name in corruption_names(args.extras):
        c = CORRUPTIONS[name]
        if c.unavailable():
            print(f"{name:20s} skipped: {c.unavailable()}")
            continue
        g = torch.Generator().manual_seed(0)
        start = time.perf_counter()
        for severity in range(1, 6):
            c.apply(batch.to(args.device), severity, g).cpu()
        ours = time.perf_counter() - start
        total_ours += ours
        peer_s = "-"
        ratio = "-"
        if ic is not None:
            np.random.seed(0)
            start = time.perf_counter()
            for severity in range(1, 6):
                for img in pil:
                    getattr(ic, name)(img, severity)
            peer = time.perf_counter() - start
            total_peer += peer
            peer_s, ratio = f"{peer:9.2f}", f"{peer / ours:9.1f}"
        print(f"{name:20s} {ours:11.2f} {peer_s:>9s} {ratio:>9s}")
    if ic is not None:
        print(f"{'total':20s} {total_ours:11.2f} {total_peer:9.2f} {total_peer / total_ours:9.1f}")
    else:
        print(f"{'total':20s} {total_ours:11.2f}  (imagecorruptions not installed)")


if __name__ == "__main__":
    main()
