"""Progress for CI logs: a header at once, a line per cell, heartbeats, JSON events."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from robaudit.report.log import LogProgress


def test_heartbeat_at_most_every_interval() -> None:
    lines: list[str] = []
    now = [0.0]
    log = LogProgress(lines.append, clock=lambda: now[0], heartbeat=30.0)
    log.start("pgd linf eps=0.1", 100)
    for _ in range(10):  # 10 batches of 10 samples, 10 s apart: heartbeats at 30, 60, 90 s
        now[0] += 10.0
        log.advance(10)
    log.finish()
    beats = [ln for ln in lines if "..." in ln]
    assert len(beats) == 3 and "30/100 samples, 30 s" in beats[0]
    assert lines[0].endswith("start pgd linf eps=0.1: 100 samples")
    assert lines[-1].endswith("done  pgd linf eps=0.1: 100/100 samples in 100.0 s")


def test_json_events_are_one_object_per_line() -> None:
    lines: list[str] = []
    log = LogProgress(lines.append, fmt="json", clock=lambda: 5.0)
    log.start("fgsm linf eps=0.1", 7)
    log.advance(7)
    log.finish()
    events = [json.loads(ln) for ln in lines]
    assert [e["event"] for e in events] == ["cell_start", "cell_finish"]
    assert events[1]["done"] == 7 and events[1]["cell"] == "fgsm linf eps=0.1"


def test_scan_without_a_terminal_logs_the_header_first_and_every_cell(
    cli: Any, tiny_config: Any, plain_model_path: Path, tmp_path: Path
) -> None:
    r = cli("scan", plain_model_path, "--config", tiny_config(tmp_path), "--out", tmp_path / "o",
            "--exit-zero")
    assert r.exit_code == 0, r.output
    lines = r.stderr.splitlines()
    assert "robaudit" in lines[0] and "scan" in lines[0] and "threads" in lines[0]
    starts = [ln for ln in lines if "] start " in ln]
    dones = [ln for ln in lines if "] done  " in ln]
    assert len(starts) == len(dones) == 4  # fgsm and pgd at two budgets
    j = cli("scan", plain_model_path, "--config", tiny_config(tmp_path), "--out", tmp_path / "j",
            "--exit-zero", "--log-format", "json", "--quiet")
    assert j.exit_code == 0 and j.stderr == ""  # --quiet wins
    j = cli("scan", plain_model_path, "--config", tiny_config(tmp_path), "--out", tmp_path / "k",
            "--exit-zero", "--log-format", "json")
    events = [json.loads(ln) for ln in j.stderr.splitlines() if ln.startswith("{")]
    assert events[0]["event"] == "scan_start"
    finished = [e for e in events[1:] if e["event"] == "cell_finish"]
    assert len(finished) == 4
    # each finish line carries the running robust accuracy; after the last attack at a threat
    # it is the report's number for that threat
    doc = json.loads((tmp_path / "k" / "report.json").read_text(encoding="utf-8"))
    for row in doc["threats"]:
        last = [e for e in finished if e["cell"].endswith(f"eps={row['eps_label']}")][-1]
        assert last["robust"] / last["of"] == row["robust_accuracy"]


def test_a_long_cell_without_progress_still_gets_heartbeats() -> None:
    """One batch can run for minutes: the heartbeat must not wait for ``advance``."""
    lines: list[str] = []
    log = LogProgress(lines.append, heartbeat=0.2)  # the real clock: a background ticker
    log.start("apgd-t linf eps=8/255", 100)
    time.sleep(1.5)  # no advance at all, as in one long batch
    log.tally(37, 100)
    log.finish()
    beats = [ln for ln in lines if "... apgd-t" in ln]
    assert 2 <= len(beats) <= 8, lines
    assert "0/100 samples in" in lines[-1] and lines[-1].endswith("robust so far 37/100 (37.0%)")
    count = len(lines)
    time.sleep(0.6)
    assert len(lines) == count  # the ticker stopped with the cell


def test_a_universal_patch_in_training_gets_its_lines_after_the_header() -> None:
    """Training a universal patch happens before the cells: a CI log says so (start and time),
    after the scan's header, in text and in JSON."""
    import robaudit

    root = Path(__file__).resolve().parents[2]
    for fmt in ("text", "json"):
        lines: list[str] = []
        log = LogProgress(lines.append, fmt, heartbeat=3600.0)
        log.header("scan_start", "robaudit · scan", model="m")
        cfg = {"model": {"input_shape": [1, 8, 8], "num_classes": 10}, "data": {"samples": 20},
               "attacks": [{"name": "patch-pgd", "norm": "patch", "size": ["10%"],
                            "universal": True, "train_steps": 5, "train_restarts": 1,
                            "placements": 2}]}  # fmt: skip
        robaudit.scan(root / "sample_models" / "digits_cnn.pt", config=cfg, seed=0, progress=log)
        if fmt == "text":
            assert "robaudit · scan" in lines[0]
            assert "train universal patch 10%: 1 x 5 steps on 1297 images" in lines[1]
            assert "done  universal patch 10% in" in lines[2] and "start patch-pgd" in lines[3]
        else:
            kinds = [json.loads(line)["event"] for line in lines]
            assert kinds[:4] == ["scan_start", "universal_start", "universal_done", "cell_start"]
