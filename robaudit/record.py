"""The record of a finished run: the :class:`RunResult` every renderer reads.

Built from the stages' outputs (plan, engine result, tables, variants, certificate, verdict);
nothing here measures or decides anything, it only writes down what the stages found.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime
from typing import Any

import torch

import robaudit
from robaudit.checkpoint import CellStore
from robaudit.classifier import Classifier
from robaudit.config import PROTOCOLS, SMOKE_PROTOCOLS, Config
from robaudit.control import FAILURE, INTERRUPTED, RunControl
from robaudit.fitting import Inferred
from robaudit.judgement import VariantTables, Verdict
from robaudit.loading.data import DataSet
from robaudit.loading.model import LoadedModel
from robaudit.naive import naive_rows
from robaudit.natural.run import NaturalOutcome
from robaudit.outcomes import EngineResult
from robaudit.plan import Plan
from robaudit.results import (
    SCHEMA_VERSION,
    AttackRow,
    DataInfo,
    Finding,
    ModelInfo,
    PartialRun,
    RunMeta,
    RunResult,
    ThreatRow,
    wilson_interval,
)
from robaudit.tables import confusion_rows, minimal_norm_rows, per_class_rows
from robaudit.tabular.changes import feature_table

Tables = tuple[
    tuple[ThreatRow, ...], tuple[AttackRow, ...], dict[str, dict[int, dict[str, Any]]]
]


def incomplete_state(
    failure: str | None, unrun: list[dict[str, object]], not_run: list[str],
    control: RunControl | None,
) -> PartialRun | None:
    """What a run that stopped early left undone, and why (None for a complete run)."""
    if failure is None and not unrun and not not_run:
        return None
    kind = FAILURE if failure is not None else (
        control.kind if control is not None and control.kind else INTERRUPTED
    )
    reason = failure if failure is not None else (
        control.reason if control is not None and control.reason else "stopped"
    )
    return PartialRun(kind, reason, list(unrun), list(not_run))


def sample_rows(
    data: DataSet, er: EngineResult, verdicts: dict[str, dict[int, dict[str, Any]]],
    threats: tuple[ThreatRow, ...],
) -> tuple[dict[str, Any], ...]:
    """Per evaluated sample: where it came from, its clean verdict, what broke it per threat."""
    return tuple(
        {
            "index": i,
            "source_index": int(data.indices[i]),
            "label": int(data.y[i]),
            "clean_pred": int(er.clean_pred[i]),
            "correct": bool(er.correct[i]),
            "threats": {t.key: verdicts[t.key].get(i) for t in threats},
        }
        for i in range(int(data.y.numel()))
    )


def example_rows(er: EngineResult, scaler: Any = None) -> tuple[dict[str, Any], ...]:
    """The gallery's examples as the report's records; a table's (``scaler``: its
    MinMaxScaler) with a before/after feature table in the data's own units."""
    return tuple(
        {
            **({"features": feature_table(e.x, e.x_adv, scaler)} if scaler is not None else {}),
            "sample": e.sample,
            "threat_key": e.threat_key,
            "attack": e.attack,
            "label": e.label,
            "clean_pred": e.clean_pred,
            "clean_conf": e.clean_conf,
            "adv_pred": e.adv_pred,
            "adv_conf": e.adv_conf,
            "x": e.x,
            "x_adv": e.x_adv,
        }
        for e in er.examples
    )


def verdict_and_protocol_meta(clf: Classifier, er: EngineResult, cfg: Config) -> dict[str, Any]:
    """meta.verdicts (a randomized model: how verdicts were drawn) and meta.protocol."""
    out: dict[str, Any] = {}
    test = clf.verdict_test()
    if test is not None:
        out["verdicts"] = {
            "test": "sequential Clopper-Pearson, P(misclassified) vs 1/2",
            "alpha_per_sample": test.alpha,
            "alpha_per_verdict": er.verdict_alpha,
            "first_draws": test.first,
            "max_draws": test.max_draws,
            "undecided_counted": "broken (the headline); the interval's upper end counts none",
        }
    if cfg.protocol is not None:
        out["protocol"] = {
            "name": cfg.protocol,
            "description": PROTOCOLS[cfg.protocol],
            "security_claims": cfg.protocol not in SMOKE_PROTOCOLS,
        }
    return out


