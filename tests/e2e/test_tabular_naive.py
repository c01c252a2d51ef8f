"""What a naive tabular audit counts (issue 17), on the committed fraud MLP and its held-out
transactions (sample_models/fraud_mlp.pt, sample_models/data/fraud_test.csv).

A naive audit runs an unconstrained PGD and counts every misclassified candidate in the ball.
Many of those move ``age`` or ``account_age_days`` (immutable: nobody makes a customer younger
to pass a fraud check), make a count fractional or pick two channels at once. robaudit counts
none of them, and its report says how many a naive audit would have counted: this is checked
against a recount done here, feature by feature. A peer check then holds robaudit's
constrained PGD/APGD to what naive users do (torchattacks' unconstrained PGD, repaired onto
the constraints afterwards) at TabularBench's budgets, L2 0.5 and Linf 0.1.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import robaudit
from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.classifier import Classifier
from robaudit.loading.tabular import read_tabular
from robaudit.naive import reason
from robaudit.outcomes import cell_seed
from robaudit.threat import Threat
from tests.helpers import one_thread

ROOT = Path(__file__).resolve().parents[2]
MODEL = ROOT / "sample_models" / "fraud_mlp.pt"
CSV = ROOT / "sample_models" / "data" / "fraud_test.csv"
SCHEMA = ROOT / "sample_models" / "data" / "fraud.yaml"
THREATS = (Threat("l2", 0.5), Threat("linf", 0.1))
STEPS = 20

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


@pytest.fixture(scope="module", autouse=True)
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def model() -> nn.Module:
    return torch.jit.load(str(MODEL)).eval()


@pytest.fixture(scope="module")
def table() -> tuple[Any, torch.Tensor, torch.Tensor]:
    info, x, y = read_tabular(str(CSV), "is_fraud", str(SCHEMA))
    return info, torch.from_numpy(x), torch.from_numpy(y)


def _config(attacks: list[dict[str, Any]], only: int | None) -> dict[str, Any]:
    data: dict[str, Any] = {"source": str(CSV), "label": "is_fraud", "schema": str(SCHEMA)}
    if only is not None:
        data["attack_only_class"] = only
    data["batch_size"] = 2000  # one batch per cell: the recount attacks the same batch
    return {"model": {}, "data": data, "attacks": attacks, "gate": {"fail_on_findings": "none"}}


def _recount(
    model: nn.Module, cons: Any, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor,
    broken: torch.Tensor, index: int, threat: Threat,
) -> dict[str, Any]:
    """Unconstrained PGD (robaudit's, the engine's seed, no constraints active) on the cell's
    batch; its misclassified in-ball candidates that break a constraint and that robaudit did
    not count broken, with the first broken constraint and the immutable features moved."""
    idx = targets.nonzero().flatten()
    seed = cell_seed(0, index, "pgd", threat.key, int(idx[0]))
    clf = Classifier(model, num_classes=2)
    xb, yb = x[idx], y[idx]
    xa = PGD(PGDParams(steps=STEPS)).run(clf, xb, yb, threat, torch.Generator().manual_seed(seed)).x_adv
    size = (xa - xb).abs().amax(1) if threat.norm == "linf" else (xa - xb).norm(dim=1)
    assert bool((size <= threat.eps + 1e-5).all()) and 0 <= float(xa.min()) <= float(xa.max()) <= 1
    with torch.no_grad():
        wrong = model(xa).argmax(1) != yb
    names = cons.violations(xa, xb)
    mutable = cons.mutable(xa.device)
    first: dict[str, int] = {}
    moved: dict[str, int] = {}
    count = only = hinge = 0
    for j in range(len(idx)):
        if not (wrong[j] and names[j]) or bool(broken[idx[j]]):
            continue
        count += 1
        first[reason(names[j])] = first.get(reason(names[j]), 0) + 1
        imm = [n.split(":", 1)[1] for n in names[j] if n.startswith("immutable:")]
        for f in imm:
            moved[f] = moved.get(f, 0) + 1
        only += bool(imm) and len(imm) == len(names[j])
        back = torch.where(mutable, xa[j], xb[j])
        with torch.no_grad():
            hinge += int(model(back[None]).argmax(1)) == int(yb[j])
    return {"naive_breaks": count, "first_constraint": first, "immutable_features": moved,
            "only_immutable": only, "hinge_on_immutable": hinge}  # fmt: skip


@pytest.mark.parametrize("only", [None, 1], ids=["all", "frauds-only"])
def test_naive_count_matches_a_recount(
    model: nn.Module, table: tuple[Any, torch.Tensor, torch.Tensor], only: int | None,
    validate_report: Any, tmp_path: Path,
) -> None:
    info, x, y = table
    attacks = [{"name": "pgd", "norm": t.norm, "eps": [t.eps], "steps": STEPS} for t in THREATS]
    report = robaudit.scan(model, config=_config(attacks, only), seed=0)
    r = report.result
    assert [s["source_index"] for s in r.samples] == list(range(len(y)))
    correct = torch.tensor([s["correct"] for s in r.samples])
    targets = correct & (y == only) if only is not None else correct
    rows = {row["threat_key"]: row for row in r.naive_audit or ()}
    assert set(rows) == {t.key for t in THREATS}
    total = 0
    for index, t in enumerate(THREATS):
        broken = torch.tensor([s["threats"][t.key] is not None for s in r.samples])
        want = _recount(model, info.constraints, x, y, targets, broken, index, t)
        row = rows[t.key]
        got = {k: row[k] for k in want}
        assert got == want, t.key
        robust = int((correct & ~broken).sum())
        assert row["naive_robust_accuracy"] == pytest.approx((robust - want["naive_breaks"]) / len(y))
        total += want["naive_breaks"]
    assert total > 0, "unconstrained PGD moves immutable features on this model"
    # every naive break moved an immutable feature first (PGD's step touches every feature)
    assert all(set(rows[k]["first_constraint"]) <= {"immutable"} for k in rows)
    written = report.save(tmp_path, ["json", "md"])
    doc = json.loads(Path(written["json"]).read_text())
    validate_report(doc)
    assert [a.get("naive_breaks") for a in doc["attacks"]] == [
        a.naive_breaks for a in r.attacks
    ] and all(isinstance(a["naive_breaks"], int) for a in doc["attacks"])
    md = Path(written["md"]).read_text().splitlines()
    lines = [line for line in md if "naive audit" in line]
    assert len(lines) == sum(1 for k in rows if rows[k]["naive_breaks"])
    assert "changed an immutable feature" in lines[0] and "age" in lines[0]


def _peer_repaired(
    model: nn.Module, cons: Any, x: torch.Tensor, y: torch.Tensor, targets: torch.Tensor,
    threat: Threat, steps: int,
) -> torch.Tensor:
    """What naive users do: torchattacks' unconstrained PGD, then repaired onto the
    constraints (robaudit.tabular's repair, inside the ball); which targets it breaks."""
    torchattacks = pytest.importorskip("torchattacks")
    cls = torchattacks.PGDL2 if threat.norm == "l2" else torchattacks.PGD
    torch.manual_seed(0)
    idx = targets.nonzero().flatten()
    # torchattacks' L2 steps assume image batches: the rows go in as N x 1 x 1 x F
    flat = nn.Sequential(nn.Flatten(), model).eval()
    atk = cls(flat, eps=threat.eps, alpha=2.5 * threat.eps / steps, steps=steps, random_start=True)
    xa = atk(x[idx].view(len(idx), 1, 1, -1), y[idx]).view(len(idx), -1)
    fixed = cons.repair(xa, x[idx], norm=threat.norm, eps=threat.eps)
    assert cons.violations(fixed, x[idx]) == [[] for _ in range(len(idx))]
    with torch.no_grad():
        wrong = model(fixed).argmax(1) != y[idx]
    out = torch.zeros_like(targets)
    out[idx] = wrong
    return out


@pytest.mark.peer
@pytest.mark.parametrize("only", [None, 1], ids=["all", "frauds-only"])
def test_constrained_attacks_beat_unconstrained_then_repaired(
    model: nn.Module, table: tuple[Any, torch.Tensor, torch.Tensor], only: int | None
) -> None:
    info, x, y = table
    attacks = [
        {"name": name, "norm": t.norm, "eps": [t.eps], "steps": 50}
        for name in ("pgd", "apgd") for t in THREATS
    ]
    r = robaudit.scan(model, config=_config(attacks, only), seed=0).result
    correct = torch.tensor([s["correct"] for s in r.samples])
    targets = correct & (y == only) if only is not None else correct
    n = len(y)
    for t in THREATS:
        ours = next(row.robust_accuracy for row in r.threats if row.key == t.key)
        peer = _peer_repaired(model, info.constraints, x, y, targets, t, 50)
        theirs = int((correct & ~peer).sum()) / n
        assert ours <= theirs + 0.01, (t.key, ours, theirs)
