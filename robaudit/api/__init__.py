"""The Python API: ``robaudit.scan(...)`` returns a :class:`Report`, ``robaudit.verify(...)``
re-checks exported adversarial examples. The CLI and the pytest plugin call these same
functions, so every front end gives the same numbers for the same model, data, config and seed.

    import robaudit
    report = robaudit.scan(model, data=(x, y), config="configs/standard.yaml", device="auto")
    report.clean_accuracy, report.robust_accuracy("linf", "8/255"), report.passed
    report.to_frame()          # the results table (pandas)
    report.save("out/")        # report.json/.html, results.csv, summary.md, junit.xml (+ adversarial.npz)

Inputs:

- ``model``: an ``nn.Module`` (audited in memory; its training mode and device are restored
  afterwards; sha256 over its state_dict), a checkpoint path (the CLI's loaders), or a
  :class:`robaudit.classifier.Classifier` (used as is, on its own device).
- ``data``: ``None`` (the config's ``data.source``), a source string or path as the CLI takes,
  ``(x, y)`` tensors or numpy arrays, a ``torch.utils.data.Dataset`` of ``(x, y)`` items, or a
  ``DataLoader`` of ``(x, y)`` batches. In-memory data gets the ``.npz`` loader's checks.
- ``config``: a YAML path, a preset name (``quick``, ``standard``, ``strict``), a dict, or a
  :class:`robaudit.config.Config`; keyword overrides ``samples``, ``seed``, ``batch_size``,
  ``device``.
"""


from __future__ import annotations

# the public names, re-exported where they always were (``X as X``: kept on purpose)
from robaudit.api.datasets import DataInput as DataInput
from robaudit.api.inputs import ConfigInput as ConfigInput
from robaudit.api.inputs import ModelInput as ModelInput
from robaudit.api.inputs import ProgressInput as ProgressInput
from robaudit.api.inputs import fit_to as fit_to
from robaudit.api.inputs import resolve_config as resolve_config
from robaudit.api.inputs import state_sha256 as state_sha256
from robaudit.api.reports import EPS_TOLERANCE as EPS_TOLERANCE
from robaudit.api.reports import REPORT_FORMATS as REPORT_FORMATS
from robaudit.api.reports import Report as Report
from robaudit.api.reports import RobustAccuracy as RobustAccuracy
from robaudit.api.reports import UnknownThreatError as UnknownThreatError
from robaudit.api.scanning import scan as scan
from robaudit.api.verifying import verify as verify

__all__ = [
    "ConfigInput",
    "DataInput",
    "ModelInput",
    "Report",
    "RobustAccuracy",
    "UnknownThreatError",
    "resolve_config",
    "scan",
    "verify",
]
