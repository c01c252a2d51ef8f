"""One function per hardening method: the loss of one training batch.

Training examples come from robaudit's own attacks (:class:`robaudit.attacks.fgsm_pgd.PGD`
through the :class:`robaudit.classifier.Classifier` wrapper, the same code the audit runs),
searched with the model in eval mode; the loss is then taken in train mode.

- ``pgd-at``: Madry, Makelov, Schmidt, Tsipras & Vladu 2018, cross-entropy on PGD examples.
- ``fast-at``: Wong, Rice & Kolter 2020, "Fast is better than free": one FGSM step of
  1.25 * eps from a uniform random start (PGD with one step), with a cyclic learning rate.
- ``trades``: Zhang, Yu, Jiao, Xing, El Ghaoui & Jordan 2019: CE(f(x), y) + beta *
  KL(f(x) || f(x')), x' maximizing that KL inside the ball.
- ``distill``: Papernot, McDaniel, Wu, Jha & Swami 2016: a teacher trained at temperature
  T, then a student of the same architecture trained on the teacher's soft labels at T and
  deployed at T = 1 (its logits grow ~T-fold: softmax saturates, cross-entropy gradients
  vanish; a margin-loss attack is unaffected, Carlini & Wagner 2017).
- ``mix``: Goodfellow, Shlens & Szegedy 2015's clean + adversarial batches, with a
  configurable share of adversarial examples per batch.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.attacks.projections import clip_to_ball, steepest_direction
from robaudit.classifier import Classifier
from robaudit.harden.options import HardenOptions
from robaudit.threat import Threat

TRADES_INIT = 0.001  # std of TRADES' Gaussian start (Zhang et al.'s reference code)
FAST_AT_STEP = 1.25  # FGSM step of fast-at, as a multiple of eps (Wong et al. 2020)


@dataclass(frozen=True)
class BatchOutcome:
    """The loss to minimise (with gradients) and the batch accuracies for the log."""

    loss: torch.Tensor
    n: int
    clean_correct: int
    n_adv: int  # adversarial examples in the batch (0: the method trains on none)
    adv_correct: int


@dataclass
class BatchContext:
    """What a method sees for one batch.

    ``net`` maps pixel-space inputs to logits (the model with its preprocessing); ``clf``
    wraps the same module for attacks; ``threat`` is at this epoch's (warm-up) eps.
    """

    net: nn.Module
    clf: Classifier
    threat: Threat
    options: HardenOptions
    generator: torch.Generator
    teacher: nn.Module | None = None


Method = Callable[[BatchContext, torch.Tensor, torch.Tensor], BatchOutcome]


def _search(ctx: BatchContext, x: torch.Tensor, y: torch.Tensor, params: PGDParams) -> tuple[
    torch.Tensor, int
]:
    """Adversarial examples from robaudit's PGD (eval mode), and clean correct count."""
    ctx.net.eval()
    with torch.no_grad():
        clean_correct = int((ctx.net(x).argmax(1) == y).sum())
    x_adv = PGD(params).run(ctx.clf, x, y, ctx.threat, ctx.generator).x_adv.detach()
    ctx.net.train()
    return x_adv, clean_correct


def _pgd_params(ctx: BatchContext) -> PGDParams:
    o = ctx.options
    return PGDParams(
        steps=o.steps, step_size=o.step_for(ctx.threat.eps), random_start=True, early_stop=False
    )


def pgd_at(ctx: BatchContext, x: torch.Tensor, y: torch.Tensor) -> BatchOutcome:
    """Madry et al. 2018: minimise cross-entropy on PGD examples only."""
    x_adv, clean = _search(ctx, x, y, _pgd_params(ctx))
    logits = ctx.net(x_adv)
    loss = F.cross_entropy(logits, y)
    adv = int((logits.argmax(1) == y).sum())
    return BatchOutcome(loss, len(y), clean, len(y), adv)


def fast_at(ctx: BatchContext, x: torch.Tensor, y: torch.Tensor) -> BatchOutcome:
    """Wong et al. 2020: FGSM from a uniform random start, step 1.25 * eps, projected."""
    params = PGDParams(
        steps=1, rel_step_size=FAST_AT_STEP, random_start=True, early_stop=False
    )
    x_adv, clean = _search(ctx, x, y, params)
    logits = ctx.net(x_adv)
    loss = F.cross_entropy(logits, y)
    adv = int((logits.argmax(1) == y).sum())
    return BatchOutcome(loss, len(y), clean, len(y), adv)


