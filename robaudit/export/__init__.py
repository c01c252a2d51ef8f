"""Adversarial examples out of a scan, and an independent check of them.

``robaudit scan --save-adversarial`` writes ``adversarial.npz``: one row per verified break
(per attack and threat), optionally plus the strongest candidate (lowest true-class margin)
for every sample that no attack broke. :func:`verify_examples` re-checks each row with its
own arithmetic and a fresh forward pass, so a reader need not trust the run that made the
file: inside the threat's ball around the clean input taken from the data set, inside the
bounds, clean input classified correctly, adversarial input misclassified.

File format (``np.load(path)`` with ``allow_pickle=False``; ``FORMAT`` in ``meta``):

=================  ======================  ============================================
array              dtype, shape            meaning
=================  ======================  ============================================
``x_adv``          float32 N×(input shape) the exported input (projected, in the bounds)
``x_clean``        float32 N×(input shape) the clean input it was found around
``y``              int64 N                 true label
``y_adv_pred``     int64 N                 the scan's fresh prediction on ``x_adv``
``broken``         bool N                  True: a verified break; False: the strongest
                                           candidate of a sample no attack broke
``x_clean_index``  int64 N                 the sample's position in the evaluated subset
``source_index``   int64 N                 the sample's position in the data source split
``attack``         str N                   attack name
``attack_index``   int64 N                 the attack's position in the config's ``attacks``
``access``         str N                   threat access (white-box, score, decision)
``norm``           str N                   threat norm (linf, l2)
``eps``            float64 N               threat budget in pixel units of the bounds
``eps_label``      str N                   the budget as written (``8/255``)
``threat``         str N                   threat key, as in report.json
``distance``       float64 N               ``norm`` of ``x_adv - x_clean``
``meta``           str (0-d, JSON)         format, versions, model sha256, data source,
                                           split, samples, seed, bounds, per-cell counts
=================  ======================  ============================================

``x_adv`` with ``y`` is what adversarial fine-tuning needs (``robaudit harden``, later).

Modules, one job each: :mod:`~robaudit.export.examples` (the file), :mod:`~robaudit.export.collect`
(the scan's sink), :mod:`~robaudit.export.verify` (the re-check) and :mod:`~robaudit.export.images`
(PNG tiles, for image inputs only).
"""

from __future__ import annotations

from robaudit.export.collect import AdversarialCollector, LogitsFn, export_meta
from robaudit.export.examples import (
    ADVERSARIAL_FILE,
    ADVERSARIAL_FOLDER,
    FORMAT,
    AdversarialExamples,
    perturbation_norm,
)
from robaudit.export.verify import CellCheck, VerifyResult, Violation, verify_examples

__all__ = [
    "ADVERSARIAL_FILE",
    "ADVERSARIAL_FOLDER",
    "FORMAT",
    "AdversarialCollector",
    "AdversarialExamples",
    "CellCheck",
    "LogitsFn",
    "VerifyResult",
    "Violation",
    "export_meta",
    "perturbation_norm",
    "verify_examples",
]
