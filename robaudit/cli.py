"""The ``robaudit`` command line: parse flags, load the config, call the library, map errors
to exit codes (0 pass, 1 gate failed, 2 bad input, 3 runtime failure, 130 interrupted).

No audit logic lives here: ``scan`` and ``verify`` call the Python API (:mod:`robaudit.api`),
the same functions a notebook or the pytest plugin calls.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import shutil
import sys
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, ClassVar, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

import robaudit
from robaudit import distributed
from robaudit.attacks.base import param_table, registry
from robaudit.baseline import DEFAULT_MAX_DROP, check_max_drop
from robaudit.checkpoint import STATE_DIR
from robaudit.classifier import resolve_device
from robaudit.config import MAX_SEED, PRESET_NAMES, load_config, preset_path
from robaudit.control import (
    INTERRUPTED,
    RunControl,
    parse_duration,
    process_started,
    stop_on_signals,
)
from robaudit.documents import load_document
from robaudit.errors import (
    EXIT_GATE_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    RobauditError,
    RuntimeFailure,
    UserInputError,
)
from robaudit.harden.options import METHOD_DEFAULTS, METHODS, HardenOptions
from robaudit.report.log import LogProgress
from robaudit.report.notices import unrun_text
from robaudit.report.terminal import (
    catalogue_tables,
    print_comparison,
    print_harden_summary,
    selftest_table,
)
from robaudit.report.writers import FILE_NAMES
from robaudit.results import RunResult


class _OneLineUsageErrors(TyperGroup):
    """Usage errors (a flag value of the wrong type, an unknown or missing option) as one line
    naming the flag and the value, exit 2, like every other bad input; not typer's panel."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # rich prints a docstring's line breaks verbatim (a sentence broken where the source
        # wrapped it): one line per paragraph, so the terminal wraps at its own width
        self.help = _one_line_paragraphs(self.help)
        for command in self.commands.values():
            command.help = _one_line_paragraphs(command.help)

    def make_context(self, info_name: Any, args: Any, *rest: Any, **kwargs: Any) -> Any:
        argv = [str(a) for a in args]
        with _usage_errors_in_one_line(argv):
            ctx = super().make_context(info_name, args, *rest, **kwargs)
        ctx.meta["robaudit.argv"] = argv
        return ctx

    def invoke(self, ctx: Any) -> Any:
        with _usage_errors_in_one_line(ctx.meta.get("robaudit.argv", [])):
            return super().invoke(ctx)


# options several commands share, written once
DeviceOption = Annotated[
    str | None, typer.Option(help="auto, cpu or cuda (default: engine.device).")
]
BatchSizeOption = Annotated[
    int | None, typer.Option("--batch-size", help="Override data.batch_size.")
]
TrustModelOption = Annotated[
    bool,
    typer.Option(
        "--trust-model", help="Allow pickled whole-module checkpoints (unpickling runs code)."
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]
DebugOption = Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")]


def _one_line_paragraphs(text: str | None) -> str | None:
    """Help text with each paragraph (blank-line separated) joined into one line.

    A paragraph starting with ``\\b`` (click's "keep my line breaks") is left as written.
    """
    if not text:
        return text
    paragraphs = inspect.cleandoc(text).split("\n\n")
    return "\n\n".join(p if p.startswith("\b") else " ".join(p.split()) for p in paragraphs)


@contextlib.contextmanager
def _usage_errors_in_one_line(argv: list[str]) -> Iterator[None]:
    try:
        yield
    except TyperException as exc:
        if type(exc).__name__ == "NoArgsIsHelpError" or not hasattr(exc, "ctx"):
            raise  # `robaudit` alone prints the help
        param = getattr(exc, "param", None)
        message = exc.format_message()
        flags = [o for o in getattr(param, "opts", ()) if o.startswith("-")]
        for i, arg in enumerate(argv):  # name the value given, when there is one
            for flag in flags:
                if arg == flag and i + 1 < len(argv):
                    message = f"{flag} {argv[i + 1]!r}: {getattr(exc, 'message', message)}"
                elif arg.startswith(flag + "="):
                    message = f"{flag} {arg[len(flag) + 1:]!r}: {getattr(exc, 'message', message)}"
        ctx = getattr(exc, "ctx", None)
        where = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        _err_console().print(Text.assemble(("robaudit: error: ", "red"), f"{message}{where}"))
        raise typer.Exit(exc.exit_code) from None


app = typer.Typer(
    name="robaudit",
    help="Robustness audits of image classifiers: attacks, a scored report, a CI gate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    cls=_OneLineUsageErrors,
)

_state = {"debug": False}
F = TypeVar("F", bound=Callable[..., Any])


def _err_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def handle_errors(fn: F) -> F:
    """Turn every failure into one line on stderr and its exit code (traceback with --debug)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, SystemExit):
            raise
        except RobauditError as exc:
            if _state["debug"]:
                traceback.print_exc()
            msg = str(exc).replace("\n", " ")
            _err_console().print(Text.assemble(("robaudit: error: ", "red"), msg))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            _err_console().print("robaudit: interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if _state["debug"]:
                traceback.print_exc()
            first = (str(exc).splitlines() or [""])[0][:300]
            _err_console().print(
                Text.assemble(
                    ("robaudit: internal error: ", "red"),
                    f"{type(exc).__name__}: {first} (run again with --debug for the traceback)",
                )
            )
            raise typer.Exit(EXIT_RUNTIME) from None

    return wrapper  # type: ignore[return-value]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"robaudit {robaudit.__version__}")
        raise typer.Exit(EXIT_OK)


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version.")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """robaudit: how much accuracy survives an attacker with this knowledge and budget?"""
    _state["debug"] = debug


class RichProgress:
    """Adapts the engine's progress callback to a rich progress bar on stderr."""

    fields: ClassVar[dict[str, Any]] = {}  # extra task fields the bar's columns show

    def __init__(self, progress: Progress) -> None:
        self._p = progress
        self._task: Any = None

    def start(self, label: str, total: int) -> None:
        self._task = self._p.add_task(label, total=max(total, 1), **self.fields)
        if total == 0:
            self._p.update(self._task, completed=1)

    def advance(self, n: int) -> None:
        if self._task is not None:
            self._p.advance(self._task, n)

    def finish(self) -> None:
        if self._task is not None:
            self._p.update(self._task, visible=True)


@app.command()
@handle_errors
def scan(
    model: Annotated[
        Path, typer.Argument(help="Checkpoint: TorchScript, state_dict (+ model.arch), or .pt2.")
    ],
    config: Annotated[
        Path, typer.Option("--config", "-c", help="Threat-model YAML (see `robaudit init`).")
    ],
    out: Annotated[
        Path, typer.Option("--out", "-o", help="Folder for report.json/.html and results.csv.")
    ] = Path("out/robaudit"),
    data: Annotated[
        str | None,
        typer.Option(
            help="Override data.source (builtin:digits, a .npz, a folder, torchvision:NAME:PATH)."
        ),
    ] = None,
    samples: Annotated[int | None, typer.Option(help="Override data.samples.")] = None,
    seed: Annotated[int | None, typer.Option(help="Override the run seed.")] = None,
    device: DeviceOption = None,
    batch_size: BatchSizeOption = None,
    trust_model: TrustModelOption = False,
    access: Annotated[
        str | None,
        typer.Option(
            "--access",
            help="Audit as an attacker with only score or decision access: attacks that need "
            "more are skipped and reported (ONNX files are score access already).",
        ),
    ] = None,
    save_adversarial: Annotated[
        bool,
        typer.Option(
            "--save-adversarial",
            help="Also write adversarial.npz and adversarial/*.png: every verified break.",
        ),
    ] = False,
    save_unbroken: Annotated[
        bool,
        typer.Option(
            "--save-unbroken",
            help="Also export the strongest candidate of every unbroken sample (implies "
            "--save-adversarial).",
        ),
    ] = False,
    baseline: Annotated[
        Path | None,
        typer.Option(
            "--baseline",
            help="An earlier report.json: fail the gate if robust accuracy at a threat both "
            "runs share dropped by more than --max-drop points.",
        ),
    ] = None,
    max_drop: Annotated[
        float,
        typer.Option(
            "--max-drop", help="Allowed drop of robust accuracy against --baseline, in points."
        ),
    ] = DEFAULT_MAX_DROP,
    exit_zero: Annotated[
        bool, typer.Option("--exit-zero", help="Report only: exit 0 even when the gate fails.")
    ] = False,
    resume: Annotated[
        bool,
        typer.Option(
            "--resume",
            help="Reuse the cells an interrupted run of the same audit saved in --out "
            "(OUT/.robaudit); the report equals an uninterrupted run's.",
        ),
    ] = False,
    time_budget: Annotated[
        str | None,
        typer.Option(
            "--time-budget",
            help="Stop cleanly after this long (90s, 10m, 1h30m): cheap attacks at every threat "
            "run first, and the report lists what did not run.",
        ),
    ] = None,
    allow_partial: Annotated[
        bool,
        typer.Option(
            "--allow-partial",
            help="Let a run stopped by --time-budget pass the gate on what it finished "
            "(default: unrun cells fail it).",
        ),
    ] = False,
    log_format: Annotated[
        str | None,
        typer.Option(
            "--log-format",
            help="Progress as log lines even at a terminal: text, or json (one object per "
            "event, for log collectors). Without a terminal, text lines are the default.",
        ),
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads",
            help="Intra-op CPU threads (default: engine.threads, else OMP_NUM_THREADS, else the "
            "CPUs this process may use: affinity mask and cgroup CPU quota).",
        ),
    ] = None,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress or summary; errors only.")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Attack MODEL as CONFIG describes, write the report, and exit 1 if the gate fails.

    Under `torchrun --nproc-per-node N -m robaudit scan ...` the samples are sharded over the
    processes and rank 0 writes the one report. SIGINT/SIGTERM write a partial report marked
    incomplete and exit 130; a model failing mid-run writes one and exits 3.
    """

    _state["debug"] = _state["debug"] or debug
    _check_flags(samples, batch_size, device, seed)
    if access is not None and access not in ("white-box", "score", "decision"):
        raise UserInputError(f"--access {access!r}: valid values are white-box, score, decision")
    from robaudit.api import resolve_config

    if threads is not None and threads < 1:
        raise UserInputError(f"--threads {threads}: give a positive number of threads")
    if log_format is not None and log_format not in ("text", "json"):
        raise UserInputError(f"--log-format {log_format!r}: valid values are text, json")
    cfg, _ = resolve_config(config)  # a bad config fails before any folder is created
    from robaudit.threads import choose as choose_threads

    thread_choice = (
        choose_threads(threads, "--threads")
        if threads is not None
        else choose_threads(cfg.engine.threads, "engine.threads")
    )
    if not model.exists():
        raise UserInputError(f"{model}: model file not found")
    check_max_drop(max_drop)
    if baseline is not None:
        load_document(baseline)
    control = RunControl(  # a CI job's limit counts from the process start: so does the budget
        budget_seconds=parse_duration(time_budget) if time_budget is not None else None,
        started=process_started(),
    )
    shard = distributed.from_env()
    if shard.active:  # torchrun: join the group; each rank attacks on its own device
        device = str(distributed.start(shard, resolve_device(device or cfg.engine.device)))
        quiet = quiet or not shard.is_main
    try:
        _scan_run(
            model, data, out, quiet, exit_zero, control, shard,
            config=config, device=device, samples=samples, seed=seed, batch_size=batch_size,
            trust_model=trust_model, save_adversarial=save_adversarial,
            save_unbroken=save_unbroken, access=access, baseline=baseline, max_drop=max_drop,
            resume=resume, allow_partial=allow_partial, threads=thread_choice,
            log_format=log_format,
        )
    finally:
        distributed.stop(shard)


def _scan_run(
    model: Path,
    data: str | None,
    out: Path,
    quiet: bool,
    exit_zero: bool,
    control: RunControl,
    shard: distributed.Shard,
    **kwargs: Any,
) -> None:
    """Run the scan, write the report (rank 0), and turn a partial run into its exit code."""
    from robaudit.api import Report
    from robaudit.api import scan as api_scan
    from robaudit.report.console import print_summary
    from robaudit.report.writers import prepare_out_dir

    main = shard.is_main
    if main:
        prepare_out_dir(out)
    state = out / STATE_DIR
    kwargs.update(control=control, shard=shard, checkpoint_dir=state if main else None)
    console = _err_console()
    log_format = kwargs.pop("log_format", None)
    logged = main and not quiet and (log_format is not None or not console.is_terminal)
    log = LogProgress(lambda line: print(line, file=sys.stderr, flush=True), log_format or "text")
    if logged:  # a CI log: the header now, then a line per cell and a heartbeat
        log.header(
            "scan_start",
            f"robaudit {robaudit.__version__} · scan {model} · config {kwargs.get('config')} · "
            f"out {out} · threads {kwargs['threads'].count} ({kwargs['threads'].source})",
            model=str(model), config=str(kwargs.get("config")), out=str(out),
            threads=kwargs["threads"].count,
        )
    try:
        with stop_on_signals(control):
            if logged:
                report = api_scan(model, data, progress=log, **kwargs)
            elif quiet or not console.is_terminal:  # bars only for a person at a terminal
                report = api_scan(model, data, **kwargs)
            else:
                with Progress(
                    TextColumn("{task.description}"),
                    BarColumn(),
                    MofNCompleteColumn(),
                    TimeElapsedColumn(),
                    console=console,
                    transient=True,
                ) as bar:
                    report = api_scan(model, data, progress=RichProgress(bar), **kwargs)
    except RuntimeFailure as exc:
        if main and isinstance(exc.partial, RunResult):
            written = Report(exc.partial).save(out)
            first = next(iter(written.values()), out)
            exc.args = (f"{exc}; partial report (incomplete) written to {first.parent}",)
        raise
    if not main:
        if report.incomplete and report.incomplete["kind"] == INTERRUPTED:
            raise typer.Exit(EXIT_INTERRUPTED)
        raise typer.Exit(EXIT_OK if report.passed or exit_zero else EXIT_GATE_FAILED)
    written = report.save(out)
    if report.incomplete is None:
        shutil.rmtree(state, ignore_errors=True)  # a complete report needs no saved cells
    if not quiet:
        print_summary(report.to_dict(), console, written)
    if report.incomplete is not None:
        inc = report.incomplete
        console.print(
            Text.assemble(
                ("robaudit: incomplete: ", "yellow"),
                f"{inc['reason']}; {unrun_text(inc)}; partial report in {out} (scan again "
                "with --resume to finish)",
            )
        )
        if inc["kind"] == INTERRUPTED:
            raise typer.Exit(EXIT_INTERRUPTED)
    if not report.passed and not exit_zero:
        raise typer.Exit(EXIT_GATE_FAILED)


def _check_flags(
    samples: int | None, batch_size: int | None, device: str | None, seed: int | None = None
) -> None:
    """Flag values the API would also refuse, named as flags."""
    if seed is not None and not 0 <= seed <= MAX_SEED:
        raise UserInputError(f"--seed {seed}: give a whole number from 0 to {MAX_SEED}")
    if samples is not None and samples <= 0:
        raise UserInputError(f"--samples {samples}: give a positive number of samples")
    if batch_size is not None and batch_size <= 0:
        raise UserInputError(f"--batch-size {batch_size}: give a positive batch size")
    if device is not None:
        resolve_device(device)  # fails fast, before the config or the model is read


@app.command()
@handle_errors
def verify(
    model: Annotated[
        Path, typer.Argument(help="The checkpoint to check the examples against.")
    ],
    examples: Annotated[
        Path, typer.Argument(help="adversarial.npz written by `robaudit scan --save-adversarial`.")
    ],
    config: Annotated[
        Path,
        typer.Option(
            "--config", "-c", help="Threat-model YAML: model bounds, preprocessing, data source."
        ),
    ],
    data: Annotated[
        str | None,
        typer.Option(help="Where the clean inputs come from (default: the config's data.source)."),
    ] = None,
    device: DeviceOption = None,
    batch_size: BatchSizeOption = None,
    trust_model: TrustModelOption = False,
    as_json: JsonOption = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing; the exit code is the verdict.")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Re-check every exported example: inside its ball and the bounds, misclassified by a
    fresh forward pass. Exit 0 if all hold, 1 on any violation, 2 on bad input."""
    from robaudit.api import verify as api_verify

    _state["debug"] = _state["debug"] or debug
    _check_flags(None, batch_size, device)
    load_config(config)
    if not model.exists():
        raise UserInputError(f"{model}: model file not found")
    if not examples.is_file():
        raise UserInputError(f"{examples}: adversarial file not found")
    result = api_verify(
        model, examples, config=config, data=data, device=device, batch_size=batch_size,
        trust_model=trust_model,
    )
    if as_json:
        typer.echo(json.dumps(result.to_dict(), indent=2))
    elif not quiet:
        typer.echo("\n".join(result.summary_lines()))
    if not result.ok:
        raise typer.Exit(EXIT_GATE_FAILED)


def _formats(value: str) -> list[str]:
    """``html,md`` -> ["html", "md"]; an unknown or empty list is a one-line error."""
    from robaudit.report.writers import check_formats

    chosen = [f.strip().lower() for f in value.split(",") if f.strip()]
    if not chosen:
        raise UserInputError(f"--format {value!r}: give one or more of {', '.join(FILE_NAMES)}")
    return check_formats(chosen, what="--format value")


@app.command("report")
@handle_errors
def report_command(
    report_json: Annotated[
        Path, typer.Argument(help="A report.json written by `robaudit scan` (or its folder).")
    ],
    fmt: Annotated[
        str,
        typer.Option(
            "--format", "-f", help=f"Comma-separated formats to write: {', '.join(FILE_NAMES)}."
        ),
    ] = "html,md,junit,csv",
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Folder to write into (default: the report's folder)."),
    ] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing.")] = False,
    debug: DebugOption = False,
) -> None:
    """Re-render a saved report.json into other formats; nothing is re-run."""
    from robaudit.report.writers import write_reports

    _state["debug"] = _state["debug"] or debug
    formats = _formats(fmt)
    doc = load_document(report_json)
    folder = out if out is not None else (report_json if report_json.is_dir() else report_json.parent)
    written = write_reports(doc, folder, formats)
    if not quiet:
        console = _err_console()
        for name, path in written.items():
            console.print(f"  {name:5s} → {path}", highlight=False, markup=False)


DIFF_FORMATS = ("table", "json", "md")


@app.command()
@handle_errors
def diff(
    base: Annotated[Path, typer.Argument(help="The baseline report.json (or its folder).")],
    new: Annotated[Path, typer.Argument(help="The new report.json (or its folder).")],
    max_drop: Annotated[
        float,
        typer.Option("--max-drop", help="Allowed drop of robust accuracy, in percentage points."),
    ] = DEFAULT_MAX_DROP,
    fmt: Annotated[
        str, typer.Option("--format", "-f", help="table (terminal), json or md.")
    ] = "table",
    debug: DebugOption = False,
) -> None:
    """Compare two reports threat by threat; exit 1 if robust accuracy dropped too far.

    Exit 1 if robust accuracy at any shared threat dropped by more than --max-drop points (or
    nothing could be compared), 0 otherwise, 2 on bad input. Significance is reported, not gated.
    """
    from robaudit.baseline import compare

    _state["debug"] = _state["debug"] or debug
    if fmt not in DIFF_FORMATS:
        raise UserInputError(f"--format {fmt!r}: valid values are {', '.join(DIFF_FORMATS)}")
    check_max_drop(max_drop)
    comparison = compare(
        load_document(base), load_document(new), max_drop, base_path=str(base), new_path=str(new)
    )
    data = comparison.to_dict()
    if fmt == "json":
        typer.echo(json.dumps(data, indent=2))
    elif fmt == "md":
        from robaudit.report.markdown import render_comparison

        sys.stdout.write(render_comparison(data))
    else:
        print_comparison(comparison)
    if not comparison.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


@app.command()
@handle_errors
def init(
    preset: Annotated[
        str, typer.Option(help=f"Starter preset: {', '.join(PRESET_NAMES)}.")
    ] = "standard",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")
    ] = None,
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Fit the config to this checkpoint: input shape, classes, budget profile "
            "and budgets written out (needs --data).",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(help="The data the fitted config evaluates on (with --model)."),
    ] = None,
    trust_model: TrustModelOption = False,
) -> None:
    """Print a commented starter config (a preset) to stdout or a file; with --model and
    --data, one already fitted to that model."""
    path = preset_path(preset)
    text = path.read_text(encoding="utf-8")
    if (model is None) != (data is None):
        raise UserInputError("--model and --data go together: give both to fit the config, or neither")
    if output is not None and output.exists():
        raise UserInputError(f"{output}: already exists; not overwriting it")
    if output is not None and not output.parent.is_dir():
        raise UserInputError(f"{output}: folder {output.parent} does not exist")
    if model is not None and data is not None:
        from robaudit.starter import fitted_preset

        if not model.exists():
            raise UserInputError(f"{model}: model file not found")
        fit = fitted_preset(text, load_config(path), model, data, trust_model=trust_model)
        text = fit.text
        _err_console().print(
            f"robaudit: fitted {preset} to {model}: input {list(fit.input_shape)}, "
            f"{fit.num_classes} classes, {fit.profile} budgets",
            highlight=False,
        )
    if output is None:
        sys.stdout.write(text)
        return
    from robaudit.report.writers import atomic_write_text

    atomic_write_text(output, text)


