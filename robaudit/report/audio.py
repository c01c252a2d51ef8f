"""Audio examples for the report: playable WAV clips and pictures, all as base64 data.

A waveform example (``[C, T]`` with a declared sample rate) gets its clean and adversarial
audio as 16-bit PCM WAV written with the standard library (``<audio>`` plays them from data
URIs: the report fetches nothing), a waveform plot of both, and spectrograms of the clean
input, the adversarial input and the perturbation on one shared dB scale (where the attack
put its energy shows against the signal's own).
"""

from __future__ import annotations

import base64
import io
import math
import wave
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

WIDTH, HEIGHT = 320, 96  # picture size in pixels
FLOOR_DB = 80.0  # spectrogram dynamic range below the loudest bin


def audio_example(
    x: torch.Tensor, x_adv: torch.Tensor, bounds: tuple[float, float], rate: int
) -> dict[str, Any]:
    """Clips, pictures and the SNR (dB) of one waveform example (values in ``bounds``)."""
    lo, hi = bounds
    clean = ((x.detach().cpu().double() - lo) / (hi - lo) * 2 - 1).numpy()
    adv = ((x_adv.detach().cpu().double() - lo) / (hi - lo) * 2 - 1).numpy()
    delta = adv - clean
    spec = [_spectrogram(a[0]) for a in (clean, adv, delta)]
    top = max(float(s.max()) for s in spec)
    return {
        "sample_rate": int(rate),
        "snr_db": snr_db(x, x_adv),
        "clean_wav": _b64(wav_bytes(clean, rate)),
        "adv_wav": _b64(wav_bytes(adv, rate)),
        "waveform_png": _b64(_png(_waveform(clean[0], adv[0]))),
        "clean_spectrogram_png": _b64(_png(_spectrogram_image(spec[0], top))),
        "adv_spectrogram_png": _b64(_png(_spectrogram_image(spec[1], top))),
        "perturbation_spectrogram_png": _b64(_png(_spectrogram_image(spec[2], top))),
    }


def snr_db(x: torch.Tensor, x_adv: torch.Tensor) -> float | None:
    """20·log10(‖x‖/‖δ‖) in float64 (None for no change: an infinite SNR is not JSON)."""
    s = float(x.detach().double().norm())
    d = float((x_adv.detach().double() - x.detach().double()).norm())
    return 20 * math.log10(s / d) if d > 0 and s > 0 else None


def wav_bytes(x: np.ndarray, rate: int) -> bytes:
    """``[C, T]`` in [-1, 1] as a 16-bit PCM WAV file in memory."""
    v = np.clip(np.round(np.asarray(x, dtype=np.float64) * 32767.0), -32768, 32767)
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(int(v.shape[0]))
        w.setsampwidth(2)
        w.setframerate(int(rate))
        w.writeframes(v.T.astype("<i2").tobytes())
    return buf.getvalue()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def _waveform(clean: np.ndarray, adv: np.ndarray) -> Image.Image:
    """Both signals' min/max envelope per pixel column: clean grey, adversarial red on top."""
    img = Image.new("RGB", (WIDTH, HEIGHT), "white")
    draw = ImageDraw.Draw(img)
    peak = max(float(np.abs(clean).max()), float(np.abs(adv).max()), 1e-9)
    for sig, colour in ((clean, (150, 150, 150)), (adv, (200, 30, 30))):
        cols = np.array_split(sig / peak, WIDTH)
        for px, col in enumerate(cols):
            if col.size == 0:
                continue
            y0 = (1 - float(col.max())) * (HEIGHT - 1) / 2
            y1 = (1 - float(col.min())) * (HEIGHT - 1) / 2
            draw.line([(px, y0), (px, y1)], fill=colour)
    return img


def _spectrogram(sig: np.ndarray) -> np.ndarray:
    """Power in dB, frequency by frame (Hann window of 256 or the whole signal if shorter)."""
    t = torch.from_numpy(np.ascontiguousarray(sig, dtype=np.float64))
    n_fft = int(min(256, 2 ** max(1, int(math.log2(max(2, t.numel()))))))
    window = torch.hann_window(n_fft, dtype=torch.float64)
    s = torch.stft(t, n_fft, hop_length=max(1, n_fft // 4), window=window, return_complex=True)
    return (10 * torch.log10(s.abs().pow(2) + 1e-20)).numpy()


def _spectrogram_image(db: np.ndarray, top: float) -> Image.Image:
    """Low frequencies at the bottom; black is ``FLOOR_DB`` below ``top``, white is ``top``."""
    level = np.clip((db - (top - FLOOR_DB)) / FLOOR_DB, 0, 1)[::-1]
    img = Image.fromarray((level * 255 + 0.5).astype(np.uint8), mode="L")
    return img.resize((WIDTH, HEIGHT), Image.Resampling.NEAREST)