def config_sha256(cfg: Config) -> str:
    """Hash of the validated config (so formatting and comments do not change it)."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def run_meta(
    clf: Classifier,
    er: EngineResult,
    cfg: Config,
    settings: Any,
    data: DataSet,
    *,
    config_path: str | None,
    started: datetime,
    duration: float,
    store: CellStore | None,
    run: Any,
    inferred: Inferred | None,
    evaluation: dict[str, Any],
) -> RunMeta:
    """meta: versions, the run's settings, timings, how it executed, verdicts and protocol."""
    control: RunControl | None = run.control
    extra = verdict_and_protocol_meta(clf, er, cfg)
    return RunMeta(
        robaudit_version=robaudit.__version__,
        torch_version=torch.__version__,
        python_version=platform.python_version(),
        platform=platform.platform(),
        device=str(clf.device),
        seed=settings.seed,
        data_seed=settings.data_seed,
        batch_size=settings.batch_size,
        cascade=cfg.engine.cascade,
        eot_samples=clf.eot,
        votes=clf.votes,
        access=clf.access,
        config_path=config_path,
        config_sha256=config_sha256(cfg),
        started_at=started.isoformat(timespec="seconds"),
        duration_seconds=round(duration, 3),
        clean_seconds=round(er.clean_seconds, 4),
        schema_version=SCHEMA_VERSION,
        # how the run executed; like the timings, not part of what it measured
        execution={
            "processes": run.shard.world,
            "resumed_cells": store.resumed if store is not None else 0,
            "oom_backoff": list(control.oom_events) if control is not None else [],
            "streamed": data.samples.streamed,
            **({"threads": run.threads.to_dict()} if run.threads is not None else {}),
        },
        evaluation=evaluation,
        verdicts=extra.get("verdicts"),
        protocol=extra.get("protocol"),
        inferred=(
            inferred.to_dict()
            if inferred is not None and (inferred.items or inferred.profile)
            else None
        ),
    )


def model_info(loaded: LoadedModel, data: DataSet, cfg: Config) -> ModelInfo:
    """report.model: the checkpoint's identity and what the model expects."""
    class_names = cfg.model.class_names or (list(data.class_names) if data.class_names else None)
    return ModelInfo(
        path=loaded.path,
        sha256=loaded.sha256,
        format=loaded.format,
        arch=loaded.arch,
        input_shape=list(cfg.model.shape),
        num_classes=cfg.model.classes,
        class_names=class_names,
        bounds=list(cfg.model.bounds),
        mean=cfg.model.mean,
        std=cfg.model.std,
    )


def assemble(
    loaded: LoadedModel,
    data: DataSet,
    cfg: Config,
    er: EngineResult,
    tables: Tables,
    variants: VariantTables,
    certification: dict[str, Any] | None,
    findings: list[Finding],
    verdict: Verdict,
    meta: RunMeta,
    plan: Plan,
    requested_samples: int | None,
    natural: NaturalOutcome | None = None,
    positive: dict[str, Any] | None = None,
    changes: dict[str, Any] | None = None,
) -> RunResult:
    """The run's record; per-sample, per-class, confusion and minimal-norm rows of the
    audited model (the variants appear in the threat and attack rows and their summaries)."""
    model_threats, attacks, verdicts = tables
    n = int(data.y.numel())
    nc = int(er.correct.sum())
    norms_by_threat = {
        (t.access, t.norm): [u.eps for u in model_threats if u.norm == t.norm]
        for t in model_threats
    }
    return RunResult(
        model=model_info(loaded, data, cfg),
        data=DataInfo(data.source, data.split, n, requested_samples),
        n=n,
        clean_correct=nc,
        clean_accuracy=nc / n if n else 0.0,
        clean_ci=wilson_interval(nc, n),
        threats=(*model_threats, *variants.threats),
        attacks=(*attacks, *variants.attacks),
        samples=sample_rows(data, er, verdicts, model_threats),
        examples=example_rows(er, data.tabular.scaler if data.tabular else None),
        findings=tuple(findings),
        score=verdict.score,
        grade=verdict.grade,
        gate=verdict.gate,
        meta=meta,
        config=cfg.model_dump(mode="json"),
        skipped=plan.skipped,
        variants=variants.summaries,
        certification=certification,
        confusions=confusion_rows(data.y, model_threats, verdicts),
        per_class=per_class_rows(data.y, er.correct, model_threats, verdicts, cfg.model.classes),
        minimal_norms=minimal_norm_rows(er, norms_by_threat),
        incomplete=verdict.incomplete,
        natural=natural,
        positive_class=positive,
        feature_changes=changes,
        naive_audit=(
            naive_rows(er.cells, model_threats, verdicts, er.correct) if data.tabular else None
        ),
    )