@app.command()
@handle_errors
def validate(
    config: Annotated[Path, typer.Argument(help="Threat-model YAML to check.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing when valid.")] = False,
) -> None:
    """Check a config against the schema without loading any model."""
    cfg = load_config(config)
    if not quiet:
        from robaudit.config import fitted
        from robaudit.profiles import PROFILES, summary

        threats = cfg.threats()
        entries = f"{len(cfg.attacks)} attack entr{'y' if len(cfg.attacks) == 1 else 'ies'}"
        shown = ", ".join(f"{t.access} {t.norm} {t.label}" for t in threats)
        if fitted(cfg):
            typer.echo(f"{config}: valid · {entries}, {len(threats)} threat(s): {shown}")
            return
        names = list(PROFILES) if cfg.profile == "auto" else [cfg.profile]
        how = "chosen by input size" if cfg.profile == "auto" else "set in the config"
        typer.echo(
            f"{config}: valid · {entries}; budgets left out come from the profile {how} "
            "(scan and `robaudit init --model M --data D` fit them)"
            + (f"; fixed threats: {shown}" if threats else "")
        )
        for name in names:
            typer.echo(f"  {summary(name)}")


@app.command()
@handle_errors
def attacks(
    as_json: JsonOption = False,
) -> None:
    """List the registered attacks and defenses, their norms and parameters."""
    from robaudit.defenses import defense_registry

    rows: list[dict[str, Any]] = []
    for name, cls in registry().items():
        rows.append(
            {
                "kind": "attack",
                "name": name,
                "summary": cls.summary,
                "paper": cls.paper,
                "norms": list(cls.norms),
                "requires": cls.requires,
                "params": [{**p, "default": p["default"]} for p in param_table(cls)],
            }
        )
    defenses: list[dict[str, Any]] = [
        {
            "kind": "defense",
            "name": name,
            "summary": d.summary,
            "paper": d.paper,
            "gradients": "EOT" if d.randomized else ("exact" if d.differentiable else "BPDA"),
            "params": param_table(d),  # type: ignore[arg-type]
        }
        for name, d in defense_registry().items()
    ]
    if as_json:
        typer.echo(json.dumps(rows + defenses, indent=2, default=str))
        return
    out = Console(highlight=False)
    for table in catalogue_tables(rows, defenses):
        out.print(table)


