"""The CLI under interruption, failure and sharding, in real processes:

* SIGINT mid-run writes a partial report marked incomplete and exits 130; ``--resume``
  finishes it and gives the report an uninterrupted run gives (timings aside);
* ``torchrun --nproc-per-node 2`` (Gloo on CPU) writes the same report as one process;
* a model that fails mid-run exits 3 with one line and leaves a partial report.

Every process runs on one thread (torchrun's default) so float reductions agree.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from tests.helpers import without_timing
from tests.unit.test_resilience import NaNAfterPerturbation

pytestmark = pytest.mark.slow

# Enough cells (and work per cell) that a signal lands mid-run; every merge path is used:
# white-box cells, a black-box cell with per-sample queries, a minimal-norm attack, examples.
CONFIG: dict[str, Any] = {
    "version": 1,
    "seed": 0,
    "model": {"input_shape": [1, 8, 8], "num_classes": 10, "bounds": [0.0, 1.0]},
    "data": {"source": "builtin:digits", "split": "test", "samples": 60, "batch_size": 16},
    "attacks": [
        {"name": "fgsm", "norm": "linf", "eps": [0.05, 0.1, 0.2]},
        {"name": "pgd", "norm": "linf", "eps": [0.05, 0.1, 0.15, 0.2], "steps": 40},
        {"name": "square", "norm": "linf", "eps": [0.2], "queries": 100},
        {"name": "deepfool", "norm": "l2", "eps": [0.5, 1.0]},
    ],
    "report": {"examples": 3},
    "engine": {"device": "cpu"},
}
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "NO_COLOR": "1", "COLUMNS": "200"}


def _robaudit(*args: str | Path) -> list[str]:
    return [sys.executable, "-m", "robaudit", *map(str, args)]


def _doc(out: Path) -> dict[str, Any]:
    doc: dict[str, Any] = json.loads((out / "report.json").read_text(encoding="utf-8"))
    return doc


@pytest.fixture(scope="module")
def config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "scale.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def reference(
    config: Path, plain_model_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """One uninterrupted single-process run."""
    out = tmp_path_factory.mktemp("reference")
    proc = subprocess.run(
        _robaudit("scan", plain_model_path, "-c", config, "--out", out, "--quiet"),
        env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stderr
    assert not (out / ".robaudit").exists()  # a complete run leaves no saved cells
    return _doc(out)


def test_sigint_writes_a_partial_report_and_resume_finishes_it(
    config: Path, plain_model_path: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "out"
    cells = out / ".robaudit" / "cells"
    proc = subprocess.Popen(
        _robaudit("scan", plain_model_path, "-c", config, "--out", out, "--quiet"),
        env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 300
    while not list(cells.glob("*.pt")):  # wait until at least one cell is finished
        assert proc.poll() is None, proc.communicate()[1]
        assert time.monotonic() < deadline, "no cell finished in 300 s"
        time.sleep(0.05)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "robaudit: incomplete: interrupted by SIGINT" in err
    doc = _doc(out)
    assert doc["incomplete"] is True
    assert doc["partial"]["kind"] == "interrupted" and doc["partial"]["unrun"]
    assert not doc["gate"]["passed"]
    assert "INCOMPLETE RUN" in (out / "report.html").read_text(encoding="utf-8")
    saved = len(list(cells.glob("*.pt")))

    done = subprocess.run(
        _robaudit("scan", plain_model_path, "-c", config, "--out", out, "--quiet", "--resume"),
        env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode in (0, 1), done.stderr
    resumed = _doc(out)
    assert resumed["incomplete"] is False and resumed["partial"] is None
    assert resumed["meta"]["execution"]["resumed_cells"] == saved
    assert without_timing(resumed) == without_timing(reference)


def test_two_process_gloo_scan_equals_the_single_process_report(
    config: Path, plain_model_path: Path, reference: dict[str, Any], tmp_path: Path
) -> None:
    out = tmp_path / "two"
    proc = subprocess.run(
        [
            sys.executable, "-m", "torch.distributed.run", "--standalone",
            "--nproc-per-node", "2", "-m", "robaudit",
            "scan", str(plain_model_path), "-c", str(config), "--out", str(out), "--quiet",
        ],
        env=ENV, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode in (0, 1), proc.stderr[-3000:]
    doc = _doc(out)
    assert doc["meta"]["execution"]["processes"] == 2
    assert without_timing(doc) == without_timing(reference)


def test_model_failing_mid_run_exits_3_with_a_partial_report(
    cli: Any, tiny_config: Any, tmp_path: Path
) -> None:
    model = tmp_path / "nan.pt"
    torch.jit.trace(NaNAfterPerturbation(), torch.rand(2, 1, 8, 8)).save(str(model))
    out = tmp_path / "out"
    res = cli("scan", model, "-c", tiny_config(tmp_path), "--out", out, "--quiet")
    assert res.exit_code == 3, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in res.stderr
    assert "fgsm linf eps=0.1: the model returned NaN or inf logits" in lines[0]
    assert "partial report (incomplete) written" in lines[0]
    doc = _doc(out)
    assert doc["incomplete"] is True and doc["partial"]["kind"] == "failure"


# One cell that needs minutes: PGD with 100,000 steps on 500 digits in one batch (about 3 ms a
# step here, ~5 minutes); stops have to land inside it.
LONG_CELL: dict[str, Any] = {
    "version": 1,
    "seed": 0,
    "model": {"input_shape": [1, 8, 8], "num_classes": 10, "bounds": [0.0, 1.0]},
    "data": {"source": "builtin:digits", "split": "test", "samples": 500, "batch_size": 500},
    "attacks": [{"name": "pgd", "norm": "linf", "eps": [0.1], "steps": 100000}],
    "integrity": {"enabled": False},
    "engine": {"device": "cpu"},
}


@pytest.fixture(scope="module")
def long_cell(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cfg") / "long.yaml"
    path.write_text(yaml.safe_dump(LONG_CELL), encoding="utf-8")
    return path


def test_time_budget_inside_one_long_cell_ends_within_the_budget(
    long_cell: Path, plain_model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    t0 = time.monotonic()
    proc = subprocess.run(
        _robaudit("scan", plain_model_path, "-c", long_cell, "--out", out, "--quiet",
                  "--time-budget", "20s"),
        env=ENV, capture_output=True, text=True, timeout=300,
    )
    wall = time.monotonic() - t0
    assert proc.returncode == 1, proc.stderr  # a time-budget stop fails the gate
    assert wall <= 22.0, f"--time-budget 20s took {wall:.1f} s"
    assert "Traceback" not in proc.stderr
    doc = _doc(out)
    assert doc["incomplete"] is True and doc["partial"]["kind"] == "time-budget"
    (unrun,) = doc["partial"]["unrun"]
    assert (unrun["attack"], unrun["threat"]) == ("pgd", "white-box/linf/0.1")
    assert doc["grade"] is None and not doc["gate"]["passed"]


def test_sigterm_during_a_long_cell_gives_a_report_within_5_s(
    long_cell: Path, plain_model_path: Path, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    proc = subprocess.Popen(
        _robaudit("scan", plain_model_path, "-c", long_cell, "--out", out),
        env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    assert proc.stderr is not None
    deadline = time.monotonic() + 120
    for line in proc.stderr:  # the CI log: wait for the cell to start
        if "] start pgd" in line:
            break
        assert time.monotonic() < deadline, "the cell did not start in 120 s"
    time.sleep(3.0)  # well inside the cell's single batch
    t0 = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    err = proc.stderr.read()
    proc.wait(timeout=60)
    waited = time.monotonic() - t0
    assert proc.returncode == 130, err
    assert waited <= 5.0, f"SIGTERM took {waited:.1f} s to give a report"
    assert "interrupted by SIGTERM" in err and "Traceback" not in err
    doc = _doc(out)
    assert doc["incomplete"] is True and doc["partial"]["kind"] == "interrupted"
