"""Presets that fit any image model, budget profiles, and untrusted numbers failing the gate."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from torch import nn

import robaudit
from robaudit.config import PRESET_NAMES, GateThreshold, config_from_dict, load_config, preset_path
from robaudit.fitting import fit_config
from robaudit.profiles import PROFILES, choose
from robaudit.report.junit import render_junit
from robaudit.report.markdown import render_markdown
from robaudit.results import Finding
from robaudit.scoring import evaluate_gate


class _Tiny(nn.Module):
    """A small CIFAR-shaped classifier: 3x32x32 in, 4 classes out."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv = nn.Conv2d(3, 4, 3, stride=4)
        self.fc = nn.Linear(4 * 8 * 8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def _cifar_like(tmp_path: Path, n: int = 12) -> tuple[Path, Path]:
    """A traced 3x32x32 model and uint8 channel-last data for it (as CIFAR arrays come)."""
    model = _Tiny().eval()
    path = tmp_path / "tiny32.pt"
    torch.jit.trace(model, torch.rand(2, 3, 32, 32)).save(str(path))
    x = (np.random.RandomState(0).rand(n, 32, 32, 3) * 255).astype(np.uint8)
    with torch.no_grad():
        y = model(torch.from_numpy(x).permute(0, 3, 1, 2).float() / 255).argmax(1).numpy()
    np.savez(tmp_path / "data32.npz", x=x, y=y.astype(np.int64))
    return path, tmp_path / "data32.npz"


def test_profile_rule_by_input_size() -> None:
    assert choose((1, 8, 8))[0].name == "digits"
    assert choose((1, 28, 28))[0].name == "mnist"
    assert choose((3, 32, 32))[0].name == "cifar"
    assert choose((1, 32, 32))[0].name == "cifar"
    assert choose((3, 64, 64))[0].name == "cifar"
    assert choose((3, 96, 96))[0].name == "imagenet"
    assert choose((3, 224, 224))[0].name == "imagenet"
    lp = ("linf", "l2", "l1")  # the L0 shares are the same in every profile
    assert {k: PROFILES["cifar"].budgets[k] for k in lp} == {
        "linf": ("8/255", "16/255"), "l2": ("0.5",), "l1": ("12",)
    }
    assert {k: PROFILES["imagenet"].headline[k] for k in lp} == {"linf": "4/255", "l2": "3", "l1": "255"}
    assert PROFILES["cifar"].budgets["l0"] == ("1%", "5%") and PROFILES["cifar"].headline["l0"] == "1%"


@pytest.mark.parametrize("name", PRESET_NAMES)
@pytest.mark.parametrize(
    ("shape", "linf", "l2"),
    [((1, 8, 8), {0.1, 0.2}, {1.0, 2.0}), ((3, 32, 32), {8 / 255, 16 / 255}, {0.5}),
     ((3, 224, 224), {4 / 255}, {3.0})],
)
def test_every_preset_fits_every_input_size(
    name: str, shape: tuple[int, int, int], linf: set[float], l2: set[float]
) -> None:
    # strict also runs L1 at the profile's budgets and L0 at 1% of the pixels (floored, >= 1)
    l1 = {(1, 8, 8): {3.5, 7.0}, (3, 32, 32): {12.0}, (3, 224, 224): {255.0}}[shape]
    l0 = max(1, (shape[1] * shape[2]) // 100)
    cfg, inferred = fit_config(load_config(preset_path(name)), input_shape=shape, num_classes=10)
    got = {(t.norm, round(t.eps, 9)) for t in cfg.threats()}
    headline = min(linf) if shape != (1, 28, 28) else 0.3
    if name == "autoattack":  # exactly one Linf budget: the headline
        assert got == {("linf", round(headline, 9))}
    elif name == "quick":
        assert got == {("linf", round(e, 9)) for e in linf}
    else:
        lp = {("linf", round(e, 9)) for e in linf} | {("l2", round(e, 9)) for e in l2}
        if name == "strict":
            lp |= {("l1", round(e, 9)) for e in l1} | {("l0", float(l0))}
        lp |= {("patch", 0.05)}  # standard and strict: a sticker over 5% of the image, anywhere
        assert got == lp
    assert cfg.model.input_shape == shape and cfg.model.num_classes == 10
    assert inferred.profile == choose(shape)[0].name
    # every gate threshold sits at a threat that runs
    for g in cfg.gate.min_robust_accuracy:
        assert g.eps is not None and (g.norm, round(g.eps, 9)) in got


def test_profile_budgets_scale_with_the_bounds() -> None:
    cfg = config_from_dict({"model": {"bounds": [0, 255]}, "attacks": [{"name": "fgsm"}]})
    fitted, _ = fit_config(cfg, input_shape=(3, 32, 32), num_classes=10)
    assert sorted(t.eps for t in fitted.threats()) == pytest.approx([8.0, 16.0])


def test_named_profile_overrides_the_size_rule() -> None:
    cfg = config_from_dict({"profile": "imagenet", "model": {}, "attacks": [{"name": "fgsm"}]})
    fitted, inferred = fit_config(cfg, input_shape=(3, 32, 32), num_classes=10)
    assert [t.label for t in fitted.threats()] == ["4/255"]
    assert inferred.profile_from == "profile set in the config"


def test_a_fully_written_config_is_left_alone() -> None:
    cfg = config_from_dict(
        {"model": {"input_shape": [1, 8, 8], "num_classes": 10},
         "attacks": [{"name": "fgsm", "eps": ["8/255"]}]}
    )
    same, inferred = fit_config(cfg)
    assert same is cfg and inferred.items == () and inferred.profile is None


def test_scan_of_a_cifar_sized_model_with_an_unedited_preset(tmp_path: Path, cli: Any) -> None:
    """The card's command on a 3x32x32 model: no YAML edit, CIFAR budgets, the report says
    what was inferred and from what."""
    model, data = _cifar_like(tmp_path)
    out = tmp_path / "out"
    r = cli("scan", model, "--config", "quick.yaml", "--data", data, "--out", out, "--exit-zero")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert [t["eps_label"] for t in doc["threats"]] == ["8/255", "16/255"]
    assert doc["model"]["input_shape"] == [3, 32, 32] and doc["model"]["num_classes"] == 4
    inferred = doc["meta"]["inferred"]
    assert inferred["model.input_shape"]["value"] == [3, 32, 32]
    assert str(data) in inferred["model.input_shape"]["from"]
    assert inferred["model.num_classes"] == {"value": 4, "from": "one forward pass of the model"}
    assert inferred["profile"]["value"] == "cifar"
    assert doc["meta"]["protocol"]["name"] == "quick" and not doc["meta"]["protocol"]["security_claims"]
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "from the cifar profile" in html and "NOT for security claims" in html
    assert "NOT for security claims" in (out / "summary.md").read_text(encoding="utf-8")
    assert "NOT for security claims" in (out / "junit.xml").read_text(encoding="utf-8")
    assert "NOT for security claims" in r.stderr and "inferred: model.num_classes 4" in r.stderr


def test_init_writes_a_config_fitted_to_the_model(tmp_path: Path, cli: Any) -> None:
    model, data = _cifar_like(tmp_path)
    target = tmp_path / "fitted.yaml"
    r = cli("init", "--preset", "standard", "--model", model, "--data", data, "--output", target)
    assert r.exit_code == 0, r.output
    text = target.read_text(encoding="utf-8")
    raw = yaml.safe_load(text)
    assert raw["model"]["input_shape"] == [3, 32, 32] and raw["model"]["num_classes"] == 4
    assert raw["profile"] == "cifar" and raw["data"]["source"] == str(data)
    assert all(a["eps"] for a in raw["attacks"])
    assert [g["eps"] for g in raw["gate"]["min_robust_accuracy"]] == ["8/255", 0.5]
    assert text.count("#") > 40, "the fitted config keeps the preset's comments"
    cfg = load_config(target)
    assert {t.key for t in cfg.threats()} == {
        "white-box/linf/8/255", "white-box/linf/16/255", "white-box/l2/0.5", "white-box/patch/5%"
    }
    assert cli("init", "--preset", "standard", "--model", model).exit_code == 2  # needs --data


def _finding(fid: str, severity: str, resolved: bool = False) -> Finding:
    return Finding(fid, severity, f"title {fid}", f"detail {fid}", resolved=resolved)


@pytest.mark.parametrize(
    ("policy", "fails"),
    [("none", set()), ("errors", {"finding RA003"}), ("any", {"finding RA003", "finding RA005"})],
)
def test_fail_on_findings_levels(policy: str, fails: set[str]) -> None:
    gate = config_from_dict(
        {"model": {}, "attacks": [{"name": "fgsm", "eps": [0.1]}], "gate": {"fail_on_findings": policy}}
    ).gate
    findings = [_finding("RA003", "error"), _finding("RA005", "warning"),
                _finding("RA007", "error", resolved=True), _finding("RA013", "info")]
    res = evaluate_gate(gate, 1.0, (), 100.0, findings)
    assert {f.criterion for f in res.failures} == fails
    assert res.passed == (not fails)


def test_errors_is_the_default_and_booleans_still_read() -> None:
    base: dict[str, Any] = {"model": {}, "attacks": [{"name": "fgsm", "eps": [0.1]}]}
    assert config_from_dict(base).gate.fail_on_findings == "errors"
    assert config_from_dict({**base, "gate": {"fail_on_findings": True}}).gate.fail_on_findings == "any"
    assert config_from_dict({**base, "gate": {"fail_on_findings": False}}).gate.fail_on_findings == "none"
    for name in PRESET_NAMES:
        expected = "none" if name == "quick" else "any" if name == "strict" else "errors"
        assert load_config(preset_path(name)).gate.fail_on_findings == expected


def test_untrusted_numbers_are_named_in_every_renderer(tmp_path: Path) -> None:
    """An unresolved error finding: one line naming it in the terminal, summary.md, junit.xml."""
    from rich.console import Console

    from robaudit.report.console import print_summary

    class Quantized(nn.Module):  # dead gradients, and no reaction allowed to fix them
        def __init__(self) -> None:
            super().__init__()
            torch.manual_seed(0)
            self.lin = nn.Linear(64, 10)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.lin(torch.round(4 * x.flatten(1)) / 4)

    model = Quantized().eval()
    x = torch.rand(30, 1, 8, 8)
    y = model(x).argmax(1)
    cfg = {"model": {"input_shape": [1, 8, 8], "num_classes": 10},
           "attacks": [{"name": "pgd", "eps": [0.1], "steps": 5}], "report": {"examples": 0},
           "integrity": {"react": False}}
    report = robaudit.scan(model, (x, y), config=cfg)
    doc = report.to_dict()
    assert any(f["id"] == "RA003" and not f["resolved"] for f in doc["findings"])
    assert not report.passed and any(f.criterion == "finding RA003" for f in report.gate.failures)
    md = render_markdown(doc)
    junit = render_junit(doc)
    console = Console(record=True, width=200)
    print_summary(doc, console, {})
    for text in (md, junit, console.export_text()):
        lines = [ln for ln in text.splitlines() if "UNTRUSTED" in ln]
        assert len(lines) == 1 and "cannot be trusted" in lines[0]


def test_gate_threshold_without_eps_matches_the_profile_headline() -> None:
    cfg = config_from_dict({"model": {}, "attacks": [{"name": "fgsm", "norm": "l2"}],
                            "gate": {"min_robust_accuracy": [{"norm": "l2", "value": 0.1}]}})
    fitted, inferred = fit_config(cfg, input_shape=(3, 224, 224), num_classes=5)
    assert isinstance(fitted.gate.min_robust_accuracy[0], GateThreshold)
    assert fitted.gate.min_robust_accuracy[0].eps == pytest.approx(3.0)
    assert "gate.min_robust_accuracy[0]" in inferred.filled