@app.command()
@handle_errors
def explain(
    finding_id: Annotated[str | None, typer.Argument(help="A finding ID such as RA003; omit to list all.")] = None,
) -> None:
    """Explain a finding: when it is raised, why it matters, what to do."""
    from robaudit.findings import CATALOG
    from robaudit.findings import explain as explain_text

    if finding_id is None:
        for doc in CATALOG.values():
            typer.echo(f"{doc.id}  {doc.severity:7s}  {doc.title}")
        return
    key = finding_id.strip().upper()
    if key not in CATALOG:
        raise UserInputError(
            f"unknown finding {finding_id!r}; valid: {', '.join(CATALOG)} (robaudit explain lists them)"
        )
    typer.echo(explain_text(key), nl=False)


@app.command()
@handle_errors
def selftest(
    device: Annotated[str, typer.Option(help="auto, cpu or cuda.")] = "cpu",
    as_json: JsonOption = False,
) -> None:
    """Audit a built-in corpus of models with known answers; exit 1 if any case disagrees."""
    from dataclasses import asdict

    from robaudit.selftest import run_selftest

    resolve_device(device)
    results = run_selftest(device=device)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in results], indent=2))
    else:
        Console(highlight=False).print(selftest_table(results))
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_GATE_FAILED)


_HD = HardenOptions()  # the library's defaults, shown by --help


