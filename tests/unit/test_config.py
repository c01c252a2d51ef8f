"""Config validation: typed objects out, one-line path-addressed errors otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from robaudit.config import PRESET_NAMES, config_from_yaml, load_config, preset_path
from robaudit.errors import ConfigError
from robaudit.threat import format_eps, parse_eps

BASE = """
model: {input_shape: [1, 8, 8], num_classes: 10}
attacks:
  - {name: fgsm, norm: linf, eps: [0.1, "8/255"]}
  - {name: pgd, norm: l2, eps: 0.5, steps: 3}
"""


def test_eps_forms() -> None:
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps(0.1) == 0.1 and parse_eps(1) == 1.0
    assert format_eps(8 / 255) == "8/255" and format_eps(0.1) == "0.1"
    for bad in ("8/0", "abc", -0.1, True, "__import__('os')"):
        with pytest.raises(ValueError):
            parse_eps(bad)


def test_valid_config_gives_typed_threats_and_params() -> None:
    cfg = config_from_yaml(BASE)
    assert [(t.norm, t.label) for t in cfg.threats()] == [
        ("l2", "0.5"), ("linf", "8/255"), ("linf", "0.1")
    ]
    assert cfg.attacks[1].params.steps == 3  # type: ignore[attr-defined]
    assert cfg.data.source == "builtin:digits" and cfg.seed == 0


@pytest.mark.parametrize(
    ("patch", "expected"),
    [
        (("steps: 3", "setps: 3"), "attacks[1].setps: unknown key, did you mean 'steps'?"),
        (("name: fgsm", "name: fgms"), "did you mean 'fgsm'"),
        (("num_classes: 10", "num_clases: 10"), "model.num_clases: unknown key"),
        (("norm: l2", "norm: l3"), "attacks[1].norm"),
        (("steps: 3", "steps: 0"), "attacks[1].steps"),
        (("steps: 3", "steps: many"), "attacks[1].steps"),
        (("eps: 0.5", "eps: 100"), "attacks[1].eps[0]: 100 is larger than the whole input range"),
        (("eps: 0.5", "eps: []"), "attacks[1].eps"),
        (("steps: 3", "steps: 3, step_size: 0.1, rel_step_size: 0.2"), "not both"),
    ],
)
def test_errors_name_the_yaml_path(patch: tuple[str, str], expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_from_yaml(BASE.replace(*patch), source="c.yaml")
    msg = str(info.value)
    assert expected in msg and msg.startswith("c.yaml: ") and "\n" not in msg


def test_gate_must_name_a_threat_that_runs() -> None:
    text = BASE + "gate: {min_robust_accuracy: [{norm: linf, eps: 0.3, value: 0.5}]}\n"
    with pytest.raises(ConfigError, match=r"gate.min_robust_accuracy\[0\]: no attack runs at white-box linf eps 0.3"):
        config_from_yaml(text)


def test_yaml_problems(tmp_path: Path) -> None:
    for text, expected in (("", "empty"), ("- 1", "mapping"), ("a: [", "malformed YAML at line")):
        with pytest.raises(ConfigError, match=expected):
            config_from_yaml(text)
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_are_valid_and_commented(name: str) -> None:
    path = preset_path(name)
    cfg = load_config(path)
    assert cfg.gate.min_clean_accuracy is not None
    lines = [ln for ln in path.read_text().splitlines() if ln.strip() and not ln.strip().startswith("-")]
    commented = [ln for ln in lines if "#" in ln]
    assert len(commented) / len(lines) > 0.5, "presets are documented line by line"


def test_access_set_once_for_the_whole_scan() -> None:
    """A top-level access is every entry's and every gate threshold's default; an entry may
    still set its own, and an attack that needs more than the scan gives is named."""
    from robaudit.config import config_from_dict

    cfg = config_from_dict({
        "access": "decision",
        "model": {"input_shape": [1, 8, 8], "num_classes": 10},
        "attacks": [{"name": "hopskipjump", "norm": "l2", "eps": [1.0]},
                    {"name": "square", "eps": [0.1], "access": "score"}],
        "gate": {"min_robust_accuracy": [{"norm": "l2", "eps": 1.0, "value": 0.5}]},
    })
    assert [a.access for a in cfg.attacks] == ["decision", "score"]
    assert cfg.gate.min_robust_accuracy[0].access == "decision"
    assert [t.key for t in cfg.threats()] == ["decision/l2/1", "score/linf/0.1"]
    with pytest.raises(ConfigError, match=r"attacks\[0\].access: pgd needs white-box access"):
        config_from_dict({"access": "score", "model": {}, "attacks": [{"name": "pgd", "eps": [0.1]}]})


def test_every_problem_is_shown_on_the_one_line() -> None:
    """'(and 1 more problem(s))' used to hide the others, even with --debug."""
    from robaudit.config import config_from_dict

    with pytest.raises(ConfigError) as info:
        config_from_dict({"model": {"input_shape": [1, 1, 1, 30], "num_classes": 1},
                          "attacks": [{"name": "fgsm", "eps": [0.1]}]}, source="c.yaml")
    msg = str(info.value)
    assert "\n" not in msg and msg.count("c.yaml") == 1
    assert "model.input_shape" in msg and "model.num_classes" in msg and "(and 1 more: " in msg


@pytest.mark.parametrize("name", PRESET_NAMES)
def test_presets_list_each_attack_once_per_norm(name: str) -> None:
    """A preset entry written twice runs twice (twice the cost, nothing more found)."""
    raw = yaml.safe_load(preset_path(name).read_text(encoding="utf-8"))
    keys = [(a.get("name") or a.get("battery"), a.get("norm", "linf"), str(a.get("loss", "")))
            for a in raw["attacks"]]  # fmt: skip
    assert len(keys) == len(set(keys)), sorted(k for k in keys if keys.count(k) > 1)
