"""The one-line notices every renderer shows the same way: numbers that cannot be trusted, a
smoke-test protocol, and what the run inferred instead of reading it from the config."""

from __future__ import annotations

from typing import Any

from robaudit.norms import get as get_norm


def untrusted_line(doc: dict[str, Any]) -> str | None:
    """One line naming the unresolved error findings, which make the numbers untrustworthy."""
    bad = [
        f for f in doc.get("findings") or []
        if isinstance(f, dict) and not f.get("resolved") and f.get("severity") == "error"
    ]
    if not bad:
        return None
    names = ", ".join(f"{f.get('id')} ({f.get('title')})" for f in bad)
    return (
        f"UNTRUSTED: unresolved error finding{'s' if len(bad) > 1 else ''} {names}: the robust "
        "accuracy numbers cannot be trusted (robaudit explain "
        f"{bad[0].get('id')})"
    )


def protocol_line(doc: dict[str, Any]) -> str | None:
    """The named protocol the run followed; a smoke test says it is no basis for claims."""
    p = (doc.get("meta") or {}).get("protocol")
    if not isinstance(p, dict):
        return None
    if not p.get("security_claims", True):
        return f"{p.get('name')} protocol: {p.get('description')}"
    return f"protocol {p.get('name')}: {p.get('description')}"


def inferred_lines(doc: dict[str, Any]) -> list[str]:
    """What the run filled in that the config left out, each with where it came from."""
    inferred = (doc.get("meta") or {}).get("inferred")
    if not isinstance(inferred, dict):
        return []
    out = []
    for name, item in inferred.items():
        if not isinstance(item, dict):
            continue
        if name == "profile":
            budgets = ", ".join(str(b) for b in item.get("budgets") or [])
            out.append(f"budgets of {budgets} from the {item.get('value')} profile ({item.get('from')})")
        else:
            out.append(f"{name} {item.get('value')} from {item.get('from')}")
    return out


def grade_text(doc: dict[str, Any]) -> str:
    """``grade B``, or why the audit earned no grade (incomplete or weak evaluation)."""
    if doc.get("grade"):
        return f"grade {doc['grade']}"
    ev = (doc.get("meta") or {}).get("evaluation") or {}
    word = {"incomplete": "incomplete", "weak": "weak evaluation"}.get(str(ev.get("status")), "no grade")
    return f"no grade ({word})"


def evaluation_lines(doc: dict[str, Any]) -> list[str]:
    """Why the audit earned no grade, one reason a line, and which threats the score covers."""
    ev = (doc.get("meta") or {}).get("evaluation")
    if not isinstance(ev, dict) or ev.get("status") == "complete":
        return []
    word = "INCOMPLETE" if ev.get("status") == "incomplete" else "WEAK EVALUATION"
    covers = ", ".join(str(k) for k in ev.get("score_covers") or []) or "no threat"
    return [f"{word}: no grade; the score covers {covers}"] + [
        f"  {reason}" for reason in ev.get("reasons") or []
    ]


def unrun_text(partial: dict[str, Any]) -> str:
    """What a partial run left undone, in one phrase that every format prints the same way.

    ``unrun`` holds planned cells (the first may have stopped mid-way: ``samples_left``);
    ``not_run`` holds whole steps after the cells (sanity check, variants, certification).
    """
    unrun = list(partial.get("unrun") or [])
    text = f"{len(unrun)} planned cell(s) did not run or finish"
    midway = [u for u in unrun if u.get("samples_left")]
    if midway:
        text += " (" + "; ".join(
            f"{u['attack']} at {u['threat']} stopped with {u['samples_left']} sample(s) left"
            for u in midway
        ) + ")"
    if partial.get("not_run"):
        text += "; also not run: " + ", ".join(str(s) for s in partial["not_run"])
    return text


def natural_line(doc: dict[str, Any]) -> str | None:
    """Natural robustness in one line (terminal and summary.md); None when it did not run."""
    nat = doc.get("natural")
    if not isinstance(nat, dict):
        return None
    parts = []
    s = nat.get("summary")
    if s and s.get("mean_accuracy") is not None:
        text = f"corruptions {100 * s['mean_accuracy']:.1f}% mean accuracy"
        if s.get("mce") is not None:
            text += f" (mCE {100 * s['mce']:.1f}%)"
        parts.append(text)
    g = nat.get("geometric")
    if g:
        parts.append(f"worst rotation/translation {100 * g['robust_accuracy']:.1f}%")
    o = nat.get("occlusion")
    if o:
        parts.append(f"worst occlusion ({100 * o['size']:.0f}% box) {100 * o['robust_accuracy']:.1f}%")
    skipped = [k["corruption"] for k in nat.get("skipped") or []]
    if skipped:
        parts.append("skipped: " + ", ".join(skipped))
    return "natural robustness: " + "; ".join(parts) if parts else None


def universal_lines(doc: dict[str, Any]) -> list[str]:
    """One line per universal patch (terminal and summary.md): trained vs noise patch."""
    out = []
    for u in doc.get("universal_patches") or []:
        noise = u.get("noise") or {}
        out.append(
            f"universal patch {u['eps_label']}{_on_variant(u)}: accuracy at a random placement "
            f"{100 * u['accuracy']:.1f}% (noise patch {100 * noise.get('accuracy', 0):.1f}%), "
            f"correct under all {u['placements']} placements {100 * u['robust_accuracy']:.1f}% "
            f"(noise {100 * noise.get('robust_accuracy', 0):.1f}%){_widest(u)}; trained on "
            f"{u['trained_on']['images']} images ({u['trained_on']['why']})"
        )
    return out