@app.command()
@handle_errors
def harden(
    model: Annotated[
        Path, typer.Argument(help="Checkpoint to harden: TorchScript, state_dict (+ model.arch), .pt2.")
    ],
    config: Annotated[
        Path,
        typer.Option("--config", "-c", help="Threat-model YAML: the model, data and the audit."),
    ],
    method: Annotated[
        str, typer.Option(help=f"Training method: {', '.join(METHODS)}.")
    ] = _HD.method,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Training epochs (distill: teacher, then as many for the student); default "
            + ", ".join(f"{m} {int(d['epochs'])}" for m, d in METHOD_DEFAULTS.items())
            + "."
        ),
    ] = None,
    out: Annotated[
        Path,
        typer.Option("--out", "-o", help="Folder for model.pt, the log, checkpoints and compare.html."),
    ] = Path("hardened"),
    train_data: Annotated[
        str | None,
        typer.Option(
            "--train-data",
            help="Training data (a .npz, folder, torchvision:NAME:PATH); default: the config's "
            "data.source at split train.",
        ),
    ] = None,
    eps: Annotated[
        str | None,
        typer.Option(help="Training budget (0.2 or 8/255); default: the config's gated threat."),
    ] = None,
    norm: Annotated[str | None, typer.Option(help="linf or l2; default: the config's.")] = None,
    steps: Annotated[int, typer.Option(help="PGD steps per training batch.")] = _HD.steps,
    step_size: Annotated[
        float | None, typer.Option("--step-size", help="PGD step (default 2.5 * eps / steps).")
    ] = None,
    lr: Annotated[
        float | None,
        typer.Option(
            help="Adam learning rate (fast-at: the cycle's peak); default "
            + ", ".join(f"{m} {d['lr']:g}" for m, d in METHOD_DEFAULTS.items())
            + "."
        ),
    ] = None,
    batch_size: Annotated[
        int, typer.Option("--batch-size", help="Training batch size.")
    ] = _HD.batch_size,
    beta: Annotated[float, typer.Option(help="TRADES: weight of the KL term.")] = _HD.beta,
    temperature: Annotated[
        float, typer.Option(help="distill: softmax temperature T.")
    ] = _HD.temperature,
    mix_ratio: Annotated[
        float, typer.Option("--mix-ratio", help="mix: adversarial share of each batch, 0 to 1.")
    ] = _HD.mix_ratio,
    holdout: Annotated[
        float, typer.Option(help="Share of the training data held out for model selection.")
    ] = _HD.holdout,
    patience: Annotated[
        int | None,
        typer.Option(help="Stop after this many epochs without a better held-out robust accuracy."),
    ] = None,
    warmup: Annotated[
        int | None,
        typer.Option(help="Epochs of eps ramp-up (default: epochs // 3; fast-at and distill 0)."),
    ] = None,
    eval_steps: Annotated[
        int, typer.Option("--eval-steps", help="PGD steps of the per-epoch held-out check.")
    ] = _HD.eval_steps,
    train_samples: Annotated[
        int | None, typer.Option("--train-samples", help="Train on a seeded subset of this size.")
    ] = None,
    samples: Annotated[
        int | None, typer.Option(help="Override data.samples of the two audits.")
    ] = None,
    seed: Annotated[int | None, typer.Option(help="Seed of training and audits (default: the config's).")] = None,
    device: DeviceOption = None,
    trust_model: TrustModelOption = False,
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from the last epoch checkpoint in --out.")
    ] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress or summary; errors only.")
    ] = False,
    debug: DebugOption = False,
) -> None:
    """Adversarially train MODEL (or distill it), then audit the original and the hardened
    model with CONFIG side by side: OUT/model.pt, OUT/compare.html, OUT/compare.json."""
    from robaudit.harden.api import harden_model
    from robaudit.harden.options import check_options
    from robaudit.threat import parse_eps

    _state["debug"] = _state["debug"] or debug
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
    if seed is not None and not 0 <= seed <= 2**32 - 1:
        raise UserInputError(f"--seed {seed}: give a whole number from 0 to {2**32 - 1}")
    if device is not None:
        resolve_device(device)
    load_config(config)  # a bad config fails before anything is loaded or written
    if not model.exists():
        raise UserInputError(f"{model}: model file not found")
    console = _err_console()
    kwargs: dict[str, Any] = {
        "config": config, "out": out, "options": opts, "train_data": train_data,
        "device": device, "samples": samples, "seed": seed, "trust_model": trust_model,
        "resume": resume,
    }
    if quiet or not console.is_terminal:
        result = harden_model(model, **kwargs)
    else:
        with Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[stats]}"),
            TimeElapsedColumn(),
            console=console,
            transient=True,
        ) as bar:
            view = _TrainingBar(bar, console)
            result = harden_model(
                model, progress=view, on_batch=view.batch, on_epoch=view.epoch, **kwargs
            )
    if not quiet:
        print_harden_summary(result, console)


