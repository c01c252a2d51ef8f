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

import copy
import hashlib
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
import torch
from torch import nn

from robaudit.access import LEVELS as ACCESS_LEVELS
from robaudit.baseline import DEFAULT_MAX_DROP, check_max_drop, compare, load_baseline
from robaudit.classifier import Classifier, resolve_device
from robaudit.config import (
    FORMATS,
    MAX_SEED,
    PRESET_NAMES,
    Config,
    config_from_dict,
    load_config,
    preset_path,
)
from robaudit.control import RunControl, parse_duration
from robaudit.distributed import SINGLE, Shard
from robaudit.errors import EXIT_BAD_INPUT, ConfigError, DataError, RobauditError, UserInputError
from robaudit.export import (
    ADVERSARIAL_FILE,
    ADVERSARIAL_FOLDER,
    AdversarialCollector,
    AdversarialExamples,
    VerifyResult,
    verify_examples,
)
from robaudit.fitting import Inferred, fit_config, needs_fit, probe_num_classes
from robaudit.guard import train_eval_gap, untouched
from robaudit.loading.data import (
    DataSet,
    array_input_shape,
    choose_subset,
    dataset_from_arrays,
    load_data,
    peek_input_shape,
)
from robaudit.loading.model import LoadedModel, load_model
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
from robaudit.results import Finding, GateResult, RunResult, ThreatRow
from robaudit.threads import ThreadChoice
from robaudit.threads import choose as thread_choice
from robaudit.threads import current as current_threads
from robaudit.threads import using as using_threads
from robaudit.threat import format_eps, parse_eps

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

ModelInput: TypeAlias = "nn.Module | str | os.PathLike[str] | Classifier"
DataInput: TypeAlias = (
    "str | os.PathLike[str] | tuple[Any, Any] | torch.utils.data.Dataset[Any] | "
    "torch.utils.data.DataLoader[Any] | None"
)
ConfigInput: TypeAlias = "str | os.PathLike[str] | Mapping[str, Any] | Config"
ProgressInput: TypeAlias = "Progress | Literal['tqdm'] | None"
EPS_TOLERANCE = 1e-9
REPORT_FORMATS: tuple[str, ...] = FORMATS  # report.json .html results.csv summary.md junit.xml


class UnknownThreatError(RobauditError, KeyError):
    """A threat the report does not hold; the message lists the ones it does."""

    exit_code = EXIT_BAD_INPUT

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class RobustAccuracy(float):
    """A robust accuracy that remembers its threat, counts and the HTML report, so a failed
    ``assert report.robust_accuracy("linf", 0.1) >= 0.8`` can say what it was about."""

    threat: str
    robust: int
    n: int
    ci: tuple[float, float]
    report_html: str | None

    def __new__(
        cls,
        value: float = 0.0,
        threat: str = "",
        robust: int = 0,
        n: int = 0,
        ci: tuple[float, float] = (0.0, 1.0),
        report_html: str | None = None,
    ) -> RobustAccuracy:
        self = super().__new__(cls, value)
        self.threat, self.robust, self.n, self.ci, self.report_html = (
            threat, robust, n, (float(ci[0]), float(ci[1])), report_html,
        )
        return self

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (float(self), self.threat, self.robust, self.n, self.ci, self.report_html))

    def __repr__(self) -> str:
        return f"RobustAccuracy({float(self)!r}, threat={self.threat!r})"

    def describe(self) -> str:
        """One line: threat, value, counts and confidence interval."""
        lo, hi = self.ci
        parts = self.threat.split("/", 2)
        where = f"{parts[0]} {parts[1]} eps={parts[2]}" if len(parts) == 3 else self.threat
        return (
            f"robust accuracy at {where} is {float(self):.1%} "
            f"({self.robust}/{self.n} samples, 95% CI {lo:.1%}–{hi:.1%})"
        )

    def explain(self, op: str, limit: float) -> list[str]:
        """Lines for a failed comparison ``self <op> limit`` (the pytest plugin shows them)."""
        gap = abs(float(self) - float(limit))
        where = "below" if float(self) < float(limit) else "above" if float(self) > float(limit) else "at"
        lines = [f"{self.describe()}; required {op} {float(limit):.1%}, it is {where} by {gap:.1%}"]
        lines.append(f"HTML report: {self.report_html}" if self.report_html else "HTML report: not saved (call report.save(out))")
        return lines


