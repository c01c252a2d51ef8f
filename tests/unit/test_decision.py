"""model.decision: a binary model audited with its deployed threshold rule."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import robaudit
from robaudit.classifier import Classifier
from robaudit.config import config_from_dict
from robaudit.config.decision import DecisionRule
from robaudit.errors import ConfigError


def _model() -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 2)).eval()
    with torch.no_grad():  # a bias and a scale that put p(positive) around 0.2..0.7
        model[2].weight.mul_(6.0)
        model[2].bias.copy_(torch.tensor([0.0, -0.6]))
    return model


def _inputs(n: int) -> torch.Tensor:
    """Inputs whose positive-class probability spreads over (0, 1) for the model above."""
    torch.manual_seed(1)
    return torch.rand(n, 6)


def test_argmax_applies_the_threshold_exactly() -> None:
    model = _model()
    x = _inputs(400)
    rule = DecisionRule(positive_class=1, threshold=0.3)
    clf = Classifier(model, num_classes=2, logit_offset=rule.logit_offset(2))
    with torch.no_grad():
        p1 = model(x).softmax(1)[:, 1]
        pred = clf.logits(x).argmax(1)
    assert torch.equal(pred == 1, p1 >= 0.3)
    assert 0 < int((p1 >= 0.3).sum()) < 400 and int(((p1 >= 0.3) & (p1 < 0.5)).sum()) > 0
    zero = Classifier(model, num_classes=2, logit_offset=DecisionRule(threshold=0.5).logit_offset(2))
    with torch.no_grad():
        assert torch.equal(zero.logits(x), model(x))  # threshold 0.5 is plain argmax


def test_config_refuses_a_threshold_on_a_multiclass_model() -> None:
    with pytest.raises(ConfigError, match=r"model: .*threshold rule needs a binary model .*has 10"):
        config_from_dict({"model": {"num_classes": 10, "decision": {"threshold": 0.3}},
                          "attacks": [{"name": "fgsm", "eps": [0.1]}]})
    with pytest.raises(ConfigError, match=r"threshold"):
        config_from_dict({"model": {"num_classes": 2, "decision": {"threshold": 1.0}},
                          "attacks": [{"name": "fgsm", "eps": [0.1]}]})
    cfg = config_from_dict({"model": {}, "attacks": [{"name": "fgsm", "eps": [0.1]}]})
    assert "decision" not in cfg.model_dump(mode="json")["model"]  # unset: reports unchanged


def test_scan_judges_with_the_threshold() -> None:
    """A lower threshold flags more samples positive: the scan's clean verdicts follow it."""
    model = _model()
    x = _inputs(200)
    with torch.no_grad():
        p1 = model(x).softmax(1)[:, 1]
    y = (p1 >= 0.3).long()  # labels that only the thresholded rule gets all right
    base = {"attacks": [{"name": "pgd", "eps": [0.05], "steps": 5}], "gate": {"fail_on_findings": "none"},
            "integrity": {"sanity": False}}
    ruled = robaudit.scan(model, (x.numpy(), y.numpy()),
                          config={**base, "model": {"decision": {"positive_class": 1, "threshold": 0.3}}})
    plain = robaudit.scan(model, (x.numpy(), y.numpy()), config={**base, "model": {}})
    assert ruled.clean_accuracy == 1.0
    assert plain.clean_accuracy < 1.0
    assert ruled.result.config["model"]["decision"] == {"positive_class": 1, "threshold": 0.3}
