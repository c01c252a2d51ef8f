"""The SNR threat (robaudit.norms.snr): a per-sample L2 ball whose radius comes from each clean
input, where a larger budget in dB is a smaller ball. Checked against its definition and an
analytic oracle (a linear model, where the SNR needed to cross the boundary is known)."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
from torch import nn

from robaudit.attacks.apgd import APGD, APGDParams
from robaudit.attacks.fgsm_pgd import FGSM, PGD, PGDParams
from robaudit.classifier import Classifier
from robaudit.config import config_from_dict
from robaudit.engine import _inherited
from robaudit.errors import ConfigError
from robaudit.fitting import fit_config
from robaudit.norms import get
from robaudit.threat import Threat
from robaudit.verification import verify_batch

SNR = get("snr")


def _snr(x: torch.Tensor, xa: torch.Tensor) -> torch.Tensor:
    """The definition, in float64: 20·log10(‖x‖/‖x_adv − x‖) per sample."""
    x64, d64 = x.double().flatten(1), (xa.double() - x.double()).flatten(1)
    return 20 * torch.log10(x64.norm(dim=1) / d64.norm(dim=1))


def test_radius_is_the_signal_energy_scaled_by_the_budget() -> None:
    x = torch.randn(5, 2, 100, generator=torch.Generator().manual_seed(0)) * 0.1
    r = SNR.radius(x, 30.0)
    want = x.flatten(1).norm(dim=1) * 10 ** (-1.5)
    assert torch.allclose(r, want, rtol=1e-6)
    assert (SNR.radius(x, 40.0) < r).all()  # more dB: a smaller ball


def test_clip_lands_at_or_above_the_budget_in_db_exactly() -> None:
    g = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1, 400, generator=g) * 0.2
    far = x + torch.randn(64, 1, 400, generator=g)  # far louder than the signal
    for db in (40.0, 30.0, 10.0):
        xa = SNR.clip(far, x, db, (-1.0, 1.0))
        assert (_snr(x, xa) >= db).all()
        assert (_snr(x, xa) < db + 1e-3).all()  # on the sphere, not deep inside
        assert torch.allclose(SNR.size(xa - x, x).double(), _snr(x, xa), atol=1e-3)


def test_a_larger_db_is_a_smaller_ball_for_ordering_and_inheritance() -> None:
    quiet, loud = Threat("snr", 40.0), Threat("snr", 30.0)
    assert quiet.within(loud) and not loud.within(quiet)
    assert quiet.ball_size < loud.ball_size
    assert Threat("l2", 0.1).within(Threat("l2", 0.2))  # Lp balls: larger eps, larger ball
    assert not Threat("l2", 0.1).within(loud)  # another family
    broken_at_40 = torch.tensor([True, False, False])
    threats = {quiet.key: quiet, loud.key: loud}
    # a break at 40 dB holds at 30 dB (a larger ball); one at 30 dB says nothing at 40 dB
    assert _inherited({quiet.key: broken_at_40}, threats, loud, 3).tolist() == [1, 0, 0]
    assert not _inherited({loud.key: broken_at_40}, threats, quiet, 3).any()


def test_verify_batch_counts_a_candidate_outside_the_snr_ball_and_reports_db() -> None:
    clf = Classifier(_Linear(torch.ones(1, 50)), num_classes=2, bounds=(-1.0, 1.0))
    x = torch.full((2, 1, 50), 0.1)
    y = torch.zeros(2, dtype=torch.long)
    inside = x - 0.009 * x.abs().amax() * torch.ones_like(x)  # ~21 dB below the signal
    cand = torch.stack([inside[0], -x[1]])  # the second is as loud as twice the signal
    v = verify_batch(clf, x, cand, y, Threat("snr", 20.0))
    assert v.budget == 1
    assert (v.norms >= 20.0).all()  # sizes in dB, every one inside after the projection
    assert abs(float(v.norms[0]) - float(_snr(x[:1], inside[:1])[0])) < 1e-3


class _Linear(nn.Module):
    """Class 0 when w·x > 0: the L2 distance to the boundary is (w·x)/‖w‖."""

    def __init__(self, w: torch.Tensor) -> None:
        super().__init__()
        self.w = nn.Parameter(w.flatten(), requires_grad=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = x.flatten(1) @ self.w
        return torch.stack([s, -s], dim=1)


def _oracle_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Waveforms whose SNR to the boundary ranges from 20 to 40 dB: (x, w, critical dB)."""
    g = torch.Generator().manual_seed(3)
    t = 64
    w = torch.randn(t, generator=g)
    wh = w / w.norm()
    crit = torch.linspace(20, 40, 41)
    dist = 1 / torch.sqrt(10 ** (crit / 10) - 1)  # sqrt(1 + d²)/d = 10^(crit/20)
    v = torch.randn(len(crit), t, generator=g)
    v = v - (v @ wh)[:, None] * wh  # orthogonal to w, unit norm
    v = v / v.norm(dim=1, keepdim=True)
    x = 0.3 * (v + dist[:, None] * wh)  # any scale: the SNR does not change
    return x[:, None, :], w, crit


