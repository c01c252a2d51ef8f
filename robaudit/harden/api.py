"""``robaudit.harden_model(...)``: train a model to be more robust, then prove it with the
same audit, original and hardened side by side. The ``robaudit harden`` command calls this.

    import robaudit
    from robaudit.harden import HardenOptions
    result = robaudit.harden_model(
        "model.pt", config="configs/standard.yaml", out="hardened/",
        options=HardenOptions(method="pgd-at", epochs=10),
    )
    result.robust_gain("linf", 0.2), result.clean_change, result.files["torchscript"]

(The function is not called ``robaudit.harden``: that name is the package, and a function of
the same name would be shadowed by the submodule once it is imported.)
"""

from __future__ import annotations

import copy
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from robaudit.errors import ModelLoadError, UserInputError
from robaudit.harden.data import (
    TrainingData,
    check_audit_split,
    load_training_data,
    training_source,
)
from robaudit.harden.export import save_model
from robaudit.harden.options import HardenOptions, check_options, training_threat
from robaudit.harden.trainer import (
    CHECKPOINT_DIR,
    BatchStats,
    EpochRecord,
    TrainOutcome,
    checkpoint_files,
    train,
)
from robaudit.progress import Progress
from robaudit.threat import Threat

if TYPE_CHECKING:
    from collections.abc import Callable

    from robaudit.api import Report
    from robaudit.config import Config

MAX_SEED = 2**32 - 1  # numpy's RandomState (the held-out split) takes seeds up to this
AUDIT_FOLDERS = {"original": "audit-original", "hardened": "audit-hardened"}


@dataclass(frozen=True)
class HardenResult:
    """What a hardening run produced: the files, the training outcome and both audits."""

    out: Path
    method: str
    threat: Threat
    files: dict[str, Path]
    training: TrainOutcome
    original: Report | None = None  # the original model's audit (None: audit=False)
    hardened: Report | None = None  # the hardened model's audit
    comparison: dict[str, Any] | None = None  # what compare.json holds
    notes: tuple[str, ...] = field(default_factory=tuple)

    def robust_gain(self, norm: str, eps: float | str, access: str = "white-box") -> float:
        """Change of worst-case robust accuracy at a threat (hardened minus original)."""
        if self.original is None or self.hardened is None:
            raise UserInputError("this run was not audited (audit=False): no robust gain to report")
        return float(self.hardened.robust_accuracy(norm, eps, access)) - float(
            self.original.robust_accuracy(norm, eps, access)
        )

    @property
    def clean_change(self) -> float:
        """Change of clean accuracy on the audit's samples (negative: the price paid)."""
        if self.original is None or self.hardened is None:
            raise UserInputError("this run was not audited (audit=False): no clean change to report")
        return float(self.hardened.clean_accuracy) - float(self.original.clean_accuracy)


