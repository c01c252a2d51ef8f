"""The catalogue of the built-in attacks: what each one is, in one table.

One row per attack: its name, a one-line summary, the paper, the norms it supports, the access
it needs, how strong and how costly it is. :func:`robaudit.attacks.base.register` copies a row
onto its class, so ``cls.norms``, ``cls.requires`` and the rest read the same for every reader
(the config checks, the engine, the reports, ``robaudit attacks``), while the attack modules
hold only the algorithms.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class AttackInfo:
    """What the rest of robaudit knows about an attack without running it."""

    name: str
    summary: str
    paper: str
    # cheap first in a cascade; lower runs earlier
    cost_rank: int = 50
    norms: tuple[str, ...] = ("linf", "l2")
    # the query access it needs: "gradients" | "scores" | "labels"
    requires: str = "gradients"
    # "strong" (multi-step, optimized), "weak" (single step) or "baseline" (noise): a weak attack
    # breaking what strong ones missed is a sign of gradient masking (finding RA007)
    strength: str = "strong"
    # minimal-norm attacks return the smallest breaking perturbation, whatever its size; the
    # engine runs them once per norm and derives every eps from the verified norms
    minimal_norm: bool = False
    # parts that only make sense on C x H x W images say so; the config refuses them elsewhere
    needs_image: bool = False
    # False for an attack that does not search (the noise baseline draws at random): it is no
    # query-based black-box attack, so the report leaves it out of the black-box queries section
    search: bool = True
    # projects its iterates onto the active tabular feasible set itself
    # (robaudit.attacks.feasible); the engine repairs the others' candidates once, at the end
    constrained: bool = False


_ROWS: tuple[AttackInfo, ...] = (
    AttackInfo(
        name="noise",
        summary="Random noise at the full budget (baseline, not an attack)",
        paper="baseline (Carlini et al. 2019, 'On Evaluating Adversarial Robustness')",
        cost_rank=0,
        requires="labels",
        strength="baseline",
        search=False,  # random draws, not a query-based search
    ),
    AttackInfo(
        name="fgsm",
        summary="Fast Gradient Sign Method: one gradient step of size eps",
        paper="Goodfellow, Shlens & Szegedy 2015",
        cost_rank=1,
        strength="weak",
    ),
    AttackInfo(
        name="transfer",
        summary="Transfer from a surrogate model: white-box on the surrogate, no target queries",
        paper="Papernot et al. 2017, 'Practical Black-Box Attacks against Machine Learning'",
        cost_rank=5,
        requires="labels",
    ),
    AttackInfo(
        name="pgd",
        summary="Projected Gradient Descent with random restarts and per-sample early stopping",
        paper="Madry, Makelov, Schmidt, Tsipras & Vladu 2018",
        cost_rank=10,
        constrained=True,
    ),
    AttackInfo(
        name="apgd",
        summary="Auto-PGD: PGD with adaptive step size and momentum (ce or dlr loss)",
        paper="Croce & Hein 2020",
        cost_rank=20,
        constrained=True,
        norms=("linf", "l2", "l1"),  # L1: l1-APGD's rules (Croce & Hein 2021)
    ),
    AttackInfo(
        name="apgd-t",
        summary="Targeted Auto-PGD (targeted DLR loss) against the top-k most likely wrong classes",
        paper="Croce & Hein 2020",
        cost_rank=30,
        constrained=True,
        norms=("linf", "l2", "l1"),  # L1: l1-APGD's rules (Croce & Hein 2021)
    ),
    AttackInfo(
        name="deepfool",
        summary="DeepFool: minimal-norm attack stepping onto the closest linearized boundary",
        paper="Moosavi-Dezfooli, Fawzi & Frossard 2016",
        cost_rank=30,
        minimal_norm=True,
    ),
    AttackInfo(
        name="simba",
        summary="SimBA: score-based greedy search over random pixel or low-frequency DCT directions",
        paper="Guo, Gardner, You, Wilson & Weinberger 2019, 'Simple Black-box Adversarial Attacks'",
        cost_rank=60,
        requires="scores",
    ),
    AttackInfo(
        name="square",
        summary="Square Attack: score-based random search over square patches (black-box)",
        paper="Andriushchenko, Croce, Flammarion & Hein 2020",
        cost_rank=60,
        norms=("linf", "l2", "l1"),
        requires="scores",
        needs_image=True,  # square windows of pixels
    ),
    AttackInfo(
        name="constrained-search",
        summary="Score-based random search over the mutable features, typed moves repaired "
        "onto the feature constraints (tabular, gradient-free)",
        paper="in the spirit of Square (Andriushchenko et al. 2020) and MOEVA (Simonetto et al. "
        "2022)",
        cost_rank=60,
        requires="scores",
        constrained=True,
    ),
    AttackInfo(
        name="fab",
        summary="FAB: minimal-norm attack tracking the closest linearized boundary (all classes)",
        paper="Croce & Hein 2020",
        cost_rank=70,
        norms=("linf", "l2", "l1"),
        minimal_norm=True,
    ),
    AttackInfo(
        name="fab-t",
        summary="Targeted FAB: one minimal-norm run per top-k wrong class, smallest kept",
        paper="Croce & Hein 2020",
        cost_rank=75,
        norms=("linf", "l2", "l1"),
        minimal_norm=True,
    ),
    AttackInfo(
        name="hopskipjump",
        summary="HopSkipJump: decision-based minimal-norm attack from top-1 labels only",
        paper="Chen, Jordan & Wainwright 2020, 'HopSkipJumpAttack: a query-efficient decision-based attack'",
        cost_rank=70,
        requires="labels",
        minimal_norm=True,
    ),
    AttackInfo(
        name="cw",
        summary="Carlini & Wagner L2: minimal-norm attack (tanh box, Adam, binary search over c)",
        paper="Carlini & Wagner 2017",
        cost_rank=80,
        norms=("l2",),
        minimal_norm=True,
    ),
    AttackInfo(
        name="patch-pgd",
        summary="Patch PGD: sign-gradient ascent on a patch's content after a search over places",
        paper="Brown et al. 2017 ('Adversarial Patch'); Karmon, Zoran & Goldberg 2018 (LaVAN)",
        cost_rank=35,
        norms=("patch",),
        needs_image=True,  # a rectangle of pixels
    ),
    AttackInfo(
        name="patch-rs",
        summary="Sparse-RS patches: score-based random search over a patch's place and content",
        paper="Croce, Andriushchenko, Singh, Flammarion & Hein 2022 (Sparse-RS, AAAI)",
        cost_rank=62,
        norms=("patch",),
        requires="scores",
        needs_image=True,
    ),
    AttackInfo(
        name="ead",
        summary="EAD (elastic-net C&W): minimal-norm L1 attack (FISTA with L1 shrinkage, binary search over c)",
        paper="Chen, Sharma, Zhang, Yi & Hsieh 2018, 'EAD: Elastic-Net Attacks to Deep Neural Networks'",
        cost_rank=80,
        norms=("l1",),
        minimal_norm=True,
    ),
)

# L0 (issue 16): counted in pixels ("l0") or single numbers ("l0-feature")
_L0 = ("l0", "l0-feature")
_ROWS += (
    AttackInfo(
        name="pgd-l0",
        summary="PGD-L0: L1-normalized gradient steps projected onto the L0 ball ∩ box",
        paper="Croce & Hein 2019, 'Sparse and Imperceivable Adversarial Attacks' (ICCV)",
        cost_rank=15,
        norms=_L0,
    ),
    AttackInfo(
        name="sigma-zero",
        summary="σ-zero: minimal-L0 attack on a smooth L0 approximation with an adaptive "
        "sparsity threshold",
        paper="Cinà, Villani, Pintor, Schönherr, Biggio & Pelillo 2025, 'σ-zero: Gradient-based "
        "Optimization of ℓ0-norm Adversarial Examples' (ICLR)",
        cost_rank=40,
        norms=_L0,
        minimal_norm=True,
    ),
    AttackInfo(
        name="sparse-rs",
        summary="Sparse-RS: score-based random search over which pixels to change (L0)",
        paper="Croce, Andriushchenko, Singh, Flammarion & Hein 2022, 'Sparse-RS: a versatile "
        "framework for query-efficient sparse black-box adversarial attacks' (AAAI)",
        cost_rank=60,
        norms=_L0,
        requires="scores",
    ),
)

# the rows by attack name, cheapest first
CATALOG: dict[str, AttackInfo] = {row.name: row for row in _ROWS}

# the attacks that also run at snr (audio budgets in dB): they scale steps and starts by the
# per-sample L2 radius the snr norm derives from each clean input (robaudit.norms.snr)
SNR_ATTACKS = ("noise", "fgsm", "pgd", "apgd", "apgd-t")
CATALOG = {
    n: replace(r, norms=(*r.norms, "snr")) if n in SNR_ATTACKS else r for n, r in CATALOG.items()
}
