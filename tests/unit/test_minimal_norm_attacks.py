"""C&W L2 and DeepFool: minimal-norm attacks on models whose exact answer is known.

On a multi-class affine model the smallest perturbation that changes the label is
``min_k |z_k − z_y| / ‖w_k − w_y‖_dual``; DeepFool reaches it in one step (up to its
overshoot) and C&W's optimizer gets within a few percent. The tests also pin down the
protocol: eps is not a cap, nothing found means the clean input back, one backward per
candidate class, batch composition does not change a sample's answer.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import torch
from pydantic import ValidationError

from robaudit.attacks.base import Attack, param_table, registry
from robaudit.attacks.cw import CarliniWagnerL2, CWParams
from robaudit.attacks.deepfool import DeepFool, DeepFoolParams
from robaudit.attacks.losses import margin
from robaudit.attacks.projections import flat_norm
from robaudit.classifier import Classifier
from robaudit.models.digits import DigitsCNN
from robaudit.threat import Threat
from tests.helpers import Affine, one_thread

INF = Threat("l2", float("inf"), label="inf")
C, D = 10, 16
FAST_CW = CWParams(steps=60, binary_search_steps=6, initial_const=0.1, lr=0.05)


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


def _affine(n: int = 32) -> tuple[Classifier, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    model = Affine(torch.randn(D, C, generator=g), 0.3 * torch.randn(C, generator=g))
    x = 0.5 + 0.05 * torch.randn(n, 1, 4, 4, generator=g)  # away from the box's faces
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    return Classifier(model, num_classes=C), x, y


def _exact_distance(clf: Classifier, x: torch.Tensor, y: torch.Tensor, norm: str) -> torch.Tensor:
    """Distance to the nearest decision boundary of the affine model (no box in reach)."""
    model = clf.model
    assert isinstance(model, Affine)
    with torch.no_grad():
        z = model(x)
    gaps = (z.gather(1, y[:, None]) - z).abs()  # N×C, |z_y − z_k|
    dirs = model.w.T[None] - model.w.T[y][:, None]  # N×C×D, w_k − w_y
    dual = dirs.norm(dim=2) if norm == "l2" else dirs.abs().sum(dim=2)
    dist = gaps / dual
    dist[torch.arange(x.shape[0]), y] = float("inf")
    return dist.amin(dim=1)


def _fooled(clf: Classifier, xa: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return clf.model(xa).argmax(dim=1) != y


def test_both_are_registered_as_minimal_norm_with_documented_params() -> None:
    reg = registry()
    assert reg["cw"] is CarliniWagnerL2 and reg["deepfool"] is DeepFool
    assert CarliniWagnerL2.minimal_norm and DeepFool.minimal_norm
    assert CarliniWagnerL2.norms == ("l2",)
    assert set(DeepFool.norms) == {"l2", "linf"}
    for cls in (CarliniWagnerL2, DeepFool):
        rows = param_table(cls)
        assert rows and all(r["description"] for r in rows), cls.name
        assert "eps_cap" not in {r["name"] for r in rows}
    assert CarliniWagnerL2(CWParams(steps=7, binary_search_steps=3)).cost() == 21
    assert DeepFool().cost() > 0


@pytest.mark.parametrize(
    ("params", "values"),
    [
        (CWParams, {"steps": 0}),
        (CWParams, {"initial_const": 0}),
        (CWParams, {"kappa": -1}),
        (CWParams, {"eps_cap": True}),
        (DeepFoolParams, {"candidates": 1}),
        (DeepFoolParams, {"overshoot": -0.1}),
        (DeepFoolParams, {"step": 3}),
    ],
)
def test_bad_parameters_are_rejected(params: type, values: dict) -> None:
    with pytest.raises(ValidationError):
        params(**values)


def test_cw_refuses_linf() -> None:
    clf, x, y = _affine(4)
    with pytest.raises(ValueError, match="l2"):
        CarliniWagnerL2().run(clf, x, y, Threat("linf", 0.1), torch.Generator())


@pytest.mark.parametrize("norm", ["l2", "linf"])
def test_deepfool_is_exact_on_a_multiclass_affine_model(norm: str) -> None:
    clf, x, y = _affine()
    dist = _exact_distance(clf, x, y, norm)
    threat = Threat(norm, float("inf"), label="inf")
    xa = DeepFool().run(clf, x, y, threat, torch.Generator()).x_adv
    assert _fooled(clf, xa, y).all()
    ratio = flat_norm(xa - x, norm) / dist
    # one step onto the closest boundary, scaled by 1 + overshoot (0.02)
    assert float(ratio.min()) >= 1.0 and float(ratio.max()) <= 1.025, ratio


def test_cw_gets_close_to_the_exact_distance_on_a_multiclass_affine_model() -> None:
    clf, x, y = _affine()
    dist = _exact_distance(clf, x, y, "l2")
    xa = CarliniWagnerL2(FAST_CW).run(clf, x, y, INF, torch.Generator()).x_adv
    assert _fooled(clf, xa, y).all()
    ratio = flat_norm(xa - x, "l2") / dist
    assert float(ratio.min()) >= 1.0 - 1e-5 and float(ratio.max()) <= 1.05, ratio


def test_cw_confidence_kappa_is_honoured() -> None:
    clf, x, y = _affine(16)
    plain = CarliniWagnerL2(FAST_CW).run(clf, x, y, INF, torch.Generator()).x_adv
    params = FAST_CW.model_copy(update={"kappa": 1.0})
    conf = CarliniWagnerL2(params).run(clf, x, y, INF, torch.Generator()).x_adv
    with torch.no_grad():
        m = margin(clf.model(conf), y)
    assert float(m.min()) >= 1.0 - 1e-4, "every returned point wins by at least kappa"
    assert bool((flat_norm(conf - x, "l2") > flat_norm(plain - x, "l2")).all())


@pytest.mark.parametrize("attack", [CarliniWagnerL2(FAST_CW), DeepFool()], ids=["cw", "deepfool"])
def test_eps_is_not_a_cap(attack: Attack) -> None:
    """The answer is the same whatever budget is asked about, and may lie beyond it."""
    clf, x, y = _affine(8)
    small = attack.run(clf, x, y, Threat("l2", 0.01), torch.Generator()).x_adv
    unbounded = attack.run(clf, x, y, INF, torch.Generator()).x_adv
    assert torch.equal(small, unbounded)
    assert float(flat_norm(small - x, "l2").min()) > 0.01


@pytest.mark.parametrize("attack", [CarliniWagnerL2(FAST_CW), DeepFool()], ids=["cw", "deepfool"])
def test_nothing_found_gives_the_clean_input_back(attack: Attack) -> None:
    """A model with zero gradients everywhere: no attack can move, the clean input returns."""
    model = Affine(torch.zeros(D, C), torch.arange(C, dtype=torch.float32))
    clf = Classifier(model, num_classes=C)
    x = torch.rand(6, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.full((6,), C - 1)
    xa = attack.run(clf, x, y, INF, torch.Generator()).x_adv
    assert torch.equal(xa, x)


def test_deepfool_leaves_misclassified_inputs_alone() -> None:
    clf, x, y = _affine(8)
    wrong = y.clone()
    wrong[:3] = (y[:3] + 1) % C  # labels the model disagrees with: already "fooled"
    xa = DeepFool().run(clf, x, wrong, INF, torch.Generator()).x_adv
    assert torch.equal(xa[:3], x[:3])
    assert bool((flat_norm(xa[3:] - x[3:], "l2") > 0).all())


@pytest.mark.parametrize("candidates", [2, 4, 10])
def test_deepfool_takes_one_backward_per_candidate_class(candidates: int) -> None:
    """On an affine model one step suffices: (candidates − 1) backward passes per sample,
    then one more whose logits show every sample fooled."""
    clf, x, y = _affine(16)
    n = x.shape[0]
    attack = DeepFool(DeepFoolParams(candidates=candidates))
    xa = attack.run(clf, x, y, INF, torch.Generator()).x_adv
    assert _fooled(clf, xa, y).all()
    assert clf.counters.grad_evals == n * (candidates - 1) + n


@pytest.mark.parametrize(
    "attack",
    [CarliniWagnerL2(CWParams(steps=20, binary_search_steps=3, initial_const=1.0)), DeepFool()],
    ids=["cw", "deepfool"],
)
def test_a_sample_answer_does_not_depend_on_its_batch(attack: Attack) -> None:
    """Per-sample early stopping must keep each sample's rows together when compacting."""
    torch.manual_seed(0)
    model = DigitsCNN().eval()
    x = torch.rand(12, 1, 8, 8)
    with torch.no_grad():
        y = model(x).argmax(dim=1)
    clf = Classifier(model, num_classes=10)
    perm = torch.randperm(12)
    whole = attack.run(clf, x, y, INF, torch.Generator()).x_adv
    shuffled = attack.run(clf, x[perm], y[perm], INF, torch.Generator()).x_adv
    half = attack.run(clf, x[:5], y[:5], INF, torch.Generator()).x_adv
    torch.testing.assert_close(shuffled, whole[perm], atol=1e-5, rtol=0)
    torch.testing.assert_close(half, whole[:5], atol=1e-5, rtol=0)
