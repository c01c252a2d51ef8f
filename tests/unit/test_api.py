"""The Python API: ``robaudit.scan`` on every model, data and config form, the Report, errors."""

from __future__ import annotations

import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from torch.utils.data import DataLoader, TensorDataset

import robaudit
from robaudit.api import Report, RobustAccuracy, UnknownThreatError, resolve_config, state_sha256
from robaudit.classifier import Classifier
from robaudit.config import Config, config_from_dict
from robaudit.errors import ConfigError, DataError, RobauditError, UserInputError
from robaudit.models.digits import DigitsCNN

CFG: dict[str, Any] = {
    "version": 1,
    "seed": 0,
    "model": {"input_shape": [1, 8, 8], "num_classes": 10, "bounds": [0.0, 1.0]},
    "data": {"source": "builtin:digits", "split": "test", "samples": 30},
    "attacks": [
        {"name": "fgsm", "norm": "linf", "eps": [0.1]},
        {"name": "pgd", "norm": "linf", "eps": [0.1, "8/255"], "steps": 3},
    ],
    "report": {"examples": 2},
    "engine": {"device": "cpu"},
}


def _numbers(r: Report) -> dict[str, Any]:
    """Everything numeric a run reports, without timings."""
    return {
        "clean": r.clean_accuracy,
        "threats": [(t.key, t.robust, t.robust_accuracy) for t in r.threats],
        "attacks": [
            (a.attack, a.threat_key, a.attacked, a.broken, a.median_norm, a.queries, a.grad_evals)
            for a in r.result.attacks
        ],
        "samples": [(s["index"], s["source_index"], s["clean_pred"], s["threats"]) for s in r.result.samples],
        "score": r.score,
    }


@pytest.fixture(scope="module")
def digits_module(repo_root: Path) -> DigitsCNN:
    m = DigitsCNN()
    m.load_state_dict(torch.load(repo_root / "sample_models" / "digits_cnn.state_dict.pt", weights_only=True))
    return m.eval()


@pytest.fixture(scope="module")
def base_report(plain_model_path: Path) -> Report:
    """The reference: a checkpoint path, the config's data source, a dict config."""
    return robaudit.scan(plain_model_path, config=CFG)


# ------------------------------------------------------------------------- the Report


def test_report_numbers_and_lookup(base_report: Report) -> None:
    r = base_report
    assert r.n == 30 and 0.9 <= r.clean_accuracy <= 1.0
    ra = r.robust_accuracy("linf", 0.1)
    assert isinstance(ra, RobustAccuracy) and isinstance(ra, float)
    row = r.threat("linf", 0.1)
    assert float(ra) == row.robust_accuracy == row.robust / 30
    assert ra.threat == "white-box/linf/0.1" and (ra.robust, ra.n) == (row.robust, 30)
    # eps as a fraction string, as a float, and within 1e-9
    assert r.robust_accuracy("linf", "8/255") == r.robust_accuracy("linf", 8 / 255)
    assert r.robust_accuracy("linf", 0.1 + 1e-11) == ra
    assert r.robust_accuracy("linf", 0.1, access="white-box") == ra
    assert r.passed is r.gate.passed is True  # no thresholds configured
    assert r.score == pytest.approx(100 * sum(t.robust_accuracy for t in r.threats) / 2)
    assert r.grade in "ABCDF" and isinstance(r.findings, tuple)
    assert [t.key for t in r.threats] == ["white-box/linf/8/255", "white-box/linf/0.1"]
    text = repr(r)
    assert "clean" in text and "linf 0.1" in text and "gate PASS" in text


def test_unknown_threat_lists_the_available_ones(base_report: Report) -> None:
    with pytest.raises(UnknownThreatError) as err:
        base_report.robust_accuracy("l2", 0.5)
    assert isinstance(err.value, KeyError) and isinstance(err.value, RobauditError)
    msg = str(err.value)
    assert "('l2', '0.5', 'white-box')" in msg and "('linf', '0.1', 'white-box')" in msg
    assert "8/255" in msg
    with pytest.raises(KeyError):
        base_report.robust_accuracy("linf", 0.1, access="score")
    with pytest.raises(KeyError, match="not a number"):
        base_report.robust_accuracy("linf", "eight")


def test_to_frame_and_to_dict(base_report: Report, validate_report: Any) -> None:
    df = base_report.to_frame()
    assert isinstance(df, pd.DataFrame) and len(df) == 3  # fgsm@0.1, pgd@0.1, pgd@8/255
    assert {"attack", "threat_key", "broken", "robust_accuracy", "success_rate"} <= set(df.columns)
    assert len(base_report.threat_frame()) == 2
    doc = base_report.to_dict()
    validate_report(doc)
    doc["clean_accuracy"] = -1  # a copy: the report itself does not change
    assert base_report.to_dict()["clean_accuracy"] == base_report.clean_accuracy


