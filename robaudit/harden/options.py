"""The hardening run's settings, checked in one place: every bad value is a one-line error
naming the flag and what is valid, raised before anything is loaded or written.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from robaudit import norms
from robaudit.attacks.catalog import CATALOG
from robaudit.config import Config
from robaudit.errors import UserInputError
from robaudit.norms import REGISTRY
from robaudit.threat import Threat, format_eps

# the norms the training attacks (PGD, and TRADES' own steps) have update rules for, whose
# budgets are lengths: L0 counts are audited, not trained; snr's per-sample dB balls not yet
NORMS = tuple(
    n for n in CATALOG["pgd"].norms
    if n in REGISTRY and REGISTRY[n].scales_with_range and not REGISTRY[n].counts
)

# method -> its training stages, in order (distill trains a teacher, then the student)
METHODS: dict[str, tuple[str, ...]] = {
    "pgd-at": ("train",),
    "fast-at": ("train",),
    "trades": ("train",),
    "distill": ("teacher", "student"),
    "mix": ("train",),
}
ADVERSARIAL = ("pgd-at", "fast-at", "trades", "mix")  # methods that attack while training


# per-method defaults, tuned on the digits sample model (benchmarks/harden.py): fine-tuning a
# plain model with Adam; fast-at's rate is the peak of its cycle, distill's epochs are per stage
METHOD_DEFAULTS: dict[str, dict[str, float]] = {
    "pgd-at": {"epochs": 20, "lr": 5e-3},
    "fast-at": {"epochs": 30, "lr": 2e-2},
    "trades": {"epochs": 20, "lr": 5e-3},
    "distill": {"epochs": 5, "lr": 1e-2},
    "mix": {"epochs": 20, "lr": 5e-3},
}


@dataclass(frozen=True)
class HardenOptions:
    """What to train and how. ``None`` means: the config's value or the method's default.

    Training fine-tunes the given model with Adam at a constant rate, the eps ramped up over
    the first ``warmup`` epochs; fast-at ramps the learning rate instead, in one triangular
    cycle (Wong et al. 2020). :data:`METHOD_DEFAULTS` holds each method's epochs and rate.
    """

    method: str = "pgd-at"
    epochs: int | None = None  # per stage (distill: teacher, then student); default per method
    eps: float | None = None  # training budget (pixel units); default: from the config
    norm: str | None = None  # linf or l2; default: from the config
    steps: int = 10  # PGD steps per training batch (pgd-at, mix, trades' KL maximization)
    step_size: float | None = None  # absolute; default 2.5 * eps / steps (Madry et al. 2018)
    lr: float | None = None  # Adam's learning rate (fast-at: the cycle's peak); default per method
    batch_size: int = 64
    beta: float = 6.0  # TRADES: weight of the KL robustness term (Zhang et al. 2019)
    temperature: float = 100.0  # distill: softmax temperature T (Papernot et al. 2016)
    mix_ratio: float = 0.5  # mix: share of each batch replaced by adversarial examples
    holdout: float = 0.1  # share of the training data held out for model selection
    patience: int | None = None  # stop after this many epochs without a better held-out epoch
    warmup: int | None = None  # epochs over which eps ramps up; default: epochs // 3 (0 fast-at)
    eval_steps: int = 10  # PGD steps of the per-epoch held-out check
    train_samples: int | None = None  # a seeded subset of the training data

    @property
    def stages(self) -> tuple[str, ...]:
        return METHODS[self.method]

    @property
    def num_epochs(self) -> int:
        """Epochs per stage: ``epochs`` or the method's default."""
        return self.epochs if self.epochs is not None else int(METHOD_DEFAULTS[self.method]["epochs"])

    @property
    def learning_rate(self) -> float:
        """``lr`` or the method's default."""
        return self.lr if self.lr is not None else METHOD_DEFAULTS[self.method]["lr"]

    @property
    def total_epochs(self) -> int:
        """Epochs over all stages (distill: teacher and student epochs)."""
        return self.num_epochs * len(self.stages)

    def warmup_epochs(self) -> int:
        """Epochs of the eps ramp: 0 for fast-at (its learning-rate cycle is the warm-up)."""
        if self.warmup is not None:
            return self.warmup
        return 0 if self.method in ("fast-at", "distill") else self.num_epochs // 3

    def step_for(self, eps: float) -> float:
        """The absolute PGD step at ``eps`` (Madry's 2.5 * eps / steps unless given)."""
        return self.step_size if self.step_size is not None else 2.5 * eps / self.steps

    def resolved(self) -> HardenOptions:
        """The same options with every method default filled in (what a run records)."""
        return replace(
            self, epochs=self.num_epochs, lr=self.learning_rate, warmup=self.warmup_epochs()
        )

    def fingerprint(self) -> dict[str, Any]:
        """Every setting that changes the trained weights (a resumed run must match it)."""
        return asdict(self.resolved())


