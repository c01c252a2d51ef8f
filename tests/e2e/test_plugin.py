"""The pytest plugin in a fresh project folder, and the same numbers from API, CLI and plugin."""

from __future__ import annotations

import json
import shutil
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml

import robaudit
from robaudit.api import RobustAccuracy
from robaudit.pytest_plugin import pytest_assertrepr_compare

pytest_plugins = ["pytester"]

CFG: dict[str, Any] = {
    "version": 1,
    "seed": 7,
    "model": {"input_shape": [1, 8, 8], "num_classes": 10, "bounds": [0.0, 1.0]},
    "data": {"source": "builtin:digits", "split": "test", "samples": 40},
    "attacks": [
        {"name": "fgsm", "norm": "linf", "eps": [0.1]},
        {"name": "pgd", "norm": "linf", "eps": [0.1, 0.2], "steps": 3},
        {"name": "pgd", "norm": "l2", "eps": [0.5], "steps": 3},
    ],
    "report": {"examples": 2},
    "engine": {"device": "cpu"},
}


def numbers(doc: dict[str, Any]) -> dict[str, Any]:
    """What must agree between front ends: every count and rate, no timings or paths."""
    return {
        "clean_accuracy": doc["clean_accuracy"],
        "threats": doc["threats"],
        "attacks": [{k: v for k, v in a.items() if k != "seconds"} for a in doc["attacks"]],
        "samples": doc["samples"],
        "per_class": doc["per_class"],
        "score": doc["score"],
        "grade": doc["grade"],
        "gate": doc["gate"],
        "sha256": doc["model"]["sha256"],
        "seed": doc["meta"]["seed"],
        "config_sha256": doc["meta"]["config_sha256"],
    }


INNER_TEST = '''
import json

def test_numbers(robaudit_scan):
    report = robaudit_scan("model.pt", config="robaudit.yaml")
    with open("numbers.json", "w") as f:
        json.dump(report.to_dict(), f)
    assert report.robust_accuracy("linf", 0.1) >= 0.0

def test_is_robust(robaudit_scan):
    report = robaudit_scan("model.pt", config="robaudit.yaml")
    assert report.robust_accuracy("linf", 0.2) >= 0.99
'''


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, plain_model_path: Path) -> Path:
    folder = tmp_path_factory.mktemp("api_cli")
    shutil.copy(plain_model_path, folder / "model.pt")
    (folder / "robaudit.yaml").write_text(yaml.safe_dump(CFG, sort_keys=False), encoding="utf-8")
    return folder


def test_api_cli_and_plugin_give_identical_numbers(
    project: Path, cli: Any, pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the Python API
    api = robaudit.scan(project / "model.pt", config=project / "robaudit.yaml")
    # the CLI
    out = project / "cli_out"
    r = cli("scan", project / "model.pt", "--config", project / "robaudit.yaml", "--out", out, "--quiet")
    assert r.exit_code == 0, r.output
    cli_doc = json.loads((out / "report.json").read_text(encoding="utf-8"))
    # the plugin, in a fresh folder holding only a model, a config and a test file; the
    # plugin comes from the installed entry point (nothing here names it)
    monkeypatch.delenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", raising=False)
    shutil.copy(project / "model.pt", pytester.path / "model.pt")
    shutil.copy(project / "robaudit.yaml", pytester.path / "robaudit.yaml")
    pytester.makepyfile(test_model=INNER_TEST)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--robaudit-out", "reports")
    result.assert_outcomes(passed=1, failed=1)
    plugin_doc = json.loads((pytester.path / "numbers.json").read_text(encoding="utf-8"))

    expected = numbers(api.to_dict())
    assert numbers(cli_doc) == expected
    assert numbers(plugin_doc) == expected
    print(  # for the record in -s runs: the numbers all three agree on
        "clean", expected["clean_accuracy"],
        {t["key"]: t["robust_accuracy"] for t in expected["threats"]}, "score", expected["score"],
    )

    # the failing test explains itself: threat, value, limit and the HTML report's path
    value = api.robust_accuracy("linf", 0.2)
    html = pytester.path / "reports" / "test_model.py_test_is_robust" / "scan0" / "report.html"
    assert html.is_file()
    text = result.stdout.str()
    assert "robust accuracy at white-box linf eps=0.2 is " + f"{float(value):.1%}" in text
    assert "required >= 99.0%" in text and f"below by {0.99 - float(value):.1%}" in text
    assert f"{value.robust}/{value.n} samples" in text
    assert f"HTML report: {html}" in text


def test_assertrepr_hook_both_ways() -> None:
    ra = RobustAccuracy(0.25, "white-box/l2/0.5", 10, 40, (0.14, 0.4), "/r/report.html")
    lines = pytest_assertrepr_compare(None, ">=", ra, 0.5)  # type: ignore[arg-type]
    assert lines is not None
    assert lines[0].startswith("robust accuracy at white-box l2 eps=0.5 is 25.0% (10/40 samples")
    assert "required >= 50.0%, it is below by 25.0%" in lines[0]
    assert lines[1] == "HTML report: /r/report.html"
    flipped = pytest_assertrepr_compare(None, "<=", 0.5, ra)  # type: ignore[arg-type]
    assert flipped == lines
    assert pytest_assertrepr_compare(None, ">=", 0.25, 0.5) is None  # type: ignore[arg-type]
    bare = RobustAccuracy(0.25, "white-box/l2/0.5", 10, 40)
    assert "not saved" in bare.explain(">=", 0.5)[1]


def test_fixture_writes_under_tmp_path(pytester: pytest.Pytester, plain_model_path: Path) -> None:
    """Without --robaudit-out each scan's reports go under the test's own tmp_path."""
    shutil.copy(plain_model_path, pytester.path / "model.pt")
    small = {**CFG, "data": {**CFG["data"], "samples": 10}, "attacks": [{"name": "fgsm", "eps": [0.1]}]}
    (pytester.path / "c.yaml").write_text(yaml.safe_dump(small), encoding="utf-8")
    pytester.makepyfile(
        textwrap.dedent(
            """
            def test_twice(robaudit_scan, tmp_path):
                a = robaudit_scan("model.pt", config="c.yaml")
                b = robaudit_scan("model.pt", config="c.yaml", samples=5)
                assert a.html_path == tmp_path / "robaudit" / "scan0" / "report.html"
                assert b.html_path == tmp_path / "robaudit" / "scan1" / "report.html"
                assert a.html_path.is_file() and b.n == 5
            """
        )
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
