"""One audit, end to end: config → model and data → Classifier → plan → engine → results →
score → gate.

:func:`audit` runs a prepared classifier on prepared data (the public Python API,
:mod:`robaudit.api`, loads the checkpoint and the data source first). The API and, through it,
the CLI both end in :func:`audit`, so every front end gives the same numbers. (This module was
``robaudit/scan.py``; ``robaudit.scan`` is now the public function, and a submodule of that
name would shadow it once imported.)
"""

from __future__ import annotations

import hashlib
import itertools
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import robaudit
from robaudit.certify import run_certification
from robaudit.checkpoint import CellStore, fingerprint
from robaudit.classifier import ACCESS_RANK, Classifier, resolve_device
from robaudit.config import Config
from robaudit.control import RunControl, StopRequested, interruptible
from robaudit.distributed import SINGLE, Shard
from robaudit.engine import BatchSink, EngineControl, EngineResult, run_plan
from robaudit.errors import ModelLoadError, RuntimeFailure
from robaudit.fitting import Inferred
from robaudit.integrity import certification_findings, collect_findings
from robaudit.judgement import VariantTables, judge
from robaudit.loading.data import DataSet
from robaudit.loading.model import LoadedModel, load_model
from robaudit.natural.run import NaturalOutcome, Predict
from robaudit.natural.stage import run_natural
from robaudit.norms.patch import UNIVERSAL
from robaudit.plan import Plan, make_plan
from robaudit.progress import Progress
from robaudit.record import Tables, assemble, config_sha256, incomplete_state, run_meta
from robaudit.results import Finding, RunResult
from robaudit.tables import build_tables, positive_class_row
from robaudit.tabular.changes import feature_changes
from robaudit.threads import ThreadChoice
from robaudit.universal import UniversalOutcome, VariantPatches, prepare_universal
from robaudit.variants import run_variants


@dataclass(frozen=True)
class ScanOptions:
    """Command-line overrides of the config (None = keep the config's value)."""

    data: str | None = None
    samples: int | None = None
    seed: int | None = None
    device: str | None = None
    batch_size: int | None = None
    trust_model: bool = False
    access: str | None = None  # audit as an attacker with only this much access


@dataclass(frozen=True)
class RunSettings:
    """The config with every override applied: what the run actually uses."""

    seed: int
    data_seed: int
    device: str
    batch_size: int
    source: str
    samples: int | None
    trust_model: bool
    access: str = "white-box"


@dataclass(frozen=True)
class RunOptions:
    """How a run executes, beyond what it measures: stopping early, resuming, sharding.

    ``checkpoint_dir`` (``OUT/.robaudit``) receives every finished cell; with ``resume`` the
    cells an earlier run of the same audit saved there are reused. ``allow_partial`` lets a
    run stopped by its time budget pass the gate on what it finished.
    """

    control: RunControl | None = None
    checkpoint_dir: Path | None = None
    resume: bool = False
    allow_partial: bool = False
    shard: Shard = field(default=SINGLE)
    threads: ThreadChoice | None = None  # intra-op threads the run used, and why


# bumped whenever the same config, model and data give other cell numbers within one
# robaudit version, so --resume never mixes cells from before and after (2: universal
# patches pasted at each image's own places, not at places shared by all images)
CELL_REVISION = 2


def run_fingerprint(cfg: Config, loaded: LoadedModel, data: DataSet, settings: RunSettings) -> str:
    """Everything that decides a cell's numbers; a resumed run must match it exactly.

    A data file's bytes and a table's schema count too: ``--resume`` after editing the data
    or the schema file (whose path alone is in the config) must not reuse the old cells.
    """
    schema = data.tabular.schema.to_yaml() if data.tabular is not None else None
    return fingerprint(
        config=config_sha256(cfg),
        model=loaded.sha256,
        data_file=_file_sha256(data.source),
        schema=schema,
        source=data.source,
        split=data.split,
        indices=[int(i) for i in data.indices],
        seed=settings.seed,
        batch_size=settings.batch_size,
        access=settings.access,
        robaudit=robaudit.__version__,
        revision=CELL_REVISION,
    )


