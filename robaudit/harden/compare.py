"""The before/after comparison: robaudit's normal audit of the original and of the hardened
model (same config, same seed, the test split), side by side, as ``compare.json`` and a
self-contained ``compare.html`` (inline SVG charts drawn by :mod:`robaudit.report.svg`).

Nothing here measures anything new: the numbers are the two reports' own, the deltas are
their differences, and the training curves are the training log.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from jinja2 import Environment
from markupsafe import Markup

import robaudit
from robaudit.harden.options import ADVERSARIAL
from robaudit.report.html import ci, environment, num, pct
from robaudit.report.svg import Point, Series, line_chart
from robaudit.report.writers import atomic_write_text

if TYPE_CHECKING:
    from robaudit.api import Report
    from robaudit.harden.trainer import TrainOutcome

COMPARE_FORMAT = "robaudit-compare/1"
MASKING_FINDINGS = ("RA003", "RA007", "RA009", "RA010")  # gradient masking indicators


def _side(report: Report, folder: str) -> dict[str, Any]:
    doc = report.to_dict()
    return {
        "model": {k: doc["model"].get(k) for k in ("path", "sha256", "format")},
        "clean_accuracy": doc["clean_accuracy"],
        "clean_ci": doc["clean_ci"],
        "score": doc["score"],
        "grade": doc["grade"],
        "gate_passed": doc["gate"]["passed"],
        "findings": doc["findings"],
        "report": f"{folder}/report.json",
    }


def _threat_key(t: dict[str, Any]) -> tuple[str, str]:
    return (str(t.get("variant", "model")), str(t["key"]))


def _delta(a: Any, b: Any) -> float | None:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return float(b) - float(a)
    return None


def compare_document(
    original: Report,
    hardened: Report,
    *,
    method: str,
    options: dict[str, Any],
    threat: dict[str, Any],
    training: TrainOutcome,
    training_data: dict[str, Any],
    files: dict[str, str],
    notes: list[str],
    config_path: str | None,
) -> dict[str, Any]:
    """Both audits side by side: clean and robust accuracy per threat, deltas, per-attack
    diagnostics, findings, and the training log."""
    a, b = original.to_dict(), hardened.to_dict()
    findings, notes = _findings(a, b, notes)
    return {
        "format": COMPARE_FORMAT,
        "robaudit_version": robaudit.__version__,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "method": method,
        "options": options,
        "threat": threat,
        "config_path": config_path,
        "config_sha256": b["meta"].get("config_sha256"),
        "seed": b["meta"].get("seed"),
        "data": b["data"],
        "original": _side(original, "audit-original"),
        "hardened": _side(hardened, "audit-hardened"),
        "clean": {
            "original": a["clean_accuracy"], "hardened": b["clean_accuracy"],
            "delta": _delta(a["clean_accuracy"], b["clean_accuracy"]),
        },
        "score": {"original": a["score"], "hardened": b["score"],
                  "delta": _delta(a["score"], b["score"])},
        "threats": _threat_rows(a, b),
        "attacks": _attack_rows(a, b),
        "findings": findings,
        "training": _training(method, training, training_data),
        "files": files,
        "notes": notes,
    }


def _threat_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Robust accuracy of each threat both audits ran, and its change."""
    threats = []
    b_threats = {_threat_key(t): t for t in b["threats"]}
    for t in a["threats"]:
        u = b_threats.get(_threat_key(t))
        if u is None:
            continue
        threats.append(
            {
                "variant": t.get("variant", "model"), "key": t["key"], "access": t["access"],
                "norm": t["norm"], "eps": t["eps"], "eps_label": t["eps_label"], "n": t.get("n"),
                "original": {"robust_accuracy": t["robust_accuracy"], "ci": t.get("ci")},
                "hardened": {"robust_accuracy": u["robust_accuracy"], "ci": u.get("ci")},
                "delta": _delta(t["robust_accuracy"], u["robust_accuracy"]),
            }
        )
    return threats


def _attack_rows(a: dict[str, Any], b: dict[str, Any]) -> list[dict[str, Any]]:
    """Each attack row both audits have, side by side, sorted by variant, norm, eps, entry."""
    attacks = []
    b_attacks = {(r["variant"], r["attack_index"], r["threat_key"]): r for r in b["attacks"]}
    for r in a["attacks"]:
        s = b_attacks.get((r["variant"], r["attack_index"], r["threat_key"]))
        if s is None:
            continue
        loss = (r.get("params") or {}).get("loss")
        attacks.append(
            {
                "variant": r["variant"], "attack": r["attack"], "attack_index": r["attack_index"],
                "loss": loss, "threat_key": r["threat_key"], "norm": r["norm"], "eps": r["eps"],
                "eps_label": r["eps_label"],
                "original": _attack_side(r), "hardened": _attack_side(s),
                "delta": _delta(_attack_acc(r), _attack_acc(s)),
            }
        )
    attacks.sort(key=lambda r: (r["variant"], r["norm"], r["eps"], r["attack_index"]))
    return attacks


def _findings(
    a: dict[str, Any], b: dict[str, Any], notes: list[str]
) -> tuple[dict[str, Any], list[str]]:
    """Both audits' findings, which are new and which are gone; the notes, plus a warning
    when hardening brought gradient-masking findings (robustness that is not real)."""
    ids_a = {f["id"] for f in a["findings"] if not f.get("resolved")}
    ids_b = {f["id"] for f in b["findings"]}
    new = sorted(ids_b - {f["id"] for f in a["findings"]})
    masking = [i for i in new if i in MASKING_FINDINGS]
    if masking:
        notes = [
            *notes,
            f"the hardened model raises gradient-masking findings the original did not "
            f"({', '.join(masking)}): part of its robustness against cross-entropy attacks is "
            "not real; trust the worst case over all attacks (margin loss included), not "
            "the cross-entropy rows",
        ]
    findings = {
        "original": a["findings"],
        "hardened": b["findings"],
        "new_in_hardened": new,
        "gone_in_hardened": sorted(ids_a - ids_b),
    }
    return findings, notes