class Report:
    """One audit's outcome: the run's results plus its JSON document, and ways to save them.

    Read-only by design: the numbers come from the run; ``save`` only writes files.
    """

    def __init__(self, result: RunResult, *, adversarial: AdversarialExamples | None = None) -> None:
        self._result = result
        self._adversarial = adversarial
        self._doc: dict[str, Any] | None = None
        self._paths: dict[str, Path] = {}

    # -- the numbers ------------------------------------------------------------------
    @property
    def result(self) -> RunResult:
        """The underlying frozen :class:`robaudit.results.RunResult`."""
        return self._result

    @property
    def incomplete(self) -> dict[str, Any] | None:
        """None for a finished run; else why it stopped and which cells did not run."""
        return self._result.incomplete

    @property
    def clean_accuracy(self) -> float:
        return self._result.clean_accuracy

    @property
    def passed(self) -> bool:
        """Whether the config's gate passed (what decides the CLI's exit code)."""
        return self._result.gate.passed

    @property
    def gate(self) -> GateResult:
        return self._result.gate

    @property
    def findings(self) -> tuple[Finding, ...]:
        return self._result.findings

    @property
    def score(self) -> float:
        return self._result.score

    @property
    def grade(self) -> str | None:
        return self._result.grade

    @property
    def threats(self) -> tuple[ThreatRow, ...]:
        """Worst case over attacks per threat, sorted by access, norm and eps."""
        return self._result.threats

    @property
    def n(self) -> int:
        """Number of evaluated samples."""
        return self._result.n

    @property
    def adversarial(self) -> AdversarialExamples | None:
        """Exported examples when the scan ran with ``save_adversarial=True``."""
        return self._adversarial

    @property
    def paths(self) -> dict[str, Path]:
        """Files written by the last :meth:`save` (format -> path)."""
        return dict(self._paths)

    @property
    def html_path(self) -> Path | None:
        return self._paths.get("html")

    def threat(self, norm: str, eps: float | str, access: str = "white-box") -> ThreatRow:
        """The row for one threat; eps matches within 1e-9 and may be a string like ``"8/255"``."""
        try:
            e = parse_eps(eps)
        except ValueError as exc:
            raise UnknownThreatError(str(exc)) from None
        for t in self._result.threats:
            if t.norm == norm and t.access == access and abs(t.eps - e) <= EPS_TOLERANCE:
                return t
        have = ", ".join(f"({t.norm!r}, {t.eps_label!r}, {t.access!r})" for t in self._result.threats)
        raise UnknownThreatError(
            f"no threat ({norm!r}, {format_eps(e)!r}, {access!r}) in this report; "
            f"available (norm, eps, access): {have or 'none'}"
        )

    def robust_accuracy(
        self, norm: str, eps: float | str, access: str = "white-box"
    ) -> RobustAccuracy:
        """Worst-case robust accuracy at a threat (a float that knows its threat and report)."""
        t = self.threat(norm, eps, access)
        html = self.html_path
        return RobustAccuracy(
            t.robust_accuracy, t.key, t.robust, t.n, (t.ci_low, t.ci_high),
            str(html) if html else None,
        )

    def assert_robust(
        self, norm: str, eps: float | str, at_least: float, access: str = "white-box"
    ) -> None:
        """Raise AssertionError, naming threat, value, limit and HTML report, if below ``at_least``."""
        value = self.robust_accuracy(norm, eps, access)
        if not float(value) >= at_least:
            raise AssertionError("\n".join(value.explain(">=", at_least)))

    def to_frame(self) -> pd.DataFrame:
        """The long results table: one row per (variant, attack, threat)."""
        return self._result.table()

    def threat_frame(self) -> pd.DataFrame:
        """One row per threat: the headline numbers."""
        return self._result.threat_table()

    def to_dict(self) -> dict[str, Any]:
        """The report document (what report.json holds), as a fresh copy."""
        return copy.deepcopy(self._document())

    def _document(self) -> dict[str, Any]:
        if self._doc is None:
            from robaudit.report.document import to_document

            self._doc = to_document(self._result)
        return self._doc

    # -- files ------------------------------------------------------------------------
    def save(self, out: str | os.PathLike[str], formats: Sequence[str] | None = None) -> dict[str, Path]:
        """Write the files the CLI writes into ``out``; returns format -> path.

        ``formats`` defaults to the config's ``report.formats``. Exported adversarial
        examples add ``adversarial`` (the .npz) and ``adversarial_images`` (PNG folder).
        """
        from robaudit.report.writers import prepare_out_dir, write_reports

        if isinstance(formats, str):
            formats = [formats]
        chosen = list(formats) if formats is not None else list(self._result.config["report"]["formats"])
        bad = [f for f in chosen if f not in REPORT_FORMATS]
        if bad:
            raise UserInputError(f"unknown report format(s) {bad}; valid: {', '.join(REPORT_FORMATS)}")
        folder = prepare_out_dir(Path(out))
        written = write_reports(self._document(), folder, chosen)
        if self._adversarial is not None:
            written["adversarial"] = self._adversarial.save(folder / ADVERSARIAL_FILE)
            bounds = (float(self._result.model["bounds"][0]), float(self._result.model["bounds"][1]))
            images = self._adversarial.save_images(folder / ADVERSARIAL_FOLDER, bounds)
            if images is not None:
                written["adversarial_images"] = images
        self._paths = dict(written)
        return dict(written)

    def __repr__(self) -> str:
        r = self._result
        heads = ", ".join(f"{t.norm} {t.eps_label}: {t.robust_accuracy:.1%}" for t in r.threats[:4])
        more = f", +{len(r.threats) - 4} more" if len(r.threats) > 4 else ""
        gate = "PASS" if r.gate.passed else "FAIL"
        return (
            f"<robaudit Report {r.model.get('path')}: clean {r.clean_accuracy:.1%} on {r.n}, "
            f"robust [{heads}{more}], score {r.score:.1f} ({r.grade}), gate {gate}>"
        )