def _file_sha256(source: str) -> str | None:
    """SHA-256 of a data file's bytes (None for builtin sets, folders, torchvision roots)."""
    path = Path(source).expanduser()
    if not path.is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def resolve_settings(cfg: Config, options: ScanOptions | None = None) -> RunSettings:
    """Apply the overrides in ``options`` (None = keep the config's value)."""
    opts = options or ScanOptions()
    seed = opts.seed if opts.seed is not None else cfg.seed
    return RunSettings(
        seed=seed,
        data_seed=cfg.data.seed if cfg.data.seed is not None else seed,
        device=opts.device or cfg.engine.device,
        batch_size=opts.batch_size or cfg.data.batch_size,
        source=opts.data or cfg.data.source,
        samples=opts.samples if opts.samples is not None else cfg.data.samples,
        trust_model=opts.trust_model,
        access=opts.access or "white-box",
    )


def _module_device(module: torch.nn.Module) -> torch.device:
    """Where an in-memory module lives (its first parameter or buffer), CPU if it has none."""
    for t in itertools.chain(module.parameters(), module.buffers()):
        return t.device
    return torch.device("cpu")


def check_model_output(loaded: LoadedModel, cfg: Config, data: DataSet) -> None:
    """The model must map one input of the declared shape to ``num_classes`` logits."""
    probe = data.samples[:2].to(_module_device(loaded.module))
    try:
        with torch.no_grad():
            out = loaded.module(probe)
    except Exception as exc:  # any failure here means the model does not fit the config
        raise ModelLoadError(
            f"{loaded.path}: model fails on inputs of shape {list(probe.shape)} "
            f"(model.input_shape {list(cfg.model.shape)}): {_cause_line(exc)}"
        ) from None
    if not isinstance(out, torch.Tensor):
        raise ModelLoadError(
            f"{loaded.path}: model returns {type(out).__name__}, expected a logits tensor "
            f"N x {cfg.model.classes}"
        )
    if out.dim() != 2 or out.shape[1] != cfg.model.classes:
        raise ModelLoadError(
            f"{loaded.path}: model output has shape {list(out.shape)} for {probe.shape[0]} inputs; "
            f"expected [{probe.shape[0]}, {cfg.model.classes}] (model.num_classes)"
        )
    if not bool(torch.isfinite(out).all()):  # else votes and EOT would hide it until the end
        raise ModelLoadError(
            f"{loaded.path}: model returns NaN or inf logits on clean inputs (the first "
            f"{probe.shape[0]} samples of {data.source}); check the checkpoint and model.mean/std"
        )


def _cause_line(exc: BaseException) -> str:
    """One line of a model's exception: TorchScript puts the cause last, after its stack."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()] or [type(exc).__name__]
    line = lines[-1] if lines[0].startswith("The following operation failed in the TorchScript") else lines[0]
    return line[:200]





def make_classifier(loaded: LoadedModel, cfg: Config, settings: RunSettings) -> Classifier:
    """The wrapper attacks see: the config's bounds and preprocessing, the run's device, and
    the lower of the file's access (ONNX: score) and ``--access``."""
    access = min(loaded.max_access, settings.access, key=ACCESS_RANK.__getitem__)
    return Classifier(
        loaded.module,
        num_classes=cfg.model.classes,
        bounds=cfg.model.bounds,
        mean=cfg.model.mean,
        std=cfg.model.std,
        device=resolve_device(settings.device),
        batch_size=settings.batch_size,
        access=access,
        logit_offset=(
            cfg.model.decision.logit_offset(cfg.model.classes)
            if cfg.model.decision is not None
            else None
        ),
    )


def access_reason(loaded: LoadedModel, settings: RunSettings) -> str:
    """Why the run is capped, in the words the report uses."""
    if loaded.max_access != "white-box" and ACCESS_RANK[loaded.max_access] <= ACCESS_RANK[
        settings.access
    ]:
        return f"the {loaded.format} model answers queries only ({loaded.max_access} access)"
    return f"the run was limited with --access {settings.access}"


@dataclass
class _Stop:
    """What a run that stops early (a stop request, a time budget, a model failure) left
    undone; each later stage asks it whether to start."""

    failure: str | None
    unrun: list[dict[str, object]]
    run: RunOptions
    ctl: EngineControl
    not_run: list[str] = field(default_factory=list)

    def halted(self) -> bool:
        control = self.run.control
        return bool(self.unrun) or self.failure is not None or self.ctl.shard.any(
            control.should_stop() if control is not None else False
        )


