"""Property tests of the config loader: whatever the YAML (random documents, random text,
random bytes, valid configs with a field replaced, deleted or added), loading either succeeds
or raises a :class:`robaudit.errors.RobauditError` with a one-line message; and a config that
loads can be planned, hashed and written into report.json.

Examples are derandomized (the same every run); ``ROBAUDIT_HYPOTHESIS_SCALE=20`` explores 20
times as many at random.
"""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from robaudit.config import Config, config_from_yaml, load_config, variant_labels
from robaudit.errors import RobauditError
from robaudit.pipeline import config_sha256, resolve_settings
from robaudit.plan import build_plan
from tests.conftest import REPO_ROOT, TINY_CONFIG

SCALE = int(os.environ.get("ROBAUDIT_HYPOTHESIS_SCALE", "1"))


def profile(examples: int) -> settings:
    return settings(
        max_examples=examples * SCALE,
        deadline=None,
        derandomize=SCALE == 1,
        database=None,  # no .hypothesis folder in the repository
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much,
                               HealthCheck.data_too_large],
    )


PRESETS = [yaml.safe_load((REPO_ROOT / "configs" / f"{p}.yaml").read_text(encoding="utf-8"))
           for p in ("quick", "standard", "strict")]
# every section and most kinds of entry in one valid config
RICH: dict[str, Any] = {
    **copy.deepcopy(TINY_CONFIG),
    "attacks": [
        {"name": "fgsm", "norm": "linf", "eps": [0.1, "8/255"]},
        {"name": "pgd", "norm": "l2", "eps": [0.5], "steps": 3, "rel_step_size": 0.25},
        {"battery": "autoattack", "norm": "linf", "eps": [0.1], "steps": 5, "queries": 10},
        {"name": "square", "norm": "linf", "eps": [0.1], "queries": 10, "access": "score"},
        {"name": "transfer", "eps": [0.1], "surrogate": str(REPO_ROOT / "sample_models" / "digits_cnn.pt")},
        {"name": "cw", "norm": "l2", "eps": [0.5], "kappa": 0.0},
    ],
    "defenses": [{"name": "jpeg", "quality": 75}, {"name": "gaussian-noise", "sigma": 0.1},
                 {"name": "bit-depth", "bits": 3, "label": "squeeze"}],
    "certify": {"sigma": 0.25, "n0": 10, "n": 100, "radii": [0.0, 0.25]},
    "gate": {"min_clean_accuracy": 0.5, "min_score": 10,
             "min_robust_accuracy": [{"norm": "linf", "eps": 0.1, "value": 0.1},
                                     {"norm": "linf", "eps": 0.1, "value": 0.1, "variant": "squeeze"}],
             "min_certified_accuracy": [{"radius": 0.25, "value": 0.1}]},
    "integrity": {"enabled": True, "eot_samples": 4, "votes": 3},
}
BASES = [TINY_CONFIG, RICH, *PRESETS]


def _keys(node: Any) -> set[str]:
    if isinstance(node, dict):
        return set(map(str, node)) | {k for v in node.values() for k in _keys(v)}
    if isinstance(node, list):
        return {k for v in node for k in _keys(v)}
    return set()


FIELD_NAMES = sorted(set().union(*(_keys(b) for b in BASES)))
WORDS = ["8/255", "1/0", "1e400", "-0", "nan", ".inf", "linf", "l2", "l1", "pgd", "fgsm",
         "autoattack", "white-box", "score", "decision", "cpu", "cuda", "cuda:7", "auto", "",
         "builtin:digits", "builtin:", "torchvision:MNIST:/nowhere", "/nonexistent.npz", "~",
         "yes", "no", "null", "0x10", "1_000", "jpeg", "model", "json", "html", "test", "all",
         "package.module:Class", "robaudit.models.digits:DigitsCNN", ":", "<script>"]
scalars = (
    st.none() | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([0, 1, -1, 2, 255, 2**31, 2**32, 2**63, 10**400, -(10**400)])
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.sampled_from(WORDS + FIELD_NAMES)
    | st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=12)
)
keys = st.sampled_from(FIELD_NAMES) | st.text(max_size=6) | st.integers(-3, 3) | st.none() | st.booleans()
values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
    max_leaves=10,
)


