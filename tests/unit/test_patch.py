"""The patch threat (robaudit/norms/patch.py) and its attacks: the region's size and place,
the engine's check that changes stay inside one region, and patch-pgd / patch-rs really
fooling the plain sample model with verified, in-region candidates."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from robaudit.attacks.base import get_attack
from robaudit.attacks.patch_pgd import PatchPGD, PatchPGDParams
from robaudit.attacks.patch_rs import PatchRS, PatchRSParams
from robaudit.classifier import Classifier
from robaudit.engine import PlannedAttack, run_plan
from robaudit.loading.data import digits_arrays
from robaudit.loading.model import load_model
from robaudit.norms import get
from robaudit.norms.patch import location_name, region_dims
from robaudit.threat import Threat
from robaudit.verification import verify_batch
from tests.helpers import RowCounter, one_thread

ROOT = Path(__file__).resolve().parents[2]
N = 100


@pytest.fixture(autouse=True, scope="module")
def _one_thread() -> Iterator[None]:
    yield from one_thread()


@pytest.fixture(scope="module")
def plain() -> tuple[torch.nn.Module, torch.Tensor, torch.Tensor]:
    model = load_model(ROOT / "sample_models" / "digits_cnn.pt").module.eval()
    x, y = digits_arrays("test")
    return model, torch.from_numpy(x[:N].copy()), torch.from_numpy(y[:N].copy())


def test_region_sides_round_the_share_to_whole_pixels() -> None:
    assert [region_dims(e, 8, 8) for e in (0.0, 0.01, 0.05, 0.1, 1.0)] == [
        (0, 0), (1, 1), (2, 2), (3, 3), (8, 8),
    ]  # fmt: skip
    assert region_dims(0.1, 4, 16) == (1, 5)  # the image's aspect ratio
    assert region_dims(0.05, 224, 224) == (50, 50)


def test_names_carry_the_location() -> None:
    assert location_name("anywhere") == "patch" and location_name("center") == "patch@center"
    assert location_name([2, 3]) == "patch@2,3" and get("patch@2,3").location == (2, 3)
    assert Threat("patch@center", 0.05, label="5%").key == "white-box/patch@center/5%"
    for bad in ("top", [1], [-1, 2], [1.5, 2]):
        with pytest.raises(ValueError, match="anywhere, center or"):
            location_name(bad)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="patch@ROW,COL"):
        get("patch@x")


def _block(top: int, left: int, h: int, w: int) -> torch.Tensor:
    d = torch.zeros(1, 3, 8, 8)
    d[0, 1, top : top + h, left : left + w] = 0.5
    return d


def test_measure_is_the_smallest_budget_whose_region_holds_the_changes() -> None:
    anywhere, center, fixed = get("patch"), get("patch@center"), get("patch@1,1")
    d = _block(5, 5, 3, 3)  # a 3x3 block in the corner
    assert float(anywhere.measure(d)) <= 0.1 < float(anywhere.measure(_block(0, 0, 3, 4)))
    assert float(anywhere.measure(d)) > 0.05  # 5% is a 2x2 region
    assert float(center.measure(d)) > 0.5  # the centred region must grow to reach the corner
    assert float(fixed.measure(_block(1, 1, 3, 3))) <= 0.1
    assert float(fixed.measure(_block(0, 1, 1, 1))) == float("inf")  # above the fixed corner
    assert float(anywhere.measure(torch.zeros(1, 3, 8, 8))) == 0.0
    tiny = _block(0, 0, 8, 8) * 1e-8  # below the change tolerance: nothing changed
    assert float(anywhere.measure(tiny)) == 0.0


def test_projection_keeps_the_strongest_window_and_the_fixed_region() -> None:
    d = _block(5, 5, 3, 3) + _block(0, 0, 1, 1) * 0.1
    p = get("patch").project(d, 0.1)
    assert torch.equal(p, _block(5, 5, 3, 3))  # the weak far pixel goes, the block stays
    c = get("patch@center").project(torch.ones(2, 1, 8, 8), 0.1)
    assert torch.equal(c[0, 0].nonzero().amin(0), torch.tensor([2, 2]))
    assert int(c[0].count_nonzero()) == 9


def test_engine_counts_and_projects_changes_outside_the_region(plain: tuple) -> None:
    """A candidate that swaps in a whole other image fools the model but breaks the budget: the
    engine counts it and judges only its projection onto one 2x2 region."""
    model, x, y = plain
    clf = Classifier(model, num_classes=10)
    other = x.roll(1, dims=0)  # another digit's image
    threat = Threat("patch", 0.05)
    v = verify_batch(clf, x, other, y, threat)
    outside = get("patch").measure(other - x) > 0.05
    assert v.budget == int(outside.sum()) > 0.9 * N
    assert bool((v.norms <= 0.05 + 1e-6).all())
    dims = region_dims(0.05, 8, 8)
    for i in range(N):
        rows, cols = (v.x_adv[i] != x[i]).any(0).nonzero(as_tuple=True)
        if rows.numel():
            assert int(rows.max() - rows.min()) < dims[0] and int(cols.max() - cols.min()) < dims[1]
    with torch.no_grad():
        fresh = model(v.x_adv).argmax(1) != y
    assert torch.equal(v.broken, fresh)  # judged as projected, never as returned
    assert int(v.broken.sum()) < int((model(other).argmax(1) != y).sum())


def test_rows_declare_patch_images_and_access() -> None:
    pgd, rs = get_attack("patch-pgd"), get_attack("patch-rs")
    assert pgd.norms == rs.norms == ("patch",) and pgd.needs_image and rs.needs_image
    assert pgd.requires == "gradients" and rs.requires == "scores"


@pytest.mark.parametrize("name", ["patch-pgd", "patch-rs"])
@pytest.mark.parametrize("norm", ["patch", "patch@center"])
def test_attacks_fool_the_plain_model_inside_the_region(name: str, norm: str, plain: tuple) -> None:
    model, x, y = plain
    counted = RowCounter(model)
    clf = Classifier(counted, num_classes=10)
    attack = PatchPGD(PatchPGDParams(steps=30)) if name == "patch-pgd" else (
        PatchRS(PatchRSParams(queries=300)))  # fmt: skip
    threat = Threat(norm, 0.1, "white-box" if name == "patch-pgd" else "score")
    res = run_plan(clf, x, y, [PlannedAttack(0, attack, threat)], seed=0, batch_size=N)
    cell = res.cells[0]
    assert cell.budget_violations == 0 and cell.bounds_violations == 0
    # measured: anywhere 0-1% and centred 4-5% of the 100 samples left standing
    assert float((res.correct & ~cell.broken).float().mean()) <= 0.10
    if name == "patch-rs":
        assert cell.query_mismatch == 0 and cell.sample_queries is not None
    out = attack.run(clf if name == "patch-pgd" else clf.restricted("score"), x, y, threat,
                     torch.Generator().manual_seed(0))  # fmt: skip
    assert bool((get(norm).measure(out.x_adv - x) <= 0.1).all())  # in the region unprojected


def test_fixed_place_is_respected_unprojected(plain: tuple) -> None:
    model, x, y = plain
    clf = Classifier(model, num_classes=10)
    for attack in (PatchPGD(PatchPGDParams(steps=10)), PatchRS(PatchRSParams(queries=50))):
        out = attack.run(clf, x, y, Threat("patch@4,1", 0.1), torch.Generator().manual_seed(0))
        changed = (out.x_adv != x).any(1).any(0)
        outside = changed.clone()
        outside[4:7, 1:4] = False
        assert changed.any() and not outside.any()


def test_patch_rs_counts_every_query(plain: tuple) -> None:
    model, x, y = plain
    counted = RowCounter(model)
    clf = Classifier(counted, num_classes=10).restricted("score")
    out = PatchRS(PatchRSParams(queries=80, restarts=2)).run(
        clf, x, y, Threat("patch", 0.05, "score"), torch.Generator().manual_seed(3)
    )
    assert out.queries is not None and int(out.queries.sum()) == counted.rows
    assert int(out.queries.max()) <= 80
    fooled = model(out.x_adv).argmax(1) != y
    assert bool((out.queries[~fooled] == 80).all())  # the unfooled used the whole budget


def test_one_pixel_patch_meets_the_exhaustive_oracle(plain: tuple) -> None:
    """1% of 8x8 is one pixel: all 64 places x 17 values give the true robust accuracy up to
    the grid; both patch attacks together land within 3 samples of it."""
    model, x, y = plain
    vals = torch.linspace(0, 1, 17)
    broken = torch.zeros(N, dtype=torch.bool)
    with torch.no_grad():
        for p in range(64):
            xs = x.repeat(17, 1, 1, 1)
            xs[:, 0, p // 8, p % 8] = vals.repeat_interleave(N)
            broken |= (model(xs).argmax(1).view(17, N) != y).any(0)
    correct = model(x).argmax(1) == y
    oracle = int((correct & ~broken).sum())
    clf = Classifier(model, num_classes=10)
    plan = [PlannedAttack(0, PatchPGD(PatchPGDParams(steps=30, locations=64)), Threat("patch", 0.01)),
            PlannedAttack(1, PatchRS(PatchRSParams(queries=300)), Threat("patch", 0.01, "score"))]  # fmt: skip
    res = run_plan(clf, x, y, plan, seed=0, batch_size=N)
    ours = int((res.correct & ~(res.cells[0].broken | res.cells[1].broken)).sum())
    assert oracle - 2 <= ours <= oracle + 3, (ours, oracle)


def test_a_patch_covering_everything_breaks_almost_everything(plain: tuple) -> None:
    """The sanity check's "unbounded" patch: the whole image is the region."""
    model, x, y = plain
    clf = Classifier(model, num_classes=10)
    assert get("patch").covering_radius(1.0, 64) == 1.0
    threat = Threat("patch", get("patch").covering_radius(1.0, 64))
    res = run_plan(clf, x, y, [PlannedAttack(0, PatchPGD(PatchPGDParams(steps=10)), threat)],
                   seed=0, batch_size=N)  # fmt: skip
    assert int((res.correct & ~res.cells[0].broken).sum()) == 0


@pytest.mark.parametrize("attack", [PatchRS(PatchRSParams(queries=60)), PatchPGD(PatchPGDParams(steps=5))])
def test_a_fixed_region_at_the_edge_is_cut_there(attack: object, plain: tuple) -> None:
    """patch@6,6 at 10% (3x3) on 8x8 images: the region is cut to 2x2 at the image's edge; both
    attacks search inside it (no index past the image) and stay inside the budget."""
    model, x, y = plain
    clf = Classifier(model, num_classes=10)
    threat = Threat("patch@6,6", 0.1)
    out = attack.run(clf, x[:20], y[:20], threat, torch.Generator().manual_seed(0))  # type: ignore[attr-defined]
    v = verify_batch(clf, x[:20], out.x_adv, y[:20], threat)
    assert v.budget == 0 and v.bounds == 0
    changed = (out.x_adv - x[:20]).abs().sum(dim=1) > 0
    assert not bool(changed[:, :6, :].any()) and not bool(changed[:, :, :6].any())
