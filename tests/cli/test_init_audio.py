"""`robaudit init` on waveforms: a WAV folder (or a .npz with a sample_rate) picks the audio
starter, which is fitted to the model ([C, T], classes, budgets, the sample rate read from the
data) and scans as written; image presets are refused by name. Every starter's bundled copy is
the file in configs/."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from robaudit.config import STARTER_NAMES, preset_path
from robaudit.loading.audio import read_wav
from robaudit.profiles import PROFILES

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "sample_models" / "audio_tones.pt"
WAVS = ROOT / "sample_models" / "data" / "audio_tones"


def _quick(path: Path, samples: int) -> None:
    """The fitted config with fewer clips and steps (seconds, not a minute); budgets kept."""
    cfg = yaml.safe_load(path.read_text(encoding="utf-8"))
    cfg["data"]["samples"] = samples
    for entry in cfg["attacks"]:
        if "steps" in entry:
            entry["steps"] = 5
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")


def test_init_fits_the_audio_starter_to_a_wav_folder_and_the_scan_runs_it(
    cli: Any, tmp_path: Path
) -> None:
    target = tmp_path / "audio.yaml"
    r = cli("init", "--model", MODEL, "--data", WAVS, "--output", target)
    assert r.exit_code == 0, r.output
    assert "fitted audio" in r.stderr and "input [1, 4000], 8 classes" in r.stderr
    text = target.read_text(encoding="utf-8")
    cfg = yaml.safe_load(text)
    assert cfg["profile"] == "audio"
    assert cfg["model"]["input_shape"] == [1, 4000] and cfg["model"]["num_classes"] == 8
    assert cfg["data"]["source"] == str(WAVS) and cfg["data"]["sample_rate"] == 8000
    budgets = {e["norm"]: e.get("eps", e.get("db")) for e in cfg["attacks"]}
    # the profile's budgets scaled to [-1, 1]; SNR in dB never scales
    assert budgets == {"linf": [0.002, 0.005], "l2": [0.2], "snr": [40, 30]}
    assert "# " in text  # the starter's comments are kept
    _quick(target, 8)
    out = tmp_path / "out"
    scan = cli("scan", MODEL, "--config", target, "--out", out, "--quiet")
    assert scan.exit_code in (0, 1), scan.output
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    keys = {t["key"] for t in doc["threats"]}
    assert keys == {
        "white-box/linf/0.002", "white-box/linf/0.005", "white-box/l2/0.2",
        "white-box/snr/40", "white-box/snr/30",
    }  # fmt: skip
    assert doc["data"]["samples"] == 8 and doc["clean_accuracy"] > 0.5


def test_init_reads_the_sample_rate_of_a_waveform_npz(cli: Any, tmp_path: Path) -> None:
    clips = sorted(WAVS.glob("*/*.wav"))[:6]
    x = np.stack([read_wav(f)[0] for f in clips]).astype(np.float32)
    labels = sorted({f.parent.name for f in clips})
    y = np.array([labels.index(f.parent.name) for f in clips])
    npz = tmp_path / "clips.npz"
    np.savez(npz, x=x, y=y, sample_rate=np.array(8000))
    r = cli("init", "--model", MODEL, "--data", npz)
    assert r.exit_code == 0, r.output
    cfg = yaml.safe_load(r.stdout)
    assert cfg["profile"] == "audio" and cfg["data"]["sample_rate"] == 8000
    assert cfg["model"]["input_shape"] == [1, 4000] and cfg["data"]["source"] == str(npz)


def test_image_presets_are_refused_on_waveforms(cli: Any, tmp_path: Path) -> None:
    r = cli("init", "--model", MODEL, "--data", WAVS, "--preset", "standard")
    assert r.exit_code == 2 and "--preset audio" in r.stderr and "Traceback" not in r.output
    images = tmp_path / "x.npz"
    np.savez(images, x=np.zeros((2, 1, 8, 8), np.float32), y=np.zeros(2, np.int64))
    r = cli("init", "--model", MODEL, "--data", images, "--preset", "audio")
    assert r.exit_code == 2 and "needs waveforms" in r.stderr


@pytest.mark.parametrize("name", STARTER_NAMES)
def test_each_starter_is_its_configs_copy_and_validates(
    name: str, cli: Any, repo_root: Path
) -> None:
    copy = (repo_root / "configs" / f"{name}.yaml").read_text(encoding="utf-8")
    assert preset_path(name).read_text(encoding="utf-8") == copy
    r = cli("init", "--preset", name)
    assert r.exit_code == 0 and r.stdout == copy


def test_the_audio_profile_is_the_waveform_budgets() -> None:
    audio, wave = PROFILES["audio"], PROFILES["waveform"]
    assert (audio.budgets, audio.headline) == (wave.budgets, wave.headline)