# ----------------------------------------------------------------------------- inputs


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


def _check_overrides(
    samples: int | None, batch_size: int | None, device: str | None, seed: int | None = None
) -> None:
    """The same limits the CLI enforces on its flags, named the way Python callers wrote them."""
    if seed is not None and (
        isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED
    ):
        raise UserInputError(f"seed={seed!r}: give a whole number from 0 to {MAX_SEED}")
    if samples is not None and (isinstance(samples, bool) or samples <= 0):
        raise UserInputError(f"samples={samples!r}: give a positive number of samples")
    if batch_size is not None and (isinstance(batch_size, bool) or batch_size <= 0):
        raise UserInputError(f"batch_size={batch_size!r}: give a positive batch size")
    if device is not None and device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
        raise UserInputError(f"device={device!r}: valid values are auto, cpu, cuda, cuda:N")


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


def _resolve_model(
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


def _data_shape(data: DataInput, source: str, split: str) -> tuple[tuple[int, int, int], str]:
    """The input shape the data implies, and how the report names where it came from."""
    if data is None or isinstance(data, (str, os.PathLike)):
        src = source if data is None else str(data)
        return peek_input_shape(src, split), f"the data ({src})"
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return array_input_shape(data[0], "data x"), "the data arrays"
    first: Any = None
    if isinstance(data, torch.utils.data.DataLoader):
        first = _item_xy(next(iter(data)), "DataLoader")[0]
        return array_input_shape(first, "DataLoader batch"), "the DataLoader's first batch"
    if isinstance(data, torch.utils.data.Dataset):
        item = data[0] if hasattr(data, "__getitem__") else next(iter(data))
        first = _item_xy(item, "Dataset")[0]
        return array_input_shape(np.asarray(first)[None], "Dataset item"), "the Dataset's first item"
    raise DataError(
        f"data must be None, a source string or path, (x, y) tensors or arrays, a torch "
        f"Dataset or a DataLoader, not {type(data).__name__}"
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
        else _data_shape(data, settings.source, cfg.data.split)
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


def _numpy(a: Any, what: str) -> np.ndarray:
    """A tensor, array or nested sequence as a numpy array (half floats widened)."""
    if isinstance(a, torch.Tensor):
        t = a.detach().cpu()
        if t.is_floating_point() and t.dtype not in (torch.float32, torch.float64):
            t = t.float()
        return t.numpy()
    if isinstance(a, np.ndarray):
        return a
    try:
        return np.asarray(a)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{what} cannot be turned into an array: {exc}") from None


def _item_xy(item: Any, where: str) -> tuple[Any, Any]:
    if isinstance(item, (tuple, list)) and len(item) >= 2:
        return item[0], item[1]
    raise DataError(
        f"{where} yields {type(item).__name__}; expected (x, y) pairs (image, label)"
    )


def _stack(xs: list[Any], ys: list[Any], what: str, batched: bool) -> tuple[np.ndarray, np.ndarray]:
    if not xs:
        raise DataError(f"{what} contains no samples")
    try:
        if batched:
            x = np.concatenate([_numpy(v, f"{what} x") for v in xs])
            y = np.concatenate([_numpy(v, f"{what} y").reshape(-1) for v in ys])
        else:
            x = np.stack([_numpy(v, f"{what} x") for v in xs])
            y = np.asarray([_numpy(v, f"{what} y").reshape(()) for v in ys])
    except ValueError as exc:
        raise DataError(f"{what}: samples cannot be stacked into one array ({exc})") from None
    return x, y


def _resolve_data(
    data: DataInput, cfg: Config, samples: int | None, data_seed: int, source: str
) -> DataSet:
    """Every accepted data form, through the loaders' own checks."""
    target: dict[str, Any] = {
        "input_shape": cfg.model.shape,
        "bounds": cfg.model.bounds,
        "num_classes": cfg.model.classes,
        "cache_mb": cfg.data.cache_mb,
    }
    if data is None or isinstance(data, (str, os.PathLike)):
        src = source if data is None else str(data)
        return load_data(src, split=cfg.data.split, samples=samples, seed=data_seed, **target)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = _numpy(data[0], "data x"), _numpy(data[1], "data y")
        return dataset_from_arrays(
            x, y, samples=samples, seed=data_seed, source="<arrays>", name="data (x, y)", **target
        )
    if isinstance(data, torch.utils.data.DataLoader):
        what = f"DataLoader of {type(data.dataset).__name__}"
        xs, ys = [], []
        for batch in data:
            bx, by = _item_xy(batch, what)
            xs.append(bx)
            ys.append(by)
        x, y = _stack(xs, ys, what, batched=True)
        return dataset_from_arrays(
            x, y, samples=samples, seed=data_seed, source=f"<{what}>", name=what, **target
        )
    if isinstance(data, torch.utils.data.Dataset):
        what = f"Dataset {type(data).__name__}"
        if hasattr(data, "__len__") and not isinstance(data, torch.utils.data.IterableDataset):
            n = len(data)
            if n == 0:
                raise DataError(f"{what} contains no samples")
            chosen = choose_subset(n, samples, data_seed)  # decode only the chosen items
            items: Iterable[Any] = (data[int(i)] for i in chosen)
        else:
            chosen = None
            items = iter(data)
        xs, ys = [], []
        for item in items:
            ix, iy = _item_xy(item, what)
            xs.append(ix)
            ys.append(iy)
        x, y = _stack(xs, ys, what, batched=False)
        ds = dataset_from_arrays(
            x, y, samples=samples if chosen is None else None, seed=data_seed,
            source=f"<{what}>", name=what, **target,
        )
        if chosen is not None:
            ds = replace(ds, indices=tuple(int(i) for i in chosen))
        return ds
    raise DataError(
        f"data must be None, a source string or path, (x, y) tensors or arrays, a torch "
        f"Dataset or a DataLoader, not {type(data).__name__}"
    )


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


def _progress(progress: ProgressInput) -> Progress | None:
    if progress == "tqdm":
        return _TqdmProgress()
    if isinstance(progress, str):
        raise UserInputError(f"progress={progress!r}: give a Progress object, 'tqdm' or None")
    return progress


# ----------------------------------------------------------------------------- entry points


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
    if time_budget is not None:
        budget = (
            parse_duration(time_budget, "time_budget")
            if isinstance(time_budget, str)
            else float(time_budget)
        )
        if budget <= 0:
            raise UserInputError(f"time_budget={time_budget!r}: give a positive duration")
        control = control or RunControl()
        control.budget_seconds = budget
    if isinstance(threads, ThreadChoice):  # the CLI's choice, with its reason
        pass
    elif threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UserInputError(f"threads={threads!r}: give a positive whole number of threads")
    run_options = RunOptions(
        control=control,
        checkpoint_dir=Path(checkpoint_dir) if checkpoint_dir is not None else None,
        resume=resume,
        allow_partial=allow_partial,
        shard=shard or SINGLE,
    )
    if access is not None and access not in ACCESS_LEVELS:
        raise UserInputError(
            f"access={access!r}: valid values are {', '.join(ACCESS_LEVELS)}"
        )
    max_drop = check_max_drop(max_drop, "max_drop")
    base = load_baseline(baseline) if baseline is not None else None  # fails before any work
    started = datetime.now(timezone.utc)
    t0 = time.perf_counter()
    if isinstance(device, torch.device):
        device = str(device)
    _check_overrides(samples, batch_size, device, seed)
    cfg, config_path = resolve_config(config)
    settings = resolve_settings(
        cfg,
        ScanOptions(
            samples=samples, seed=seed, device=device, batch_size=batch_size,
            trust_model=trust_model, access=access,
        ),
    )
    if not isinstance(model, Classifier):
        resolve_device(settings.device)  # an unusable device fails before anything loads
    bar = _progress(progress)
    loaded, given_clf = _resolve_model(model, cfg, settings)
    if isinstance(threads, ThreadChoice):
        choice = threads
    elif threads is not None:
        choice = thread_choice(threads, "threads=")
    elif cfg.engine.threads is not None:
        choice = thread_choice(cfg.engine.threads, "engine.threads")
    else:
        choice = current_threads()
    run_options = replace(run_options, threads=choice)
    with untouched(loaded.module, loaded.path) as was_training, using_threads(choice):
        report = _scan_module(
            loaded, given_clf, model, data, cfg, config_path, settings, bar, run_options,
            started, t0, save_adversarial, save_unbroken, was_training,
        )
    if base is not None:
        report = Report(
            _apply_baseline(report.result, base[0], base[1], max_drop), adversarial=report.adversarial
        )
    return report


def _scan_module(
    loaded: LoadedModel,
    given_clf: Classifier | None,
    model: ModelInput,
    data: DataInput,
    cfg: Config,
    config_path: str | None,
    settings: RunSettings,
    bar: Progress | None,
    run_options: RunOptions,
    started: datetime,
    t0: float,
    save_adversarial: bool,
    save_unbroken: bool,
    was_training: bool,
) -> Report:
    """The audit proper, with the model already in eval mode (see :func:`robaudit.guard.untouched`)."""
    cfg, inferred = fit_to(cfg, config_path, loaded, given_clf, data, settings)
    dataset = _resolve_data(data, cfg, settings.samples, settings.data_seed, settings.source)
    check_model_output(loaded, cfg, dataset)
    module = loaded.module
    home = _home_device(module)
    gap = None
    if was_training:
        gap = train_eval_gap(module, dataset.samples[:8].to(home or torch.device("cpu")))
    try:
        clf = given_clf or make_classifier(loaded, cfg, settings)
        if given_clf is not None:
            settings = replace(settings, device=str(given_clf.device))
        collector = None
        if save_adversarial or save_unbroken:
            ranker = _ranker(clf) if save_unbroken else None
            collector = AdversarialCollector(dataset, logits=ranker)
        result = audit(
            clf, loaded, dataset, cfg, settings, progress=bar, config_path=config_path,
            on_batch=collector, started=started, t0=t0, run=run_options, inferred=inferred,
            train_eval_gap=gap,
        )
    finally:
        if (
            given_clf is None
            and isinstance(model, nn.Module)
            and home is not None
            and _home_device(module) != home
        ):
            module.to(home)
    adversarial = collector.finish(result) if collector is not None else None
    return Report(result, adversarial=adversarial)


def _apply_baseline(result: RunResult, base: dict[str, Any], path: str, max_drop: float) -> RunResult:
    """The run with the baseline check in its gate and the comparison in ``meta.baseline``."""
    from robaudit.report.document import to_document
    from robaudit.scoring import with_baseline

    comparison = compare(base, to_document(result), max_drop, base_path=path, new_path="<this run>")
    meta = {**result.meta, "baseline": comparison.to_dict()}
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


def _home_device(module: nn.Module) -> torch.device | None:
    for p in module.parameters():
        return p.device
    for b in module.buffers():
        return b.device
    return None


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
    _check_overrides(None, batch_size, device)
    cfg, config_path = resolve_config(config)
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
    loaded, given_clf = _resolve_model(model, cfg, settings)
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
        dataset = _resolve_data(data, cfg, settings.samples, settings.data_seed, settings.source)
        check_model_output(loaded, cfg, dataset)
        if stored_source and dataset.source != stored_source and not dataset.source.startswith("<"):
            notes.append(f"the file was made from data '{stored_source}'; checked against '{dataset.source}'")
    stored_bounds = ex.meta.get("bounds")
    if stored_bounds is not None and [float(b) for b in stored_bounds] != [float(b) for b in cfg.model.bounds]:
        notes.append(f"the file says bounds {stored_bounds}; checked against the config's {list(cfg.model.bounds)}")
    module = loaded.module
    home = _home_device(module)
    try:
        clf = given_clf or make_classifier(loaded, cfg, settings)
        res = verify_examples(ex, clf, dataset, path=path, model_sha256=loaded.sha256)
    finally:
        if (
            given_clf is None
            and isinstance(model, nn.Module)
            and home is not None
            and _home_device(module) != home
        ):
            module.to(home)
    if notes:
        res = replace(res, notes=(*res.notes, *notes))
    return res
