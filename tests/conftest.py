"""Shared fixtures: paths, the digits test split, tiny configs, the report schema, the CLI."""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from typer.testing import CliRunner, Result

REPO_ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = REPO_ROOT / "robaudit" / "report" / "schema.json"
DIGITS_ARCH = "robaudit.models.digits:DigitsCNN"

# The smallest config that still exercises the whole pipeline: two attacks at two budgets.
TINY_CONFIG: dict[str, Any] = {
    "version": 1,
    "seed": 0,
    "model": {"input_shape": [1, 8, 8], "num_classes": 10, "bounds": [0.0, 1.0], "arch": DIGITS_ARCH},
    "data": {"source": "builtin:digits", "split": "test", "samples": 40},
    "attacks": [
        {"name": "fgsm", "norm": "linf", "eps": [0.1, 0.2]},
        {"name": "pgd", "norm": "linf", "eps": [0.1, 0.2], "steps": 3},
    ],
    "report": {"examples": 2},
    "engine": {"device": "cpu"},
    # PGD-3 is weaker than FGSM on some samples (RA007, an error): these tests are about
    # other things than the default findings policy (tests/unit/test_trust_defaults.py)
    "gate": {"fail_on_findings": "none"},
}

ConfigFactory = Callable[..., Path]
ReportValidator = Callable[[dict[str, Any]], None]
CliInvoker = Callable[..., Result]


def deep_merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """``base`` updated by ``overrides``: mappings merge key by key, anything else replaces."""
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def plain_model_path(repo_root: Path) -> Path:
    return repo_root / "sample_models" / "digits_cnn.pt"


@pytest.fixture(scope="session")
def robust_model_path(repo_root: Path) -> Path:
    return repo_root / "sample_models" / "digits_cnn_robust.pt"


@pytest.fixture(scope="session")
def digits_test() -> tuple[torch.Tensor, torch.Tensor]:
    """The builtin digits test split: x float32 Nx1x8x8 in [0, 1], y int64."""
    from robaudit.loading.data import digits_arrays

    x, y = digits_arrays("test")
    return torch.from_numpy(x.copy()), torch.from_numpy(y.copy())


@pytest.fixture(scope="session")
def tiny_config() -> ConfigFactory:
    """``tiny_config(tmp_path, **overrides) -> Path``: write TINY_CONFIG deep-merged with
    ``overrides`` (top-level sections) as a new YAML file in the given folder."""
    counter = itertools.count()

    def make(folder: Path, **overrides: Any) -> Path:
        path = Path(folder) / f"tiny{next(counter)}.yaml"
        path.write_text(yaml.safe_dump(deep_merge(TINY_CONFIG, overrides), sort_keys=False))
        return path

    return make


@pytest.fixture(scope="session")
def report_schema() -> dict[str, Any]:
    import jsonschema

    schema: dict[str, Any] = json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))
    jsonschema.Draft202012Validator.check_schema(schema)
    return schema


@pytest.fixture(scope="session")
def validate_report(report_schema: dict[str, Any]) -> ReportValidator:
    """``validate_report(doc)``: fail the test listing every schema violation in ``doc``."""
    import jsonschema

    validator = jsonschema.Draft202012Validator(report_schema)

    def check(doc: dict[str, Any]) -> None:
        errors = sorted(validator.iter_errors(doc), key=lambda e: list(e.absolute_path))
        if errors:
            lines = [f"{'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message[:200]}" for e in errors]
            pytest.fail(f"{len(errors)} schema violation(s):\n" + "\n".join(lines[:20]))

    return check


@pytest.fixture(scope="session")
def cli() -> CliInvoker:
    """``cli(*args) -> Result``: run ``robaudit ARGS`` in-process (stdout and stderr kept apart)."""
    from robaudit.cli import app  # imported here so a broken CLI fails only the CLI tests

    runner = CliRunner()

    def invoke(*args: str | Path, **kwargs: Any) -> Result:
        env = {"COLUMNS": "200", "NO_COLOR": "1", **kwargs.pop("env", {})}
        return runner.invoke(app, [str(a) for a in args], env=env, **kwargs)

    return invoke
