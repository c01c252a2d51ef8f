"""The soft smoothed classifier (Salman et al. 2019): differentiable, for adaptive attacks on
a smoothed model, whose points :func:`~robaudit.certify.robust_under_attack` then judges."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from robaudit.classifier import Classifier


class SmoothedModule(nn.Module):
    """The soft smoothed classifier: ``log mean_draws softmax(model(x + δ))``, differentiable.

    For adaptive L2 attacks on a smoothed model (SmoothAdv, Salman et al. 2019): the hard
    ``g`` has no useful gradient, its soft twin does. ``draws`` noisy copies per input go
    through the model in one batch, so memory is ``draws`` times a plain forward. Pass the
    model's ``mean``/``std`` and any pixel-space ``transform`` (a defense) here, and none to
    the wrapping Classifier, so noise comes first, as in CERTIFY. ``seed`` makes the draws
    reproducible; without it the global RNG is used.
    """

    def __init__(
        self,
        model: nn.Module,
        sigma: float,
        draws: int = 32,
        *,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        seed: int | None = None,
        transform: Callable[[torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        if sigma <= 0 or draws < 1:
            raise ValueError(f"need sigma > 0 and draws >= 1, got {sigma}, {draws}")
        self.model = model
        self.sigma = float(sigma)
        self.draws = int(draws)
        self.mean = None if mean is None else tuple(float(m) for m in mean)
        self.std = None if std is None else tuple(float(s) for s in std)
        self.seed = seed
        self.transform = transform
        self._gens: dict[str, torch.Generator] = {}

    def _generator(self, device: torch.device) -> torch.Generator | None:
        if self.seed is None:
            return None
        key = str(device)
        if key not in self._gens:
            self._gens[key] = torch.Generator(device=device).manual_seed(self.seed)
        return self._gens[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, m = int(x.shape[0]), self.draws
        reps = x.repeat(m, *([1] * (x.dim() - 1)))  # draw-major: row d*n + i is sample i
        noise = torch.randn(
            reps.shape, generator=self._generator(x.device), device=x.device, dtype=x.dtype
        )
        z = reps + self.sigma * noise
        if self.transform is not None:
            z = self.transform(z)
        if self.mean is not None:
            z = z - _per_channel(self.mean, z)
        if self.std is not None:
            z = z / _per_channel(self.std, z)
        logp = F.log_softmax(self.model(z), dim=-1)
        return torch.logsumexp(logp.view(m, n, -1), dim=0) - math.log(m)


def _per_channel(values: tuple[float, ...], z: torch.Tensor) -> torch.Tensor:
    """Mean or std along dim 1 (the channels of N x C x ..., the features of N x F),
    broadcast over the other dims of any input rank."""
    return torch.tensor(values, device=z.device, dtype=z.dtype).view(1, -1, *([1] * (z.dim() - 2)))


def smoothed_classifier(
    clf: Classifier,
    sigma: float,
    draws: int = 32,
    *,
    eot: int = 1,
    votes: int = 1,
    seed: int | None = None,
) -> Classifier:
    """``clf``'s model as a soft smoothed Classifier, ready for robaudit's gradient attacks.

    Mean/std and a defense ``transform`` move into the :class:`SmoothedModule` (noise is
    added first, in pixel space); the batch size shrinks by ``draws`` so a forward batch
    holds as many noisy inputs as before.
    """
    module = SmoothedModule(
        clf.model,
        sigma,
        draws,
        mean=clf.mean,
        std=clf.std,
        seed=seed,
        transform=getattr(clf, "transform", None),
    )
    return clf.derive(  # the smoothed module applies the preprocessing itself
        model=module, mean=None, std=None, batch_size=max(1, clf.batch_size // draws), eot=eot,
        votes=votes, sequential=None, transform=None,
    )
