"""Exported adversarial examples and ``robaudit verify``: every registered attack's output on
both sample models holds up under an independent re-check, and tampering is caught."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import robaudit
from robaudit.api import Report
from robaudit.attacks.base import Attack, registry
from robaudit.export import FORMAT, AdversarialExamples

EPS = {"linf": [0.1, 0.2], "l2": [0.5, 1.0], "l1": [2.0, 4.0]}  # two budgets per norm
EPS["l0"] = [1, 3]  # pixels
EPS["patch"] = ["5%", "10%"]  # 2x2 and 3x3 regions of the 8x8 digits, anywhere
# σ-zero sparsifies over its steps: 3 steps leave nothing within 3 pixels; 30 do
SLOWER = {"sigma-zero": {"steps": 30, "lr": 1.0}}
SAMPLES = 30
MODELS = ("digits_cnn.pt", "digits_cnn_robust.pt")
# keep every attack cheap (only the fields an attack has): few iterations, one restart; CW
# gets a larger step and constant so that a few iterations still find something
FAST = {
    "steps": 3, "restarts": 1, "binary_search_steps": 2, "targets": 2, "draws": 2,
    "lr": 0.1, "initial_const": 1.0, "candidates": 3, "queries": 100,
    # the transfer attack's surrogate: the robust twin (on itself it is plain PGD)
    "surrogate": str(Path(__file__).resolve().parents[2] / "sample_models" / "digits_cnn_robust.pt"),
}

Exported = tuple[Path, Path, Report]


def _fast_params(cls: type[Attack]) -> dict[str, Any]:
    fields = cls.Params.model_fields
    return {**{k: v for k, v in FAST.items() if k in fields}, **SLOWER.get(cls.name, {})}


def every_attack_config() -> dict[str, Any]:
    """One entry per registered attack and norm it supports (cascade off: each attack runs on
    every correctly classified sample, so each produces its own verified breaks)."""
    attacks = [
        {"name": name, "norm": norm, "eps": EPS[norm], **_fast_params(cls)}
        for name, cls in registry().items()
        for norm in cls.norms
        if norm in EPS
    ]
    return {
        "version": 1,
        "seed": 0,
        "model": {"input_shape": [1, 8, 8], "num_classes": 10, "bounds": [0.0, 1.0]},
        "data": {"source": "builtin:digits", "split": "test", "samples": SAMPLES},
        "attacks": attacks,
        "report": {"examples": 0, "formats": ["json"]},
        "engine": {"device": "cpu", "cascade": False},
    }


@pytest.fixture(scope="module")
def scans(repo_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Exported]:
    """Per sample model: (model, config file, report) after a scan with every attack at two
    budgets per norm, saved with its examples (breaks and strongest unbroken candidates)."""
    out: dict[str, Exported] = {}
    for name in MODELS:
        model = repo_root / "sample_models" / name
        folder = tmp_path_factory.mktemp(name.replace(".", "_"))
        cfg = folder / "every_attack.yaml"
        cfg.write_text(yaml.safe_dump(every_attack_config(), sort_keys=False), encoding="utf-8")
        report = robaudit.scan(model, config=cfg, save_adversarial=True, save_unbroken=True)
        report.save(folder)
        out[name] = (model, cfg, report)
    return out


@pytest.fixture(params=MODELS)
def exported(request: pytest.FixtureRequest, scans: dict[str, Exported]) -> Exported:
    return scans[request.param]


def test_every_attack_family_is_exercised(scans: dict[str, Exported]) -> None:
    """Each registered attack leaves verified breaks on at least one sample model, so the
    agreement below is tested on real output of every family, not on empty files."""
    broke = {a.attack for _, _, r in scans.values() for a in r.result.attacks if a.broken}
    assert broke == set(registry())


def test_verify_agrees_with_the_scan_for_every_attack(exported: Exported) -> None:
    model, cfg, report = exported
    res = robaudit.verify(model, cfg.parent / "adversarial.npz", config=cfg)
    assert res.ok, "\n".join(res.summary_lines())
    assert res.data_checked and not res.notes
    assert {a.attack for a in report.result.attacks} == set(registry())  # every family ran
    cells = {(c.attack, c.threat): c for c in res.cells}
    for row in report.result.attacks:
        got = cells.get((row.attack, row.threat_key))
        assert (got.verified if got else 0) == row.broken, (row.attack, row.threat_key)
        assert (got.claimed if got else 0) == row.broken
    assert res.claimed == res.verified == sum(a.broken for a in report.result.attacks)
    # one strongest candidate for every sample no attack broke, per threat
    assert res.unbroken == sum(t.robust for t in report.threats)
    assert res.verified > 0 and res.unbroken > 0  # both kinds of row were really checked
    # one PNG per row, listed in index.csv
    images = cfg.parent / "adversarial"
    pngs = sorted(p.name for p in images.glob("*.png"))
    assert len(pngs) == res.rows
    index = (images / "index.csv").read_text(encoding="utf-8").splitlines()
    assert len(index) == res.rows + 1 and [line.split(",")[1] for line in index[1:]] == pngs


def test_file_format(exported: Exported) -> None:
    _, cfg, report = exported
    with np.load(cfg.parent / "adversarial.npz", allow_pickle=False) as f:
        assert {"x_adv", "x_clean_index", "y", "y_adv_pred", "attack", "threat", "x_clean", "source_index"} <= set(f.files)
        meta = json.loads(str(f["meta"][()]))
        n = len(f["y"])
        assert f["x_adv"].shape == (n, 1, 8, 8) and f["x_adv"].dtype == np.float32
        broken = f["broken"]
        assert (f["y_adv_pred"][broken] != f["y"][broken]).all()
        assert (f["y_adv_pred"][~broken] == f["y"][~broken]).all()
        samples = {s["index"]: s["source_index"] for s in report.result.samples}
        assert all(samples[int(i)] == int(s) for i, s in zip(f["x_clean_index"], f["source_index"], strict=True))
    assert meta["format"] == FORMAT
    assert meta["model"]["sha256"] == report.result.model.sha256
    assert meta["data"] == {"source": "builtin:digits", "split": "test", "samples": SAMPLES, "evaluated": SAMPLES, "seed": 0}


def _plain(scans: dict[str, Exported]) -> Exported:
    """CLI and tampering checks run once, on the plain model's file."""
    return scans["digits_cnn.pt"]


