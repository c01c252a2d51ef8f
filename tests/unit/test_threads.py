"""Intra-op threads fit the runner: affinity mask and cgroup quota, OMP_NUM_THREADS, flags."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch

from robaudit.threads import available_cpus, cgroup_quota, choose, using


def test_cgroup_v2_quota(tmp_path: Path) -> None:
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_quota(tmp_path) == 1.5
    assert available_cpus(tmp_path).count == min(1, len(os.sched_getaffinity(0)))
    assert "cgroup quota 1.5" in available_cpus(tmp_path).source
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path) is None


def test_cgroup_v1_quota_and_a_quota_below_one_cpu(tmp_path: Path) -> None:
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("50000\n")
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(tmp_path) == 0.5
    assert available_cpus(tmp_path).count == 1  # at least one thread
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert cgroup_quota(tmp_path) is None


def test_the_quota_is_read_at_the_processs_own_cgroup_and_above(tmp_path: Path) -> None:
    """A CI job in ``/ci/job7`` limited to 1 CPU under a parent allowing 3: 1 wins (v2)."""
    me = tmp_path / "self_cgroup"
    me.write_text("0::/ci/job7\n")
    (tmp_path / "ci" / "job7").mkdir(parents=True)
    (tmp_path / "cpu.max").write_text("max 100000\n")
    (tmp_path / "ci" / "cpu.max").write_text("300000 100000\n")
    (tmp_path / "ci" / "job7" / "cpu.max").write_text("100000 100000\n")
    assert cgroup_quota(tmp_path, me) == 1.0
    (tmp_path / "ci" / "job7" / "cpu.max").write_text("max 100000\n")
    assert cgroup_quota(tmp_path, me) == 3.0  # the parent's limit still applies
    # v1, with the cpu and cpuacct controllers mounted together
    v1 = tmp_path / "v1"
    me.write_text("4:memory:/x\n3:cpu,cpuacct:/docker/abc\n")
    (v1 / "cpu,cpuacct" / "docker" / "abc").mkdir(parents=True)
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu,cpuacct" / "docker" / "abc" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_quota(v1, me) == 1.5
    assert available_cpus(v1, me).count == 1


def test_no_cgroup_means_the_affinity_mask(tmp_path: Path) -> None:
    choice = available_cpus(tmp_path)
    assert choice.count == len(os.sched_getaffinity(0)) and choice.source.startswith("affinity")


def test_flags_then_omp_num_threads_then_the_machine(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert choose(5, "--threads").count == 5 and "--threads" in choose(5, "--threads").source
    assert choose(None).count == 3 and choose(None).source == "OMP_NUM_THREADS"
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert choose(None).count == available_cpus().count


def test_using_restores_the_callers_count() -> None:
    before = torch.get_num_threads()
    with using(choose(1, "--threads")):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_scan_records_the_choice(cli: Any, tiny_config: Any, plain_model_path: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    r = cli("scan", plain_model_path, "--config", tiny_config(tmp_path), "--out", out, "--threads", "1",
            "--quiet", "--exit-zero")
    assert r.exit_code == 0, r.output
    doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert doc["meta"]["execution"]["threads"] == {"count": 1, "from": "set by --threads"}
    bad = cli("scan", plain_model_path, "--config", tiny_config(tmp_path), "--out", tmp_path / "o2",
              "--threads", "0")
    assert bad.exit_code == 2 and "--threads 0" in bad.stderr


def test_the_command_asks_openmp_for_passive_waits_unless_told_otherwise() -> None:
    """Spinning OpenMP threads beside a busy neighbour made the selftest 30x slower; the
    command sets OMP_WAIT_POLICY=PASSIVE before torch loads, never over the user's choice."""
    import subprocess
    import sys

    probe = (
        "import os, robaudit.entry as e; set_now = e.passive_waits(); import torch; "
        "print(set_now, os.environ.get('OMP_WAIT_POLICY'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    out = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["True", "PASSIVE"], out.stderr
    out = subprocess.run([sys.executable, "-c", probe], env={**env, "OMP_WAIT_POLICY": "ACTIVE"},
                         capture_output=True, text=True)
    assert out.stdout.split() == ["False", "ACTIVE"], out.stderr
    late = "import torch, robaudit.entry as e; print(e.passive_waits())"  # too late: no effect
    out = subprocess.run([sys.executable, "-c", late], env=env, capture_output=True, text=True)
    assert out.stdout.strip() == "False", out.stderr
