"""The audit never changes the user's model: a torchvision ResNet-18 handed over in training
mode (as after construction) leaves with the same tensors and mode, and the numbers are eval
mode's."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torchvision
from torch import nn

import robaudit
from robaudit.errors import RuntimeFailure
from robaudit.guard import tensor_digests

CFG: dict[str, Any] = {
    "model": {"num_classes": 10},
    "attacks": [{"name": "fgsm", "eps": ["8/255"]}],
    "report": {"examples": 0},
    "integrity": {"sanity": False},
    "gate": {"fail_on_findings": "none"},
}


def _resnet() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        y = model.eval()(x).argmax(1)  # labels the eval-mode model gets right
    model.train()  # as a user holds it after construction or load_state_dict
    return model, x, y


def test_resnet18_in_training_mode_is_left_unchanged() -> None:
    model, x, y = _resnet()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    report = robaudit.scan(model, (x, y), config=CFG)
    assert model.training and all(m.training for m in model.modules())
    after = model.state_dict()
    assert before.keys() == after.keys()
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert changed == [], changed
    # eval mode's numbers: the labels are the eval-mode predictions, so clean accuracy is 100%
    assert report.clean_accuracy == 1.0
    found = [f for f in report.findings if f.id == "RA018"]
    assert len(found) == 1 and "training mode" in found[0].detail


def test_an_eval_mode_model_raises_no_training_mode_finding() -> None:
    model, x, y = _resnet()
    model.eval()
    report = robaudit.scan(model, (x, y), config=CFG)
    assert not model.training and not [f for f in report.findings if f.id == "RA018"]


def test_a_model_that_changes_itself_is_a_runtime_failure() -> None:
    class Counting(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.lin = nn.Linear(64, 10)
            self.register_buffer("calls", torch.zeros(()))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            return self.lin(x.flatten(1))

    model = Counting().eval()
    x = torch.rand(6, 1, 8, 8)
    y = model(x).argmax(1)
    with pytest.raises(RuntimeFailure, match=r"changed 1 tensor\(s\) of .*: calls"):
        robaudit.scan(model, (x, y), config=CFG)


def test_digests_see_every_parameter_and_buffer() -> None:
    model = torchvision.models.resnet18(weights=None, num_classes=10)
    d = tensor_digests(model)
    assert len(d) == len(model.state_dict())
    with torch.no_grad():
        model.layer1[0].bn1.running_mean += 1e-6
    assert [k for k, v in tensor_digests(model).items() if v != d[k]] == ["layer1.0.bn1.running_mean"]


def test_plugin_audit_leaves_the_model_unchanged(pytester: pytest.Pytester, tmp_path: Path) -> None:
    model, x, y = _resnet()
    path = pytester.path / "model.pt"
    torch.save({"model": model, "x": x, "y": y}, path)
    pytester.makepyfile(
        test_inner=f'''
import torch

CFG = {CFG!r}

def test_it(robaudit_scan):
    saved = torch.load("model.pt", weights_only=False)
    model, x, y = saved["model"], saved["x"], saved["y"]
    before = {{k: v.clone() for k, v in model.state_dict().items()}}
    report = robaudit_scan(model, (x, y), config=CFG)
    assert model.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert report.clean_accuracy == 1.0
'''
    )
    result = pytester.runpytest_inprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)


pytest_plugins = ["pytester"]
