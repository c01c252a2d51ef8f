"""`robaudit selftest`: every reference case gives its known answer and exactly its findings."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from robaudit.cli import app
from robaudit.selftest import _linear_exact_answer, corpus, run_selftest


def test_every_case_matches_its_known_answer() -> None:
    results = run_selftest()
    assert {r.name for r in results} == {c.name for c in corpus()}
    bad = [f"{r.name}: {r.problems}" for r in results if not r.ok]
    assert not bad, bad


def test_linear_case_is_exact_not_a_range() -> None:
    eps, exact = _linear_exact_answer()
    case = next(c for c in corpus() if c.name == "linear-exact")
    assert case.threat.eps == eps and case.expected[1] - case.expected[0] <= 0.011
    assert 0.3 < exact < 0.7  # eps is the median distance: half the samples are out of reach


def test_selftest_fails_loudly_when_a_case_disagrees() -> None:
    case = next(c for c in corpus() if c.name == "digits-linear")
    wrong = type(case)(case.name, case.what, case.build, case.threat, (0.99, 1.0), frozenset({"RA011"}))
    (r,) = run_selftest(cases=[wrong])
    assert not r.ok and len(r.problems) == 2


def test_cli_selftest_json() -> None:
    res = CliRunner().invoke(app, ["selftest", "--json"])
    assert res.exit_code == 0, res.output
    rows = json.loads(res.stdout)
    assert all(row["ok"] for row in rows) and len(rows) == len(corpus())
