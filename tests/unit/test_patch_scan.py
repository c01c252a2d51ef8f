"""Patch threats everywhere a threat appears: the config (size, location, universal, shares,
one-line errors, profile budgets, gate thresholds), the RA008 sanity check, the gallery's
outline, the not-run rows, and a universal patch end to end in a scan."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

import robaudit
from robaudit.attacks.base import AttackOutput
from robaudit.attacks.patch_pgd import PatchPGD
from robaudit.classifier import Classifier
from robaudit.config import config_from_dict
from robaudit.errors import ConfigError
from robaudit.fitting import fit_config
from robaudit.integrity.unbounded import sanity
from robaudit.loading.data import digits_arrays, load_data
from robaudit.loading.model import load_model
from robaudit.norms import get
from robaudit.norms.patch import changed
from robaudit.report.console import _not_run_rows
from robaudit.universal import evaluate_universal
from tests.helpers import one_thread, without_timing

ROOT = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {
    "version": 1,
    "model": {"num_classes": 10, "input_shape": [1, 8, 8]},
    "attacks": [{"name": "patch-pgd", "norm": "patch", "size": ["1%", "5%", 0.1]}],
}


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def _cfg(entry: dict[str, Any] | None = None, gate: list[dict[str, Any]] | None = None,
         shape: list[int] | None = None) -> dict[str, Any]:  # fmt: skip
    doc = copy.deepcopy(BASE)
    doc["attacks"][0].update(entry or {})
    if gate is not None:
        doc["gate"] = {"min_robust_accuracy": gate}
    if shape is not None:
        doc["model"]["input_shape"] = shape
    return doc


def test_size_is_eps_as_a_share_and_the_location_names_the_threat() -> None:
    cfg = config_from_dict(_cfg())
    assert cfg.attacks[0].eps == [0.01, 0.05, 0.1]
    assert [t.key for t in cfg.threats()] == [
        "white-box/patch/1%", "white-box/patch/5%", "white-box/patch/0.1",
    ]  # fmt: skip
    center = config_from_dict(_cfg({"location": "center", "size": "5%"}))
    assert [t.key for t in center.threats()] == ["white-box/patch@center/5%"]
    fixed = config_from_dict(_cfg({"location": [2, 3], "size": ["5%"]}))
    assert [t.norm for t in fixed.threats()] == ["patch@2,3"]
    universal = config_from_dict(_cfg({"universal": True, "size": ["10%"]}))
    assert [t.key for t in universal.threats()] == ["white-box/patch-universal/10%"]
    assert "location" not in cfg.model_dump()["attacks"][0]  # other configs' hashes unchanged
    assert get("patch").describe("5%") == "Patch 5% (anywhere)"
    assert get("patch@center").describe("5%") == "Patch 5% (center)"
    assert get("patch-universal").describe("10%") == "Universal patch 10%"


def test_gate_thresholds_name_a_patch_threat_with_its_location() -> None:
    gate = [{"norm": "patch", "location": "center", "size": "5%", "value": 0.1}]
    cfg = config_from_dict(_cfg({"location": "center", "size": ["5%"]}, gate))
    g = cfg.gate.min_robust_accuracy[0]
    assert (g.threat_norm, g.eps, g._eps_label) == ("patch@center", 0.05, "5%")
    with pytest.raises(ConfigError, match=r"no attack runs at white-box patch@center eps 5%"):
        config_from_dict(_cfg({"size": ["5%"]}, gate))  # the attack runs anywhere, not centred


def test_profile_gives_patch_budgets_and_a_headline_gate() -> None:
    doc = _cfg(gate=[{"norm": "patch", "value": 0.1}])
    del doc["attacks"][0]["size"]
    del doc["model"]["input_shape"]
    fitted, inferred = fit_config(config_from_dict(doc), input_shape=(1, 8, 8))
    assert [t.key for t in fitted.threats()] == ["white-box/patch/1%", "white-box/patch/5%"]
    assert fitted.gate.min_robust_accuracy[0].eps == 0.05 and inferred.profile == "digits"


@pytest.mark.parametrize(
    ("entry", "shape", "message"),
    [
        (
            {"size": ["150%"]},
            None,
            r"attacks\[0\]: size '150%': a share must be > 0% and at most 100%",
        ),
        (
            {"size": [0]},
            None,
            r"size 0: a patch budget is its share of the image, > 0 and at most 1",
        ),
        ({"size": [1.5]}, None, r"size 1.5: a patch budget"),
        ({"size": None, "eps": [1.5]}, None, r"eps 1.5: a patch budget"),  # as written
        (
            {"size": ["0.1%"]},
            None,
            r"attacks\[0\]: a patch of 0.1% of the 8x8 image has no pixels \(a side is "
            r"round\(sqrt\(share\) x side\)\); the smallest that has one is 0.391%",
        ),
        (
            {"location": [6, 6]},
            None,
            r"attacks\[0\].location: a 3x3 patch \(10% of the image\) at \[6, 6\] "
            r"reaches past the 8x8 image; its corner may be at most \[5, 5\]",
        ),
        (
            {"location": "top"},
            None,
            r"attacks\[0\].location: patch location 'top' is not valid; "
            r"use anywhere, center or \[row, col\]",
        ),
        (
            {"name": "pgd", "norm": "linf", "size": None, "eps": [0.1], "location": "center"},
            None,
            r"location: only a patch threat has one; norm is 'linf'",
        ),
        ({"norm": "linf", "size": None, "eps": [0.1], "universal": True}, None, r"universal: only"),
        (
            {"universal": True, "location": "center"},
            None,
            r"universal: a universal patch is pasted",
        ),
        (
            {"name": "patch-rs", "universal": True},
            None,
            r"universal: patch-rs has no universal mode",
        ),
        ({"eps": [0.1]}, None, r"give the patch budgets as size or as eps, not both"),
        (
            {"name": "pgd", "norm": "linf"},
            None,
            r"size gives patch budgets; with norm 'linf' use eps",
        ),
        ({}, [30], r"attacks\[0\].norm: a patch threat works on images \(\[C, H, W\]\) only"),
    ],
)
def test_one_line_errors(entry: dict[str, Any], shape: list[int] | None, message: str) -> None:
    doc = _cfg(shape=shape)
    doc["attacks"][0].update(entry)
    doc["attacks"][0] = {k: v for k, v in doc["attacks"][0].items() if v is not None}
    with pytest.raises(ConfigError, match=message) as info:
        config_from_dict(doc)
    assert "\n" not in str(info.value)


def test_a_fixed_region_is_checked_once_the_shape_comes_from_the_data() -> None:
    doc = _cfg({"location": [6, 6], "size": ["1%", "10%"]})
    del doc["model"]["input_shape"]
    cfg = config_from_dict(doc)  # the shape is not known yet: nothing to check
    with pytest.raises(ConfigError, match=r"a 3x3 patch \(10% of the image\) at \[6, 6\]"):
        fit_config(cfg, input_shape=(1, 8, 8))
    fitted, _ = fit_config(cfg, input_shape=(1, 16, 16))  # 5x5 at [6, 6] fits on 16x16
    assert [t.norm for t in fitted.threats()] == ["patch@6,6", "patch@6,6"]


def test_sanity_check_catches_a_patch_attack_that_does_nothing(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """RA008 for patches: Patch PGD with a patch as large as the image breaks (almost) all of
    the robust model's samples; the same check with a do-nothing patch search fires, while
    the Linf check alone (no patch threat) still passes."""
    model = load_model(ROOT / "sample_models" / "digits_cnn_robust.pt").module.eval()
    x, y = (torch.from_numpy(a[:64].copy()) for a in digits_arrays("test"))
    clf = Classifier(model, num_classes=10)
    with torch.no_grad():
        correct = model(x).argmax(1) == y
    assert sanity(clf, x, y, correct, 0, None, ["linf", "patch@center"]) is None
    monkeypatch.setattr(PatchPGD, "run", lambda self, clf, x, y, t, g: AttackOutput(x_adv=x))
    assert sanity(clf, x, y, correct, 0, None, ["linf"]) is None
    found = sanity(clf, x, y, correct, 0, None, ["linf", "patch"])
    assert found is not None and found.id == "RA008"
    assert "Patch PGD at a patch covering the whole image" in found.detail


def test_not_run_rows_keep_patch_threats() -> None:
    doc = {
        "threats": [],
        "partial": {
            "unrun": [
                {"threat": "white-box/patch@center/5%"},
                {"threat": "white-box/patch-universal/10%"},
                {"threat": "white-box/linf/8/255"},
            ]
        },
    }
    assert _not_run_rows(doc) == [
        ("model", "white-box", "patch@center", "5%"),
        ("model", "white-box", "patch-universal", "10%"),
        ("model", "white-box", "linf", "8/255"),
    ]


@pytest.mark.slow
def test_universal_patch_scan_end_to_end(tmp_path: Path, validate_report: Any) -> None:
    """A scan of the plain sample model: a 10% patch trained on the train split leaves the
    audited test images 30+ points less accurate than random-noise patches of the same size
    at the same places (each image its own places) when the attacker may try 4 of them
    (measured 35-39 over seeds 0-2 on all 500); the row's number is the worst case over the
    16 places, the gate reads it, the HTML shows the patch and the gap per number of tries;
    patch examples in the gallery carry their outlined region."""
    cfg = {
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "data": {"samples": 300},
        "attacks": [
            {"name": "patch-pgd", "norm": "patch", "size": ["10%"], "universal": True},
            {"name": "patch-pgd", "norm": "patch", "size": ["5%"], "steps": 20, "locations": 4},
        ],
        "gate": {
            "min_robust_accuracy": [
                {"norm": "patch", "universal": True, "size": "10%", "value": 0.9},
            ]
        },
        "report": {"examples": 4},
    }
    report = robaudit.scan(ROOT / "sample_models" / "digits_cnn.pt", config=cfg, seed=0)
    (u,) = report.result.universal
    row = next(t for t in report.result.threats if t.norm == "patch-universal")
    assert row.robust_accuracy == pytest.approx(u.ours.robust_accuracy, abs=1e-9)
    gap = {k: b - a for (k, a), (_, b) in zip(u.ours.tries(), u.noise.tries(), strict=True)}
    assert gap[4] >= 0.30 and gap[16] >= 0.10
    assert u.noise.accuracy - u.ours.accuracy >= 0.15  # at one random placement
    assert u.held_out.split == "train" and u.ours.budget_violations == 0
    assert [f.criterion for f in report.gate.failures] == [
        "min_robust_accuracy[white-box patch-universal eps=10%]"
    ]
    paths = report.save(tmp_path)
    doc = json.loads(Path(paths["json"]).read_text())
    validate_report(doc)
    section = doc["universal_patches"][0]
    assert section["placements"] == 16 and section["patch_shape"] == [1, 3, 3]
    assert [t["tries"] for t in section["tries"]] == [1, 2, 4, 8, 16]
    four = section["tries"][2]
    html = Path(paths["html"]).read_text()
    assert 'id="universal"' in html and section["patch_png"] in html
    # the HTML's tries table shows the gap at 4 tries, as the JSON has it
    gap_cell = f"{100 * (four['noise_accuracy'] - four['accuracy']):.1f} points"
    table = html[html.index('universal-tries') :]
    assert gap_cell in table[: table.index("</table>")], gap_cell
    for e, ex in zip(doc["examples"], report.result.examples, strict=True):
        top, left, h, w = e["patch_box"]
        inside = torch.zeros(8, 8, dtype=torch.bool)
        inside[top : top + h, left : left + w] = True
        moved = changed((ex["x_adv"] - ex["x"])[None])[0]
        assert bool(moved.any()) and not bool((moved & ~inside).any()) and h <= 3 and w <= 3


class _TwoBits(torch.nn.Module):
    """Bit-depth reduction to 2 bits (4 levels) in front of the model, written here."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x.clamp(0, 1) * 3) / 3)


