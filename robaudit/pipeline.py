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
import json
import platform
import time
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch

import robaudit
from robaudit.attacks.base import ACCESS_FOR_REQUIRES, registry
from robaudit.certify import run_certification
from robaudit.checkpoint import CellStore, fingerprint
from robaudit.classifier import ACCESS_RANK, Classifier, resolve_device
from robaudit.config import PROTOCOLS, SMOKE_PROTOCOLS, Config
from robaudit.control import FAILURE, INTERRUPTED, RunControl
from robaudit.distributed import SINGLE, Shard
from robaudit.engine import BatchSink, EngineControl, EngineResult, PlannedAttack, run_plan
from robaudit.entries import BATTERY_ID
from robaudit.errors import ConfigError, ModelLoadError, RuntimeFailure
from robaudit.evaluation import status as evaluation_status
from robaudit.evaluation import weak_threats, with_weak
from robaudit.fitting import Inferred
from robaudit.integrity import (
    Preflight,
    dead_gradient_threats,
    post_run,
    preflight,
    react,
    sanity,
    settle,
)
from robaudit.loading.data import DataSet
from robaudit.loading.model import LoadedModel
from robaudit.progress import Progress
from robaudit.results import (
    SCHEMA_VERSION,
    RunResult,
    ThreatRow,
    build_tables,
    confusion_rows,
    minimal_norm_rows,
    per_class_rows,
    wilson_interval,
)
from robaudit.run_findings import (
    battery_findings,
    certification_findings,
    preflight_findings,
    skipped_findings,
    train_mode_findings,
)
from robaudit.scoring import evaluate_gate, grade, score, with_partial
from robaudit.threads import ThreadChoice
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


def run_fingerprint(cfg: Config, loaded: LoadedModel, data: DataSet, settings: RunSettings) -> str:
    """Everything that decides a cell's numbers; a resumed run must match it exactly."""
    return fingerprint(
        config=config_sha256(cfg),
        model=loaded.sha256,
        source=data.source,
        split=data.split,
        indices=[int(i) for i in data.indices],
        seed=settings.seed,
        batch_size=settings.batch_size,
        access=settings.access,
        robaudit=robaudit.__version__,
    )


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


def build_plan(cfg: Config) -> list[PlannedAttack]:
    """Every (attack, eps) pair in the config, as attack instances at threats."""
    plan: list[PlannedAttack] = []
    reg = registry()
    for i, spec in enumerate(cfg.attacks):
        members = spec.members()
        for k, (name, params) in enumerate(members):
            cls = reg[name]
            attack = cls(spec.params if spec.battery is None else cls.Params(**params))
            # battery members get ids of their own (BATTERY_ID * (k + 1) + entry) and cascade
            index = i if spec.battery is None else BATTERY_ID * (k + 1) + i
            plan.extend(
                PlannedAttack(index, attack, t, cascade=spec.battery is not None)
                for t in spec.threats()
            )
    return plan




def config_sha256(cfg: Config) -> str:
    """Hash of the validated config (so formatting and comments do not change it)."""
    blob = json.dumps(cfg.model_dump(mode="json"), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


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
    )


def cap_access(
    plan: list[PlannedAttack], access: str, why: str
) -> tuple[list[PlannedAttack], list[dict[str, Any]]]:
    """Lower every threat to ``access``; attacks that need more are skipped, with the reason.

    The threats are relabelled (a white-box row becomes a score row) so no number in the report
    claims a stronger attacker than the one that ran, and a gate threshold on a white-box
    threat then fails as "not evaluated" rather than passing on weaker evidence.
    """
    if access == "white-box":
        return plan, []
    kept: list[PlannedAttack] = []
    skipped: dict[int, dict[str, Any]] = {}
    for p in plan:
        level = min(p.threat.access, access, key=ACCESS_RANK.__getitem__)
        need = ACCESS_FOR_REQUIRES[p.attack.requires]
        if ACCESS_RANK[need] > ACCESS_RANK[level]:
            row = skipped.setdefault(
                p.index,
                {
                    "attack": p.attack.name,
                    "attack_index": p.index,
                    "threats": [],
                    "reason": f"needs {need} access; {why}",
                },
            )
            row["threats"].append(p.threat.key)
            continue
        kept.append(replace(p, threat=replace(p.threat, access=level)))
    return kept, list(skipped.values())


def access_reason(loaded: LoadedModel, settings: RunSettings) -> str:
    """Why the run is capped, in the words the report uses."""
    if loaded.max_access != "white-box" and ACCESS_RANK[loaded.max_access] <= ACCESS_RANK[
        settings.access
    ]:
        return f"the {loaded.format} model answers queries only ({loaded.max_access} access)"
    return f"the run was limited with --access {settings.access}"


