"""The model, config and progress arguments of :func:`robaudit.scan` and
:func:`robaudit.verify`, each form turned into what the audit uses."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal, TypeAlias

import torch
from torch import nn

from robaudit.api.datasets import DataInput, data_shape
from robaudit.classifier import Classifier
from robaudit.config import PRESET_NAMES, Config, config_from_dict, load_config, preset_path
from robaudit.errors import ConfigError, UserInputError
from robaudit.fitting import Inferred, fit_config, needs_fit, probe_num_classes
from robaudit.loading.model import LoadedModel, load_model
from robaudit.pipeline import RunSettings
from robaudit.progress import Progress

ModelInput: TypeAlias = "nn.Module | str | os.PathLike[str] | Classifier"
ConfigInput: TypeAlias = "str | os.PathLike[str] | Mapping[str, Any] | Config"
ProgressInput: TypeAlias = "Progress | Literal['tqdm'] | None"


def resolve_config(config: ConfigInput | None) -> tuple[Config, str | None]:
    """A validated Config and the path it came from (None for a dict or a Config)."""
    if config is None:
        raise ConfigError(
            "no config given: pass a YAML path, a preset name "
            f"({', '.join(PRESET_NAMES)}), a dict, or a robaudit.config.Config"
        )
    if isinstance(config, Config):
        return config, None
    if isinstance(config, Mapping):
        return config_from_dict(dict(config), source="<dict config>"), None
    if isinstance(config, (str, os.PathLike)):
        p = Path(config)
        name = p.name.removesuffix(".yaml").removesuffix(".yml")
        if not p.exists() and (str(config) in PRESET_NAMES or (p.name != name and str(p) == p.name and name in PRESET_NAMES)):
            path = preset_path(name)
            return load_config(path), str(path)
        return load_config(p), str(config)
    raise ConfigError(
        f"config must be a YAML path, a preset name, a dict or a Config, not {type(config).__name__}"
    )


def state_sha256(module: nn.Module) -> str:
    """SHA-256 over an in-memory model's state_dict: names, dtypes, shapes and raw bytes."""
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        h.update(name.encode())
        if not isinstance(t, torch.Tensor):
            h.update(repr(t).encode())
            continue
        t = t.detach().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        try:
            h.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
        except (RuntimeError, TypeError):  # quantized or exotic dtypes
            h.update(repr(t.tolist()).encode())
    return h.hexdigest()


def _describe(module: nn.Module) -> str:
    cls = type(module)
    return f"{cls.__module__}:{cls.__qualname__}"


def resolve_model(
    model: ModelInput, cfg: Config, settings: RunSettings
) -> tuple[LoadedModel, Classifier | None]:
    """A LoadedModel (identity for the report) and, for a Classifier input, that classifier."""
    if isinstance(model, Classifier):
        _check_classifier(model, cfg)
        loaded = LoadedModel(
            module=model.model, path=f"<Classifier: {type(model.model).__qualname__}>",
            sha256=state_sha256(model.model), format="classifier", arch=_describe(model.model),
        )
        return loaded, model
    if isinstance(model, nn.Module):
        return (
            LoadedModel(
                module=model, path=f"<in-memory {type(model).__qualname__}>",
                sha256=state_sha256(model), format="module", arch=_describe(model),
            ),
            None,
        )
    if isinstance(model, (str, os.PathLike)):
        loaded = load_model(
            Path(model), arch=cfg.model.arch, arch_kwargs=cfg.model.arch_kwargs,
            trust_model=settings.trust_model,
        )
        return loaded, None
    raise UserInputError(
        f"model must be a torch.nn.Module, a checkpoint path or a robaudit Classifier, "
        f"not {type(model).__name__}"
    )


def fit_to(
    cfg: Config,
    config_path: str | None,
    loaded: LoadedModel,
    given_clf: Classifier | None,
    data: DataInput,
    settings: RunSettings,
) -> tuple[Config, Inferred]:
    """Fill in what the config leaves to the model and data (shape, classes, budgets)."""
    if not needs_fit(cfg):
        return cfg, Inferred()
    shape, shape_from = (
        (cfg.model.input_shape, "")
        if cfg.model.input_shape is not None
        else data_shape(data, settings.source, cfg.data.split, cfg=cfg, config_path=config_path)
    )
    classes = cfg.model.num_classes
    if classes is None:
        classes = (
            given_clf.num_classes
            if given_clf is not None
            else probe_num_classes(loaded.module, shape, cfg.model.bounds, loaded.path)
        )
    return fit_config(
        cfg, input_shape=shape, num_classes=classes, shape_from=shape_from,
        source=config_path or "<config>",
    )


def _check_classifier(clf: Classifier, cfg: Config) -> None:
    """A ready Classifier must agree with the config the report will quote."""
    m = cfg.model
    problems = []
    if clf.num_classes != m.num_classes:
        problems.append(f"num_classes {clf.num_classes} vs model.num_classes {m.num_classes}")
    if tuple(float(b) for b in clf.bounds) != tuple(float(b) for b in m.bounds):
        problems.append(f"bounds {list(clf.bounds)} vs model.bounds {list(m.bounds)}")
    for name in ("mean", "std"):
        mine, theirs = getattr(clf, name), getattr(m, name)
        if theirs is not None and (mine is None or [float(v) for v in mine] != [float(v) for v in theirs]):
            problems.append(f"{name} {mine} vs model.{name} {theirs}")
    if problems:
        raise UserInputError("the Classifier does not match the config: " + "; ".join(problems))


class _TqdmProgress:
    """Progress as tqdm bars (notebooks); tqdm is optional, so it is imported on use."""

    def __init__(self) -> None:
        try:
            from tqdm.auto import tqdm
        except ImportError:
            raise UserInputError("progress='tqdm' needs the tqdm package (pip install tqdm)") from None
        self._tqdm = tqdm
        self._bar: Any = None

    def start(self, label: str, total: int) -> None:
        self._bar = self._tqdm(total=total, desc=label, leave=False)

    def advance(self, n: int) -> None:
        if self._bar is not None:
            self._bar.update(n)

    def finish(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_view(progress: ProgressInput) -> Progress | None:
    if progress == "tqdm":
        return _TqdmProgress()
    if isinstance(progress, str):
        raise UserInputError(f"progress={progress!r}: give a Progress object, 'tqdm' or None")
    return progress


def _home_device(module: nn.Module) -> torch.device | None:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return None


@contextmanager
def home_kept(
    loaded: LoadedModel, given_clf: Classifier | None, model: ModelInput
) -> Iterator[torch.device | None]:
    """The caller's in-memory module goes back to the device it came on (the audit moves it
    to its own); yields that device (None for a module without parameters or buffers)."""
    module = loaded.module
    home = _home_device(module)
    try:
        yield home
    finally:
        if (
            given_clf is None
            and isinstance(model, nn.Module)
            and home is not None
            and _home_device(module) != home
        ):
            module.to(home)