def test_save_writes_the_cli_files(base_report: Report, tmp_path: Path) -> None:
    written = base_report.save(tmp_path / "out")
    assert set(written) == {"json", "html", "csv", "md", "junit"}
    assert {p.name for p in (tmp_path / "out").iterdir()} == {
        "report.json", "report.html", "results.csv", "summary.md", "junit.xml"
    }
    assert base_report.html_path == tmp_path / "out" / "report.html"
    assert base_report.robust_accuracy("linf", 0.1).report_html == str(tmp_path / "out" / "report.html")
    only = base_report.save(tmp_path / "json_only", formats=["json"])
    assert list(only) == ["json"]
    with pytest.raises(UserInputError, match="unknown report format"):
        base_report.save(tmp_path / "bad", formats=["pdf"])


def test_assert_robust_message_names_threat_value_limit_and_report(base_report: Report, tmp_path: Path) -> None:
    base_report.save(tmp_path)
    value = base_report.robust_accuracy("linf", 0.1)
    base_report.assert_robust("linf", 0.1, at_least=float(value))  # at the limit passes
    with pytest.raises(AssertionError) as err:
        base_report.assert_robust("linf", 0.1, at_least=float(value) + 0.2)
    msg = str(err.value)
    assert "white-box linf eps=0.1" in msg
    assert f"{float(value):.1%}" in msg and f"{float(value) + 0.2:.1%}" in msg
    assert "below by 20.0%" in msg
    assert str(tmp_path / "report.html") in msg


def test_export_does_not_change_the_numbers(base_report: Report, plain_model_path: Path, tmp_path: Path) -> None:
    """Collecting examples (and ranking unbroken candidates) must not touch the audit."""
    r = robaudit.scan(plain_model_path, config=CFG, save_unbroken=True)
    assert _numbers(r) == _numbers(base_report)
    ex = r.adversarial
    assert ex is not None and base_report.adversarial is None
    assert int(ex.broken.sum()) == sum(a.broken for a in r.result.attacks)
    assert int((~ex.broken).sum()) == sum(t.robust for t in r.threats)
    written = r.save(tmp_path)
    assert written["adversarial"] == tmp_path / "adversarial.npz"
    assert written["adversarial_images"] == tmp_path / "adversarial"
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp files


def test_robust_accuracy_pickles(base_report: Report) -> None:
    ra = base_report.robust_accuracy("linf", 0.1)
    back = pickle.loads(pickle.dumps(ra))
    assert back == ra and back.threat == ra.threat and back.ci == ra.ci


# ------------------------------------------------------------------------- input forms


def test_every_model_and_data_form_gives_the_same_numbers(
    base_report: Report, digits_module: DigitsCNN, digits_test: tuple[torch.Tensor, torch.Tensor],
    validate_report: Any,
) -> None:
    x, y = digits_test  # the whole test split; samples=30 picks the same seeded subset
    expected = _numbers(base_report)
    digits_module.train()  # the API puts it in eval mode for the audit and restores this
    before = {k: v.clone() for k, v in digits_module.state_dict().items()}
    runs = {
        "module+tensors": robaudit.scan(digits_module, (x, y), config=CFG),
        "module+numpy": robaudit.scan(digits_module, (x.numpy(), y.numpy()), config=CFG),
        "module+dataset": robaudit.scan(digits_module, TensorDataset(x, y), config=CFG),
        "module+loader": robaudit.scan(digits_module, DataLoader(TensorDataset(x, y), batch_size=64), config=CFG),
    }
    for name, r in runs.items():
        assert _numbers(r) == expected, name
    assert digits_module.training
    assert all(torch.equal(before[k], v) for k, v in digits_module.state_dict().items())
    r = runs["module+tensors"]
    assert r.result.model.format == "module"
    assert r.result.model.sha256 == state_sha256(digits_module)
    assert r.result.model.arch == "robaudit.models.digits:DigitsCNN"
    assert r.result.data.source == "<arrays>"
    validate_report(r.to_dict())
    assert runs["module+dataset"].result.data.source == "<Dataset TensorDataset>"


def test_classifier_input(base_report: Report, digits_module: DigitsCNN) -> None:
    clf = Classifier(digits_module, num_classes=10, bounds=(0.0, 1.0), batch_size=64)
    r = robaudit.scan(clf, config=CFG)
    assert _numbers(r) == _numbers(base_report)
    assert r.result.model.format == "classifier"
    bad = Classifier(digits_module, num_classes=10, bounds=(0.0, 255.0))
    with pytest.raises(UserInputError, match=r"bounds \[0.0, 255.0\] vs model.bounds"):
        robaudit.scan(bad, config=CFG)


def test_config_forms_and_overrides(plain_model_path: Path, tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(CFG), encoding="utf-8")
    cfg, where = resolve_config(path)
    assert isinstance(cfg, Config) and where == str(path)
    assert resolve_config(CFG)[1] is None
    preset, where = resolve_config("quick")
    assert where is not None and where.endswith("quick.yaml") and preset.data.samples == 200
    small = {**CFG, "attacks": [{"name": "fgsm", "eps": [0.1]}]}
    r = robaudit.scan(str(plain_model_path), config=config_from_dict(small), samples=12, seed=3, batch_size=5)
    assert r.n == 12 and r.result.meta.seed == 3 and r.result.meta.batch_size == 5
    assert r.result.meta.config_path is None
    from_path = robaudit.scan(plain_model_path, config=path, samples=12, seed=3)
    assert from_path.result.meta.config_path == str(path)


