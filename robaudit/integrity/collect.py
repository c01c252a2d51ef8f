"""Every finding of a finished run, gathered in one call: the pipeline makes none itself.

Order (the report keeps it): the engine's own checks, the pre-flight findings settled against
what ran, battery, training-mode and skipped-attack findings, then the failure indicators and
the unbounded-attack check.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from robaudit.attacks.base import Attack
from robaudit.classifier import Classifier
from robaudit.config import Config
from robaudit.engine import EngineResult
from robaudit.integrity.indicators import post_run
from robaudit.integrity.probes import Preflight
from robaudit.integrity.reactions import dead_gradient_threats, settle
from robaudit.integrity.run_findings import (
    battery_findings,
    preflight_findings,
    skipped_findings,
    train_mode_findings,
)
from robaudit.integrity.unbounded import sanity
from robaudit.loading.samples import Images
from robaudit.results import Finding, SkippedAttack


def collect_findings(
    clf: Classifier,
    x: Images,
    y: torch.Tensor,
    cfg: Config,
    er: EngineResult,
    *,
    pre: Preflight,
    attacks: dict[int, Attack],
    skipped: list[SkippedAttack],
    seed: int,
    halted: Callable[[], bool],
    train_eval_gap: float | None = None,
) -> tuple[list[Finding], list[str]]:
    """The run's findings, and the checks a stopped run left out (for ``incomplete``)."""
    settled = settle(pre, er)
    findings = preflight_findings(er, cfg) + settled + battery_findings(cfg)
    findings += train_mode_findings(train_eval_gap) + skipped_findings(skipped)
    not_run: list[str] = []
    if not cfg.integrity.enabled:
        return findings, not_run
    findings += post_run(
        er, attacks, randomized=clf.votes > 1, explained=dead_gradient_threats(pre, settled)
    )
    if cfg.integrity.sanity and any(a.requires == "gradients" for a in attacks.values()):
        if halted():
            not_run.append("sanity check (RA008)")
        else:
            found = sanity(clf, x, y, er.correct, seed, pre, [t.norm for t in cfg.threats()])
            findings += [found] if found else []
    return findings, not_run
