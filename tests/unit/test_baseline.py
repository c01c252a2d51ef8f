"""robaudit.baseline: the statistics against published values, and the comparison rules on
report documents (pairing, variants, threats in one report only, the drop rule)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from robaudit.baseline import (
    check_max_drop,
    compare,
    mcnemar_exact,
    newcombe_interval,
    paired_phi,
)
from robaudit.errors import UserInputError

FIXTURE = Path(__file__).resolve().parents[1] / "data" / "sample_report.json"


def make_doc(n: int = 200, robust: dict[float, int] | None = None, clean: int = 190) -> dict[str, Any]:
    """A consistent report document: the first ``clean`` samples are classified correctly and
    the first ``robust[eps]`` of them survive every attack at linf ``eps``."""
    robust = robust if robust is not None else {0.05: 176, 0.1: 107, 0.2: 21}
    threats = [
        {
            "variant": "model", "access": "white-box", "norm": "linf", "eps": eps,
            "eps_label": f"{eps:g}", "key": f"white-box/linf/{eps:g}", "n": n, "robust": r,
            "robust_accuracy": r / n, "ci": [0.0, 1.0], "success_rate": 0.5, "attacks": ["pgd"],
        }
        for eps, r in robust.items()
    ]
    hit = {"attack": "pgd", "norm": 0.01, "adv_pred": 0, "eps_found": 0.05}
    samples = [
        {
            "index": i, "source_index": 3 * i + 1, "label": i % 10, "clean_pred": i % 10,
            "correct": i < clean,
            "threats": {t["key"]: None if i < t["robust"] or i >= clean else hit for t in threats},
        }
        for i in range(n)
    ]
    return {
        "schema_version": "1.0", "robaudit_version": "0.1.0", "incomplete": False,
        "model": {"path": "m.pt", "sha256": "0" * 64, "format": "torchscript"},
        "data": {"source": "builtin:digits", "split": "test", "samples": n},
        "clean_accuracy": clean / n, "clean_correct": clean, "clean_ci": [0.0, 1.0],
        "threats": threats, "attacks": [], "samples": samples, "examples": [], "score": 0.0,
        "grade": "F", "gate": {"passed": True, "failures": [], "checked": []}, "findings": [],
        "meta": {"seed": 0, "data_seed": 0, "config_sha256": "1" * 64},
    }


@pytest.fixture()
def doc() -> dict[str, Any]:
    return make_doc()


def test_mcnemar_exact_matches_the_binomial_tail() -> None:
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(0, 5) == pytest.approx(2 / 32)
    assert mcnemar_exact(9, 1) == pytest.approx(2 * 11 / 1024)
    assert mcnemar_exact(3, 3) == 1.0
    assert mcnemar_exact(400, 520) < 1e-4  # large counts stay exact and finite


def test_newcombe_intervals_match_newcombe_1998() -> None:
    # Newcombe (1998), Stat Med 17:873, example (a): 56/70 - 48/80, method 10
    lo, hi = newcombe_interval(56, 70, 48, 80)
    assert (round(lo, 4), round(hi, 4)) == (0.0524, 0.3339)
    # Newcombe (1998), Stat Med 17:2635, paired example (a): 36, 12, 2, 0; method 10
    phi = paired_phi(36, 12, 2, 0)
    lo, hi = newcombe_interval(48, 50, 38, 50, phi)
    assert (round(lo, 4), round(hi, 4)) == (0.0569, 0.3404)


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "1", True])
def test_max_drop_must_be_points(bad: Any) -> None:
    with pytest.raises(UserInputError, match="percentage points"):
        check_max_drop(bad)


def test_report_against_itself_is_paired_and_unchanged(doc: dict[str, Any]) -> None:
    c = compare(doc, copy.deepcopy(doc))
    assert c.passed and c.paired
    assert len(c.robust) == len(doc["threats"]) and not c.only_in_base and not c.only_in_new
    for ch in (*c.clean, *c.robust):
        assert ch.method == "mcnemar" and ch.p_value == 1.0
        assert (ch.lost, ch.gained, ch.delta) == (0, 0, 0.0)
        assert not ch.significant and not ch.exceeds
        assert ch.delta_ci[0] < 0 < ch.delta_ci[1]


def _break(doc: dict[str, Any], key: str, count: int) -> dict[str, Any]:
    """A copy of ``doc`` where ``count`` more samples are broken at threat ``key``."""
    new = copy.deepcopy(doc)
    flipped = 0
    for s in new["samples"]:
        if flipped == count:
            break
        if s["correct"] and s["threats"][key] is None:
            s["threats"][key] = {"attack": "pgd", "norm": 0.01, "adv_pred": 0, "eps_found": 0.1}
            flipped += 1
    t = next(t for t in new["threats"] if t["key"] == key)
    t["robust"] -= count
    t["robust_accuracy"] = t["robust"] / t["n"]
    return new


def test_drop_above_max_drop_fails_and_the_paired_test_counts_flips(doc: dict[str, Any]) -> None:
    key = "white-box/linf/0.05"
    new = _break(doc, key, 4)  # 4 of 200 samples: 2.0 points
    c = compare(doc, new, max_drop=1.0)
    assert not c.passed
    (failed,) = c.failures
    assert failed.key == key and failed.lost == 4 and failed.gained == 0
    assert failed.delta == pytest.approx(-0.02)
    assert failed.p_value == pytest.approx(2 / 16)  # 4 discordant pairs, all one way
    assert not failed.significant  # a drop above the limit still fails when within noise
    assert "dropped 2.0 points" in failed.describe(1.0)
    assert compare(doc, new, max_drop=2.0).passed  # a drop equal to the limit passes
    assert compare(new, doc, max_drop=0.0).passed  # a rise never fails


def test_different_samples_compare_unpaired(doc: dict[str, Any]) -> None:
    new = copy.deepcopy(doc)
    for s in new["samples"]:
        s["source_index"] += 10_000
    c = compare(doc, new)
    assert not c.paired and "different samples" in c.pairing
    assert all(ch.method == "newcombe" and ch.p_value is None for ch in c.robust)
    assert c.passed


def test_inconsistent_sample_records_fall_back_to_unpaired(doc: dict[str, Any]) -> None:
    new = copy.deepcopy(doc)
    new["threats"][0]["robust"] -= 3  # the totals no longer match the per-sample records
    new["threats"][0]["robust_accuracy"] = new["threats"][0]["robust"] / new["threats"][0]["n"]
    c = compare(doc, new, max_drop=5)
    assert c.paired and c.robust[0].method == "newcombe"
    assert [ch.method for ch in c.robust[1:]] == ["mcnemar"] * (len(c.robust) - 1)
    assert any("compared unpaired" in n for n in c.notes)
    # the committed sample report keeps 20 of its 200 per-sample records: never paired
    sample = json.loads(FIXTURE.read_text(encoding="utf-8"))
    assert all(ch.method == "newcombe" for ch in compare(sample, copy.deepcopy(sample)).robust)


def test_threats_in_one_report_are_listed_not_compared(doc: dict[str, Any]) -> None:
    new = copy.deepcopy(doc)
    gone = new["threats"].pop(0)
    extra = dict(new["threats"][0], norm="linf", eps=0.9, eps_label="0.9", key="white-box/linf/0.9")
    new["threats"].append(extra)
    c = compare(doc, new)
    assert len(c.robust) == len(doc["threats"]) - 1
    assert c.only_in_base == (f"model {gone['access']} {gone['norm']} eps={gone['eps_label']}",)
    assert c.only_in_new == ("model white-box linf eps=0.9",)
    new["threats"] = [extra]
    nothing = compare(doc, new)
    assert not nothing.robust and not nothing.passed


def test_variants_are_part_of_the_threat(doc: dict[str, Any]) -> None:
    new = copy.deepcopy(doc)
    defended = [dict(t, variant="jpeg", key=f"jpeg/{t['key']}") for t in new["threats"]]
    new["threats"] += defended
    c = compare(doc, new)
    assert len(c.robust) == len(doc["threats"])  # only the bare model's threats in common
    assert len(c.only_in_new) == len(defended) and all(n.startswith("jpeg ") for n in c.only_in_new)
    new["variants"] = [{"variant": "jpeg", "clean_accuracy": 0.8, "clean_correct": 160}]
    both = copy.deepcopy(new)
    both["variants"][0].update(clean_accuracy=0.75, clean_correct=150)
    c2 = compare(new, both)
    assert {ch.variant for ch in c2.robust} == {"model", "jpeg"}
    assert len({ch.criterion for ch in c2.robust}) == len(c2.robust)
    clean = {ch.variant: ch for ch in c2.clean}
    assert clean["model"].method == "mcnemar" and clean["model"].delta == 0
    # a variant's own clean accuracy; its samples are not in the per-sample records: unpaired
    assert (clean["jpeg"].base, clean["jpeg"].new, clean["jpeg"].method) == (0.8, 0.75, "newcombe")
    assert [ch.method for ch in c2.robust if ch.variant == "jpeg"] == ["newcombe"] * len(defended)


def test_to_dict_is_json(doc: dict[str, Any]) -> None:
    d = compare(doc, _break(doc, "white-box/linf/0.05", 4)).to_dict()
    again = json.loads(json.dumps(d, allow_nan=False))
    assert again["passed"] is False and again["max_drop_points"] == 1.0
    assert {"rule", "pairing", "robust", "clean", "only_in_base", "only_in_new"} <= set(again)