def _slots(node: Any, out: list[tuple[Any, Any]]) -> list[tuple[Any, Any]]:
    """Every (container, key or index) in a document: the places a mutation can hit."""
    items = node.items() if isinstance(node, dict) else enumerate(node) if isinstance(node, list) else ()
    for k, v in list(items):
        out.append((node, k))
        _slots(v, out)
    return out


@st.composite
def mutated_configs(draw: st.DrawFn) -> Any:
    """A valid config with one to three fields replaced, deleted, added or re-typed."""
    doc = copy.deepcopy(draw(st.sampled_from(BASES)))
    for _ in range(draw(st.integers(1, 3))):
        slots = _slots(doc, [])
        if not slots:
            break
        parent, key = draw(st.sampled_from(slots))
        op = draw(st.sampled_from(["replace", "replace", "delete", "add", "wrap", "stringify"]))
        if op == "replace":
            parent[key] = draw(values)
        elif op == "delete":
            del parent[key]
        elif op == "add":
            target = parent if isinstance(parent, dict) else parent[key]
            if isinstance(target, dict):
                target[draw(keys)] = draw(values)
            elif isinstance(target, list):
                target.append(draw(values))
        elif op == "wrap":
            parent[key] = [parent[key]]
        else:
            parent[key] = str(parent[key])
    return doc


def _dump(doc: Any) -> str:
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False)


def _load_or_refuse(text: str) -> Config | None:
    """The property: a config, or a RobauditError with a one-line message naming the source."""
    try:
        cfg = config_from_yaml(text, source="fuzz.yaml")
    except RobauditError as exc:
        msg = str(exc)
        assert msg.startswith("fuzz.yaml"), msg
        assert "\n" not in msg, msg[:300]
        assert len(msg) < 2000, f"message of {len(msg)} characters"
        return None
    # what the rest of a run does with a config must work too
    cfg.threats()
    variant_labels(cfg)
    build_plan(cfg)
    resolve_settings(cfg)
    config_sha256(cfg)
    json.dumps(cfg.model_dump(mode="json"), allow_nan=False)  # report.json refuses NaN/inf
    return cfg


def test_the_bases_are_valid() -> None:
    for base in BASES:
        assert _load_or_refuse(_dump(base)) is not None


@profile(150)
@given(doc=mutated_configs())
def test_mutated_configs(doc: Any) -> None:
    _load_or_refuse(_dump(doc))


@profile(150)
@given(doc=st.dictionaries(st.sampled_from(FIELD_NAMES) | keys, values, max_size=6) | values)
def test_random_documents(doc: Any) -> None:
    _load_or_refuse(_dump(doc))


YAML_BITS = ["model:", "attacks:", "eps:", " ", "  ", "\n", "\n  ", "- ", "[", "]", "{", "}",
             ",", ":", "&a ", "*a", "&b ", "*b", "<<: ", "!!str ", "!!int ", "!!float ", "!!binary ",
             "!!python/name:os.system ", "'", '"', "#", "\t", "---\n", "...\n", "? ", "|\n", ">\n",
             "8/255", "1e400", "1.0e+400", ".nan", "-.inf", "0o17", "2001-12-14", "~", "%YAML 1.1\n",
             "\ufeff", "\x00", "\x85", "é"]


@profile(150)
@given(text=st.lists(st.sampled_from(YAML_BITS + FIELD_NAMES + WORDS), max_size=40).map("".join)
       | st.text(max_size=200))
def test_random_text(text: str) -> None:
    _load_or_refuse(text)


@profile(60)
@given(data=st.binary(max_size=300))
def test_random_bytes_in_a_file(data: bytes, tmp_path_factory: Any) -> None:
    path = Path(tmp_path_factory.mktemp("fuzz")) / "fuzz.yaml"
    path.write_bytes(data)
    try:
        load_config(path)
    except RobauditError as exc:
        assert str(path) in str(exc)
