"""``robaudit scan``: check the flags, run the audit through the Python API, write the report
and exit as the gate says. The flags are checked by the API's own checks, before any output
folder exists; the config and the baseline are loaded once and handed to the run."""

from __future__ import annotations

import contextlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from robaudit import distributed
from robaudit.baseline import DEFAULT_MAX_DROP, check_max_drop, load_baseline
from robaudit.checkpoint import STATE_DIR
from robaudit.classifier import resolve_device
from robaudit.cli.base import err_console, handle_errors, note_debug
from robaudit.cli.options import (
    BatchSizeOption,
    DebugOption,
    DeviceOption,
    QuietOption,
    TrustModelOption,
)
from robaudit.control import INTERRUPTED, RunControl, process_started, stop_on_signals
from robaudit.errors import (
    EXIT_GATE_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    RuntimeFailure,
    UserInputError,
)
from robaudit.report.log import LogProgress
from robaudit.report.terminal_bars import scan_bars
from robaudit.results import RunResult

if TYPE_CHECKING:
    from robaudit.api.reports import Report
    from robaudit.api.scanning import ScanInputs
    from robaudit.pipeline import RunOptions, ScanOptions
    from robaudit.progress import Progress
    from robaudit.threads import ThreadChoice

ModelOption = Annotated[
    Path, typer.Argument(help="Checkpoint: TorchScript, state_dict (+ model.arch), or .pt2.")
]
ConfigOption = Annotated[
    Path, typer.Option("--config", "-c", help="Threat-model YAML (see `robaudit init`).")
]
OutOption = Annotated[
    Path, typer.Option("--out", "-o", help="Folder for report.json/.html and results.csv.")
]
DataOption = Annotated[
    str | None,
    typer.Option(
        help="Override data.source (builtin:digits, a .npz, a folder, torchvision:NAME:PATH)."
    ),
]
SamplesOption = Annotated[int | None, typer.Option(help="Override data.samples.")]
SeedOption = Annotated[int | None, typer.Option(help="Override the run seed.")]
AccessOption = Annotated[
    str | None,
    typer.Option(
        "--access",
        help="Audit as an attacker with only score or decision access: attacks that need "
        "more are skipped and reported (ONNX files are score access already).",
    ),
]
SaveAdversarialOption = Annotated[
    bool,
    typer.Option(
        "--save-adversarial",
        help="Also write adversarial.npz and adversarial/*.png: every verified break.",
    ),
]
SaveUnbrokenOption = Annotated[
    bool,
    typer.Option(
        "--save-unbroken",
        help="Also export the strongest candidate of every unbroken sample (implies "
        "--save-adversarial).",
    ),
]
BaselineOption = Annotated[
    Path | None,
    typer.Option(
        "--baseline",
        help="An earlier report.json: fail the gate if robust accuracy at a threat both "
        "runs share dropped by more than --max-drop points.",
    ),
]
MaxDropOption = Annotated[
    float,
    typer.Option(
        "--max-drop", help="Allowed drop of robust accuracy against --baseline, in points."
    ),
]
ExitZeroOption = Annotated[
    bool, typer.Option("--exit-zero", help="Report only: exit 0 even when the gate fails.")
]
ResumeOption = Annotated[
    bool,
    typer.Option(
        "--resume",
        help="Reuse the cells an interrupted run of the same audit saved in --out "
        "(OUT/.robaudit); the report equals an uninterrupted run's.",
    ),
]
TimeBudgetOption = Annotated[
    str | None,
    typer.Option(
        "--time-budget",
        help="Stop cleanly after this long (90s, 10m, 1h30m): cheap attacks at every threat "
        "run first, and the report lists what did not run.",
    ),
]
AllowPartialOption = Annotated[
    bool,
    typer.Option(
        "--allow-partial",
        help="Let a run stopped by --time-budget pass the gate on what it finished "
        "(default: unrun cells fail it).",
    ),
]
LogFormatOption = Annotated[
    str | None,
    typer.Option(
        "--log-format",
        help="Progress as log lines even at a terminal: text, or json (one object per "
        "event, for log collectors). Without a terminal, text lines are the default.",
    ),
]
ThreadsOption = Annotated[
    int | None,
    typer.Option(
        "--threads",
        help="Intra-op CPU threads (default: engine.threads, else OMP_NUM_THREADS, else the "
        "CPUs this process may use: affinity mask and cgroup CPU quota).",
    ),
]