def test_a_defense_variant_gets_its_own_universal_patch(tmp_path: Path, validate_report: Any) -> None:
    """With a defense, the variant's universal-patch row comes from a patch trained through
    the defense (adaptive), its non-adaptive row from the bare model's patch pasted; both are
    verified on the defended model, and the report shows the variant's patch too."""
    cfg = {
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "data": {"samples": 120},
        "attacks": [
            {"name": "patch-pgd", "norm": "patch", "size": ["10%"], "universal": True,
             "train_steps": 60, "train_restarts": 1, "placements": 8},
        ],
        "defenses": [{"name": "bit-depth", "bits": 2}],
        "report": {"examples": 0},
    }  # fmt: skip
    report = robaudit.scan(ROOT / "sample_models" / "digits_cnn.pt", config=cfg, seed=0)
    bare, defended = report.result.universal
    assert bare.variant is None and defended.variant == "bit-depth(bits=2)"
    # trained through the defense: the same start and draws, other losses on the way
    assert bare.trained.loss_trace != defended.trained.loss_trace
    assert torch.equal(bare.corners, defended.corners)  # the same places: a paired comparison
    assert defended.ours.budget_violations == 0
    (summary,) = report.result.variants
    (row,) = [t for t in summary["threats"] if t["norm"] == "patch-universal"]
    # the adaptive row is exactly the trained patch's worst case over its places
    assert row["adaptive_robust_accuracy"] == pytest.approx(defended.ours.robust_accuracy, abs=1e-9)
    # the twin pastes the bare model's patch: recomputed here on the defended model
    model = load_model(ROOT / "sample_models" / "digits_cnn.pt").module.eval()
    clf = Classifier(_TwoBits(model), num_classes=10)
    audited = load_data("builtin:digits", split="test", samples=120, seed=0,
                        input_shape=(1, 8, 8), bounds=(0.0, 1.0), num_classes=10)  # fmt: skip
    naive = evaluate_universal(clf, audited.x, audited.y, bare.patch, 0.1, torch.Generator(),
                               corners=bare.corners)  # fmt: skip
    assert row["non_adaptive_robust_accuracy"] == pytest.approx(naive.robust_accuracy, abs=1e-9)
    assert row["robust_accuracy"] <= min(row["adaptive_robust_accuracy"],
                                         row["non_adaptive_robust_accuracy"]) + 1e-9  # fmt: skip
    paths = report.save(tmp_path)
    doc = json.loads(Path(paths["json"]).read_text())
    validate_report(doc)
    assert [u.get("variant") for u in doc["universal_patches"]] == [None, "bit-depth(bits=2)"]
    html = Path(paths["html"]).read_text()
    assert 'Defense variant <span class="mono">bit-depth(bits=2)</span>' in html


