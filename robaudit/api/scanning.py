"""``robaudit.scan``: check the arguments, load the config and the baseline once, audit the
model, and add the baseline to the gate.

The CLI checks its flags with the same checks (:mod:`robaudit.api.arguments`), in its own
order and before it creates the output folder, then hands what it loaded to :func:`run_scan`.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

from robaudit.api.arguments import budgeted, check_access, check_overrides, check_threads
from robaudit.api.datasets import DataInput, resolve_data
from robaudit.api.inputs import (
    ConfigInput,
    ModelInput,
    ProgressInput,
    fit_to,
    home_kept,
    progress_view,
    resolve_config,
    resolve_model,
)
from robaudit.api.reports import Report
from robaudit.baseline import DEFAULT_MAX_DROP, check_max_drop, compare, load_baseline
from robaudit.classifier import Classifier, resolve_device
from robaudit.config import Config
from robaudit.control import RunControl
from robaudit.distributed import SINGLE, Shard
from robaudit.export import AdversarialCollector
from robaudit.fitting import Inferred
from robaudit.guard import train_eval_gap, untouched
from robaudit.loading.data import DataSet
from robaudit.loading.model import LoadedModel
from robaudit.loading.tabular import INFERRED_SCHEMA_FILE
from robaudit.pipeline import (
    RunOptions,
    RunSettings,
    ScanOptions,
    audit,
    check_model_output,
    make_classifier,
    resolve_settings,
)
from robaudit.progress import Progress
from robaudit.results import RunResult
from robaudit.threads import ThreadChoice
from robaudit.threads import choose as thread_choice
from robaudit.threads import current as current_threads
from robaudit.threads import using as using_threads


@dataclass(frozen=True)
class ScanInputs:
    """What a scan loads before it runs, loaded once: the config with the path the report
    quotes, and the baseline (document, path) with the drop it allows."""

    cfg: Config
    config_path: str | None
    baseline: tuple[dict[str, Any], str] | None = None
    max_drop: float = DEFAULT_MAX_DROP


def scan(
    model: ModelInput,
    data: DataInput = None,
    *,
    config: ConfigInput,
    device: str | None = None,
    samples: int | None = None,
    seed: int | None = None,
    batch_size: int | None = None,
    trust_model: bool = False,
    progress: ProgressInput = None,
    save_adversarial: bool = False,
    save_unbroken: bool = False,
    access: str | None = None,
    baseline: str | os.PathLike[str] | Mapping[str, Any] | None = None,
    max_drop: float = DEFAULT_MAX_DROP,
    time_budget: float | str | None = None,
    allow_partial: bool = False,
    checkpoint_dir: str | os.PathLike[str] | None = None,
    resume: bool = False,
    control: RunControl | None = None,
    shard: Shard | None = None,
    threads: int | ThreadChoice | None = None,
) -> Report:
    """Audit ``model`` on ``data`` as ``config`` describes and return the :class:`Report`.

    ``save_adversarial`` keeps every verified break so that :meth:`Report.save` also writes
    ``adversarial.npz`` and PNGs; ``save_unbroken`` adds, for each sample no attack broke at
    a threat, its strongest candidate (lowest true-class margin). ``access`` ("score" or
    "decision") audits the model as an attacker without its weights would: attacks that need
    more are skipped and every threat is relabelled to that access. ``baseline`` (an earlier
    report.json, its folder, or its loaded dict) adds one gate criterion per threat both runs
    share: it fails when robust accuracy dropped by more than ``max_drop`` percentage points
    (:mod:`robaudit.baseline`; the comparison is in ``meta.baseline``). Bad input raises a
    :class:`robaudit.errors.UserInputError` subclass with a one-line message.

    Long runs: ``time_budget`` (seconds, or ``"10m"``) runs cells in priority order and stops
    when it ends; the report's ``incomplete`` lists what did not run and the gate fails on it
    unless ``allow_partial``. ``checkpoint_dir`` receives each finished cell and ``resume``
    reuses the cells an earlier run of the same audit left there. ``control`` lets a caller
    stop the run (signals); ``shard`` is this process's rank under ``torchrun``. ``threads``
    (or ``engine.threads``): intra-op CPU threads for the run, restored afterwards; without
    either the caller's own setting is kept (the CLI defaults to the CPUs the process may
    use, :mod:`robaudit.threads`). A model
    failure mid-run raises :class:`robaudit.errors.RuntimeFailure` whose ``partial`` is the
    finished work as an incomplete :class:`RunResult`.
    """
    control = budgeted(control, time_budget)
    check_threads(threads)
    run = RunOptions(
        control=control,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
        resume=resume,
        allow_partial=allow_partial,
        shard=shard or SINGLE,
    )
    check_access(access)
    max_drop = check_max_drop(max_drop, "max_drop")
    base = load_baseline(baseline) if baseline is not None else None  # fails before any work
    started = (datetime.now(timezone.utc), time.perf_counter())
    if isinstance(device, torch.device):
        device = str(device)
    check_overrides(samples, batch_size, device, seed)
    cfg, config_path = resolve_config(config)
    options = ScanOptions(
        samples=samples, seed=seed, device=device, batch_size=batch_size,
        trust_model=trust_model, access=access,
    )
    return run_scan(
        model, data, ScanInputs(cfg, config_path, base, max_drop), options, run,
        threads=threads, progress=progress, save_adversarial=save_adversarial,
        save_unbroken=save_unbroken, started=started,
    )


def run_scan(
    model: ModelInput,
    data: DataInput,
    inputs: ScanInputs,
    options: ScanOptions,
    run: RunOptions,
    *,
    threads: int | ThreadChoice | None = None,
    progress: ProgressInput = None,
    save_adversarial: bool = False,
    save_unbroken: bool = False,
    started: tuple[datetime, float] | None = None,
) -> Report:
    """The audit of arguments already checked: :func:`scan` after its checks, the CLI after its
    own. ``started``: the wall-clock start and ``time.perf_counter()`` the report counts from."""
    started_at, t0 = started or (datetime.now(timezone.utc), time.perf_counter())
    cfg = inputs.cfg
    settings = resolve_settings(cfg, options)
    if not isinstance(model, Classifier):
        resolve_device(settings.device)  # an unusable device fails before anything loads
    bar = progress_view(progress)
    loaded, given_clf = resolve_model(model, cfg, settings)
    choice = _thread_choice(threads, cfg)
    run = replace(run, threads=choice)
    with untouched(loaded.module, loaded.path) as was_training, using_threads(choice):
        report = _scan_module(
            loaded, given_clf, model, data, cfg, inputs.config_path, settings, bar, run,
            (started_at, t0), (save_adversarial, save_unbroken), was_training,
        )
    if inputs.baseline is not None:
        base, path = inputs.baseline
        report = Report(
            _apply_baseline(report.result, base, path, inputs.max_drop),
            adversarial=report.adversarial, files=report.files,
        )
    return report


def _thread_choice(threads: int | ThreadChoice | None, cfg: Config) -> ThreadChoice:
    """``threads`` (the CLI's choice comes with its reason), else ``engine.threads``, else the
    caller's own setting: the API leaves a notebook's threads alone unless told."""
    if isinstance(threads, ThreadChoice):
        return threads
    if threads is not None:
        return thread_choice(threads, "threads=")
    if cfg.engine.threads is not None:
        return thread_choice(cfg.engine.threads, "engine.threads")
    return current_threads()


def _scan_module(
    loaded: LoadedModel,
    given_clf: Classifier | None,
    model: ModelInput,
    data: DataInput,
    cfg: Config,
    config_path: str | None,
    settings: RunSettings,
    bar: Progress | None,
    run: RunOptions,
    started: tuple[datetime, float],
    save: tuple[bool, bool],
    was_training: bool,
) -> Report:
    """The audit proper, with the model already in eval mode (see :func:`robaudit.guard.untouched`).

    ``save``: (save_adversarial, save_unbroken).
    """
    cfg, inferred = fit_to(cfg, config_path, loaded, given_clf, data, settings)
    dataset = resolve_data(
        data, cfg, settings.samples, settings.data_seed, settings.source, config_path
    )
    inferred, files = _inferred_schema(dataset, inferred)
    check_model_output(loaded, cfg, dataset)
    with home_kept(loaded, given_clf, model) as home:
        gap = None
        if was_training:
            gap = train_eval_gap(loaded.module, dataset.samples[:8].to(home or torch.device("cpu")))
        clf = given_clf or make_classifier(loaded, cfg, settings)
        if given_clf is not None:
            settings = replace(settings, device=str(given_clf.device))
        collector = None
        if any(save):
            ranker = _ranker(clf) if save[1] else None
            collector = AdversarialCollector(dataset, logits=ranker)
        result = audit(
            clf, loaded, dataset, cfg, settings, progress=bar, config_path=config_path,
            on_batch=collector, started=started[0], t0=started[1], run=run, inferred=inferred,
            train_eval_gap=gap,
        )
    adversarial = collector.finish(result) if collector is not None else None
    return Report(result, adversarial=adversarial, files=files)


def _inferred_schema(dataset: DataSet, inferred: Inferred) -> tuple[Inferred, dict[str, str]]:
    """A table without ``data.schema``: its inferred schema is written beside the report for
    the user to check, and the report says so."""
    tab = dataset.tabular
    if tab is None or tab.inferred_yaml is None:
        return inferred, {}
    item = (
        "data.schema", INFERRED_SCHEMA_FILE,
        "the data (every feature mutable, no relations: check it beside the report, then set "
        "data.schema)",
    )
    return replace(inferred, items=(*inferred.items, item)), {INFERRED_SCHEMA_FILE: tab.inferred_yaml}


def _apply_baseline(result: RunResult, base: dict[str, Any], path: str, max_drop: float) -> RunResult:
    """The run with the baseline check in its gate and the comparison in ``meta.baseline``."""
    from robaudit.report.document import to_document
    from robaudit.scoring import with_baseline

    comparison = compare(base, to_document(result), max_drop, base_path=path, new_path="<this run>")
    meta = replace(result.meta, baseline=comparison.to_dict())
    return replace(result, gate=with_baseline(result.gate, comparison), meta=meta)


def _ranker(clf: Classifier) -> Callable[[torch.Tensor], torch.Tensor]:
    """Logits for ranking unbroken candidates that leave the audit untouched: own query
    counters, and the global RNG restored (a model drawing randomness from it would otherwise
    see a different stream than in a run without export)."""
    view = clf.restricted("white-box")
    devices = [clf.device] if clf.device.type == "cuda" else []

    def logits(x: torch.Tensor) -> torch.Tensor:
        with torch.random.fork_rng(devices=devices):
            return view.verification_logits(x)

    return logits