def test_cli_verify_passes_and_prints_the_counts(scans: dict[str, Exported], cli: Any) -> None:
    model, cfg, _ = _plain(scans)
    npz = cfg.parent / "adversarial.npz"
    r = cli("verify", model, npz, "--config", cfg, "--data", "builtin:digits")
    assert r.exit_code == 0, r.output
    res = robaudit.verify(model, npz, config=cfg)
    assert f"{res.rows} row(s): {res.claimed} claimed break(s), {res.verified} verified" in r.stdout
    assert "VERIFIED" in r.stdout
    for c in res.cells:  # the per-(attack, threat) table
        assert f"  {c.attack} " in r.stdout and c.threat in r.stdout
    j = cli("verify", model, npz, "--config", cfg, "--json")
    assert j.exit_code == 0, j.output
    doc = json.loads(j.stdout)
    assert doc["ok"] is True and doc["verified"] == res.verified and doc["violations"] == []


def test_verify_catches_tampering(scans: dict[str, Exported], cli: Any, tmp_path: Path) -> None:
    model, cfg, _ = _plain(scans)
    ex = AdversarialExamples.load(cfg.parent / "adversarial.npz")
    linf = np.flatnonzero(ex.broken & (ex.norm == "linf"))
    moved, relabelled, recentred = int(linf[0]), int(linf[1]), int(linf[2])
    x_adv, y, x_clean = ex.x_adv.copy(), ex.y.copy(), ex.x_clean.copy()
    # one example moved outside its ball (still inside the bounds): push a pixel to 2 eps
    flat_clean = x_clean[moved].reshape(-1)
    p = int(np.argmin(flat_clean))  # a dark pixel, so clean + 2 eps stays below 1
    flat = x_adv[moved].reshape(-1)
    flat[p] = flat_clean[p] + 2 * float(ex.eps[moved])
    # one label changed
    y[relabelled] = (y[relabelled] + 1) % 10
    # one ball re-centred on the adversarial input (x_clean no longer the data's sample)
    x_clean[recentred] = x_adv[recentred]
    bad = replace(ex, x_adv=x_adv, y=y, x_clean=x_clean)
    path = bad.save(tmp_path / "tampered.npz")

    r = cli("verify", model, path, "--config", cfg)
    assert r.exit_code == 1, r.output
    assert f"row {moved} " in r.stdout and "[ball]" in r.stdout
    assert f"row {relabelled} " in r.stdout and "[label]" in r.stdout
    assert f"row {recentred} " in r.stdout and "[x_clean]" in r.stdout
    assert "FAILED" in r.stdout
    res = robaudit.verify(model, path, config=cfg)
    assert not res.ok
    assert {v.row for v in res.violations} == {moved, relabelled, recentred}
    assert {(v.row, v.check) for v in res.violations} >= {(moved, "ball"), (relabelled, "label"), (recentred, "x_clean")}
    assert res.verified == res.claimed - 3


