"""Report tables a user reads (issue 20, point 8): the terminal's threat table has a variant
column whenever defenses ran and lists an incomplete run's unrun threats as such; the HTML's
per-attack rows say which config entry each one is and why they are in run order."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from rich.console import Console

import robaudit
from robaudit.control import RunControl
from robaudit.report.console import threat_table
from tests.unit.test_resilience import StopAtCell


def _text(doc: dict[str, Any]) -> str:
    console = Console(width=200, record=True, color_system=None)
    console.print(threat_table(doc))
    return console.export_text()


def test_defense_rows_carry_a_variant_column(
    tmp_path: Path, plain_model_path: Path, tiny_config: Any
) -> None:
    cfg = tiny_config(
        tmp_path,
        attacks=[{"name": "fgsm", "norm": "linf", "eps": ["8/255"]}],
        defenses=[{"name": "bit-depth", "bits": 3}],
    )
    doc = robaudit.scan(plain_model_path, config=cfg).to_dict()
    text = _text(doc)
    header = next(ln for ln in text.splitlines() if "threat" in ln)
    assert "variant" in header
    rows = [ln for ln in text.splitlines() if "ε=8/255" in ln]
    assert len(rows) == len(doc["threats"]) >= 2
    # every row is told apart by its variant (no two identical threat titles without one)
    labels = {ln.split("│")[1].strip() for ln in rows}
    assert len(labels) >= 2 and "model" in labels


def test_without_defenses_there_is_no_variant_column(
    tmp_path: Path, plain_model_path: Path, tiny_config: Any
) -> None:
    doc = robaudit.scan(plain_model_path, config=tiny_config(tmp_path)).to_dict()
    assert "variant" not in _text(doc)


def test_an_incomplete_runs_table_lists_the_threats_that_did_not_run(
    tmp_path: Path, plain_model_path: Path, tiny_config: Any
) -> None:
    cfg = tiny_config(
        tmp_path,
        attacks=[
            {"name": "fgsm", "norm": "linf", "eps": ["8/255", "16/255"]},
            {"name": "pgd", "norm": "l2", "eps": [1.0], "steps": 3},
        ],
    )
    control = RunControl()
    doc = robaudit.scan(
        plain_model_path, config=cfg, control=control, progress=StopAtCell(control, 2)
    ).to_dict()
    assert doc["incomplete"]
    text = _text(doc)
    ran = {t["key"] for t in doc["threats"]}
    planned = {
        "white-box/linf/8/255": "white-box linf ε=8/255",
        "white-box/linf/16/255": "white-box linf ε=16/255",
        "white-box/l2/1": "white-box l2 ε=1",
    }
    assert ran and ran < set(planned)
    lines = text.splitlines()
    for key, title in planned.items():
        (row,) = [ln for ln in lines if f" {title} " in ln]
        assert ("not run" in row) == (key not in ran)


def test_html_attack_rows_name_their_config_entry_and_explain_the_order(
    tmp_path: Path, plain_model_path: Path, tiny_config: Any
) -> None:
    from robaudit.report.html import render_html

    cfg = tiny_config(
        tmp_path,
        attacks=[
            {"name": "pgd", "norm": "linf", "eps": [0.1], "steps": 5, "restarts": 3},
            {"name": "pgd", "norm": "linf", "eps": [0.1], "steps": 5, "loss": "margin"},
        ],
    )
    doc = robaudit.scan(plain_model_path, config=cfg).to_dict()
    # the cheaper margin entry runs first: the order differs from the config's
    assert [a["attack_index"] for a in doc["attacks"]] == [1, 0]
    html = render_html(doc)
    section = html[html.index('id="attacks"'):]
    assert section.index("attacks[1]") < section.index("attacks[0]")
    assert "follow the order the attacks ran" in section
