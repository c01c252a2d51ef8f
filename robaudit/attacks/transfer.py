"""Transfer attack: adversarial examples made white-box on a surrogate, replayed on the target.

The gray-box scenario: the attacker has a model of their own (trained on similar data) but no
access to the target beyond its answers. The candidates are made by PGD on the surrogate, run
to the end rather than stopped at the first fooling iterate (a point deep inside the
surrogate's wrong region transfers better), and the target is only asked by the engine's own
verification pass, so the attack spends zero queries of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from robaudit.attacks.base import Attack, AttackOutput, AttackParams, register
from robaudit.attacks.fgsm_pgd import PGD, PGDParams
from robaudit.classifier import Classifier
from robaudit.errors import ConfigError
from robaudit.threat import Threat


class TransferParams(AttackParams):
    surrogate: str | None = Field(
        None, description="checkpoint of the surrogate model (required; same formats as scan)"
    )
    surrogate_arch: str | None = Field(
        None, description="'package.module:Class' when the surrogate is a state_dict"
    )
    surrogate_arch_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="keyword arguments for surrogate_arch"
    )
    steps: int = Field(20, ge=1, le=100_000, description="PGD steps on the surrogate")
    loss: Literal["ce", "margin"] = Field("ce", description="loss PGD ascends on the surrogate")
    rel_step_size: float | None = Field(
        None, gt=0, le=10, description="step size as a fraction of eps (default 2.5/steps)"
    )

    def cost(self) -> float:
        """Surrogate passes only; the target is not queried."""
        return float(self.steps) / 10

    @field_validator("surrogate")
    @classmethod
    def _exists(cls, v: str | None) -> str | None:
        if v is not None and not Path(v).expanduser().is_file():
            raise ValueError(f"surrogate model file {v!r} not found")
        return v


@register("transfer")
class Transfer(Attack[TransferParams]):
    """PGD on a surrogate checkpoint; the target model is never differentiated or queried."""

    Params = TransferParams

    def __init__(
        self, params: TransferParams | None = None, *, surrogate_module: nn.Module | None = None
    ) -> None:
        super().__init__(params)
        self._surrogate = surrogate_module

    @classmethod
    def config_problem(cls, params: AttackParams) -> str | None:
        assert isinstance(params, TransferParams)
        if params.surrogate is None:
            return "surrogate: required for transfer (a checkpoint of the attacker's own model)"
        return None

    def _surrogate_module(self) -> nn.Module:
        """Load the surrogate once per attack instance (the same module for every batch)."""
        if self._surrogate is None:
            from robaudit.loading.model import load_model

            p = self.params
            if p.surrogate is None:
                raise ConfigError("transfer: give `surrogate:` (a checkpoint of a surrogate model)")
            loaded = load_model(
                p.surrogate, arch=p.surrogate_arch, arch_kwargs=p.surrogate_arch_kwargs
            )
            if loaded.max_access != "white-box":
                raise ConfigError(
                    f"transfer: surrogate {p.surrogate} gives no gradients ({loaded.format}); "
                    "use a PyTorch checkpoint"
                )
            self._surrogate = loaded.module
        return self._surrogate

    def run(
        self,
        clf: Classifier,
        x: torch.Tensor,
        y: torch.Tensor,
        threat: Threat,
        generator: torch.Generator,
    ) -> AttackOutput:
        p = self.params
        surrogate = clf.derive(  # white-box on the surrogate, whatever the target allows
            model=self._surrogate_module(), access="white-box", eot=1, votes=1, sequential=None,
            transform=None,
        )
        pgd = PGD(
            PGDParams(steps=p.steps, loss=p.loss, rel_step_size=p.rel_step_size, early_stop=False)
        )
        out = pgd.run(surrogate, x, y, threat, generator)
        return AttackOutput(
            x_adv=out.x_adv, queries=torch.zeros(x.shape[0], dtype=torch.long)
        )