def test_verify_without_data_uses_the_file_and_says_so(scans: dict[str, Exported]) -> None:
    """A file made from in-memory data is checked against its own x_clean, with a note."""
    model, cfg, _ = _plain(scans)
    ex = AdversarialExamples.load(cfg.parent / "adversarial.npz")
    mem = replace(ex, meta={**ex.meta, "data": {**ex.meta["data"], "source": "<arrays>"}})
    res = robaudit.verify(model, mem, config=cfg)
    assert res.ok and not res.data_checked
    assert any("taken from the file" in n for n in res.notes)


@pytest.mark.parametrize("kind", ["missing", "not_npz", "no_arrays", "wrong_format"])
def test_verify_bad_input_exits_2(kind: str, cli: Any, tmp_path: Path, plain_model_path: Path, tiny_config: Any) -> None:
    path = tmp_path / "adv.npz"
    if kind == "not_npz":
        path.write_text("hello", encoding="utf-8")
    elif kind == "no_arrays":
        np.savez(path, x=np.zeros((1, 1, 8, 8), np.float32), y=np.zeros(1, np.int64))
    elif kind == "wrong_format":
        np.savez(path, **{k: np.zeros(1) for k in ("x_adv", "x_clean", "y", "y_adv_pred", "broken", "x_clean_index",
                                                   "source_index", "attack", "attack_index", "access", "norm", "eps",
                                                   "eps_label", "threat", "distance")}, meta=np.asarray('{"format": "other"}'))
    r = cli("verify", plain_model_path, path, "--config", tiny_config(tmp_path))
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("robaudit: error: ") and "adv.npz" in lines[0]


def test_cli_scan_save_adversarial(cli: Any, tiny_config: Any, plain_model_path: Path, tmp_path: Path) -> None:
    cfg = tiny_config(tmp_path, data={"samples": 30})
    out = tmp_path / "out"
    r = cli("scan", plain_model_path, "--config", cfg, "--out", out, "--save-adversarial", "--exit-zero")
    assert r.exit_code == 0, r.output
    assert "adversarial" in r.stderr  # the summary lists the files written
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    ex = AdversarialExamples.load(out / "adversarial.npz")
    assert bool(ex.broken.all())  # without --save-unbroken: verified breaks only
    assert ex.counts() == {(a["attack"], a["threat_key"]): a["broken"] for a in doc["attacks"] if a["broken"]}
    assert len(list((out / "adversarial").glob("*.png"))) == len(ex)
    v = cli("verify", plain_model_path, out / "adversarial.npz", "--config", cfg)
    assert v.exit_code == 0, v.output