def _training(method: str, training: TrainOutcome, training_data: dict[str, Any]) -> dict[str, Any]:
    records = [asdict(r) for r in training.records]
    return {
        "data": training_data,
        "epochs_run": len(records),
        "best_epoch": training.best_epoch,
        "selected_by": selection_rule(method),
        "stopped": training.stopped,
        "catastrophic_overfitting": {
            "checked": method == "fast-at",
            "detected": training.catastrophic_epoch is not None,
            "epoch": training.catastrophic_epoch,
        },
        "resumed_from": training.resumed_from,
        "seconds": training.seconds,
        "log": records,
    }


def selection_rule(method: str) -> str:
    """How the kept epoch was chosen, in words (see trainer.selection_key)."""
    if method in ADVERSARIAL:
        return "best held-out robust accuracy (worst case of PGD-CE and PGD-margin; Rice et al. 2020)"
    return "best held-out clean accuracy (distillation trains against no attacker)"


def _attack_acc(r: dict[str, Any]) -> Any:
    return r["robust_accuracy"] if r.get("robust_accuracy") is not None else r.get(
        "cumulative_robust_accuracy"
    )


def _attack_side(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "robust_accuracy": r.get("robust_accuracy"),
        "cumulative_robust_accuracy": r.get("cumulative_robust_accuracy"),
        "success_rate": r.get("success_rate"),
    }


# ----------------------------------------------------------------------------- charts


def tradeoff_charts(doc: dict[str, Any]) -> list[tuple[str, Markup]]:
    """Per norm: robust accuracy vs eps of both models, each starting at its clean accuracy."""
    out = []
    threats = [t for t in doc.get("threats") or [] if t.get("variant", "model") == "model"]
    for norm in dict.fromkeys(t["norm"] for t in threats):
        series = []
        for side in ("original", "hardened"):
            clean = doc["clean"][side]
            pts = [Point(0.0, clean, f"{side} clean: {pct(clean)}")]
            for t in threats:
                if t["norm"] != norm or t["access"] != "white-box":
                    continue
                ra = t[side]["robust_accuracy"]
                c = t[side].get("ci")
                pts.append(
                    Point(float(t["eps"]), float(ra), f"{side} {norm} eps={t['eps_label']}: "
                          f"{pct(ra)} {ci(c)}", (float(c[0]), float(c[1])) if c else None)
                )
            series.append(Series(side, tuple(pts)))
        out.append((str(norm), line_chart(
            series, title=f"Robust accuracy vs eps ({norm}): original and hardened",
            x_label=f"eps ({norm})",
        )))
    return out


def training_charts(doc: dict[str, Any]) -> list[tuple[str, Markup]]:
    """Accuracies per epoch (train batches and held-out) and the training loss per epoch."""
    log = (doc.get("training") or {}).get("log") or []
    if not log:
        return []
    curves = (
        ("train clean", "train_clean_acc"),
        ("train adv.", "train_adv_acc"),
        ("held-out clean", "heldout_clean_acc"),
        ("held-out robust", "heldout_robust_acc"),
        ("held-out PGD-CE", "heldout_robust_ce"),
    )
    series = []
    for name, key in curves:
        pts = tuple(
            Point(float(r["epoch"]), float(r[key]), f"epoch {r['epoch']} ({r['stage']}): {name} "
                  f"{pct(r[key])}")
            for r in log if isinstance(r.get(key), (int, float))
        )
        if pts:
            series.append(Series(name, pts))
    acc = line_chart(series, title="Training curves: accuracy per epoch", x_label="epoch",
                     y_label="accuracy")
    losses = [float(r["loss"]) for r in log if isinstance(r.get("loss"), (int, float))
              and math.isfinite(r["loss"])]
    loss_pts = tuple(
        Point(float(r["epoch"]), float(r["loss"]), f"epoch {r['epoch']} ({r['stage']}): loss "
              f"{num(r['loss'])}")
        for r in log if isinstance(r.get("loss"), (int, float)) and math.isfinite(r["loss"])
    )
    loss = line_chart([Series("training loss (mean over batches)", loss_pts)],
                      title="Training loss per epoch", x_label="epoch", y_label="loss",
                      y_max=max(losses, default=1.0))
    return [("accuracy", acc), ("loss", loss)]


def _env() -> Environment:
    """The report's environment (templates, autoescape, filters) plus signed points."""
    env = environment()
    env.filters.setdefault("signed", signed_points)
    return env


def signed_points(v: Any) -> str:
    """A difference of proportions in percentage points, with its sign."""
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
        return "—"
    return f"{100 * v:+.1f}"


def render_compare_html(doc: dict[str, Any]) -> str:
    """The comparison as one self-contained HTML page (no JavaScript, no external assets)."""
    return _env().get_template("compare.html.j2").render(
        doc=doc, tradeoff_charts=tradeoff_charts(doc), training_charts=training_charts(doc),
    )


def write_compare(doc: dict[str, Any], out: Path) -> dict[str, Path]:
    """Render both files first, then write each atomically."""
    text_json = json.dumps(doc, indent=2, allow_nan=False, default=_json_default) + "\n"
    text_html = render_compare_html(doc)
    paths = {"json": out / "compare.json", "html": out / "compare.html"}
    atomic_write_text(paths["json"], text_json)
    atomic_write_text(paths["html"], text_html)
    return paths


def _json_default(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    raise TypeError(f"not JSON serializable: {type(v).__name__}")
