"""Waveform data and audio defenses: WAV folders read with the standard library at a declared
sample rate (8/16/24/32-bit PCM, mono or multi-channel), one-line errors for another rate or
length unless data.fit pads or crops, a .npz's sample rate checked, mu-law quantization, and
image-only defenses refused by name on waveforms."""

from __future__ import annotations

import wave
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from robaudit.config import config_from_dict
from robaudit.defenses import Transform, defense_registry
from robaudit.errors import ConfigError, DataError
from robaudit.loading.audio import AudioOptions, read_wav, write_wav
from robaudit.loading.data import load_data, peek_input_shape

RATE = 8000


def _tone(t: int, f: float, channels: int = 1) -> np.ndarray:
    s = 0.5 * np.sin(2 * np.pi * f * np.arange(t) / RATE)
    return np.stack([s * (c + 1) / channels for c in range(channels)])


def _folder(root: Path, t: int = 400, channels: int = 1) -> Path:
    for k, name in enumerate(("low", "high")):
        (root / name).mkdir(parents=True)
        for i in range(3):
            write_wav(root / name / f"{i}.wav", _tone(t, 200.0 * (k + 1) + i, channels), RATE)
    return root


def _load(root: Path, shape: tuple[int, ...], **audio: Any) -> Any:
    return load_data(
        str(root), split="test", input_shape=shape, bounds=(-1.0, 1.0), num_classes=2,
        samples=None, seed=0, audio=AudioOptions(**{"sample_rate": RATE, **audio}),
    )  # fmt: skip


def test_a_wav_folder_loads_as_labelled_waveforms(tmp_path: Path) -> None:
    root = _folder(tmp_path / "wav", channels=2)
    assert peek_input_shape(str(root), "test") == (2, 400)
    ds = _load(root, (2, 400))
    assert ds.x.shape == (6, 2, 400) and ds.class_names == ("high", "low")
    assert ds.y.tolist() == [0, 0, 0, 1, 1, 1]  # sorted class folders, like ImageFolder
    want = _tone(400, 400.0, 2)  # high/0.wav, within 16-bit rounding
    assert np.abs(ds.x[0].numpy() - want).max() < 1 / 32767


@pytest.mark.parametrize("width", [1, 2, 3, 4])
def test_every_pcm_width_reads_to_the_same_waveform(tmp_path: Path, width: int) -> None:
    x = _tone(64, 440.0, 2)
    ints = np.round(x * (2 ** (8 * width - 1) - 1)).astype(np.int64).T.reshape(-1)
    if width == 1:
        raw = (ints + 128).astype(np.uint8).tobytes()
    else:
        raw = b"".join(int(v).to_bytes(width, "little", signed=True) for v in ints)
    path = tmp_path / "a.wav"
    with wave.open(str(path), "wb") as w:
        w.setnchannels(2)
        w.setsampwidth(width)
        w.setframerate(RATE)
        w.writeframes(raw)
    got, rate = read_wav(path)
    assert rate == RATE and got.shape == (2, 64)
    # one step of the format, or float32's own resolution for 32-bit
    assert np.abs(got - x).max() <= max(2.0 / 2 ** (8 * width - 1), 1e-7)


def test_another_rate_or_length_is_a_one_line_error_naming_the_file(tmp_path: Path) -> None:
    root = _folder(tmp_path / "wav")
    with pytest.raises(
        DataError, match=r"has sample rate 8000 Hz; data.sample_rate declares 16000"
    ):
        _load(root, (1, 400), sample_rate=16000)
    with pytest.raises(
        DataError, match=r"0.wav' has 400 samples; the model takes 500 \(set data.fit"
    ):
        _load(root, (1, 500))
    with pytest.raises(DataError, match=r"declare the files' sample rate as data\.sample_rate"):
        _load(root, (1, 400), sample_rate=None)
    with pytest.raises(DataError, match="has 1 channel\\(s\\); the model takes 2"):
        _load(root, (2, 400))


def test_pad_or_crop_pads_with_silence_and_cuts_the_end(tmp_path: Path) -> None:
    root = _folder(tmp_path / "wav")
    full = _load(root, (1, 400)).x
    longer = _load(root, (1, 500), fit="pad_or_crop").x
    shorter = _load(root, (1, 300), fit="pad_or_crop").x
    assert torch.equal(longer[:, :, :400], full) and (longer[:, :, 400:] == 0).all()
    assert torch.equal(shorter, full[:, :, :300])


def test_a_npz_sample_rate_must_match_the_declared_one(tmp_path: Path) -> None:
    path = tmp_path / "a.npz"
    x = np.stack([_tone(100, 300.0)] * 4).astype(np.float32)
    np.savez(path, x=x, y=np.array([0, 1, 0, 1]), sample_rate=np.array(16000))
    with pytest.raises(
        DataError, match=r"holds waveforms at 16000 Hz; data\.sample_rate declares 8000"
    ):
        _load(path, (1, 100))
    assert _load(path, (1, 100), sample_rate=16000).x.shape == (4, 1, 100)


def test_mu_law_keeps_a_voice_and_rounds_away_a_small_change_on_a_quiet_sample() -> None:
    t = Transform(defense_registry()["mu-law"](), "bpda", (-1.0, 1.0))
    x = torch.from_numpy(_tone(800, 300.0)).float()[None]
    out = t(x)
    snr = 20 * torch.log10(x.norm() / (out - x).norm())
    assert snr > 30  # 8-bit mu-law: telephone quality
    levels = torch.unique(t(torch.linspace(-1, 1, 20001)[None, None]))
    assert len(levels) == 256
    # the steps are fine near zero and coarse near full scale (companding)
    assert (levels[129] - levels[128]) < (levels[255] - levels[254]) / 20


def _cfg(defense: str) -> dict[str, Any]:
    return {
        "version": 1,
        "model": {"input_shape": [1, 400], "num_classes": 2, "bounds": [-1.0, 1.0]},
        "data": {"source": "x.npz", "sample_rate": RATE},
        "attacks": [{"name": "pgd", "norm": "snr", "db": [40]}],
        "defenses": [{"name": defense}],
    }


@pytest.mark.parametrize("name", ["mu-law", "bit-depth", "gaussian-noise"])
def test_audio_defenses_are_accepted_on_waveforms(name: str) -> None:
    assert config_from_dict(_cfg(name)).defenses[0].name == name


@pytest.mark.parametrize("name", ["jpeg", "median", "gaussian-blur", "random-resize-pad"])
def test_image_only_defenses_are_refused_by_name_on_waveforms(name: str) -> None:
    with pytest.raises(ConfigError, match=f"defense '{name}'") as err:
        config_from_dict(_cfg(name))
    assert "\n" not in str(err.value)