def audit(
    clf: Classifier,
    loaded: LoadedModel,
    data: DataSet,
    cfg: Config,
    settings: RunSettings,
    *,
    progress: Progress | None = None,
    config_path: str | None = None,
    on_batch: BatchSink | None = None,
    started: datetime | None = None,
    t0: float | None = None,
    run: RunOptions | None = None,
    inferred: Inferred | None = None,
    train_eval_gap: float | None = None,
) -> RunResult:
    """Attack ``data`` through ``clf`` as ``cfg`` plans, then score and gate the outcome.

    The stages, each testable alone: plan (:func:`robaudit.plan.make_plan`), run the cells
    (:func:`robaudit.engine.run_plan`), integrity's findings
    (:func:`robaudit.integrity.collect_findings`), tables, defense variants, certification,
    score and gate, the result record (:mod:`robaudit.assemble`). ``loaded`` only identifies
    the model in the report; ``on_batch`` receives every verified batch (adversarial-example
    export); ``run``: stopping early, resuming, sharding (:class:`RunOptions`). A run that
    stops early returns a result whose ``incomplete`` says what did not run; a model failure
    mid-run raises :class:`RuntimeFailure` carrying that partial result as ``partial``.
    """
    run = run or RunOptions()
    started = started or datetime.now(timezone.utc)
    t0 = time.perf_counter() if t0 is None else t0
    torch.manual_seed(settings.seed)  # for models that draw randomness from the global generator
    reference = _natural_reference(clf, cfg, settings, config_path)
    plan = make_plan(clf, data, cfg, access_reason(loaded, settings), config_path)
    plan, universal = _universal_stage(clf, data, cfg, plan, settings, run.shard, progress)
    store = _open_store(run, cfg, loaded, data, settings)  # only now: a refused plan leaves none
    # a table's feature constraints: every candidate must satisfy them to count as a break
    constraints = data.tabular.constraints if data.tabular is not None else None
    ctl = EngineControl(
        run.control, store, run.shard, constraints=constraints,
        attack_only=cfg.data.attack_only_class,
    )
    er = run_plan(
        clf, data.samples, data.y, list(plan.cells), seed=settings.seed,
        batch_size=settings.batch_size, cascade=cfg.engine.cascade,
        examples=cfg.report.examples, progress=progress, on_batch=on_batch,
        ctl=ctl,
    )
    stop = _Stop(er.failure, list(er.unrun), run, ctl)
    findings, left_out = collect_findings(
        clf, data.samples, data.y, cfg, er, pre=plan.preflight, attacks=plan.attacks(),
        skipped=list(plan.skipped), seed=settings.seed, halted=stop.halted,
        train_eval_gap=train_eval_gap,
    )
    stop.not_run += left_out
    tables = build_tables(er, data.y, plan.params(), cfg.engine.cascade)
    positive = _positive_class(cfg, er, data, tables)
    variants, universal = _variant_stage(clf, data, cfg, plan, settings, progress, stop, universal)
    certification = _certification_stage(clf, data, cfg, settings, stop, findings)
    natural = _natural_stage(clf, data, cfg, settings, stop, er.correct, reference)
    verdict = judge(
        cfg, er, plan, tables[0], variants, findings, certification,
        incomplete_state(stop.failure, stop.unrun, stop.not_run, run.control), run.allow_partial,
        natural, positive,
    )
    meta = run_meta(
        clf, er, cfg, settings, data, config_path=config_path, started=started,
        duration=time.perf_counter() - t0, store=store, run=run, inferred=inferred,
        evaluation=verdict.evaluation,
    )
    result = assemble(
        loaded, data, cfg, er, tables, variants, certification, findings, verdict, meta, plan,
        settings.samples, natural, positive,
        feature_changes(er.cells, data.samples, data.tabular.scaler) if data.tabular else None,
    )
    if universal:  # universal patches: their own section (other reports unchanged)
        result = replace(result, universal=universal)
    if stop.failure is not None:
        raise RuntimeFailure(stop.failure, partial=result)
    return result


def _universal_stage(
    clf: Classifier, data: DataSet, cfg: Config, plan: Plan, settings: RunSettings, shard: Shard,
    progress: Progress | None,
) -> tuple[Plan, tuple[UniversalOutcome, ...]]:
    """Universal patches trained (held-out data) and judged before the engine runs; the plan's
    cells at those threats paste the trained patch. The defense variants train their own
    (through the defense) when their stage runs (:class:`VariantPatches`)."""
    if not any(p.threat.norm == UNIVERSAL for p in plan.cells):
        return plan, ()
    cells, outcomes = prepare_universal(
        clf, data, plan.cells, input_shape=cfg.model.shape, seed=settings.seed,
        data_seed=settings.data_seed, shard=shard, progress=progress,
    )  # fmt: skip
    return replace(plan, cells=tuple(cells)), outcomes


