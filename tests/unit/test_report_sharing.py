"""Files a run writes are for sharing: created with the user's umask (not mkstemp's 0600).

And the HTML's black-box section lists query-based searches only, not the noise baseline.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

import robaudit
from robaudit.attacks.base import get_attack, registry
from robaudit.harden.export import atomic_torch_save
from robaudit.report.writers import atomic_write_bytes, atomic_write_text

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")

CONFIG: dict[str, Any] = {
    "version": 1,
    "seed": 0,
    "model": {
        "input_shape": [1, 8, 8], "num_classes": 10, "bounds": [0.0, 1.0],
        "arch": "robaudit.models.digits:DigitsCNN",
    },
    "data": {"source": "builtin:digits", "split": "test", "samples": 8},
    "attacks": [
        {"name": "noise", "norm": "linf", "eps": [0.2]},
        {"name": "square", "norm": "linf", "eps": [0.2], "queries": 20},
    ],
    "report": {"examples": 1, "formats": ["json", "html", "csv", "md", "junit"]},
    "engine": {"device": "cpu"},
}


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def umask() -> Iterator[Any]:
    """``umask(mask)`` sets the process umask for the test; the old one comes back after."""
    old = os.umask(0o022)
    os.umask(old)
    try:
        yield os.umask
    finally:
        os.umask(old)


@pytest.fixture(scope="module")
def report(repo_root: Path) -> robaudit.Report:
    """One tiny scan (noise + square) that kept its adversarial examples."""
    return robaudit.scan(
        repo_root / "sample_models" / "digits_cnn.pt", config=CONFIG, save_adversarial=True
    )


@pytest.mark.parametrize(("mask", "file_mode", "dir_mode"), [(0o022, 0o644, 0o755), (0o077, 0o600, 0o700)])
def test_every_saved_file_follows_the_umask(
    report: robaudit.Report, tmp_path: Path, umask: Any, mask: int, file_mode: int, dir_mode: int
) -> None:
    umask(mask)
    written = report.save(tmp_path / "out")
    assert {"json", "html", "csv", "md", "junit", "adversarial", "adversarial_images"} <= set(written)
    files = [p for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert any(p.suffix == ".png" for p in files) and len(files) >= 7
    assert {p.name: oct(_mode(p)) for p in files} == {p.name: oct(file_mode) for p in files}
    assert oct(_mode(written["adversarial_images"])) == oct(dir_mode)
    # nothing half-written or temporary left beside them
    assert not [p for p in (tmp_path / "out").rglob(".*")]


@pytest.mark.parametrize(("mask", "expected"), [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_helpers_follow_the_umask(tmp_path: Path, umask: Any, mask: int, expected: int) -> None:
    umask(mask)
    atomic_write_text(tmp_path / "a.txt", "é\n")
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    atomic_torch_save({"w": torch.zeros(2)}, tmp_path / "c.pt")  # harden's outputs
    for name in ("a.txt", "b.bin", "c.pt"):
        assert oct(_mode(tmp_path / name)) == oct(expected), name
    assert (tmp_path / "a.txt").read_bytes() == "é\n".encode()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt", "b.bin", "c.pt"]


def test_hardened_model_files_follow_the_umask(tmp_path: Path, umask: Any) -> None:
    from robaudit.harden.export import save_model
    from robaudit.models.digits import DigitsCNN

    umask(0o027)
    files, _ = save_model(DigitsCNN().eval(), tmp_path, (1, 8, 8))
    assert {"torchscript", "state_dict"} <= set(files)
    assert {k: oct(_mode(p)) for k, p in files.items()} == {k: oct(0o640) for k in files}


def test_replacing_a_file_takes_the_new_mode_and_content(tmp_path: Path, umask: Any) -> None:
    path = tmp_path / "report.html"
    umask(0o077)
    atomic_write_text(path, "old")
    umask(0o022)
    atomic_write_text(path, "new")
    assert path.read_text() == "new" and _mode(path) == 0o644


def test_a_failed_write_leaves_the_old_file_and_no_temp(tmp_path: Path) -> None:
    path = tmp_path / "report.json"
    atomic_write_text(path, "old")
    with pytest.raises(UnicodeEncodeError):
        atomic_write_text(path, "\udcff")  # a lone surrogate cannot be encoded
    assert path.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def _black_box_section(html: str) -> str:
    m = re.search(r'<section id="black-box">(.*?)</section>', html, re.S)
    assert m is not None, "no black-box section"
    return m.group(1)


def test_noise_is_no_query_search() -> None:
    assert get_attack("noise").search is False
    # every other black-box attack searches; white-box ones keep the default too
    assert all(cls.search for name, cls in registry().items() if name != "noise")


def test_black_box_section_lists_square_but_not_noise(report: robaudit.Report, tmp_path: Path) -> None:
    html = report.save(tmp_path, formats=["html"])["html"].read_text(encoding="utf-8")
    section = _black_box_section(html)
    assert "square" in section
    assert "noise" not in section.lower()
    # noise still has its per-attack row elsewhere in the report
    assert "noise" in html.replace(section, "")
    rows = {a["attack"]: a for a in report.to_dict()["attacks"]}
    assert rows["noise"]["query_curve"], "noise counts queries: only its search flag keeps it out"