def _on_variant(u: dict[str, Any]) -> str:
    return f" on {u['variant']}" if u.get("variant") else ""


def _widest(u: dict[str, Any]) -> str:
    """Where the trained patch leads noise most, as the attacker gets more tries."""
    tries = u.get("tries") or []
    if not tries:
        return ""
    t = max(tries, key=lambda t: t["noise_accuracy"] - t["accuracy"])
    tries = f"{t['tries']} {'try' if t['tries'] == 1 else 'tries'}"
    return (f", widest gap at {tries}: {100 * t['accuracy']:.1f}% "
            f"(noise {100 * t['noise_accuracy']:.1f}%)")  # fmt: skip


def positive_columns(doc: dict[str, Any]) -> tuple[str, ...]:
    """The headline table's extra columns when the report follows a positive class (fraud)."""
    pc = doc.get("positive_class")
    if not isinstance(pc, dict):
        return ()
    return (f"recall (class {pc.get('class')})", "pass rate")


def positive_cells(doc: dict[str, Any], key: str | None) -> tuple[str, ...]:
    """Those columns' values on the clean row (``key`` None) or a threat's row ("—" for a row
    the positive class does not follow, such as a defense variant's)."""
    pc = doc.get("positive_class")
    if not isinstance(pc, dict):
        return ()
    if key is None:
        return (_pct(pc.get("clean_recall")), _pct(pc.get("clean_pass_rate")))
    row = (pc.get("threats") or {}).get(key)
    if not isinstance(row, dict):
        return ("—", "—")
    return (_pct(row.get("robust_recall")), _pct(row.get("pass_rate")))


def positive_note(doc: dict[str, Any]) -> str | None:
    """One line saying what the recall columns mean and whether only that class was attacked."""
    pc = doc.get("positive_class")
    if not isinstance(pc, dict):
        return None
    k = pc.get("class")
    only = f"only samples of class {k} were attacked (data.attack_only_class); " if pc.get(
        "attacked_only") else ""
    return (
        f"{only}recall: share of the {pc.get('n')} class-{k} samples still classified as class "
        f"{k}; pass rate: share that pass as another class"
    )


def _pct(v: Any) -> str:
    return f"{100 * v:.1f}%" if isinstance(v, (int, float)) else "—"


def own_budget(norm: Any, eps_label: Any) -> str | None:
    """A budget in the norm's own words where it is not a length (``SNR 40 dB``), else None."""
    try:
        return get_norm(str(norm)).budget_label(str(eps_label))
    except ValueError:
        return None


def budget_text(norm: Any, eps_label: Any, eq: str = "ε=") -> str:
    """A budget as tables label it: ``linf ε=0.1`` (``eq``: ``eps=``, ``eps ``), or in the
    norm's own words where its budget is not a length (``SNR 40 dB``)."""
    return own_budget(norm, eps_label) or f"{norm} {eq}{eps_label}"


def threat_text(t: dict[str, Any], eq: str = "ε=") -> str:
    """A threat as tables label it: ``white-box linf ε=0.1``, ``white-box SNR 40 dB``."""
    return f"{t.get('access')} {budget_text(t.get('norm'), t.get('eps_label'), eq)}"


_WHY = {
    "immutable": "changed an immutable feature",
    "bounds": "left a feature's bounds",
    "integer": "made an integer feature fractional",
    "binary": "made a binary feature fractional",
    "onehot": "broke a one-hot group",
    "relation": "broke a relation between features",
    "nonfinite": "were not finite",
}


def naive_lines(doc: dict[str, Any]) -> list[str]:
    """Tabular runs, per threat where it differs: the breaks a naive audit (no constraint
    checks) would have counted more, and why none of them is a real record."""
    threats = {t.get("key"): t for t in doc.get("threats") or []}
    lines = []
    for row in doc.get("naive_audit") or []:
        n = row.get("naive_breaks") or 0
        t = threats.get(row.get("threat_key"))
        if not n or t is None:
            continue
        why = []
        for kind, k in (row.get("first_constraint") or {}).items():
            text = f"{k} {_WHY.get(kind, kind)}"
            if kind == "immutable" and row.get("immutable_features"):
                moved = ", ".join(f"{f} {c}" for f, c in row["immutable_features"].items())
                text += f" ({moved})"
            why.append(text)
        hinge = row.get("hinge_on_immutable") or 0
        if hinge:
            why.append(
                f"{hinge} hinge{'s' if hinge == 1 else ''} on the immutable features alone (put "
                "back, the model is right)"
            )
        lines.append(
            f"a naive audit (no constraint checks) would have counted {n} more break"
            f"{'s' if n != 1 else ''} at {threat_text(t)} (robust accuracy "
            f"{_pct(row.get('naive_robust_accuracy'))} instead of "
            f"{_pct(row.get('robust_accuracy'))}): " + "; ".join(why)
        )
    return lines


def satisfaction_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """Tabular runs: the attack rows that say how many of the attack's candidates were real
    records as it returned them (``constraint_satisfaction``, before the engine's repair), how
    many the engine repaired, and how many still broke a constraint (never counted)."""
    return [a for a in doc.get("attacks") or [] if isinstance(a, dict) and "repaired" in a]
