"""Saved reports read back: ``report.json`` checked enough to re-render, diff or gate on.

Next to the results' schema version (robaudit.results), below the renderers: the baseline
comparison (engine layer) and the CLI's ``report``/``diff`` commands both read saved
documents, and neither should need the report writers for it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from robaudit.errors import UserInputError

REPORT_JSON = "report.json"
SUPPORTED_MAJOR = 1
_VERSION = re.compile(r"^(\d+)\.(\d+)$")


def _require(doc: dict[str, Any], path: Path, field: str, kind: type | tuple[type, ...]) -> Any:
    value = doc.get(field)
    if field not in doc:
        raise UserInputError(f"{path}: field '{field}' is missing; is this a complete robaudit report.json?")
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        names = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise UserInputError(f"{path}: field '{field}' is {type(value).__name__}; expected {names}")
    return value


def load_document(path: Path) -> dict[str, Any]:
    """A saved report.json (or a folder holding one), checked enough to re-render or compare.

    Bad input is a one-line :class:`UserInputError` naming the file and the field: a missing
    file, something that is not a robaudit report, or a schema major version this robaudit
    cannot read.
    """
    path = Path(path)
    if path.is_dir():
        if not (path / REPORT_JSON).is_file():
            raise UserInputError(f"{path}: folder has no {REPORT_JSON}; give a robaudit report.json")
        path = path / REPORT_JSON
    if not path.exists():
        raise UserInputError(
            f"{path}: report file not found; give the report.json a `robaudit scan` wrote, or its folder"
        )
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserInputError(f"{path}: not a robaudit report (not UTF-8 text)") from None
    except OSError as exc:
        raise UserInputError(f"{path}: cannot read the report ({exc.strerror})") from None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UserInputError(
            f"{path}: not a robaudit report (invalid JSON at line {exc.lineno}, column {exc.colno}: "
            f"{exc.msg})"
        ) from None
    if not isinstance(doc, dict) or "schema_version" not in doc or "robaudit_version" not in doc:
        raise UserInputError(
            f"{path}: not a robaudit report (no schema_version/robaudit_version); expected the "
            "report.json that `robaudit scan` writes"
        )
    version = doc["schema_version"]
    m = _VERSION.match(version) if isinstance(version, str) else None
    if m is None:
        raise UserInputError(f"{path}: schema_version {version!r} is not MAJOR.MINOR (such as '1.0')")
    if int(m.group(1)) != SUPPORTED_MAJOR:
        raise UserInputError(
            f"{path}: schema_version {version!r} is not supported; this robaudit reads "
            f"{SUPPORTED_MAJOR}.x reports"
        )
    fields: tuple[tuple[str, type | tuple[type, ...]], ...] = (
        ("model", dict), ("data", dict), ("threats", list), ("attacks", list), ("samples", list),
        ("gate", dict), ("findings", list), ("meta", dict),
        ("clean_accuracy", (int, float)), ("score", (int, float)), ("grade", (str, type(None))),
    )
    for field, kind in fields:
        _require(doc, path, field, kind)
    for i, t in enumerate(doc["threats"]):
        if not isinstance(t, dict):
            raise UserInputError(f"{path}: field 'threats[{i}]' is {type(t).__name__}; expected object")
        for key in ("access", "norm", "eps", "eps_label", "key", "robust_accuracy"):
            if key not in t:
                raise UserInputError(f"{path}: field 'threats[{i}].{key}' is missing")
    gate = doc["gate"]
    for key, gkind in (("passed", bool), ("failures", list), ("checked", list)):
        if not isinstance(gate.get(key), gkind):
            raise UserInputError(f"{path}: field 'gate.{key}' is missing or not a {gkind.__name__}")
    return doc
