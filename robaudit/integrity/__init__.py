"""Integrity: every finding robaudit makes about a model and its evaluation.

Pre-flight checks before any attack (:mod:`.probes`), the reactions they trigger and whether
those ran where they had to (:mod:`.reactions`), indicators of attack failure after the run
(:mod:`.indicators`), the unbounded-attack check (:mod:`.unbounded`), findings about the run
itself (:mod:`.run_findings`), and one call that gathers them all (:mod:`.collect`). Each
raises a catalogued finding (:mod:`robaudit.findings`); Carlini et al. 2019, Pintor et al.
2022.
"""

from __future__ import annotations

from robaudit.integrity.collect import collect_findings
from robaudit.integrity.indicators import entry, post_run
from robaudit.integrity.probes import (
    GRAD_SHARE,
    LOSS_GAP,
    PROBE,
    SANITY_LEFT,
    SANITY_QUERIES,
    SQUARE_QUERIES,
    WEAK_SHARE,
    Coverage,
    Preflight,
    preflight,
)
from robaudit.integrity.reactions import (
    dead_gradient_threats,
    gradient_free,
    gradient_free_search,
    react,
    settle,
)
from robaudit.integrity.run_findings import certification_findings
from robaudit.integrity.unbounded import sanity

__all__ = [
    "GRAD_SHARE", "LOSS_GAP", "PROBE", "SANITY_LEFT", "SANITY_QUERIES", "SQUARE_QUERIES",
    "WEAK_SHARE", "Coverage", "Preflight", "certification_findings", "collect_findings", "dead_gradient_threats",
    "entry", "gradient_free", "gradient_free_search", "post_run", "preflight", "react",
    "sanity", "settle",
]
