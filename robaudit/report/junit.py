"""junit.xml: the gate as JUnit test cases, so CI systems list each criterion as a test.

One ``<testcase>`` per gate criterion (clean accuracy, each robust-accuracy threshold, the
score, each threat compared with a baseline); a missed one carries ``<failure message=...>``
with its value, its limit and by how much. With ``gate.fail_on_findings`` (strict audits)
every integrity finding is a test case too, failed when it is an unresolved warning or error.
Built with ElementTree, so every string is escaped; characters XML 1.0 cannot hold at all
are dropped.
"""

from __future__ import annotations

import math
import re
import xml.etree.ElementTree as ET
from typing import Any

from robaudit.report.notices import protocol_line, threat_text, unrun_text, untrusted_line

_INVALID_XML = re.compile("[^\u0009\u000a\u000d\u0020-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
STRICT = "fail_on_findings"


def xml_text(value: Any) -> str:
    """Any value as text XML 1.0 can hold (control characters and lone surrogates dropped)."""
    return _INVALID_XML.sub("", "" if value is None else str(value))


def _num(v: Any) -> float | None:
    """A finite number, or None (null, NaN, text: not measured)."""
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v):
        return float(v)
    return None


def _fmt(criterion: str, v: Any) -> str:
    """Scores are points out of 100; every other criterion is a proportion."""
    x = _num(v)
    if x is None:
        return "not measured"
    return f"{x:.2f}" if criterion == "min_score" else f"{100 * x:.1f}%"


def failure_message(f: dict[str, Any]) -> str:
    """``criterion: value V, limit L, short by D: detail`` (what a CI test view shows)."""
    crit = str(f.get("criterion", "gate"))
    value, limit = _num(f.get("value")), _num(f.get("limit"))
    parts = [f"{crit}: value {_fmt(crit, value)}, limit {_fmt(crit, limit)}"]
    if value is not None and limit is not None:
        gap = limit - value
        parts.append(f"short by {gap:.2f}" if crit == "min_score" else f"short by {100 * gap:.1f} points")
    detail = f.get("detail")
    return ", ".join(parts) + (f": {detail}" if detail else "")


def strict_mode(doc: dict[str, Any]) -> bool:
    gate, cfg = doc.get("gate") or {}, (doc.get("config") or {}).get("gate") or {}
    policy = cfg.get(STRICT)
    return STRICT in (gate.get("checked") or []) or policy not in (None, False, "none")


def _failing_severities(doc: dict[str, Any]) -> tuple[str, ...]:
    """Severities gate.fail_on_findings fails on (true in old reports meant any)."""
    policy = ((doc.get("config") or {}).get("gate") or {}).get(STRICT)
    return ("error",) if policy == "errors" else ("warning", "error")


def _case(suite: ET.Element, classname: str, name: str, seconds: float = 0.0) -> ET.Element:
    return ET.SubElement(
        suite, "testcase",
        {"classname": xml_text(classname), "name": xml_text(name), "time": f"{seconds:.3f}"},
    )


def _property(props: ET.Element, name: str, value: Any) -> None:
    text = ("true" if value else "false") if isinstance(value, bool) else value
    ET.SubElement(props, "property", {"name": name, "value": xml_text(text)})


def _threat_lines(doc: dict[str, Any]) -> list[str]:
    names = (doc.get("model") or {}).get("class_names")
    lines = []
    for t in doc.get("threats") or []:
        if not isinstance(t, dict):
            continue
        worst = None
        for row in doc.get("per_class") or []:
            v = _num((row.get("robust_accuracy") or {}).get(t.get("key")))
            if v is not None and (worst is None or v < worst[0]):
                worst = (v, row.get("class"))
        weakest = ""
        if worst is not None:
            k = worst[1]
            label = names[k] if isinstance(names, list) and isinstance(k, int) and 0 <= k < len(names) else k
            weakest = f"; weakest class {label} ({100 * worst[0]:.0f}%)"
        ra = t.get("robust_accuracy")
        lines.append(
            f"{t.get('variant')} {threat_text(t, 'eps=')}: robust "
            f"accuracy {_fmt('', ra)}{weakest}"
        )
    return lines