@pytest.mark.slow
def test_two_process_universal_scan_equals_one_process(tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2``: both ranks train the patch, rank 0's is broadcast,
    each rank pastes it at its batches' own places; the report (the universal section and
    the defense variant's rows included) equals a single process's, timings aside."""
    cfg = {
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "data": {"samples": 96, "batch_size": 16},
        "engine": {"device": "cpu"},
        "attacks": [{"name": "patch-pgd", "norm": "patch", "size": ["10%"], "universal": True,
                     "train_steps": 30, "train_restarts": 1, "placements": 6}],
        "defenses": [{"name": "bit-depth", "bits": 3}],
        "report": {"examples": 2},
    }  # fmt: skip
    path = tmp_path / "u.yaml"
    path.write_text(yaml.safe_dump(cfg), encoding="utf-8")
    scan = ["-m", "robaudit", "scan", str(ROOT / "sample_models" / "digits_cnn.pt"), "-c",
            str(path), "--quiet", "--out"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1"}
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    docs = []
    for name, launch in (("one", []), ("two", torchrun)):
        out = tmp_path / name
        proc = subprocess.run([sys.executable, *launch, *scan, str(out)], env=env,
                              capture_output=True, text=True, timeout=300)  # fmt: skip
        assert proc.returncode in (0, 1), proc.stderr[-3000:]
        docs.append(json.loads((out / "report.json").read_text(encoding="utf-8")))
    one, two = docs
    assert two["meta"]["execution"]["processes"] == 2
    assert [u.get("variant") for u in two["universal_patches"]] == [None, "bit-depth(bits=3)"]
    assert without_timing(two) == without_timing(one)


class _Widest(torch.nn.Module):
    """The digits CNN, recording the largest batch it is given."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.widest = inner, 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.widest = max(self.widest, int(x.shape[0]))
        return self.inner(x)


def test_the_place_probe_never_feeds_the_model_more_than_a_batch() -> None:
    """Patch PGD probes k places per sample: k pasted copies of a few samples at a time, never
    of the whole batch (64 places x 100 ResNet-18 inputs held 23 GiB on CPU and were killed)."""
    from robaudit.attacks.patch_pgd import PatchPGDParams
    from robaudit.engine import PlannedAttack, run_plan
    from robaudit.threat import Threat

    model = _Widest(load_model(ROOT / "sample_models" / "digits_cnn.pt").module.eval())
    clf = Classifier(model, num_classes=10, batch_size=128)
    x, y = (torch.from_numpy(a[:100].copy()) for a in digits_arrays("test"))
    attack = PatchPGD(PatchPGDParams(steps=5, locations=32))
    res = run_plan(clf, x, y, [PlannedAttack(0, attack, Threat("patch", 0.05))], seed=0, batch_size=100)
    assert model.widest <= 128, model.widest
    assert int(res.cells[0].broken.sum()) > 0  # and it still breaks samples
