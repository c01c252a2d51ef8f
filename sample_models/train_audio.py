"""Train the committed audio sample model: a tiny 1-D CNN that tells 8 tone patterns apart.

    python sample_models/train_audio.py      # deterministic on CPU, well under a minute

A spoken-digit-like task without recordings: each class is a tone pattern (chirps up and down,
steady tones, two-tone alternation, beeps, tremolo), 0.5 s at 8 kHz (``[1, 4000]``, values in
[-1, 1]), drawn with a random level, pitch (±6%), phase, onset and background noise. Writes
``audio_tones.pt`` (TorchScript, traced) and the test set as a WAV folder
``data/audio_tones/<class>/<n>.wav`` (16-bit PCM, 3 files per class). The training set
(seed 0) and the test set (seed 1) are drawn separately, so the test files are never seen.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

HERE = Path(__file__).resolve().parent
RATE, LENGTH = 8000, 4000
CLASSES = (
    "beeps",
    "chirp-down",
    "chirp-high",
    "chirp-up",
    "tone-440",
    "tone-880",
    "tremolo",
    "two-tone",
)  # fmt: skip  (sorted: the WAV folder's label order)


def _pattern(name: str, t: np.ndarray, pitch: float, rng: np.random.Generator) -> np.ndarray:
    """One class's clean tone pattern at times ``t`` (seconds), pitch scaled by ``pitch``."""
    dur = t[-1] + 1 / RATE
    phase = rng.uniform(0, 2 * np.pi)

    def chirp(f0: float, f1: float) -> np.ndarray:
        f0, f1 = f0 * pitch, f1 * pitch
        return np.sin(phase + 2 * np.pi * (f0 * t + (f1 - f0) * t**2 / (2 * dur)))

    if name == "chirp-up":
        return chirp(300, 1200)
    if name == "chirp-down":
        return chirp(1200, 300)
    if name == "chirp-high":
        return chirp(1500, 3000)
    if name in ("tone-440", "tone-880"):
        return np.sin(phase + 2 * np.pi * float(name[5:]) * pitch * t)
    if name == "two-tone":
        f = np.where((t * 8).astype(int) % 2 == 0, 500.0, 1000.0) * pitch
        return np.sin(phase + 2 * np.pi * np.cumsum(f) / RATE)
    if name == "beeps":
        gate = ((t * 6) % 1.0) < 0.5
        return np.sin(phase + 2 * np.pi * 700 * pitch * t) * gate
    return np.sin(phase + 2 * np.pi * 600 * pitch * t) * (0.55 + 0.45 * np.sin(2 * np.pi * 8 * t))


def make_set(per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``per_class`` random draws of every class: x float32 N×1×4000 in [-1, 1], y int64."""
    rng = np.random.default_rng(seed)
    t = np.arange(LENGTH) / RATE
    xs, ys = [], []
    for k, name in enumerate(CLASSES):
        for _ in range(per_class):
            sig = _pattern(name, t, rng.uniform(0.94, 1.06), rng)
            shift = int(rng.integers(0, LENGTH // 10))
            sig = np.concatenate([np.zeros(shift), sig[: LENGTH - shift]])
            sig = rng.uniform(0.2, 0.7) * sig + rng.normal(0, rng.uniform(0.005, 0.03), LENGTH)
            xs.append(np.clip(sig, -1, 1))
            ys.append(k)
    x = np.asarray(xs, dtype=np.float32)[:, None, :]
    return x, np.asarray(ys, dtype=np.int64)


class ToneCNN(nn.Module):
    """Strided 1-D convolutions then a max over time: learns band filters, any onset."""

    def __init__(self, classes: int = len(CLASSES)) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            nn.Conv1d(1, 16, 33, stride=4, padding=16), nn.ReLU(),
            nn.Conv1d(16, 24, 9, stride=4, padding=4), nn.ReLU(),
            nn.Conv1d(24, 32, 5, stride=2, padding=2), nn.ReLU(),
        )  # fmt: skip
        self.head = nn.Linear(64, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv(x)
        return self.head(torch.cat([h.amax(dim=2), h.mean(dim=2)], dim=1))


def train(epochs: int, seed: int = 0) -> ToneCNN:
    torch.manual_seed(seed)
    xs, ys = make_set(150, seed)
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    model = ToneCNN()
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    gen = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        perm = torch.randperm(x.shape[0], generator=gen)
        for i in range(0, x.shape[0], 64):
            b = perm[i : i + 64]
            loss = F.cross_entropy(model(x[b]), y[b])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


def write_test_set(out: Path, per_class: int = 3, seed: int = 1) -> None:
    """The test set as a WAV folder (class subfolders, 16-bit PCM at 8 kHz)."""
    sys.path.insert(0, str(HERE.parent))
    from robaudit.loading.audio import write_wav

    x, y = make_set(per_class, seed)
    for k, name in enumerate(CLASSES):
        (out / name).mkdir(parents=True, exist_ok=True)
        for j, i in enumerate(np.flatnonzero(y == k)):
            write_wav(out / name / f"{j}.wav", x[i], RATE)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--out", type=Path, default=HERE)
    args = ap.parse_args()
    torch.set_num_threads(1)  # bit-identical weights run to run
    start = time.time()
    model = train(args.epochs)
    xt, yt = make_set(50, seed=2)
    with torch.no_grad():
        acc = float((model(torch.from_numpy(xt)).argmax(1) == torch.from_numpy(yt)).float().mean())
    traced = torch.jit.trace(model, torch.zeros(2, 1, LENGTH))
    traced.save(str(args.out / "audio_tones.pt"))
    write_test_set(args.out / "data" / "audio_tones")
    print(f"audio_tones: held-out accuracy {acc:.3f} ({time.time() - start:.0f} s)")


if __name__ == "__main__":
    main()
