"""The Classifier wrapper: the only thing attacks ever call.

It owns the device, eval mode, preprocessing (attacks see pixel space; mean/std are applied
here), batching, query and gradient counting, and the access level. A ``score`` or
``decision`` wrapper refuses gradients, so black-box query counts are real.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import nn

from robaudit.access import RANK
from robaudit.allocator import keep_freed_memory, relieve
from robaudit.control import poll
from robaudit.errors import RobauditError, RuntimeFailure
from robaudit.inputs import stat_view
from robaudit.verdicts import SequentialTest, Verdict, sequential_verdict, single_verdict

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
ACCESS_RANK = RANK  # re-exported: the order lives in robaudit.access


class AccessDenied(RobauditError):
    """An attack asked for more than its access level allows (a bug in the attack)."""


@dataclass
class Counters:
    """Per-sample forward passes (queries) and gradient evaluations."""

    queries: int = 0
    grad_evals: int = 0

    def snapshot(self) -> tuple[int, int]:
        return self.queries, self.grad_evals


@dataclass
class _Layout:
    """A model's 4-D weights while an attack runs in channels-last order (see ``fast_layout``)."""

    works: bool | None = None  # None: not tried yet; False: the model failed in that order
    swapped: list[tuple[torch.Tensor, torch.Tensor]] | None = None  # (weight, original data)

    def restore(self) -> None:
        for t, data in self.swapped or []:
            t.data = data
        self.swapped = None


