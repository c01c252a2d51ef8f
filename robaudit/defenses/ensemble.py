"""An ensemble of the audited model and other checkpoints, attacked as a whole.

Attacking one member and hoping it transfers is the naive evaluation; the adaptive attacker
differentiates the whole ensemble. Majority voting is not differentiable, so its backward
pass is the mean of the members' softmax outputs (BPDA's straight-through estimate).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

from robaudit.defenses.base import Defense, DefenseParams, register, straight_through


class EnsembleParams(DefenseParams):
    members: list[str] = Field(
        min_length=1, description="other checkpoints; the audited model is always a member"
    )
    member_arch: str | None = Field(None, description="'package.module:Class' for state_dicts")
    combine: Literal["mean-logits", "mean-probs", "vote"] = Field(
        "mean-logits", description="how member outputs become the ensemble's output"
    )

    @field_validator("members")
    @classmethod
    def _exist(cls, v: list[str]) -> list[str]:
        for m in v:
            if not Path(m).expanduser().is_file():
                raise ValueError(f"ensemble member file {m!r} not found")
        return v


class EnsembleModule(nn.Module):
    """Members' outputs combined; all members see the same (already normalized) input."""

    def __init__(self, members: list[nn.Module], combine: str) -> None:
        super().__init__()
        self.members = nn.ModuleList(members)
        self.combine = combine

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logits = torch.stack([m(x) for m in self.members])
        if self.combine == "mean-logits":
            return logits.mean(dim=0)
        probs = logits.softmax(dim=2).mean(dim=0)
        smooth = (probs + 1e-12).log()
        if self.combine == "mean-probs":
            return smooth
        preds = logits.argmax(dim=2)
        share = torch.nn.functional.one_hot(preds, logits.shape[2]).float().mean(dim=0)
        # ties broken by the mean probabilities, so argmax is the vote, then the confidence
        votes = (share + 1e-12).log() + 1e-6 * probs
        return straight_through(votes, smooth)


@register("ensemble")
class Ensemble(Defense[EnsembleParams]):
    """The audited model plus ``members``, combined by mean logits, mean probabilities or vote."""

    Params = EnsembleParams

    def __init__(self, params: EnsembleParams | None = None, **kw: Any) -> None:
        super().__init__(params)
        self._loaded: list[nn.Module] | None = kw.get("modules")

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def label(self) -> str:
        names = ", ".join(Path(m).stem for m in self.params.members)
        return f"ensemble({self.params.combine}: model, {names})"

    def wrap_model(self, module: nn.Module) -> nn.Module:
        from robaudit.loading.model import load_model

        if self._loaded is None:
            self._loaded = [
                load_model(m, arch=self.params.member_arch).module.eval()
                for m in self.params.members
            ]
        return EnsembleModule([module, *self._loaded], self.params.combine).eval()