class _TrainingBar(RichProgress):
    """Rich bars for training epochs (running loss and batch accuracies) and the audits'
    cells; one line per finished epoch stays on screen."""

    fields: ClassVar[dict[str, Any]] = {"stats": ""}

    def __init__(self, progress: Progress, console: Console) -> None:
        super().__init__(progress)
        self._console = console

    def batch(self, s: Any) -> None:
        adv = f" · adv {s.adv_acc:.1%}" if s.adv_acc is not None else ""
        if self._task is not None:
            self._p.update(self._task, stats=f"loss {s.loss:.4g} · clean {s.clean_acc:.1%}{adv}")

    def epoch(self, r: Any) -> None:
        if self._task is not None:
            self._p.update(self._task, visible=False)
        adv = f", adv {r.train_adv_acc:.1%}" if r.train_adv_acc is not None else ""
        co = " · CATASTROPHIC OVERFITTING" if r.catastrophic_overfitting else ""
        self._console.print(
            Text(
                f"epoch {r.epoch} ({r.stage}): loss {r.loss:.4g} · train clean "
                f"{r.train_clean_acc:.1%}{adv} · held-out clean {r.heldout_clean_acc:.1%}, "
                f"robust {r.heldout_robust_acc:.1%} (PGD-CE {r.heldout_robust_ce:.1%}, margin "
                f"{r.heldout_robust_margin:.1%}) · {r.seconds:.1f} s{co}"
            )
        )


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
