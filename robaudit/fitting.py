"""Fitting a config to the model and data at hand, so one preset serves any image model.

A config may leave out ``model.input_shape`` (taken from the data), ``model.num_classes`` (one
forward pass of the model) and budgets (an attack entry or a gate threshold without ``eps``
takes the budget profile's, :mod:`robaudit.profiles`). :func:`fit_config` fills them in and
validates the result exactly as a config that spelled them out, and :class:`Inferred` says
what was inferred and from what, for the report's threat-model section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from robaudit.config import Config, config_from_dict
from robaudit.errors import ConfigError, ModelLoadError
from robaudit.inputs import InputSpec
from robaudit.profiles import PROFILES, Profile, choose


@dataclass(frozen=True)
class Inferred:
    """What a run filled in that its config left out, each with where it came from."""

    items: tuple[tuple[str, Any, str], ...] = ()  # (config field, value, from what)
    profile: str | None = None  # the budget profile used, when any budget came from it
    profile_from: str | None = None
    filled: tuple[str, ...] = field(default=())  # config paths whose budgets the profile gave

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            name: {"value": value, "from": source} for name, value, source in self.items
        }
        if self.profile is not None:
            out["profile"] = {
                "value": self.profile,
                "from": self.profile_from,
                "budgets": list(self.filled),
            }
        return out

    def lines(self) -> list[str]:
        """One sentence per inferred value, for the terminal and the report."""
        out = [f"{name} {_show(value)} from {source}" for name, value, source in self.items]
        if self.profile is not None:
            out.append(
                f"budgets of {', '.join(self.filled)} from the {self.profile} profile "
                f"({self.profile_from})"
            )
        return out


def _show(value: Any) -> str:
    return str(list(value)) if isinstance(value, (list, tuple)) else str(value)


def needs_fit(cfg: Config) -> bool:
    """Whether the config leaves anything for :func:`fit_config` to fill in."""
    m = cfg.model
    return (
        m.input_shape is None
        or m.num_classes is None
        or any(spec.eps is None for spec in cfg.attacks)
        or any(g.eps is None for g in cfg.gate.min_robust_accuracy)
    )


def probe_num_classes(module: nn.Module, input_shape: tuple[int, ...], bounds: Any, where: str) -> int:
    """Logits per input, from one forward pass of two mid-range inputs of ``input_shape``."""
    lo, hi = float(bounds[0]), float(bounds[1])
    probe = torch.full((2, *input_shape), (lo + hi) / 2)
    device = next((t.device for t in (*module.parameters(), *module.buffers())), None)
    if device is not None:
        probe = probe.to(device)
    was_training = module.training
    module.eval()  # a training-mode pass would update BatchNorm statistics
    try:
        with torch.no_grad():
            out = module(probe)
    except Exception as exc:  # any failure means the shape does not fit this model
        line = (str(exc).strip().splitlines() or [type(exc).__name__])[-1][:200]
        raise ModelLoadError(
            f"{where}: model fails on inputs of shape {list(probe.shape)} (input shape taken "
            f"from the data; set model.input_shape if that is wrong): {line}"
        ) from None
    finally:
        module.train(was_training)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] < 2:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelLoadError(
            f"{where}: model output {shape} for 2 inputs is not N x classes logits; "
            "set model.num_classes or export the model's logits"
        )
    return int(out.shape[1])


def fit_config(
    cfg: Config,
    *,
    input_shape: tuple[int, ...] | None = None,
    num_classes: int | None = None,
    shape_from: str = "the data",
    classes_from: str = "one forward pass of the model",
    source: str = "<config>",
) -> tuple[Config, Inferred]:
    """The config with its omitted shape, classes and budgets filled in, validated again."""
    if not needs_fit(cfg):
        return cfg, Inferred()
    items: list[tuple[str, Any, str]] = []
    doc = _dump(cfg)
    model = doc["model"]
    if model["input_shape"] is None:
        if input_shape is None:
            raise ConfigError(f"{source}: model.input_shape is missing and no data to take it from")
        model["input_shape"] = [int(d) for d in input_shape]
        items.append(("model.input_shape", model["input_shape"], shape_from))
    if model["num_classes"] is None:
        if num_classes is None:
            raise ConfigError(f"{source}: model.num_classes is missing and no model to ask")
        model["num_classes"] = int(num_classes)
        items.append(("model.num_classes", model["num_classes"], classes_from))
    shape = tuple(model["input_shape"])
    try:
        InputSpec.of(shape)
    except ValueError as exc:
        raise ConfigError(f"{source}: model.input_shape (from {shape_from}): {exc}") from None
    profile, why = _profile(cfg, shape)
    span = float(cfg.model.bounds[1]) - float(cfg.model.bounds[0])
    filled: list[str] = []
    for i, (spec, raw) in enumerate(zip(cfg.attacks, doc["attacks"], strict=True)):
        if spec.eps is None and spec.norm not in profile.budgets:
            raise ConfigError(
                f"{source}: attacks[{i}].eps: profile {profile.name} has no {spec.norm} budgets; "
                f"give eps (norms with budgets here: {', '.join(profile.budgets)})"
            )
        if spec.eps is None and spec.pending_eps is None:
            raw["eps"] = (
                [profile.headline_eps(spec.norm, span)]
                if spec.headline_only
                else profile.eps(spec.norm, span)
            )
            filled.append(f"attacks[{i}]")
    for k, g in enumerate(doc["gate"]["min_robust_accuracy"]):
        if g.get("eps") is None:
            g["eps"] = profile.headline_eps(g["norm"], span)
            filled.append(f"gate.min_robust_accuracy[{k}]")
    fitted = config_from_dict(doc, source=source)
    inferred = Inferred(
        tuple(items),
        profile.name if filled else None,
        why if filled else None,
        tuple(filled),
    )
    return fitted, inferred


def _profile(cfg: Config, shape: tuple[int, ...]) -> tuple[Profile, str]:
    if cfg.profile != "auto":
        return PROFILES[cfg.profile], "profile set in the config"
    return choose(shape)


def _dump(cfg: Config) -> dict[str, Any]:
    """The config as a dict that validates to the same Config, budgets as written (8/255)."""
    doc = cfg.model_dump(mode="json")
    for spec, raw in zip(cfg.attacks, doc["attacks"], strict=True):
        if spec.eps is not None:
            labels = spec._eps_labels or [""] * len(spec.eps)
            raw["eps"] = [lab or e for e, lab in zip(spec.eps, labels, strict=True)]
        elif spec.pending_eps is not None:  # shares ("5%"), counted once the shape is known
            raw["eps"] = list(spec.pending_eps)
    for g, raw in zip(cfg.gate.min_robust_accuracy, doc["gate"]["min_robust_accuracy"], strict=True):
        if g.eps is not None and g._eps_label:
            raw["eps"] = g._eps_label
        elif g.pending_eps is not None:
            raw["eps"] = g.pending_eps
    return doc