def mix(ctx: BatchContext, x: torch.Tensor, y: torch.Tensor) -> BatchOutcome:
    """Replace a ``mix_ratio`` share of the (already shuffled) batch by PGD examples."""
    k = round(ctx.options.mix_ratio * len(y))
    ctx.net.eval()
    with torch.no_grad():
        clean = int((ctx.net(x).argmax(1) == y).sum())
    ctx.net.train()
    x_in = x
    if k > 0:
        x_adv, _ = _search(ctx, x[:k], y[:k], _pgd_params(ctx))
        x_in = torch.cat([x_adv, x[k:]])
    logits = ctx.net(x_in)
    loss = F.cross_entropy(logits, y)
    adv = int((logits[:k].argmax(1) == y[:k]).sum())
    return BatchOutcome(loss, len(y), clean, k, adv)


def _kl_per_sample(p_clean: torch.Tensor) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """KL(p_clean || softmax(logits)) per sample: the loss TRADES' inner search ascends."""

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        del y
        return F.kl_div(F.log_softmax(logits, dim=1), p_clean, reduction="none").sum(dim=1)

    return loss


def trades(ctx: BatchContext, x: torch.Tensor, y: torch.Tensor) -> BatchOutcome:
    """Zhang et al. 2019: CE on clean inputs + beta * KL(f(x) || f(x')), x' maximising the KL."""
    o, t = ctx.options, ctx.threat
    ctx.net.eval()
    with torch.no_grad():
        p_clean = F.softmax(ctx.net(x), dim=1)
    noise = torch.randn(x.shape, generator=ctx.generator).to(device=x.device, dtype=x.dtype)
    x_adv = clip_to_ball(x + TRADES_INIT * noise, x, t.norm, t.eps, ctx.clf.bounds)
    step = o.step_for(t.eps)
    kl = _kl_per_sample(p_clean)
    for _ in range(o.steps):
        _, grad, _ = ctx.clf.loss_and_grad(x_adv, y, kl)
        x_adv = clip_to_ball(x_adv + step * steepest_direction(grad, t.norm), x, t.norm, t.eps,
                             ctx.clf.bounds)
    x_adv = x_adv.detach()
    clean_correct = int((p_clean.argmax(1) == y).sum())
    ctx.net.train()
    logits = ctx.net(x)
    logits_adv = ctx.net(x_adv)
    robust = F.kl_div(
        F.log_softmax(logits_adv, dim=1), F.softmax(logits, dim=1), reduction="batchmean"
    )
    loss = F.cross_entropy(logits, y) + o.beta * robust
    adv = int((logits_adv.argmax(1) == y).sum())
    return BatchOutcome(loss, len(y), clean_correct, len(y), adv)


def distill_teacher(ctx: BatchContext, x: torch.Tensor, y: torch.Tensor) -> BatchOutcome:
    """Papernot et al. 2016, step 1: the teacher learns the hard labels at temperature T."""
    logits = ctx.net(x)
    loss = F.cross_entropy(logits / ctx.options.temperature, y)
    return BatchOutcome(loss, len(y), int((logits.argmax(1) == y).sum()), 0, 0)


def distill_student(ctx: BatchContext, x: torch.Tensor, y: torch.Tensor) -> BatchOutcome:
    """Papernot et al. 2016, step 2: the student learns the teacher's soft labels at T."""
    assert ctx.teacher is not None, "the student stage needs the trained teacher"
    temp = ctx.options.temperature
    with torch.no_grad():
        soft = F.softmax(ctx.teacher(x) / temp, dim=1)
    logits = ctx.net(x)
    loss = -(soft * F.log_softmax(logits / temp, dim=1)).sum(dim=1).mean()
    return BatchOutcome(loss, len(y), int((logits.argmax(1) == y).sum()), 0, 0)


# (method, stage) -> the batch loss of that stage
STAGE_LOSS: dict[tuple[str, str], Method] = {
    ("pgd-at", "train"): pgd_at,
    ("fast-at", "train"): fast_at,
    ("trades", "train"): trades,
    ("mix", "train"): mix,
    ("distill", "teacher"): distill_teacher,
    ("distill", "student"): distill_student,
}
