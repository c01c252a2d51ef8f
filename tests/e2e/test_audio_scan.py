"""The committed audio sample (sample_models/audio_tones.pt, its WAV test folder) scanned
through the CLI at Linf, L2 and SNR 40 / 30 dB: every verified break at an SNR budget is at
least that many dB below its signal (recomputed here from the exported arrays), and the HTML
plays the clean and adversarial clips (checked in headless Chromium: each ``<audio>`` element
decodes its data URI)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from tests.e2e.test_report_browser import DevTools, console_errors, require_chromium

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "sample_models" / "audio_tones.pt"
DATA = ROOT / "sample_models" / "data" / "audio_tones"


@pytest.fixture(scope="module")
def audio_scan(tmp_path_factory: pytest.TempPathFactory, cli: Any) -> tuple[Path, dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("audio")
    cfg = {
        "version": 1,
        "seed": 0,
        "profile": "waveform",
        "model": {"input_shape": [1, 4000], "bounds": [-1.0, 1.0]},
        "data": {"source": str(DATA), "sample_rate": 8000},
        "attacks": [
            {"name": "apgd", "norm": "linf", "steps": 20},
            {"name": "apgd", "norm": "l2", "steps": 20},
            {"name": "apgd", "norm": "snr", "db": [40, 30, 20], "steps": 20},
        ],
        "report": {"formats": ["json", "html"], "examples": 2},
        "engine": {"device": "cpu"},
        "gate": {"fail_on_findings": "none"},
    }
    path = tmp / "audio.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    out = tmp / "out"
    result = cli("scan", MODEL, "--config", path, "--out", out, "--quiet", "--save-adversarial")
    assert result.exit_code == 0, result.output
    return out, json.loads((out / "report.json").read_text(encoding="utf-8"))


def test_every_verified_snr_break_is_at_least_its_budget_below_the_signal(
    audio_scan: tuple[Path, dict[str, Any]], validate_report: Any
) -> None:
    out, doc = audio_scan
    validate_report(doc)
    keys = {t["key"]: t for t in doc["threats"]}
    assert {(t["norm"], t["eps"]) for t in keys.values()} >= {
        ("linf", 0.002), ("l2", 0.2), ("snr", 40.0), ("snr", 30.0), ("snr", 20.0)
    }  # fmt: skip
    with np.load(out / "adversarial.npz", allow_pickle=False) as f:
        rows = {k: f[k] for k in ("x_adv", "x_clean", "norm", "eps", "broken")}
    snr_rows = (rows["norm"] == "snr") & rows["broken"]
    assert snr_rows.any(), "no break at any SNR budget: the check would be vacuous"
    x = rows["x_clean"][snr_rows].astype(np.float64).reshape(int(snr_rows.sum()), -1)
    d = rows["x_adv"][snr_rows].astype(np.float64).reshape(len(x), -1) - x
    snr = 20 * np.log10(np.linalg.norm(x, axis=1) / np.linalg.norm(d, axis=1))
    assert (snr >= rows["eps"][snr_rows]).all(), (snr, rows["eps"][snr_rows])
    # the report's own per-sample SNR of every break, at every SNR threat (inherited included)
    for s in doc["samples"]:
        for key, verdict in s["threats"].items():
            if verdict and keys[key]["norm"] == "snr":
                assert verdict["norm"] >= keys[key]["eps"], (s["index"], key, verdict)
    # nested balls: a quieter budget never leaves fewer samples standing
    acc = {t["eps"]: t["robust_accuracy"] for t in keys.values() if t["norm"] == "snr"}
    assert acc[40.0] >= acc[30.0] >= acc[20.0]


def test_the_report_embeds_playable_clips_and_pictures(
    audio_scan: tuple[Path, dict[str, Any]],
) -> None:
    out, doc = audio_scan
    assert doc["examples"], "no examples to play"
    for e in doc["examples"]:
        a = e["audio"]
        assert a["sample_rate"] == 8000
        for key in ("clean_wav", "adv_wav"):
            raw = base64.b64decode(a[key], validate=True)
            assert raw[:4] == b"RIFF" and raw[8:12] == b"WAVE"
        if doc_threat(doc, e)["norm"] == "snr":
            assert a["snr_db"] >= doc_threat(doc, e)["eps"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert html.count("<audio controls") == 2 * len(doc["examples"])
    assert html.count('src="data:audio/wav;base64,') == 2 * len(doc["examples"])
    assert "spectrogram" in html and 'src="http' not in html


def doc_threat(doc: dict[str, Any], e: dict[str, Any]) -> dict[str, Any]:
    return next(t for t in doc["threats"] if t["key"] == e["threat_key"])


AUDIO_PROBE = """Promise.all([...document.querySelectorAll('#gallery audio')].map(a =>
  new Promise(resolve => {
    const done = () => resolve({duration: a.duration, error: a.error ? a.error.code : null,
                                state: a.readyState, kind: a.className});
    if (a.readyState >= 1) { done(); return; }
    a.addEventListener('loadedmetadata', done);
    a.addEventListener('error', done);
    setTimeout(done, 15000);
    a.load();
  })))"""


@pytest.mark.slow
def test_the_audio_elements_decode_in_headless_chromium(
    audio_scan: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    binary = require_chromium()
    out, doc = audio_scan
    tools = DevTools(binary, tmp_path / "profile")
    try:
        target = tools.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = tools.send("Target.attachToTarget", {"targetId": target, "flatten": True})[
            "sessionId"
        ]
        for domain in ("Page", "Runtime", "Log"):
            tools.send(f"{domain}.enable", session=session)
        tools.send("Page.navigate", {"url": (out / "report.html").resolve().as_uri()}, session)
        tools.wait_for("Page.loadEventFired")
        clips = tools.send(
            "Runtime.evaluate",
            {"expression": AUDIO_PROBE, "awaitPromise": True, "returnByValue": True},
            session,
        )["result"]["value"]
        events = list(tools.events)
    finally:
        tools.close()
    assert console_errors(events) == []
    assert len(clips) == 2 * len(doc["examples"])
    assert {c["kind"] for c in clips} == {"clip-clean", "clip-adversarial"}
    for c in clips:
        assert c["error"] is None and c["state"] >= 1, c
        assert c["duration"] == pytest.approx(4000 / 8000, abs=1e-3), c