def _positive_class(
    cfg: Config, er: EngineResult, data: DataSet, tables: Tables
) -> dict[str, Any] | None:
    """The positive class's recall and pass rate (with data.attack_only_class or a decision)."""
    positive = cfg.positive_class()
    if positive is None:
        return None
    attacked_only = cfg.data.attack_only_class is not None
    return positive_class_row(data.y, er.correct, tables[0], tables[2], positive, attacked_only)


def _open_store(
    run: RunOptions, cfg: Config, loaded: LoadedModel, data: DataSet, settings: RunSettings
) -> CellStore | None:
    """The checkpoint store of ``--out`` (the main process of a sharded run keeps it)."""
    if run.checkpoint_dir is None or not run.shard.is_main:
        return None
    return CellStore(
        run.checkpoint_dir, run_fingerprint(cfg, loaded, data, settings), resume=run.resume
    )


def _variant_stage(
    clf: Classifier, data: DataSet, cfg: Config, plan: Plan, settings: RunSettings,
    progress: Progress | None, stop: _Stop, universal: tuple[UniversalOutcome, ...],
) -> tuple[VariantTables, tuple[UniversalOutcome, ...]]:
    """The defense variants, unless the run already stopped (then named in not_run); with
    the universal patches, the bare model's and those trained against each variant."""
    if not cfg.defenses:
        return VariantTables(), universal
    if stop.halted():
        stop.not_run.append("defense variants")
        return VariantTables(), universal
    patches = None
    if any(p.threat.norm == UNIVERSAL for p in plan.variant_cells):
        patches = VariantPatches(data, cfg.model.shape, settings.seed, settings.data_seed,
                                 universal, stop.ctl.shard, progress)  # fmt: skip
    try:
        v_threats, v_attacks, summaries, v_unrun = run_variants(
            clf, data.samples, data.y, list(plan.variant_cells), cfg, seed=settings.seed,
            batch_size=settings.batch_size, progress=progress, ctl=stop.ctl, prepare=patches,
        )
    except RuntimeFailure as exc:
        stop.failure = str(exc)
        stop.not_run.append("defense variants")
        return VariantTables(), universal
    stop.unrun += v_unrun
    made = tuple(patches.made) if patches is not None else ()
    return VariantTables(tuple(v_threats), tuple(v_attacks), tuple(summaries)), universal + made


def _certification_stage(
    clf: Classifier, data: DataSet, cfg: Config, settings: RunSettings, stop: _Stop,
    findings: list[Finding],
) -> dict[str, Any] | None:
    """Randomized-smoothing certification, unless the run already stopped; its findings
    (certificates the attacks contradict) join ``findings``."""
    if cfg.certify is None:
        return None
    if stop.halted():
        stop.not_run.append("certification")
        return None
    certification = run_certification(clf, data.samples, data.y, cfg.certify, settings.seed)
    findings += certification_findings(certification)
    return certification


def _natural_reference(
    clf: Classifier, cfg: Config, settings: RunSettings, config_path: str | None
) -> tuple[str, Predict] | None:
    """The reference model for mCE, loaded before any attack runs (a wrong path is a one-line
    error then, not after hours of attacks): same preprocessing and bounds as the audited
    model, its path relative to the working directory or, failing that, the config's folder."""
    corr = cfg.natural.corruptions if cfg.natural is not None else None
    if corr is None or corr.reference is None:
        return None
    path = Path(corr.reference)
    if not path.exists() and config_path is not None:
        path = Path(config_path).parent / corr.reference
    loaded = load_model(
        path, arch=cfg.model.arch, arch_kwargs=cfg.model.arch_kwargs,
        trust_model=settings.trust_model,
    )
    return str(corr.reference), clf.derive(model=loaded.module).verification_logits


def _natural_stage(
    clf: Classifier, data: DataSet, cfg: Config, settings: RunSettings, stop: _Stop,
    correct: torch.Tensor, reference: tuple[str, Predict] | None,
) -> NaturalOutcome | None:
    """Corruptions, rotations and translations, occlusion, unless the run already stopped."""
    if cfg.natural is None:
        return None
    if stop.halted():
        stop.not_run.append("natural robustness")
        return None
    try:  # every forward pass polls the stop flag: SIGINT or --time-budget land at once
        with interruptible(stop.run.control):
            return run_natural(
                clf, data.samples, data.y, correct, cfg.natural, seed=settings.seed,
                reference=reference, indices=[int(i) for i in data.indices],
            )
    except StopRequested:  # a part-done natural section is no number: it is listed as not run
        stop.not_run.append("natural robustness")
        return None