def harden_model(
    model: str | os.PathLike[str] | nn.Module,
    *,
    config: Any,
    out: str | os.PathLike[str],
    options: HardenOptions | None = None,
    train_data: str | None = None,
    device: str | None = None,
    samples: int | None = None,
    seed: int | None = None,
    trust_model: bool = False,
    resume: bool = False,
    audit: bool = True,
    progress: Progress | None = None,
    on_batch: Callable[[BatchStats], None] | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> HardenResult:
    """Harden ``model`` as ``options`` say and audit it before and after with ``config``.

    Training data: the config's ``data.source`` at split ``train``, or ``train_data``; the
    audits use the config's (test) split only. ``seed`` (default: the config's) drives both
    training and the audits. Every bad input is a one-line :class:`UserInputError` raised
    before anything is written; ``out`` then receives ``model.pt`` (TorchScript),
    ``model.pt2`` (torch.export, when the model exports), ``state_dict.pt``,
    ``training_log.csv``, ``checkpoints/`` and, unless ``audit=False``, ``compare.json``,
    ``compare.html`` and both audits' reports. ``on_batch(BatchStats)`` and
    ``on_epoch(EpochRecord)`` are progress callbacks.
    """
    from robaudit.api import resolve_config
    from robaudit.classifier import resolve_device

    opts = options or HardenOptions()
    check_options(opts)
    _check_numbers(samples, seed)
    cfg, config_path = resolve_config(config)
    config_name = config_path or "config"
    check_audit_split(cfg, config_name)
    source = training_source(cfg, train_data)
    out_dir = Path(out)
    check_out(out_dir, resume)
    dev = resolve_device(device or cfg.engine.device)
    run_seed = cfg.seed if seed is None else seed
    module, name, sha = _load_module(model, cfg, trust_model)
    cfg = _fit(cfg, module, source, name, config_name)
    threat = training_threat(cfg, opts)
    data = load_training_data(
        cfg, source, holdout=opts.holdout, samples=opts.train_samples, seed=run_seed
    )
    _check_fits(module, data, cfg.model.classes, name)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UserInputError(f"--out {out_dir}: cannot create the folder ({exc.strerror})") from None
    identity = {
        "model sha256": sha,
        "--train-data": source,
        "threat": f"{threat.norm} {threat.eps!r}",
        "model.mean/std": repr((cfg.model.mean, cfg.model.std, list(cfg.model.bounds))),
    }
    outcome = train(
        module, data, opts, threat,
        num_classes=cfg.model.classes, bounds=cfg.model.bounds,
        mean=cfg.model.mean, std=cfg.model.std, seed=run_seed, device=dev, out=out_dir,
        resume=resume, identity=identity, model_name=name,
        progress=progress, on_batch=on_batch, on_epoch=on_epoch,
    )
    files, notes = save_model(module, out_dir, cfg.model.shape)
    files["training_log"] = out_dir / "training_log.csv"
    files["checkpoints"] = out_dir / CHECKPOINT_DIR
    if not audit:
        return HardenResult(out_dir, opts.method, threat, files, outcome, notes=tuple(notes))
    audit_kwargs: dict[str, Any] = {
        "config": config if config_path is not None else cfg,  # each audit fits it again
        "device": device, "samples": samples, "seed": seed, "progress": progress,
    }
    result = HardenResult(out_dir, opts.method, threat, files, outcome, notes=tuple(notes))
    return _audit_both(result, model, trust_model, audit_kwargs, opts, data, config_path)


def _check_numbers(samples: int | None, seed: int | None) -> None:
    if samples is not None and (isinstance(samples, bool) or samples <= 0):
        raise UserInputError(f"--samples {samples}: give a positive number of samples")
    if seed is not None and (isinstance(seed, bool) or not 0 <= seed <= MAX_SEED):
        raise UserInputError(f"--seed {seed}: give a whole number from 0 to {MAX_SEED}")


def _load_module(
    model: str | os.PathLike[str] | nn.Module, cfg: Config, trust_model: bool
) -> tuple[nn.Module, str, str]:
    """The module to train (a copy of an in-memory one), its name and its sha256."""
    from robaudit.api import state_sha256
    from robaudit.loading.model import load_model

    if isinstance(model, nn.Module):
        return copy.deepcopy(model), f"<in-memory {type(model).__qualname__}>", state_sha256(model)
    if not isinstance(model, (str, os.PathLike)):
        raise UserInputError(
            f"model must be a checkpoint path or a torch.nn.Module, not {type(model).__name__}"
        )
    loaded = load_model(
        Path(model), arch=cfg.model.arch, arch_kwargs=cfg.model.arch_kwargs,
        trust_model=trust_model,
    )
    if loaded.format == "onnx":
        raise ModelLoadError(
            f"{model}: an ONNX model cannot be trained (onnxruntime gives no gradients for its "
            "weights); harden a TorchScript file, a state_dict with model.arch or a .pt2 program"
        )
    return loaded.module, str(model), loaded.sha256


def _fit(cfg: Config, module: nn.Module, source: str, name: str, config_name: str) -> Config:
    """A preset: shape from the training data, classes from the model; else ``cfg`` itself."""
    from robaudit.fitting import fit_config, needs_fit, probe_num_classes
    from robaudit.loading.data import peek_input_shape

    if not needs_fit(cfg):
        return cfg
    shape = cfg.model.input_shape or peek_input_shape(source, "train")
    classes = cfg.model.num_classes or probe_num_classes(module, shape, cfg.model.bounds, name)
    fitted, _ = fit_config(
        cfg, input_shape=shape, num_classes=classes, shape_from=f"the data ({source})",
        source=config_name,
    )
    return fitted


def _audit_both(
    trained: HardenResult, model: str | os.PathLike[str] | nn.Module, trust_model: bool,
    audit_kwargs: dict[str, Any], opts: HardenOptions, data: TrainingData,
    config_path: str | None,
) -> HardenResult:
    """Audit the original and the hardened model alike, save both reports and the comparison."""
    from robaudit.api import scan
    from robaudit.harden.compare import write_compare

    out_dir, files, threat, outcome = trained.out, trained.files, trained.threat, trained.training
    original = scan(model, trust_model=trust_model, **audit_kwargs)
    hardened = scan(files["torchscript"], **audit_kwargs)
    for key, report in (("original", original), ("hardened", hardened)):
        folder = out_dir / AUDIT_FOLDERS[key]
        saved = report.save(folder, formats=["json", "html"])
        files[f"audit_{key}"] = saved["json"]
    training_data = {
        "source": data.source, "split": data.split, "train": data.n_train, "heldout": data.n_held,
    }
    doc = _compare(original, hardened, opts, threat, outcome, training_data, files,
                   list(trained.notes), config_path, out_dir)
    written = write_compare(doc, out_dir)
    files["compare_json"], files["compare_html"] = written["json"], written["html"]
    return HardenResult(
        out_dir, opts.method, threat, files, outcome, original, hardened, doc, tuple(doc["notes"])
    )


def _compare(
    original: Report, hardened: Report, opts: HardenOptions, threat: Threat, outcome: TrainOutcome,
    training_data: dict[str, Any], files: dict[str, Path], notes: list[str],
    config_path: str | None, out_dir: Path,
) -> dict[str, Any]:
    from robaudit.harden.compare import compare_document

    rel = {k: os.path.relpath(v, out_dir) for k, v in files.items()}
    rel["compare_json"], rel["compare_html"] = "compare.json", "compare.html"
    all_notes = list(notes)
    if outcome.stopped:
        all_notes.append(outcome.stopped)
    return compare_document(
        original, hardened, method=opts.method, options=asdict(opts.resolved()),
        threat={"norm": threat.norm, "eps": threat.eps, "eps_label": threat.label,
                "access": threat.access},
        training=outcome, training_data=training_data, files=rel, notes=all_notes,
        config_path=config_path,
    )


def check_out(out: Path, resume: bool) -> None:
    """The output folder must be usable, and hold a previous run only when resuming it."""
    if out.exists() and not out.is_dir():
        raise UserInputError(f"--out {out}: exists and is not a directory")
    probe = out
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise UserInputError(f"--out {out}: not writable ({probe} does not allow creating files)")
    has_run = bool(checkpoint_files(out / CHECKPOINT_DIR))
    if resume and not has_run:
        raise UserInputError(
            f"--resume: {out / CHECKPOINT_DIR} holds no epoch checkpoint; run without --resume"
        )
    if not resume and has_run:
        raise UserInputError(
            f"--out {out}: holds checkpoints of an earlier harden run; pass --resume to continue "
            "it, or choose another folder"
        )


def _check_fits(module: nn.Module, data: TrainingData, num_classes: int, name: str) -> None:
    """The model must map two training inputs to ``N x num_classes`` logits."""
    first = next(iter(module.parameters()), None)
    probe = data.x[:2].to(first.device if first is not None else "cpu")
    try:
        with torch.no_grad():
            out = module(probe)
    except Exception as exc:  # any failure means the model does not fit the data
        raise ModelLoadError(
            f"{name}: model fails on training inputs of shape {list(probe.shape)}: "
            f"{str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__}"
        ) from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        shape = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ModelLoadError(
            f"{name}: model output is {shape} for {probe.shape[0]} inputs; expected "
            f"[{probe.shape[0]}, {num_classes}] (model.num_classes)"
        )


__all__ = ["BatchStats", "EpochRecord", "HardenOptions", "HardenResult", "harden_model"]