@pytest.mark.parametrize(
    "attack",
    [FGSM(), PGD(PGDParams(steps=20)), APGD(APGDParams(steps=20))],
    ids=["fgsm", "pgd", "apgd"],
)
def test_attacks_break_exactly_the_samples_whose_snr_ball_reaches_the_boundary(
    attack: Any,
) -> None:
    x, w, crit = _oracle_batch()
    clf = Classifier(_Linear(w), num_classes=2, bounds=(-1.0, 1.0))
    y = torch.zeros(len(crit), dtype=torch.long)
    assert (clf.logits(x).argmax(dim=1) == 0).all()
    threat = Threat("snr", 30.0)
    out = attack.run(clf, x, y, threat, torch.Generator().manual_seed(0))
    # the attack's own candidates respect each sample's radius before the engine projects
    assert (_snr(x, out.x_adv) >= 30.0 - 1e-3).all()
    v = verify_batch(clf, x, out.x_adv, y, threat)
    reachable = crit > 30.0 + 0.5  # the ball crosses the boundary with room to spare
    unreachable = crit < 30.0  # no point of the ball does
    assert v.broken[reachable].all(), crit[reachable & ~v.broken]
    assert not v.broken[unreachable].any()
    assert (v.norms[v.broken] >= 30.0).all()


def _cfg(**attack: Any) -> dict[str, Any]:
    return {
        "version": 1,
        "model": {"input_shape": [1, 400], "num_classes": 3, "bounds": [-1.0, 1.0]},
        "data": {"source": "x.npz", "sample_rate": 8000},
        "attacks": [{"name": "pgd", **attack}],
    }


def test_db_gives_the_snr_budgets_and_threats_sort_smallest_ball_first() -> None:
    cfg = config_from_dict(_cfg(norm="snr", db=[30, 40]))
    assert cfg.attacks[0].eps == [30.0, 40.0]
    assert [t.eps for t in cfg.threats()] == [40.0, 30.0]


@pytest.mark.parametrize(
    ("attack", "message"),
    [
        ({"norm": "linf", "db": [40]}, "db gives snr budgets in dB; with norm 'linf' use eps"),
        ({"norm": "snr", "db": [40], "eps": [30]}, "not both"),
        ({"name": "square", "norm": "snr", "eps": [40]}, "square supports linf, l2, l1, not 'snr'"),
    ],
)
def test_bad_snr_entries_are_one_line_config_errors(attack: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        config_from_dict(_cfg(**attack))
    assert "\n" not in str(err.value)


def test_profile_snr_budgets_are_decibels_and_do_not_scale_with_the_range() -> None:
    raw = _cfg(norm="snr")
    raw["profile"] = "waveform"
    raw["attacks"].append({"name": "pgd", "norm": "linf", "steps": 3})
    cfg, _ = fit_config(config_from_dict(raw))
    assert cfg.attacks[0].eps == [40.0, 30.0]
    assert cfg.attacks[1].eps == [0.002, 0.005]  # Linf scales with the [-1, 1] range
    raw["profile"] = "digits"
    with pytest.raises(ConfigError, match="profile digits has no snr budgets; give eps"):
        fit_config(config_from_dict(raw))


def test_snr_of_silence_is_a_point_ball() -> None:
    x = torch.zeros(1, 1, 10)
    xa = SNR.clip(torch.ones(1, 1, 10), x, 20.0, (-1.0, 1.0))
    assert torch.equal(xa, x)
    assert math.isinf(float(SNR.size(xa - x + 1e-3, x)[0]) * -1)
