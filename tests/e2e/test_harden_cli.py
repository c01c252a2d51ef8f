"""`robaudit harden` end to end on the plain digits sample model: every file is written, the
hardened TorchScript loads in a fresh process where `robaudit scan` reproduces compare.json,
bad input is one line and exit 2 with nothing written, and defensive distillation shows the
gradient masking the literature found (PGD-CE gains, the margin loss does not) and gets flagged.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import REPO_ROOT, CliInvoker
from tests.helpers import one_thread

PLAIN = REPO_ROOT / "sample_models" / "digits_cnn.pt"
CONFIG: dict[str, Any] = {
    "version": 1,
    "seed": 0,
    "model": {"input_shape": [1, 8, 8], "num_classes": 10, "bounds": [0.0, 1.0]},
    "data": {"source": "builtin:digits", "split": "test", "samples": 60},
    "attacks": [
        {"name": "fgsm", "norm": "linf", "eps": [0.1, 0.2]},
        {"name": "pgd", "norm": "linf", "eps": [0.1, 0.2], "steps": 5, "loss": "ce"},
        {"name": "pgd", "norm": "linf", "eps": [0.2], "steps": 5, "loss": "margin"},
    ],
    "report": {"examples": 0},
    "engine": {"device": "cpu", "cascade": False},
    "integrity": {"sanity": False},
}
TRAIN_FLAGS = ["--epochs", "2", "--train-samples", "300", "--steps", "3", "--eval-steps", "3"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def config_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("harden-config") / "tiny.yaml"
    path.write_text(yaml.safe_dump(CONFIG, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def hardened(cli: CliInvoker, config_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("harden") / "out"
    res = cli("harden", PLAIN, "--config", config_path, "--method", "pgd-at", "--eps", "0.2",
              *TRAIN_FLAGS, "--out", out)
    assert res.exit_code == 0, res.stdout + res.stderr
    return out


def test_harden_writes_every_file(hardened: Path) -> None:
    for name in ("model.pt", "model.pt2", "state_dict.pt", "training_log.csv", "compare.json",
                 "compare.html", "audit-original/report.json", "audit-hardened/report.json",
                 "checkpoints/epoch-0002.pt"):
        assert (hardened / name).is_file(), name
    assert not [p for p in hardened.rglob("*") if ".tmp" in p.name]
    log = (hardened / "training_log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,stage,loss,train_clean_acc,train_adv_acc,heldout_clean_acc")
    assert len(log) == 3 and sum(row.endswith(",True") for row in log) == 1
    doc = json.loads((hardened / "compare.json").read_text())
    assert doc["format"] == "robaudit-compare/1" and doc["method"] == "pgd-at"
    assert doc["threat"] == {"norm": "linf", "eps": 0.2, "eps_label": "0.2", "access": "white-box"}
    assert [t["key"] for t in doc["threats"]] == ["white-box/linf/0.1", "white-box/linf/0.2"]
    for t in doc["threats"]:
        assert t["delta"] == pytest.approx(
            t["hardened"]["robust_accuracy"] - t["original"]["robust_accuracy"]
        )
    assert {a["loss"] for a in doc["attacks"]} == {"ce", "margin"}
    assert set(doc["findings"]) == {"original", "hardened", "new_in_hardened", "gone_in_hardened"}
    tr = doc["training"]
    assert tr["epochs_run"] == 2 and len(tr["log"]) == 2 and tr["best_epoch"] in (1, 2)
    assert tr["data"] == {"source": "builtin:digits", "split": "train", "train": 270, "heldout": 30}
    assert tr["catastrophic_overfitting"]["checked"] is False
    assert doc["original"]["model"]["path"] == str(PLAIN)
    html = (hardened / "compare.html").read_text()
    assert html.count("<svg") == 3 and "<script" not in html  # trade-off, accuracy, loss
    assert "Selected epoch" in html and "white-box linf eps=0.2" in html


def test_hardened_model_loads_in_a_fresh_process_and_scan_reproduces_compare_json(
    hardened: Path, config_path: Path, tmp_path: Path
) -> None:
    # a new interpreter that never imported the training code loads the TorchScript file
    env = {"PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    scan = subprocess.run(
        [sys.executable, "-m", "robaudit", "scan", str(hardened / "model.pt"), "--config",
         str(config_path), "--out", str(tmp_path / "scan"), "--quiet", "--exit-zero"],
        capture_output=True, text=True, env=env, timeout=300, cwd=REPO_ROOT,
    )
    assert scan.returncode == 0, scan.stderr
    report = json.loads((tmp_path / "scan" / "report.json").read_text())
    doc = json.loads((hardened / "compare.json").read_text())
    assert report["clean_accuracy"] == doc["clean"]["hardened"]
    assert report["model"]["sha256"] == json.loads(
        (hardened / "audit-hardened" / "report.json").read_text()
    )["model"]["sha256"]
    mine = {t["key"]: t["robust_accuracy"] for t in report["threats"]}
    assert mine == {t["key"]: t["hardened"]["robust_accuracy"] for t in doc["threats"]}


def test_an_out_folder_with_a_run_needs_resume_and_resume_finishes_it(
    cli: CliInvoker, hardened: Path, config_path: Path
) -> None:
    res = cli("harden", PLAIN, "--config", config_path, "--eps", "0.2", *TRAIN_FLAGS,
              "--out", hardened)
    assert res.exit_code == 2 and "pass --resume to continue" in res.stderr
    before = (hardened / "model.pt").read_bytes()
    res = cli("harden", PLAIN, "--config", config_path, "--eps", "0.2", *TRAIN_FLAGS,
              "--out", hardened, "--resume", "--quiet")
    assert res.exit_code == 0, res.stderr
    assert res.stderr == ""  # --quiet: nothing but errors
    doc = json.loads((hardened / "compare.json").read_text())
    assert doc["training"]["resumed_from"] == 2 and doc["training"]["epochs_run"] == 2
    from robaudit.loading.model import load_model

    a = load_model(hardened / "model.pt").module.state_dict()
    (hardened / "again.pt").write_bytes(before)
    b = load_model(hardened / "again.pt").module.state_dict()
    assert all((a[k] == b[k]).all() for k in a)  # the same selected weights


def _bad_cases(tmp: Path) -> list[tuple[list[str], str]]:
    afile = tmp / "a-file"
    afile.write_text("x")
    onnx = REPO_ROOT / "sample_models" / "digits_cnn.onnx"
    return [
        (["--method", "fgsm-at"], "--method 'fgsm-at': valid methods are pgd-at, fast-at, trades, distill, mix"),
        (["--epochs", "0"], "--epochs 0: give a whole number >= 1"),
        (["--eps", "abc"], "--eps 'abc'"),
        (["--eps", "5"], "--eps 5: a linf budget must be > 0 and at most 1"),
        (["--norm", "l1"], "--norm 'l1': valid norms are linf, l2"),
        (["--mix-ratio", "2"], "--mix-ratio 2.0"),
        (["--beta", "-1"], "--beta -1.0"),
        (["--holdout", "0.9"], "--holdout 0.9"),
        (["--out", str(afile)], "exists and is not a directory"),
        (["--out", str(afile / "sub")], "not writable"),
        (["--train-data", str(tmp / "missing.npz")], "--train-data"),
        (["--resume"], "--resume: "),
        (["--samples", "0"], "--samples 0"),
        (["--seed", "-1"], "--seed -1"),
        (["--device", "tpu"], "--device 'tpu'"),
        (["--epochs", "abc"], "--epochs 'abc'"),
        (["MODEL", str(tmp / "missing.pt")], "model file not found"),
        (["MODEL", str(onnx)], "an ONNX model cannot be trained"),
    ]


def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    cli: CliInvoker, config_path: Path, tmp_path: Path
) -> None:
    for extra, expected in _bad_cases(tmp_path):
        model = PLAIN
        if extra[0] == "MODEL":
            model, extra = Path(extra[1]), []
        out = tmp_path / "never"
        args = ["harden", model, "--config", config_path, "--out", out, "--train-samples", "100", *extra]
        res = cli(*args)
        lines = res.stderr.strip().splitlines()
        assert res.exit_code == 2, (extra, res.stdout, res.stderr)
        assert len(lines) == 1 and lines[0].startswith("robaudit: error: "), (extra, res.stderr)
        assert expected in lines[0], (expected, lines[0])
        assert "Traceback" not in res.stdout + res.stderr
        assert not out.exists(), extra


def test_distillation_masks_gradients_and_the_audit_says_so(tmp_path: Path) -> None:
    import robaudit
    from robaudit.harden import HardenOptions

    cfg = {**CONFIG, "attacks": [
        {"name": "pgd", "norm": "linf", "eps": [0.2], "steps": 10, "rel_step_size": 0.25, "loss": "ce"},
        {"name": "pgd", "norm": "linf", "eps": [0.2], "steps": 10, "rel_step_size": 0.25,
         "loss": "margin"},
    ]}
    result = robaudit.harden_model(
        PLAIN, config=cfg, out=tmp_path / "distilled",
        options=HardenOptions(method="distill", epochs=3, train_samples=600, eval_steps=2),
    )
    doc = result.comparison
    assert doc is not None
    by_loss = {a["loss"]: a for a in doc["attacks"]}
    assert by_loss["ce"]["delta"] > 0.3, by_loss["ce"]  # robust against cross-entropy PGD ...
    assert by_loss["margin"]["delta"] < 0.1, by_loss["margin"]  # ... but not against the margin
    assert result.robust_gain("linf", 0.2) < 0.1  # the worst case is not fooled
    new = set(doc["findings"]["new_in_hardened"])
    assert {"RA003", "RA010"} <= new, new  # vanishing CE gradients, saturated softmax
    assert any("gradient-masking" in n for n in doc["notes"])
    assert "gradient-masking findings" in (tmp_path / "distilled" / "compare.html").read_text()
