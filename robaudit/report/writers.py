"""Write the report files atomically (temp file, then rename): never a truncated report.

Also reads a saved report.json back (:func:`load_document`), so every other format can be
re-rendered from it (``robaudit report``) and two runs can be compared (``robaudit diff``).
"""

from __future__ import annotations

import csv
import io
import json
import os
import secrets
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from robaudit.documents import REPORT_JSON
from robaudit.errors import UserInputError

# format -> file name in the output folder, in the order they are written
FILE_NAMES: dict[str, str] = {
    "json": REPORT_JSON,
    "html": "report.html",
    "csv": "results.csv",
    "md": "summary.md",
    "junit": "junit.xml",
}

CSV_COLUMNS = (
    "variant", "attack", "attack_index", "access", "norm", "eps", "eps_label", "threat_key",
    "attacked", "broken", "robust_accuracy", "cumulative_robust_accuracy", "success_rate",
    "median_norm", "mean_norm", "queries", "grad_evals", "seconds", "budget_violations",
    "bounds_violations", "nonfinite", "silent_failures", "robust_ci_low", "robust_ci_high",
    "cumulative_ci_low", "cumulative_ci_high", "adaptive", "access_used", "query_budget",
    "queries_per_success_mean", "queries_per_success_median",
)


def create_temp_file(path: Path, suffix: str = ".tmp") -> tuple[int, Path]:
    """A new, empty temp file beside ``path`` (same folder, so a rename is atomic): (fd, path).

    Unlike :func:`tempfile.mkstemp` (always 0600) the file is created with mode 0o666, which
    the OS narrows by the user's umask (or the folder's default ACL), as any other tool's
    output: a report is for sharing. Nothing reads or changes the process umask.
    """
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            return os.open(tmp, flags, 0o666), tmp
        except FileExistsError:
            continue
    raise FileExistsError(f"no free temporary name beside {path}")


def create_temp_dir(path: Path, suffix: str = ".tmp") -> Path:
    """A new, empty temp folder beside ``path``, mode 0o777 narrowed by the umask (not 0700)."""
    for _ in range(100):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{suffix}")
        try:
            tmp.mkdir(mode=0o777)
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"no free temporary name beside {path}")


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so readers see the old file or the whole new one."""
    fd, tmp = create_temp_file(path)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8, newlines as given) to ``path`` atomically; see :func:`atomic_write_bytes`."""
    atomic_write_bytes(path, text.encode("utf-8"))


def prepare_out_dir(out: Path) -> Path:
    """Create the output folder, or say clearly why it cannot be used."""
    make_out_dir(out)
    return out


def make_out_dir(out: Path) -> list[Path]:
    """:func:`prepare_out_dir`, returning the folders this call created, deepest first (what
    :func:`remove_if_empty` may take back). They are made one level at a time along the path as
    written, so with ``new/../old/sub`` the list holds ``new`` and ``sub``, never ``old``."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: exists and is not a directory")
    created: list[Path] = []
    try:
        prefix = Path(out.parts[0])
        for part in (None, *out.parts[1:]):
            prefix = prefix if part is None else prefix / part
            if not os.path.lexists(prefix):
                prefix.mkdir()
                created.append(prefix)
            elif not prefix.is_dir():
                raise NotADirectoryError(20, "a part of the path is a file", str(prefix))
    except OSError as exc:
        remove_if_empty(created[::-1])
        why = exc.strerror or str(exc)
        raise UserInputError(f"--out {out}: cannot create the output folder ({why})") from None
    if not os.access(out, os.W_OK):
        remove_if_empty(created[::-1])
        raise UserInputError(f"--out {out}: the output folder is not writable")
    return created[::-1]


def remove_if_empty(folders: list[Path]) -> None:
    """Remove the folders a failed run created, deepest first, as long as each is empty (a
    partial report or saved cells keep theirs)."""
    for p in folders:
        try:
            p.rmdir()
        except OSError:
            return


def render_json(doc: dict[str, Any]) -> str:
    return json.dumps(doc, indent=2, allow_nan=False) + "\n"


def render_csv(doc: dict[str, Any]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(CSV_COLUMNS), extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for row in doc["attacks"]:
        flat = dict(row)
        for name in ("robust_ci", "cumulative_ci"):  # intervals as two columns each
            lo, hi = row.get(name) or (None, None)
            flat[f"{name}_low"], flat[f"{name}_high"] = lo, hi
        w.writerow({k: ("" if flat.get(k) is None else flat.get(k)) for k in CSV_COLUMNS})
    for row in natural_rows(doc):
        w.writerow({k: ("" if row.get(k) is None else row.get(k)) for k in CSV_COLUMNS})
    return buf.getvalue()


def natural_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Natural robustness as rows of the same table, ``access`` ``natural``: one per
    corruption and severity (``eps`` is the severity), one for geometric, one for occlusion
    (``eps`` is the box's share of the image); ``broken`` counts the samples it got wrong."""
    nat = doc.get("natural")
    if not isinstance(nat, dict):
        return []
    n = nat["n"]
    rows = [
        {"variant": "model", "attack": c["corruption"], "access": "natural", "norm": "corruption",
         "eps": c["severity"], "eps_label": str(c["severity"]),
         "threat_key": f"natural/{c['corruption']}/{c['severity']}", "attacked": n,
         "broken": n - c["correct"], "robust_accuracy": c["accuracy"]}
        for c in nat.get("corruptions") or []
    ]
    for part, eps in (("geometric", None), ("occlusion", "size")):
        r = nat.get(part)
        if r:
            rows.append({
                "variant": "model", "attack": r.get("search", part), "access": "natural",
                "norm": part, "eps": r[eps] if eps else None, "threat_key": f"natural/{part}",
                "attacked": nat["clean_correct"], "broken": nat["clean_correct"] - r["robust"],
                "robust_accuracy": r["robust_accuracy"],
            })
    return rows


def renderers() -> dict[str, Callable[[dict[str, Any]], str]]:
    """format -> function from the report document to the file's text."""
    from robaudit.report.html import render_html
    from robaudit.report.junit import render_junit
    from robaudit.report.markdown import render_markdown

    return {
        "json": render_json,
        "html": render_html,
        "csv": render_csv,
        "md": render_markdown,
        "junit": render_junit,
    }


def check_formats(formats: Sequence[str], what: str = "report format") -> list[str]:
    """The formats, deduplicated in order; an unknown one is a one-line error listing the valid."""
    bad = [f for f in formats if f not in FILE_NAMES]
    if bad:
        raise UserInputError(
            f"unknown {what}(s) {', '.join(repr(b) for b in bad)}; valid: {', '.join(FILE_NAMES)}"
        )
    return list(dict.fromkeys(formats))


def write_reports(doc: dict[str, Any], out: Path, formats: Sequence[str]) -> dict[str, Path]:
    """Render every requested format into ``out``; returns the paths written.

    Everything is rendered before the first file is written, and each file is replaced
    atomically, so a renderer that fails leaves the folder as it was.
    """
    chosen = check_formats(formats)
    render = renderers()
    prepare_out_dir(out)
    texts = {fmt: (out / FILE_NAMES[fmt], render[fmt](doc)) for fmt in chosen}
    written = {}
    for fmt, (path, text) in texts.items():
        atomic_write_text(path, text)
        written[fmt] = path
    return written


