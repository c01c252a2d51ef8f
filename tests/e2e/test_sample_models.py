"""Properties the committed sample models must show under robaudit's attacks.

These are the numbers the README quotes: a correct attack suite reproduces them, a broken
one (an attack that does nothing, a wrong step size, a lost sign) does not.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from robaudit.attacks.fgsm_pgd import FGSM, PGD, PGDParams
from robaudit.classifier import Classifier
from robaudit.engine import EngineResult, PlannedAttack, run_plan
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.threat import Threat

ROOT = Path(__file__).resolve().parents[2]
N = 200


def _data() -> tuple[torch.Tensor, torch.Tensor]:
    x, y = digits_arrays("test")
    return torch.from_numpy(x[:N]), torch.from_numpy(y[:N])


def _clf(name: str) -> Classifier:
    return Classifier(load_model(ROOT / "sample_models" / f"{name}.pt").module, num_classes=10)


def _robust(res: EngineResult, i: int) -> float:
    return float((res.correct & ~res.cells[i].broken).float().mean())


@pytest.fixture(scope="module")
def plain_linf() -> tuple[list[float], EngineResult]:
    x, y = _data()
    eps = [0.05, 0.1, 0.2, 0.3, 0.5]
    plan = []
    for e in eps:
        plan.append(PlannedAttack(0, FGSM(), Threat("linf", e)))
        plan.append(PlannedAttack(1, PGD(PGDParams(steps=20)), Threat("linf", e)))
    return eps, run_plan(_clf("digits_cnn"), x, y, plan, seed=0, batch_size=256)


def _cell(res: EngineResult, attack: str, eps: float) -> int:
    return next(i for i, c in enumerate(res.cells) if c.attack == attack and c.threat.eps == eps)


def test_clean_accuracy_of_both_models_is_high() -> None:
    x, y = _data()
    for name in ("digits_cnn", "digits_cnn_robust"):
        acc = float((_clf(name).predict(x) == y).float().mean())
        assert acc >= 0.95, f"{name}: clean accuracy {acc:.3f}"


def test_pgd_is_at_least_as_strong_as_fgsm(plain_linf: tuple[list[float], EngineResult]) -> None:
    eps, res = plain_linf
    for e in eps:
        pgd, fgsm = _robust(res, _cell(res, "pgd", e)), _robust(res, _cell(res, "fgsm", e))
        assert pgd <= fgsm + 1e-9, f"eps {e}: PGD {pgd:.3f} > FGSM {fgsm:.3f}"
    # and strictly stronger somewhere: a PGD that silently did one step would tie everywhere
    assert any(
        _robust(res, _cell(res, "pgd", e)) < _robust(res, _cell(res, "fgsm", e)) - 0.01 for e in eps
    )


def test_robust_accuracy_falls_with_eps(plain_linf: tuple[list[float], EngineResult]) -> None:
    eps, res = plain_linf
    accs = [_robust(res, _cell(res, "pgd", e)) for e in eps]
    assert all(a >= b for a, b in itertools.pairwise(accs)), accs
    assert accs[0] > 0.5, "eps 0.05 should leave most samples standing"
    assert accs[-1] <= 0.05, f"Linf 0.5 must break (almost) everything, left {accs[-1]:.3f}"


def test_adversarially_trained_twin_is_clearly_more_robust() -> None:
    x, y = _data()
    for e in (0.1, 0.15, 0.2):
        plan = [PlannedAttack(0, PGD(PGDParams(steps=20, restarts=2)), Threat("linf", e))]
        plain = _robust(run_plan(_clf("digits_cnn"), x, y, plan, seed=0, batch_size=256), 0)
        robust = _robust(run_plan(_clf("digits_cnn_robust"), x, y, plan, seed=0, batch_size=256), 0)
        assert robust >= plain + 0.25, f"eps {e}: robust twin {robust:.3f} vs plain {plain:.3f}"


def test_all_checkpoint_formats_give_the_same_numbers() -> None:
    """TorchScript, torch.export and state_dict+arch of one model must audit identically."""
    x, y = _data()
    plan = [PlannedAttack(0, PGD(PGDParams(steps=5)), Threat("linf", 0.1))]
    results = []
    for fname, arch in (
        ("digits_cnn.pt", None),
        ("digits_cnn.pt2", None),
        ("digits_cnn.state_dict.pt", "robaudit.models.digits:DigitsCNN"),
    ):
        m = load_model(ROOT / "sample_models" / fname, arch=arch).module
        res = run_plan(Classifier(m, num_classes=10), x, y, plan, seed=0, batch_size=64)
        results.append((res.correct.clone(), res.cells[0].broken.clone()))
    for correct, broken in results[1:]:
        assert torch.equal(correct, results[0][0])
        assert torch.equal(broken, results[0][1])


@pytest.mark.peer
@pytest.mark.parametrize("model_name", ["digits_cnn", "digits_cnn_robust"])
@pytest.mark.parametrize(("norm", "eps"), [("linf", 0.1), ("linf", 0.2), ("l2", 1.0)])
def test_pgd_at_least_as_strong_as_torchattacks(model_name: str, norm: str, eps: float) -> None:
    """Same eps, steps and step size: robaudit's robust accuracy is at most 1 point higher.

    Both sides run on the whole 500-image test split, averaged over three seeds, so the
    comparison measures the attacks rather than the luck of one random start.
    """
    torchattacks = pytest.importorskip("torchattacks")
    xs, ys = digits_arrays("test")
    x, y = torch.from_numpy(xs), torch.from_numpy(ys)
    steps, alpha = 20, 2.5 * eps / 20
    clf = _clf(model_name)
    plan = [PlannedAttack(0, PGD(PGDParams(steps=steps, step_size=alpha)), Threat(norm, eps))]
    model = load_model(ROOT / "sample_models" / f"{model_name}.pt").module
    cls = torchattacks.PGD if norm == "linf" else torchattacks.PGDL2
    ours, theirs = [], []
    for seed in range(3):
        ours.append(_robust(run_plan(clf, x, y, plan, seed=seed, batch_size=256), 0))
        torch.manual_seed(seed)
        x_adv = cls(model, eps=eps, alpha=alpha, steps=steps, random_start=True)(x, y)
        delta = (x_adv - x).flatten(1)
        size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
        assert float(size.max()) <= eps + 1e-5
        with torch.no_grad():
            theirs.append(float((model(x_adv).argmax(1) == y).float().mean()))
    mine, peer = sum(ours) / 3, sum(theirs) / 3
    assert mine <= peer + 0.01, f"robaudit {ours} vs torchattacks {theirs}"