def incomplete_state(
    failure: str | None, unrun: list[dict[str, object]], not_run: list[str],
    control: RunControl | None,
) -> dict[str, Any] | None:
    """What a run that stopped early left undone, and why (None for a complete run)."""
    if failure is None and not unrun and not not_run:
        return None
    kind = FAILURE if failure is not None else (
        control.kind if control is not None and control.kind else INTERRUPTED
    )
    reason = failure if failure is not None else (
        control.reason if control is not None and control.reason else "stopped"
    )
    return {"kind": kind, "reason": reason, "unrun": unrun, "not_run": not_run}


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


def example_rows(er: EngineResult) -> tuple[dict[str, Any], ...]:
    """The gallery's examples as the report's records."""
    return tuple(
        {
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


def plan_audit(
    clf: Classifier, data: DataSet, cfg: Config, capped_because: str, config_path: str | None
) -> tuple[list[PlannedAttack], Preflight, list[dict[str, Any]]]:
    """The plan stage: the config's attacks × threats, integrity's reactions to the pre-flight
    checks (Square, BPDA copies, EOT), then the access cap (attacks that need more access are
    skipped, each with its reason). A plan left empty is a config error naming what would fit.
    """
    plan = build_plan(cfg)
    pre = Preflight()
    if cfg.integrity.enabled:
        pre = preflight(clf, data.samples, data.y)
        plan = react(pre, clf, plan, cfg)
    plan, skipped = cap_access(plan, clf.access, capped_because)
    if not plan:
        names = ", ".join(sorted({s["attack"] for s in skipped}))
        fits = ", ".join(
            n for n, c in registry().items()
            if ACCESS_RANK[ACCESS_FOR_REQUIRES[c.requires]] <= ACCESS_RANK[clf.access]
        )
        raise ConfigError(
            f"{config_path or 'config'}: no attack can run at {clf.access} access "
            f"({capped_because}); skipped {names}; add one of: {fits}"
        )
    return plan, pre, skipped


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

    ``loaded`` only identifies the model in the report (path, sha256, format, arch);
    ``on_batch`` receives every verified batch (adversarial-example export); ``run``:
    stopping early, resuming, sharding (:class:`RunOptions`). A run that stops early returns
    a result whose ``incomplete`` says what did not run; a model failure mid-run raises
    :class:`RuntimeFailure` carrying that partial result as ``partial``.
    """
    run = run or RunOptions()
    shard = run.shard
    started = started or datetime.now(timezone.utc)
    t0 = time.perf_counter() if t0 is None else t0
    seed, data_seed, batch_size = settings.seed, settings.data_seed, settings.batch_size
    source, samples, device = data.source, settings.samples, clf.device
    torch.manual_seed(seed)  # for models that draw randomness from the global generator
    plan, pre, skipped = plan_audit(clf, data, cfg, access_reason(loaded, settings), config_path)
    store = None  # created only now: a config refused above leaves no state in --out
    if run.checkpoint_dir is not None and shard.is_main:
        store = CellStore(
            run.checkpoint_dir, run_fingerprint(cfg, loaded, data, settings), resume=run.resume
        )
    ctl = EngineControl(run.control, store, shard)
    er = run_plan(
        clf,
        data.samples,
        data.y,
        plan,
        seed=seed,
        batch_size=batch_size,
        cascade=cfg.engine.cascade,
        examples=cfg.report.examples,
        progress=progress,
        on_batch=on_batch,
        ctl=ctl,
    )
    failure = er.failure
    unrun = list(er.unrun)
    not_run: list[str] = []

    def halted() -> bool:
        return bool(unrun) or failure is not None or ctl.shard.any(
            run.control.should_stop() if run.control is not None else False
        )

    settled = settle(pre, er)
    findings = preflight_findings(er, cfg) + settled + battery_findings(cfg)
    findings += train_mode_findings(train_eval_gap) + skipped_findings(skipped)
    if cfg.integrity.enabled:
        by_index = {p.index: p.attack for p in plan}
        findings += post_run(
            er, by_index, randomized=clf.votes > 1,
            explained=dead_gradient_threats(pre, settled),
        )
        if cfg.integrity.sanity and any(p.attack.requires == "gradients" for p in plan):
            if halted():
                not_run.append("sanity check (RA008)")
            else:
                found = sanity(clf, data.samples, data.y, er.correct, seed, pre)
                findings += [found] if found else []
    params = {p.index: p.attack.params.model_dump(mode="json") for p in plan}
    threats, attacks, verdicts = build_tables(er, data.y, params, cfg.engine.cascade)
    model_threats = threats
    variants: list[dict[str, Any]] = []
    if cfg.defenses and halted():
        not_run.append("defense variants")
    elif cfg.defenses:
        base_plan, _ = cap_access(build_plan(cfg), clf.access, access_reason(loaded, settings))
        try:
            v_threats, v_attacks, variants, v_unrun = run_variants(
                clf, data.samples, data.y, base_plan, cfg, seed=seed, batch_size=batch_size,
                progress=progress, ctl=ctl,
            )
        except RuntimeFailure as exc:
            failure, v_threats, v_attacks, v_unrun = str(exc), [], [], []
            not_run.append("defense variants")
        unrun += v_unrun
        threats = (*threats, *v_threats)
        attacks = (*attacks, *v_attacks)
    n = int(data.y.numel())
    nc = int(er.correct.sum())
    clean_acc = nc / n if n else 0.0
    certification = None
    if cfg.certify is not None and halted():
        not_run.append("certification")
    elif cfg.certify is not None:
        certification = run_certification(clf, data.samples, data.y, cfg.certify, seed)
        findings += certification_findings(certification)
    sc = score(model_threats, clean_acc)  # the audited model; variants are what-ifs
    gate = evaluate_gate(cfg.gate, clean_acc, threats, sc, findings, certification)
    incomplete = incomplete_state(failure, unrun, not_run, run.control)
    if incomplete is not None:
        gate = with_partial(gate, incomplete, run.allow_partial)
    weak = weak_threats(
        er.cells, {p.index: p.attack for p in plan}, [t.key for t in model_threats]
    )
    gate = with_weak(gate, weak, cfg.gate.allow_weak)
    evaluation = evaluation_status(incomplete, weak, [t.key for t in model_threats])
    class_names = cfg.model.class_names or (list(data.class_names) if data.class_names else None)
    samples_out = sample_rows(data, er, verdicts, model_threats)
    examples = example_rows(er)
    duration = time.perf_counter() - t0
    meta: dict[str, Any] = {
        "robaudit_version": robaudit.__version__,
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "platform": platform.platform(),
        "device": str(device),
        "seed": seed,
        "data_seed": data_seed,
        "batch_size": batch_size,
        "cascade": cfg.engine.cascade,
        "eot_samples": clf.eot,
        "votes": clf.votes,
        "access": clf.access,
        "config_path": config_path,
        "config_sha256": config_sha256(cfg),
        "started_at": started.isoformat(timespec="seconds"),
        "duration_seconds": round(duration, 3),
        "clean_seconds": round(er.clean_seconds, 4),
        "schema_version": SCHEMA_VERSION,
        # how the run executed; like the timings, not part of what it measured
        "execution": {
            "processes": shard.world,
            "resumed_cells": store.resumed if store is not None else 0,
            "oom_backoff": list(run.control.oom_events) if run.control is not None else [],
            "streamed": data.samples.streamed,
            **({"threads": run.threads.to_dict()} if run.threads is not None else {}),
        },
    }
    meta["evaluation"] = evaluation
    meta.update(verdict_and_protocol_meta(clf, er, cfg))
    if inferred is not None and (inferred.items or inferred.profile):
        meta["inferred"] = inferred.to_dict()
    result = RunResult(
        model={
            "path": loaded.path,
            "sha256": loaded.sha256,
            "format": loaded.format,
            "arch": loaded.arch,
            "input_shape": list(cfg.model.shape),
            "num_classes": cfg.model.classes,
            "class_names": class_names,
            "bounds": list(cfg.model.bounds),
            "mean": cfg.model.mean,
            "std": cfg.model.std,
        },
        data={
            "source": source,
            "split": data.split,
            "samples": n,
            "requested_samples": samples,
        },
        n=n,
        clean_correct=nc,
        clean_accuracy=clean_acc,
        clean_ci=wilson_interval(nc, n),
        threats=threats,
        attacks=attacks,
        samples=samples_out,
        examples=examples,
        findings=tuple(findings),
        score=sc,
        grade=grade(sc) if evaluation["status"] == "complete" else None,
        gate=gate,
        meta=meta,
        config=cfg.model_dump(mode="json"),
        skipped=tuple(skipped),
        variants=tuple(variants),
        certification=certification,
        confusions=confusion_rows(data.y, model_threats, verdicts),
        per_class=per_class_rows(
            data.y, er.correct, model_threats, verdicts, cfg.model.classes
        ),
        minimal_norms=minimal_norm_rows(
            er,
            {
                (t.access, t.norm): [u.eps for u in model_threats if u.norm == t.norm]
                for t in model_threats
            },
        ),
        incomplete=incomplete,
    )
    if failure is not None:
        raise RuntimeFailure(failure, partial=result)
    return result
