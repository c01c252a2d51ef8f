"""--out folders: a failed run takes back exactly the folders it made, never one the user had."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from robaudit.errors import UserInputError
from robaudit.report.writers import make_out_dir, remove_if_empty


def test_only_the_folders_the_run_made_are_taken_back(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "existing").mkdir()
    made = make_out_dir(Path("new/../existing/sub"))
    assert made == [Path("new/../existing/sub"), Path("new")]  # deepest first, not "existing"
    remove_if_empty(made)
    assert sorted(os.listdir(tmp_path)) == ["existing"] and not os.listdir(tmp_path / "existing")
    made = make_out_dir(tmp_path / "a" / "b")
    (tmp_path / "a" / "b" / "report.json").write_text("{}")  # a partial report stays
    remove_if_empty(made)
    assert (tmp_path / "a" / "b" / "report.json").is_file()
    assert make_out_dir(tmp_path / "existing") == []  # nothing made, nothing to take back


def test_a_file_in_the_way_is_a_one_line_error(tmp_path: Path) -> None:
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserInputError, match=r"exists and is not a directory"):
        make_out_dir(tmp_path / "f")
    with pytest.raises(UserInputError, match=r"cannot create the output folder \(a part of the path is a file\)"):
        make_out_dir(tmp_path / "f" / "sub")