def render_junit(doc: dict[str, Any]) -> str:
    """The gate of one report as a JUnit XML document (one suite)."""
    gate = doc.get("gate") or {}
    meta = doc.get("meta") or {}
    suite = ET.Element("testsuite", {"name": "robaudit gate"})
    _properties(suite, doc)
    _gate_cases(suite, gate)
    if strict_mode(doc):
        for f in doc.get("findings") or []:
            if isinstance(f, dict):
                _finding_case(suite, f, _failing_severities(doc))
    if doc.get("incomplete"):
        _incomplete_case(suite, doc.get("partial") or {})
    cases = suite.findall("testcase")
    if not cases:
        case = _case(suite, "robaudit.gate", "gate")
        ET.SubElement(case, "system-out").text = "no gate criteria were configured"
        cases = [case]
    duration = _num(meta.get("duration_seconds"))
    suite.set("tests", str(len(cases)))
    suite.set("failures", str(sum(1 for c in cases if c.find("failure") is not None)))
    suite.set("errors", str(sum(1 for c in cases if c.find("error") is not None)))
    suite.set("skipped", "0")
    suite.set("time", f"{duration:.3f}" if duration is not None else "0")
    if meta.get("started_at"):
        suite.set("timestamp", xml_text(meta.get("started_at")))
    notes = [n for n in (untrusted_line(doc), protocol_line(doc)) if n]
    ET.SubElement(suite, "system-out").text = xml_text("\n".join(notes + _threat_lines(doc)))
    root = ET.Element(
        "testsuites",
        {k: suite.get(k, "0") for k in ("tests", "failures", "errors", "time")} | {"name": "robaudit"},
    )
    root.append(suite)
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _properties(suite: ET.Element, doc: dict[str, Any]) -> None:
    """What was audited and the verdict, as suite properties."""
    gate, model, data = doc.get("gate") or {}, doc.get("model") or {}, doc.get("data") or {}
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("model.path", model.get("path")), ("model.sha256", model.get("sha256")),
        ("data.source", data.get("source")), ("data.split", data.get("split")),
        ("data.samples", data.get("samples")), ("score", doc.get("score")),
        ("grade", doc.get("grade")), ("gate.passed", gate.get("passed")),
        ("robaudit_version", doc.get("robaudit_version")),
        ("schema_version", doc.get("schema_version")),
    ):
        _property(props, name, value)


def _gate_cases(suite: ET.Element, gate: dict[str, Any]) -> None:
    """One case per checked criterion, then one per failed criterion the gate did not list."""
    by_criterion: dict[str, list[dict[str, Any]]] = {}
    for f in gate.get("failures") or []:
        if isinstance(f, dict):
            by_criterion.setdefault(str(f.get("criterion")), []).append(f)
    done: set[str] = set()
    for crit in gate.get("checked") or []:
        crit = str(crit)
        if crit == STRICT or crit in done:
            continue
        done.add(crit)
        _gate_case(suite, crit, by_criterion.get(crit, []))
    for crit, fs in by_criterion.items():
        if crit in done or crit.startswith("finding "):
            continue
        _gate_case(suite, crit, fs)


def _gate_case(suite: ET.Element, crit: str, failures: list[dict[str, Any]]) -> None:
    case = _case(suite, "robaudit.gate", crit)
    for f in failures:
        ET.SubElement(case, "failure", {"message": xml_text(failure_message(f)), "type": "gate"}).text = (
            xml_text(f.get("detail"))
        )


def _finding_case(suite: ET.Element, f: dict[str, Any], failing_severities: tuple[str, ...]) -> None:
    """A finding as a case: failed when it is unresolved at a severity the gate fails on."""
    case = _case(suite, "robaudit.findings", f"{f.get('id')} {f.get('title')}")
    if not f.get("resolved") and f.get("severity") in failing_severities:
        msg = f"unresolved {f.get('severity')}: {f.get('title')} ({f.get('detail')})"
        ET.SubElement(case, "failure", {"message": xml_text(msg), "type": "finding"}).text = (
            xml_text(f.get("detail"))
        )
    else:
        state = f"resolved: {f.get('reaction')}" if f.get("resolved") else str(f.get("severity"))
        ET.SubElement(case, "system-out").text = xml_text(f"{state}; {f.get('detail')}")


def _incomplete_case(suite: ET.Element, partial: dict[str, Any]) -> None:
    """A run that stopped early is an error case: its numbers may overstate robustness."""
    case = _case(suite, "robaudit.run", "run completed")
    ET.SubElement(
        case, "error",
        {"message": "the run stopped before every planned attack finished; numbers may overstate robustness"},
    ).text = xml_text(
        "; ".join(
            [str(partial.get("reason", "stopped"))]
            + [unrun_text(partial)]
            + [f"not run: {u['attack']} at {u['threat']}" for u in partial.get("unrun", [])]
        )
    )
