"""``robaudit harden``: check the flags, train through :func:`robaudit.harden.api.harden_model`
(bars at a terminal), and print the before/after summary."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import typer

from robaudit.cli.base import err_console, handle_errors, note_debug
from robaudit.cli.options import DebugOption, DeviceOption, QuietOption, TrustModelOption
from robaudit.errors import UserInputError
from robaudit.harden.options import METHOD_DEFAULTS, METHODS, HardenOptions
from robaudit.report.terminal import print_harden_summary
from robaudit.report.terminal_bars import training_bars

_HD = HardenOptions()  # the library's defaults, shown by --help


def _method_defaults(key: str, show: Callable[[Any], str]) -> str:
    """``"pgd 10, trades 10, ..."``: each method's default ``key``, for the help."""
    return ", ".join(f"{m} {show(d[key])}" for m, d in METHOD_DEFAULTS.items()) + "."


ModelOption = Annotated[
    Path, typer.Argument(help="Checkpoint to harden: TorchScript, state_dict (+ model.arch), .pt2.")
]
ConfigOption = Annotated[
    Path,
    typer.Option("--config", "-c", help="Threat-model YAML: the model, data and the audit."),
]
MethodOption = Annotated[
    str, typer.Option(help=f"Training method: {', '.join(METHODS)}.")
]
EpochsOption = Annotated[
    int | None,
    typer.Option(
        help="Training epochs (distill: teacher, then as many for the student); default "
        + _method_defaults("epochs", lambda v: str(int(v)))
    ),
]
OutOption = Annotated[
    Path,
    typer.Option("--out", "-o", help="Folder for model.pt, the log, checkpoints and compare.html."),
]
TrainDataOption = Annotated[
    str | None,
    typer.Option(
        "--train-data",
        help="Training data (a .npz, folder, torchvision:NAME:PATH); default: the config's "
        "data.source at split train.",
    ),
]
EpsOption = Annotated[
    str | None,
    typer.Option(help="Training budget (0.2 or 8/255); default: the config's gated threat."),
]
NormOption = Annotated[str | None, typer.Option(help="linf or l2; default: the config's.")]
StepsOption = Annotated[int, typer.Option(help="PGD steps per training batch.")]
StepSizeOption = Annotated[
    float | None, typer.Option("--step-size", help="PGD step (default 2.5 * eps / steps).")
]
LrOption = Annotated[
    float | None,
    typer.Option(
        help="Adam learning rate (fast-at: the cycle's peak); default "
        + _method_defaults("lr", lambda v: f"{v:g}")
    ),
]
TrainBatchSizeOption = Annotated[
    int, typer.Option("--batch-size", help="Training batch size.")
]
BetaOption = Annotated[float, typer.Option(help="TRADES: weight of the KL term.")]
TemperatureOption = Annotated[
    float, typer.Option(help="distill: softmax temperature T.")
]
MixRatioOption = Annotated[
    float, typer.Option("--mix-ratio", help="mix: adversarial share of each batch, 0 to 1.")
]
HoldoutOption = Annotated[
    float, typer.Option(help="Share of the training data held out for model selection.")
]
PatienceOption = Annotated[
    int | None,
    typer.Option(help="Stop after this many epochs without a better held-out robust accuracy."),
]
WarmupOption = Annotated[
    int | None,
    typer.Option(help="Epochs of eps ramp-up (default: epochs // 3; fast-at and distill 0)."),
]
EvalStepsOption = Annotated[
    int, typer.Option("--eval-steps", help="PGD steps of the per-epoch held-out check.")
]
TrainSamplesOption = Annotated[
    int | None, typer.Option("--train-samples", help="Train on a seeded subset of this size.")
]
SamplesOption = Annotated[
    int | None, typer.Option(help="Override data.samples of the two audits.")
]
SeedOption = Annotated[int | None, typer.Option(help="Seed of training and audits (default: the config's).")]
ResumeOption = Annotated[
    bool, typer.Option("--resume", help="Continue from the last epoch checkpoint in --out.")
]


@handle_errors
def harden(
    model: ModelOption,
    config: ConfigOption,
    method: MethodOption = _HD.method,
    epochs: EpochsOption = None,
    out: OutOption = Path("hardened"),
    train_data: TrainDataOption = None,
    eps: EpsOption = None,
    norm: NormOption = None,
    steps: StepsOption = _HD.steps,
    step_size: StepSizeOption = None,
    lr: LrOption = None,
    batch_size: TrainBatchSizeOption = _HD.batch_size,
    beta: BetaOption = _HD.beta,
    temperature: TemperatureOption = _HD.temperature,
    mix_ratio: MixRatioOption = _HD.mix_ratio,
    holdout: HoldoutOption = _HD.holdout,
    patience: PatienceOption = None,
    warmup: WarmupOption = None,
    eval_steps: EvalStepsOption = _HD.eval_steps,
    train_samples: TrainSamplesOption = None,
    samples: SamplesOption = None,
    seed: SeedOption = None,
    device: DeviceOption = None,
    trust_model: TrustModelOption = False,
    resume: ResumeOption = False,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Adversarially train MODEL (or distill it), then audit the original and the hardened
    model with CONFIG side by side: OUT/model.pt, OUT/compare.html, OUT/compare.json."""
    from robaudit.api.arguments import FLAGS, check_overrides
    from robaudit.config import load_config
    from robaudit.harden.api import harden_model
    from robaudit.harden.options import check_options
    from robaudit.threat import parse_eps

    note_debug(debug)
    try:
        eps_value = parse_eps(eps) if eps is not None else None
    except ValueError as exc:
        raise UserInputError(f"--eps {eps!r}: {exc}") from None
    opts = HardenOptions(
        method=method, epochs=epochs, eps=eps_value, norm=norm, steps=steps, step_size=step_size,
        lr=lr, batch_size=batch_size, beta=beta, temperature=temperature, mix_ratio=mix_ratio,
        holdout=holdout, patience=patience, warmup=warmup, eval_steps=eval_steps,
        train_samples=train_samples,
    )
    check_options(opts)
    check_overrides(None, None, device, seed, FLAGS)  # --seed, then --device, as ever
    load_config(config)  # a bad config fails before anything is loaded or written
    if not model.exists():
        raise UserInputError(f"{model}: model file not found")
    console = err_console()
    kwargs: dict[str, Any] = {
        "config": config, "out": out, "options": opts, "train_data": train_data,
        "device": device, "samples": samples, "seed": seed, "trust_model": trust_model,
        "resume": resume,
    }
    if quiet or not console.is_terminal:
        result = harden_model(model, **kwargs)
    else:
        with training_bars(console) as view:
            result = harden_model(
                model, progress=view, on_batch=view.batch, on_epoch=view.epoch, **kwargs
            )
    if not quiet:
        print_harden_summary(result, console)