def check_options(opts: HardenOptions) -> None:
    """Raise a one-line UserInputError for the first bad value, named as its CLI flag."""
    if opts.method not in METHODS:
        raise UserInputError(f"--method {opts.method!r}: valid methods are {', '.join(METHODS)}")
    if opts.epochs is not None:
        _int_at_least("--epochs", opts.epochs, 1)
    _int_at_least("--steps", opts.steps, 1)
    _int_at_least("--eval-steps", opts.eval_steps, 1)
    _int_at_least("--batch-size", opts.batch_size, 1)
    if opts.patience is not None:
        _int_at_least("--patience", opts.patience, 1)
    if opts.warmup is not None:
        _int_at_least("--warmup", opts.warmup, 0)
        if opts.warmup > opts.num_epochs:
            raise UserInputError(
                f"--warmup {opts.warmup}: at most --epochs ({opts.num_epochs}) epochs of eps ramp-up"
            )
    if opts.train_samples is not None:
        _int_at_least("--train-samples", opts.train_samples, 2)
    if opts.norm is not None and opts.norm not in NORMS:
        raise UserInputError(f"--norm {opts.norm!r}: valid norms are {', '.join(NORMS)}")
    _positive("--eps", opts.eps)
    _positive("--step-size", opts.step_size)
    _positive("--lr", opts.lr)
    _positive("--temperature", opts.temperature)
    if not (math.isfinite(opts.beta) and opts.beta >= 0):
        raise UserInputError(f"--beta {opts.beta}: give a finite number >= 0 (TRADES weight)")
    if not (0.0 <= opts.mix_ratio <= 1.0):
        raise UserInputError(
            f"--mix-ratio {opts.mix_ratio}: give the adversarial share of a batch, in [0, 1]"
        )
    if not (0.0 < opts.holdout <= 0.5):
        raise UserInputError(
            f"--holdout {opts.holdout}: give the held-out share of the training data, in (0, 0.5]"
        )


def _int_at_least(flag: str, value: int, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise UserInputError(f"{flag} {value!r}: give a whole number >= {low}")


def _positive(flag: str, value: float | None) -> None:
    if value is not None and not (math.isfinite(value) and value > 0):
        raise UserInputError(f"{flag} {value}: give a finite number > 0")


def training_threat(cfg: Config, opts: HardenOptions) -> Threat:
    """The threat to train against: ``--eps``/``--norm``, else the config's.

    The config's threat (at ``--norm`` when given) is its first white-box gate threshold on the
    bare model (the threat the user gates on), else the first eps of its first white-box
    gradient attack entry.
    """
    norm = opts.norm
    eps = opts.eps
    if eps is None or norm is None:
        default = _config_threat(cfg, norm)
        if default is None:
            what = f"white-box {norm} threat" if norm else "white-box threat"
            flag = "--eps" if norm else "--norm"
            raise UserInputError(f"{flag}: the config has no {what} to train against; give --norm and --eps")
        norm = norm or default.norm
        eps = eps if eps is not None else default.eps
    lo, hi = cfg.model.bounds
    limit = norms.get(norm).covering_radius(hi - lo, math.prod(cfg.model.shape))  # any rank
    if not 0 < eps <= limit:
        raise UserInputError(
            f"--eps {eps:g}: a {norm} budget must be > 0 and at most {limit:g} "
            f"(the whole input range for bounds {list(cfg.model.bounds)})"
        )
    return Threat(norm, float(eps), "white-box", format_eps(float(eps)))


def _config_threat(cfg: Config, norm: str | None) -> Threat | None:
    from robaudit.attacks.base import registry

    for g in cfg.gate.min_robust_accuracy:
        if g.norm not in NORMS:  # no training attack at this norm: not the default
            continue
        if g.access == "white-box" and g.variant == "model" and norm in (None, g.norm):
            return Threat(g.norm, g.budget)
    reg = registry()
    for spec in cfg.attacks:
        if spec.norm not in NORMS:
            continue
        if spec.access != "white-box" or norm not in (None, spec.norm) or not spec.eps:
            continue
        if spec.norm not in NORMS:
            continue
        if any(reg[m].requires == "gradients" for m, _ in spec.members()):
            return Threat(spec.norm, spec.eps[0])
    return None


def option_names() -> list[str]:
    """Field names, for error messages that list what a resumed run disagrees on."""
    return [f.name for f in fields(HardenOptions)]