@dataclass(frozen=True)
class _ScanJob:
    """One ``robaudit scan``, its flags checked: what the run takes, where the report goes,
    and how the end is reported."""

    model: Path
    config: Path  # as given: the log header quotes it
    data: str | None
    out: Path
    inputs: ScanInputs
    options: ScanOptions
    run: RunOptions
    control: RunControl
    threads: ThreadChoice
    save: tuple[bool, bool]  # --save-adversarial, --save-unbroken
    quiet: bool
    exit_zero: bool
    log_format: str | None


@handle_errors
def scan(
    model: ModelOption,
    config: ConfigOption,
    out: OutOption = Path("out/robaudit"),
    data: DataOption = None,
    samples: SamplesOption = None,
    seed: SeedOption = None,
    device: DeviceOption = None,
    batch_size: BatchSizeOption = None,
    trust_model: TrustModelOption = False,
    access: AccessOption = None,
    save_adversarial: SaveAdversarialOption = False,
    save_unbroken: SaveUnbrokenOption = False,
    baseline: BaselineOption = None,
    max_drop: MaxDropOption = DEFAULT_MAX_DROP,
    exit_zero: ExitZeroOption = False,
    resume: ResumeOption = False,
    time_budget: TimeBudgetOption = None,
    allow_partial: AllowPartialOption = False,
    log_format: LogFormatOption = None,
    threads: ThreadsOption = None,
    quiet: QuietOption = False,
    debug: DebugOption = False,
) -> None:
    """Attack MODEL as CONFIG describes, write the report, and exit 1 if the gate fails.

    Under `torchrun --nproc-per-node N -m robaudit scan ...` the samples are sharded over the
    processes and rank 0 writes the one report. SIGINT/SIGTERM write a partial report marked
    incomplete and exit 130; a model failing mid-run writes one and exits 3.
    """
    from robaudit.pipeline import RunOptions, ScanOptions

    note_debug(debug)
    inputs, thread_choice, control = _checked(
        model, config, samples=samples, batch_size=batch_size, device=device, seed=seed,
        access=access, threads=threads, log_format=log_format, max_drop=max_drop,
        baseline=baseline, time_budget=time_budget,
    )
    shard = distributed.from_env()
    if shard.active:  # torchrun: join the group; each rank attacks on its own device
        device = str(distributed.start(shard, resolve_device(device or inputs.cfg.engine.device)))
        quiet = quiet or not shard.is_main
    options = ScanOptions(
        samples=samples, seed=seed, device=device, batch_size=batch_size,
        trust_model=trust_model, access=access,
    )
    run = RunOptions(
        control=control, checkpoint_dir=out / STATE_DIR if shard.is_main else None,
        resume=resume, allow_partial=allow_partial, shard=shard,
    )
    try:
        _scan_run(
            _ScanJob(
                model, config, data, out, inputs, options, run, control, thread_choice,
                (save_adversarial, save_unbroken), quiet, exit_zero, log_format,
            )
        )
    finally:
        distributed.stop(shard)