_LAYOUTS: weakref.WeakKeyDictionary[nn.Module, _Layout] = weakref.WeakKeyDictionary()


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; an unknown name or CUDA without one is a clear error."""
    from robaudit.errors import UserInputError

    valid = name in ("auto", "cpu", "cuda") or (name.startswith("cuda:") and name[5:].isdigit())
    if not valid:
        raise UserInputError(f"--device {name!r}: valid values are auto, cpu, cuda, cuda:N")
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UserInputError(f"--device {name}: CUDA is not available here; use 'cpu' or 'auto'")
    return torch.device(name)


@dataclass
class Classifier:
    """A model as attacks see it: pixel-space inputs in ``bounds``, logits out."""

    model: nn.Module
    num_classes: int
    bounds: tuple[float, float] = (0.0, 1.0)
    mean: Sequence[float] | None = None
    std: Sequence[float] | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    access: str = "white-box"
    batch_size: int = 256
    counters: Counters = field(default_factory=Counters)
    eot: int = 1  # randomized models: gradients averaged over this many draws (EOT)
    # randomized models: > 1 declares the model randomized (verdicts then come from the
    # sequential test below); verification_logits averages this many draws (log vote shares)
    votes: int = 1
    # randomized models: how verdicts are drawn and decided; None with votes > 1 means the
    # default test (robaudit.verdicts)
    sequential: SequentialTest | None = None
    # a defense variant: a pixel-space transform applied before preprocessing (with BPDA or
    # exact gradients, see robaudit.defenses.Transform)
    transform: Callable[[torch.Tensor], torch.Tensor] | None = None
    # a deployed decision rule (robaudit.config.decision): added to the logits, so argmax,
    # every attack and every verification apply the threshold the model is used with
    logit_offset: Sequence[float] | None = None

    def __post_init__(self) -> None:
        self.model = self.model.to(self.device).eval()
        self._mean = self._stat(self.mean)
        self._std = self._stat(self.std)
        self._offset = self._stat(self.logit_offset)

    def _stat(self, values: Sequence[float] | None) -> torch.Tensor | None:
        if values is None:
            return None
        return torch.tensor(list(values), dtype=torch.float32, device=self.device)

    # -- forward passes ---------------------------------------------------------------
    @contextmanager
    def fast_layout(self) -> Iterator[None]:
        """Run the block (an attack) with the model's 4-D weights in channels-last order.

        On the CPU, oneDNN convolutions and max-pooling run about twice as fast in that order;
        the model and its values are the same (outputs agree to float rounding, ~1e-6). The
        weights' original tensors are put back on exit, so the user's module, and the
        engine's verification passes outside the block, see exactly what they saw before. A
        model that fails in that order (a ``view`` of a convolution's output) is run in its
        own order from then on. Elsewhere than the CPU, and without 4-D weights, a no-op.
        """
        state = _LAYOUTS.get(self.model)
        if state is None:
            state = _LAYOUTS.setdefault(self.model, _Layout())
        weights = [
            t
            for t in (*self.model.parameters(), *self.model.buffers())
            if t.dim() == 4 and t.is_floating_point()
        ]
        if self.device.type == "cpu":
            keep_freed_memory()  # once per process: activations stop page-faulting per call
        if self.device.type != "cpu" or state.works is False or state.swapped or not weights:
            yield
            return
        state.swapped = [(t, t.data) for t in weights]
        for t in weights:
            t.data = t.data.contiguous(memory_format=torch.channels_last)
        try:
            yield
        finally:
            state.restore()

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        poll()  # a stop requested during an attack lands here, within one model call
        if x.device.type == "cpu":
            relieve()  # bound the heap's fragmentation (see robaudit.allocator)
        if self.transform is not None:
            x = self.transform(x)
        if self._mean is not None:  # per channel (per feature of a vector), any input rank
            x = x - self._mean.view(stat_view(x.dim()))
        if self._std is not None:
            x = x / self._std.view(stat_view(x.dim()))
        state = _LAYOUTS.get(self.model)
        if state is not None and state.swapped and not state.works:
            try:  # the first forward in channels-last order: fall back if the model refuses
                out = self.model(x)
                state.works = True
            except RuntimeError:
                state.restore()
                state.works = False
                out = self.model(x)
        else:
            out = self.model(x)
        if not isinstance(out, torch.Tensor):
            raise RuntimeFailure(
                f"model returned {type(out).__name__}, expected a logits tensor of shape N x "
                f"{self.num_classes}"
            )
        if self._offset is not None:
            out = out + self._offset
        return out

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits without gradients, batched; every sample is one counted query."""
        if self.access == "decision":
            raise AccessDenied("a decision-access classifier gives labels only, not scores")
        # one draw per call even on a randomized model: a query is one forward pass, and
        # black-box attacks count their queries per call (averaging is theirs to do)
        return self._logits_nograd(x)

    def _logits_nograd(self, x: torch.Tensor) -> torch.Tensor:
        n = int(x.shape[0])
        with torch.no_grad():
            if 0 < n <= self.batch_size:  # one chunk: no copy into a list and back
                out = self._forward(x.to(self.device))
            else:
                outs = [
                    self._forward(x[i : i + self.batch_size].to(self.device))
                    for i in range(0, n, self.batch_size)
                ]
                out = (
                    torch.cat(outs)
                    if outs
                    else torch.empty(0, self.num_classes, device=self.device)
                )
        self.counters.queries += n
        return out

    def verification_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Logits for the engine's own passes (pre-flight, ranking candidates), at any access
        level; verdicts come from :meth:`verdict`.

        Attacks must not call this: it bypasses the access level. With ``votes > 1`` (a
        randomized model) the result is the log of each class's vote share over that many
        draws, so argmax is the majority.
        """
        if self.votes <= 1:
            return self._logits_nograd(x)
        n = int(x.shape[0])
        reps = x.repeat(self.votes, *([1] * (x.dim() - 1)))
        raw = self._logits_nograd(reps)
        preds = raw.argmax(dim=1).view(self.votes, n)
        self.counters.queries -= n * (self.votes - 1)  # one verdict per sample
        counts = torch.nn.functional.one_hot(preds, self.num_classes).sum(dim=0).float()
        out = (counts / self.votes + 1e-12).log()
        # a NaN/inf draw must not vanish into a vote: the sample's verdict becomes NaN too
        bad = (~torch.isfinite(raw).all(dim=1)).view(self.votes, n).any(dim=0)
        return out.masked_fill(bad[:, None], float("nan"))

    def verdict_test(self) -> SequentialTest | None:
        """The sequential test verdicts use: the one set, or the default on a model declared
        randomized (``votes > 1``); None for a deterministic model (one forward pass)."""
        if self.sequential is not None:
            return self.sequential
        return SequentialTest() if self.votes > 1 else None

    def verdict(self, x: torch.Tensor, y: torch.Tensor, alpha: float | None = None) -> Verdict:
        """The engine's judgement of whether each input is misclassified, at any access level.

        Deterministic model: one fresh forward pass. Randomized model: the sequential test of
        :mod:`robaudit.verdicts` at per-verdict level ``alpha`` (default: a lone verdict per
        sample); its draws are the engine's, so one verdict counts as one query whatever it
        drew. Attacks must not call this.
        """
        test = self.verdict_test()
        if test is None:
            return single_verdict(self.verification_logits(x), y)

        def draw(rows: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return self._forward(rows)

        out = sequential_verdict(
            draw,
            x.to(self.device),
            y.to(self.device),
            test=test,
            alpha=test.alpha_for(1) if alpha is None else alpha,
            num_classes=self.num_classes,
            chunk=self.batch_size,
        )
        self.counters.queries += int(x.shape[0])
        return out

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Top-1 labels; allowed at every access level; counted as queries."""
        return self._logits_nograd(x).argmax(dim=1)

    def loss_and_grad(
        self, x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per-sample loss, its gradient w.r.t. the pixel input, and the logits (detached).

        The caller's batch is used as is (attacks already work on device batches); the
        loss is summed so each sample's gradient is its own.
        """
        if self.access != "white-box":
            raise AccessDenied(f"a {self.access}-access classifier does not give gradients")
        x = x.detach().requires_grad_(True)
        n = int(x.shape[0])
        with torch.enable_grad():
            if self.eot > 1:  # expectation over transformation: all draws in one batch
                reps = x.repeat(self.eot, *([1] * (x.dim() - 1)))
                logits = self._forward(reps)
                loss = loss_fn(logits, y.repeat(self.eot)).view(self.eot, n).mean(dim=0)
                logits = self._settled(logits.detach().view(self.eot, n, -1), y)
            else:
                logits = self._forward(x)
                loss = loss_fn(logits, y)
            if loss.requires_grad:
                (grad,) = torch.autograd.grad(loss.sum(), x, allow_unused=True)
            else:  # the output does not depend on the input at all: a zero gradient (RA003)
                grad = None
            grad = torch.zeros_like(x) if grad is None else grad
        self.counters.queries += n * self.eot
        self.counters.grad_evals += n * self.eot
        return loss.detach(), grad.detach(), logits.detach()

    @staticmethod
    def _settled(draws: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Mean logits over EOT draws, with the true class lifted to the top.

        On a randomized model an attack that stops at the first iterate its draws call
        fooled stops at lucky draws: over 50 steps of 8 fresh draws each, the iterates PGD
        stopped at were fooled with probability 0.25 to 0.95 (measured on a noise-adding
        model), and half its claims were overturned by the verification vote. Showing no
        sample as fooled makes every attack optimize to its last step; the engine's majority
        vote alone decides.
        """
        mean = draws.mean(dim=0)
        top = mean.max(dim=1).values + 1.0
        return mean.scatter(1, y[:, None], top[:, None])

    def derive(self, **changes: Any) -> Classifier:
        """The same wrapper with ``changes`` (a field name each) and counters of its own.

        Every other wrapper the audit needs (an access-restricted view, a defense variant, the
        bare model under it, a smoothed model, a transfer surrogate) is one of these, so no
        caller rebuilds a Classifier field by field and forgets one.
        """
        return replace(self, counters=Counters(), **changes)

    def restricted(self, access: str) -> Classifier:
        """A view of the same model at the same or a lower access level, with its own counters."""
        if ACCESS_RANK[access] > ACCESS_RANK[self.access]:
            raise AccessDenied(f"cannot raise access from {self.access} to {access}")
        return self.derive(access=access)