class _Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def start(self, label: str, total: int) -> None:
        self.calls.append(("start", (label, total)))

    def advance(self, n: int) -> None:
        self.calls.append(("advance", n))

    def finish(self) -> None:
        self.calls.append(("finish", None))


def test_progress_callback(plain_model_path: Path) -> None:
    rec = _Recorder()
    small = {**CFG, "attacks": [{"name": "fgsm", "eps": [0.1, 0.2]}]}
    r = robaudit.scan(plain_model_path, config=small, samples=20, progress=rec)
    starts = [c[1] for c in rec.calls if c[0] == "start"]
    assert [label for label, _ in starts] == ["fgsm linf eps=0.1", "fgsm linf eps=0.2"]
    assert [total for _, total in starts] == [a.attacked for a in r.result.attacks]
    assert sum(c[1] for c in rec.calls if c[0] == "advance") == sum(a.attacked for a in r.result.attacks)
    assert sum(1 for c in rec.calls if c[0] == "finish") == 2
    robaudit.scan(plain_model_path, config=small, samples=20, progress="tqdm")  # tqdm is optional
    with pytest.raises(UserInputError, match="progress="):
        robaudit.scan(plain_model_path, config=small, progress="bars")  # type: ignore[arg-type]


# ------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("data", "expect"),
    [
        ("x255", ("data (x, y)", "outside the declared bounds", "0-255")),
        ("label", ("data (x, y)", "label 12 at position 3", "outside [0, 10)")),
        ("shape", ("data (x, y)", "(1, 8, 8)")),
        ("count", ("x has 10 samples but y has 9 labels",)),
        ("pairs", ("yields Tensor", "(x, y) pairs")),
        ("type", ("data must be", "not int")),
        ("missing", ("nope.npz", "not found")),
    ],
)
def test_bad_data_is_a_data_error(
    data: str, expect: tuple[str, ...], digits_module: DigitsCNN,
    digits_test: tuple[torch.Tensor, torch.Tensor], tmp_path: Path,
) -> None:
    x, y = digits_test[0][:10], digits_test[1][:10]
    cases: dict[str, Any] = {
        "x255": (x * 255, y),
        "label": (x, torch.tensor([0, 1, 2, 12, 4, 5, 6, 7, 8, 9])),
        "shape": (torch.zeros(10, 1, 9, 9), y),
        "count": (x, y[:9]),
        "pairs": torch.utils.data.Subset(x, list(range(10))),
        "type": 42,
        "missing": str(tmp_path / "nope.npz"),
    }
    with pytest.raises(DataError) as err:
        robaudit.scan(digits_module, cases[data], config=CFG)
    for text in expect:
        assert text in str(err.value), (text, str(err.value))


def test_bad_arguments(digits_module: DigitsCNN, plain_model_path: Path) -> None:
    with pytest.raises(ConfigError, match="no config given"):
        robaudit.scan(digits_module, config=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="config file not found"):
        robaudit.scan(digits_module, config="nope.yaml")
    with pytest.raises(ConfigError, match=r"attacks\[0\].eps"):
        robaudit.scan(digits_module, config={**CFG, "attacks": [{"name": "fgsm", "eps": [-1]}]})
    with pytest.raises(UserInputError, match="model must be"):
        robaudit.scan(12, config=CFG)  # type: ignore[arg-type]
    with pytest.raises(UserInputError, match="samples=0"):
        robaudit.scan(digits_module, config=CFG, samples=0)
    with pytest.raises(UserInputError, match="device='tpu'"):
        robaudit.scan(digits_module, config=CFG, device="tpu")
    with pytest.raises(UserInputError, match="not found"):
        robaudit.scan(plain_model_path.with_name("nope.pt"), config=CFG)


def test_import_robaudit_is_cheap() -> None:
    """The pytest plugin imports robaudit in every test run: torch must load only on use."""
    code = (
        "import sys, robaudit, robaudit.pytest_plugin; assert 'torch' not in sys.modules; "
        "f = robaudit.scan; assert callable(f) and 'torch' in sys.modules; "
        "import robaudit.pipeline; assert robaudit.scan is f; print('ok')"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_numpy_uint8_channel_last_is_scaled(digits_module: DigitsCNN, digits_test: tuple[torch.Tensor, torch.Tensor]) -> None:
    """The .npz loader's rules apply: 8-bit NxHxWxC data is scaled onto the bounds."""
    x, y = digits_test
    x8 = np.round(x.numpy() * 255).astype(np.uint8).transpose(0, 2, 3, 1)
    small = {**CFG, "attacks": [{"name": "fgsm", "eps": [0.1]}]}
    r = robaudit.scan(digits_module, (x8, y.numpy()), config=small)
    ref = robaudit.scan(digits_module, (x, y), config=small)
    assert abs(r.clean_accuracy - ref.clean_accuracy) <= 1 / 30