def _checked(
    model: Path,
    config: Path,
    *,
    samples: int | None,
    batch_size: int | None,
    device: str | None,
    seed: int | None,
    access: str | None,
    threads: int | None,
    log_format: str | None,
    max_drop: float,
    baseline: Path | None,
    time_budget: str | None,
) -> tuple[ScanInputs, ThreadChoice, RunControl]:
    """The flags, through the API's own checks in the order the CLI has always checked them,
    before anything is written; the config and the baseline are loaded here, once."""
    from robaudit.api.arguments import FLAGS, budgeted, check_access, check_overrides, check_threads
    from robaudit.api.inputs import resolve_config
    from robaudit.api.scanning import ScanInputs
    from robaudit.threads import choose as choose_threads

    check_overrides(samples, batch_size, device, seed, FLAGS)
    check_access(access, FLAGS)
    check_threads(threads, FLAGS)
    if log_format is not None and log_format not in ("text", "json"):
        raise UserInputError(f"--log-format {log_format!r}: valid values are text, json")
    cfg, config_path = resolve_config(config)  # a bad config fails before any folder is created
    thread_choice = (
        choose_threads(threads, "--threads")
        if threads is not None
        else choose_threads(cfg.engine.threads, "engine.threads")
    )
    if not model.exists():
        raise UserInputError(f"{model}: model file not found")
    max_drop = check_max_drop(max_drop, FLAGS.label("max_drop"))
    base = load_baseline(baseline) if baseline is not None else None
    control = RunControl(started=process_started())  # a CI job's limit counts from the process
    budgeted(control, time_budget, FLAGS)  # start: so does the budget (set on control)
    return ScanInputs(cfg, config_path, base, max_drop), thread_choice, control


def _scan_run(job: _ScanJob) -> None:
    """Run the scan, write the report (rank 0), and turn a partial run into its exit code."""
    from robaudit.api.reports import Report
    from robaudit.report.writers import make_out_dir, remove_if_empty

    main = job.run.shard.is_main
    created = make_out_dir(job.out) if main else []
    console = err_console()
    try:
        report = _run_with_progress(job, console)
    except RuntimeFailure as exc:
        if main and isinstance(exc.partial, RunResult):
            written = Report(exc.partial).save(job.out)
            first = next(iter(written.values()), job.out)
            exc.args = (f"{exc}; partial report (incomplete) written to {first.parent}",)
        remove_if_empty(created)
        raise
    except BaseException:  # a model or data that fails to load: leave no empty --out behind
        remove_if_empty(created)
        raise
    if not main:
        if report.incomplete and report.incomplete.kind == INTERRUPTED:
            raise typer.Exit(EXIT_INTERRUPTED)
        raise typer.Exit(EXIT_OK if report.passed or job.exit_zero else EXIT_GATE_FAILED)
    _finish(report, job, console)


def _run_with_progress(job: _ScanJob, console: Console) -> Report:
    """The run, with progress as log lines (CI logs, ``--log-format``), as bars (a person at
    a terminal) or not at all (``--quiet``, other ranks)."""
    from robaudit.api.scanning import run_scan
    from robaudit.report.console import log_scan_start

    logged = (
        job.run.shard.is_main
        and not job.quiet
        and (job.log_format is not None or not console.is_terminal)
    )
    log = LogProgress(lambda line: print(line, file=sys.stderr, flush=True), job.log_format or "text")
    if logged:  # a CI log: the header now, then a line per cell and a heartbeat
        log_scan_start(log, job.model, job.config, job.out, job.threads)
    with stop_on_signals(job.control), contextlib.ExitStack() as stack:
        progress: Progress | None = None
        if logged:
            progress = log
        elif not job.quiet and console.is_terminal:  # bars only for a person at a terminal
            progress = stack.enter_context(scan_bars(console))
        return run_scan(
            job.model, job.data, job.inputs, job.options, job.run, threads=job.threads,
            progress=progress, save_adversarial=job.save[0], save_unbroken=job.save[1],
        )


def _finish(report: Report, job: _ScanJob, console: Console) -> None:
    """Save the report, show the summary, and exit as the gate and a stop say."""
    from robaudit.report.console import print_incomplete, print_summary

    written = report.save(job.out)
    if report.incomplete is None:
        shutil.rmtree(job.out / STATE_DIR, ignore_errors=True)  # a complete report needs no saved cells
    if not job.quiet:
        print_summary(report.to_dict(), console, written)
    if report.incomplete is not None:
        print_incomplete(report.incomplete, job.out, console)
        if report.incomplete.kind == INTERRUPTED:
            raise typer.Exit(EXIT_INTERRUPTED)
    if not report.passed and not job.exit_zero:
        raise typer.Exit(EXIT_GATE_FAILED)
