"""``robaudit.verify``: re-check exported adversarial examples against a model, with the
config's bounds and preprocessing and the clean inputs reloaded as the scan chose them."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from robaudit.api.arguments import check_overrides
from robaudit.api.datasets import DataInput, resolve_data
from robaudit.api.inputs import ConfigInput, ModelInput, home_kept, resolve_config, resolve_model
from robaudit.classifier import Classifier, resolve_device
from robaudit.config import Config
from robaudit.export import AdversarialExamples, VerifyResult, verify_examples
from robaudit.fitting import fit_config, needs_fit, probe_num_classes
from robaudit.guard import untouched
from robaudit.loading.data import DataSet
from robaudit.loading.model import LoadedModel
from robaudit.pipeline import (
    RunSettings,
    ScanOptions,
    check_model_output,
    make_classifier,
    resolve_settings,
)


def verify(
    model: ModelInput,
    examples: str | os.PathLike[str] | AdversarialExamples,
    *,
    config: ConfigInput,
    data: DataInput = None,
    device: str | None = None,
    batch_size: int | None = None,
    trust_model: bool = False,
) -> VerifyResult:
    """Re-check exported adversarial examples against ``model``, independently of the scan.

    The clean inputs come from ``data`` (default: the config's ``data.source``; a file made
    from in-memory data is checked against its own ``x_clean`` when no data is given),
    reloaded with the file's sample count and seed so the same subset comes back; bounds
    and preprocessing come from ``config``, never from the file.
    """
    if isinstance(device, torch.device):
        device = str(device)
    check_overrides(None, batch_size, device)
    cfg, config_path = resolve_config(config)
    return run_verify(
        model, examples, cfg, config_path, data=data, device=device, batch_size=batch_size,
        trust_model=trust_model,
    )


def run_verify(
    model: ModelInput,
    examples: str | os.PathLike[str] | AdversarialExamples,
    cfg: Config,
    config_path: str | None,
    *,
    data: DataInput = None,
    device: str | None = None,
    batch_size: int | None = None,
    trust_model: bool = False,
) -> VerifyResult:
    """:func:`verify` with its arguments checked and its config loaded (the CLI's way in)."""
    ex = examples if isinstance(examples, AdversarialExamples) else AdversarialExamples.load(Path(examples))
    path = "" if isinstance(examples, AdversarialExamples) else str(examples)
    meta_data = ex.meta.get("data") or {}
    samples = meta_data.get("samples")
    data_seed = meta_data.get("seed")
    settings = resolve_settings(
        cfg,
        ScanOptions(
            samples=samples if isinstance(samples, int) and samples > 0 else None,
            seed=None, device=device, batch_size=batch_size, trust_model=trust_model,
        ),
    )
    if isinstance(data_seed, int):
        settings = replace(settings, data_seed=data_seed)
    if not isinstance(model, Classifier):
        resolve_device(settings.device)
    loaded, given_clf = resolve_model(model, cfg, settings)
    with untouched(loaded.module, loaded.path):
        return _verify_module(loaded, given_clf, model, ex, path, cfg, config_path, data, settings, meta_data)


def _verify_module(
    loaded: LoadedModel,
    given_clf: Classifier | None,
    model: ModelInput,
    ex: AdversarialExamples,
    path: str,
    cfg: Config,
    config_path: str | None,
    data: DataInput,
    settings: RunSettings,
    meta_data: dict[str, Any],
) -> VerifyResult:
    """:func:`verify` with the model in eval mode (see :func:`robaudit.guard.untouched`)."""
    if needs_fit(cfg):
        shape = ex.x_adv.shape[1:] if cfg.model.input_shape is None else cfg.model.input_shape
        classes = cfg.model.num_classes or (
            given_clf.num_classes
            if given_clf is not None
            else probe_num_classes(loaded.module, tuple(shape), cfg.model.bounds, loaded.path)
        )
        cfg, _ = fit_config(
            cfg, input_shape=tuple(int(d) for d in shape), num_classes=classes,
            source=config_path or "<config>",
        )
    stored_source = str(meta_data.get("source") or "")
    notes: list[str] = []
    dataset: DataSet | None
    if data is None and stored_source.startswith("<"):
        dataset = None  # made from in-memory data that cannot be reloaded by name
    else:
        dataset = resolve_data(data, cfg, settings.samples, settings.data_seed, settings.source)
        check_model_output(loaded, cfg, dataset)
        if stored_source and dataset.source != stored_source and not dataset.source.startswith("<"):
            notes.append(f"the file was made from data '{stored_source}'; checked against '{dataset.source}'")
    stored_bounds = ex.meta.get("bounds")
    if stored_bounds is not None and [float(b) for b in stored_bounds] != [float(b) for b in cfg.model.bounds]:
        notes.append(f"the file says bounds {stored_bounds}; checked against the config's {list(cfg.model.bounds)}")
    with home_kept(loaded, given_clf, model):
        clf = given_clf or make_classifier(loaded, cfg, settings)
        res = verify_examples(ex, clf, dataset, path=path, model_sha256=loaded.sha256)
    if notes:
        res = replace(res, notes=(*res.notes, *notes))
    return res
