"""Write the report files atomically (temp file, then rename): never a truncated report."""

from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from robaudit.errors import UserInputError

CSV_COLUMNS = (
    "variant", "attack", "attack_index", "access", "norm", "eps", "eps_label", "threat_key",
    "attacked", "broken", "robust_accuracy", "cumulative_robust_accuracy", "success_rate",
    "median_norm", "mean_norm", "queries", "grad_evals", "seconds", "budget_violations",
    "bounds_violations", "nonfinite", "silent_failures",
)


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so readers see the old file or the whole new one."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def prepare_out_dir(out: Path) -> Path:
    """Create the output folder, or say clearly why it cannot be used."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: exists and is not a directory")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"--out {out}: cannot create the output folder ({exc.strerror})") from None
    if not os.access(out, os.W_OK):
        raise UserInputError(f"--out {out}: the output folder is not writable")
    return out


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def render_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in doc["attacks"]:
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def write_reports(doc: dict[str, Any], out: Path, formats: list[str]) -> dict[str, Path]:
    """Render every requested format into ``out``; returns the paths written."""
    from robaudit.report.html import render_html

    renderers = {
        "json": ("report.json", render_json),
        "html": ("report.html", render_html),
        "csv": ("results.csv", render_csv),
    }
    prepare_out_dir(out)
    texts = {fmt: (out / renderers[fmt][0], renderers[fmt][1](doc)) for fmt in formats}
    written = {}
    for fmt, (path, text) in texts.items():
        atomic_write_text(path, text)
        written[fmt] = path
    return written
