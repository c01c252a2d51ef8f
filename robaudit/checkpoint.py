"""Finished cells saved in the output folder, so an interrupted run can resume.

A cell (variant × attack × threat; a minimal-norm attack's one run per norm) is saved as
soon as it is finished and verified, atomically, under ``OUT/.robaudit/cells/``. The folder
is stamped with a fingerprint of everything that decides the numbers (config, model, data
samples, seed, batch size, robaudit version); ``--resume`` refuses a folder written by a
different run, so a resumed report is the report an uninterrupted run would have written.
Cells are saved merged over all ranks, so a run may resume with a different process count.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from robaudit.errors import UserInputError

STATE_DIR = ".robaudit"
CELLS = "cells"
STAMP = "run.json"


def fingerprint(**parts: Any) -> str:
    """A stable hash of the run's identity (JSON-able parts)."""
    blob = json.dumps(parts, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def cell_file(key: tuple[Any, ...]) -> str:
    """File name of a cell: a hash of its identity (variant, attack index, name, threat)."""
    return hashlib.sha256(repr(key).encode()).hexdigest()[:24] + ".pt"


class CellStore:
    """Reads and writes finished cells of one run in ``folder`` (``OUT/.robaudit``)."""

    def __init__(self, folder: Path, stamp: str, *, resume: bool) -> None:
        self.folder = folder
        self.stamp = stamp
        self.resumed = 0  # cells taken from the folder instead of being run
        stamp_file = folder / STAMP
        if resume and stamp_file.exists():
            try:
                found = json.loads(stamp_file.read_text(encoding="utf-8")).get("fingerprint")
            except (OSError, ValueError):
                found = None
            if found != stamp:
                raise UserInputError(
                    f"--resume: {folder} holds cells of a different run (config, model, data, "
                    "seed, batch size or robaudit version differ); use a new --out or run "
                    "without --resume to start over"
                )
        elif folder.exists():
            shutil.rmtree(folder)  # a fresh run never mixes with an old one's cells
        (folder / CELLS).mkdir(parents=True, exist_ok=True)
        _atomic_bytes(stamp_file, json.dumps({"fingerprint": stamp}).encode())

    def load(self, key: tuple[Any, ...]) -> Any | None:
        """The saved cell with this identity, or None (not saved, or unreadable)."""
        path = self.folder / CELLS / cell_file(key)
        if not path.exists():
            return None
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a torn file cannot happen (atomic writes), but never trust it
            return None
        if not isinstance(saved, dict) or saved.get("key") != repr(key):
            return None
        self.resumed += 1
        return saved["cell"]

    def save(self, key: tuple[Any, ...], cell: Any) -> None:
        """Save a finished cell atomically (temp file, then rename).

        ``cell`` holds only tensors, numbers, strings, lists and dicts, so loading it back
        needs no unpickling of arbitrary objects (``weights_only=True``).
        """
        buf = io.BytesIO()
        torch.save({"key": repr(key), "cell": cell}, buf)
        _atomic_bytes(self.folder / CELLS / cell_file(key), buf.getvalue())

    def discard(self) -> None:
        """Remove the folder once the run finished: a complete report needs no cells."""
        shutil.rmtree(self.folder, ignore_errors=True)


def _atomic_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
