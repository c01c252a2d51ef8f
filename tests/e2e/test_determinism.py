"""Same seed, same device: byte-identical report.json apart from wall-clock fields (CPU).

The timing fields are listed here explicitly; a new timing field must be added to TIMING on
purpose, and any other difference between the two runs fails the test.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import one_thread

# Every field of report.json that holds wall-clock time, as a path ([] = any list index).
TIMING = {
    "attacks[].seconds",  # time spent in each attack cell
    "meta.started_at",  # when the run started (UTC)
    "meta.duration_seconds",  # wall time of the whole run
    "meta.clean_seconds",  # wall time of the clean pass
}

# Randomness everywhere it can enter: the seeded sample subset, noise draws, PGD's random
# start, Square's random search, the integrity checks; two batches per cell.
CONFIG = {
    "seed": 3,
    "data": {"samples": 12, "batch_size": 8},
    "attacks": [
        {"name": "noise", "norm": "linf", "eps": [0.1]},
        {"name": "fgsm", "norm": "linf", "eps": [0.1]},
        {"name": "pgd", "norm": "linf", "eps": [0.1], "steps": 3},
        {"name": "square", "norm": "linf", "eps": [0.1], "queries": 20},
    ],
}


@pytest.fixture(autouse=True, scope="module")
def _single_thread() -> Iterator[None]:
    yield from one_thread()


def _strip(node: Any, path: str, found: set[str]) -> Any:
    """``node`` without the TIMING fields; the paths removed are added to ``found``."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            sub = f"{path}.{key}" if path else key
            if sub in TIMING:
                found.add(sub)
            else:
                out[key] = _strip(value, sub, found)
        return out
    if isinstance(node, list):
        return [_strip(v, f"{path}[]", found) for v in node]
    return node


def test_same_seed_gives_the_same_report(
    tmp_path: Path, cli: Any, tiny_config: Any, plain_model_path: Path
) -> None:
    cfg = tiny_config(tmp_path, **CONFIG)
    texts = []
    for run in ("a", "b"):
        out = tmp_path / run
        result = cli("scan", plain_model_path, "--config", cfg, "--out", out, "--device", "cpu",
                     "--quiet", "--exit-zero")
        assert result.exit_code == 0, result.output
        texts.append((out / "report.json").read_text(encoding="utf-8"))
    docs = [json.loads(t) for t in texts]
    assert docs[0]["meta"]["device"] == "cpu" and docs[0]["meta"]["seed"] == 3
    assert len(docs[0]["samples"]) == 12 and docs[0]["examples"]  # a real run, not an empty one

    found: set[str] = set()
    stripped = [_strip(d, "", found) for d in docs]
    assert found == TIMING, f"timing fields expected {sorted(TIMING)}, found {sorted(found)}"
    assert json.dumps(stripped[0], indent=2) == json.dumps(stripped[1], indent=2)

    # and byte for byte: the only lines that differ are the timing fields' own lines
    names = "|".join(re.escape(p.rsplit(".", 1)[-1]) for p in TIMING)
    timing_line = re.compile(rf'^\s*"({names})": [^\[{{]*$')
    a, b = (t.splitlines() for t in texts)
    assert len(a) == len(b)
    differing = [(x, y) for x, y in zip(a, b, strict=True) if x != y]
    for x, y in differing:
        assert timing_line.match(x) and timing_line.match(y), f"non-timing difference:\n{x}\n{y}"
