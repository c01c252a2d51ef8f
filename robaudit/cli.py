"""The ``robaudit`` command line: parse flags, load the config, call the library, map errors
to exit codes (0 pass, 1 gate failed, 2 bad input, 3 runtime failure, 130 interrupted).

No audit logic lives here: ``scan`` and ``verify`` call the Python API (:mod:`robaudit.api`),
the same functions a notebook or the pytest plugin calls.
"""

from __future__ import annotations

import functools
import json
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

import robaudit
from robaudit.attacks.base import param_table, registry
from robaudit.baseline import DEFAULT_MAX_DROP, Comparison, check_max_drop, points_text
from robaudit.classifier import resolve_device
from robaudit.config import PRESET_NAMES, load_config, preset_path
from robaudit.errors import (
    EXIT_GATE_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_RUNTIME,
    RobauditError,
    UserInputError,
)
from robaudit.report.writers import FILE_NAMES, load_document

app = typer.Typer(
    name="robaudit",
    help="Robustness audits of image classifiers: attacks, a scored report, a CI gate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
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
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """robaudit: how much accuracy survives an attacker with this knowledge and budget?"""
    _state["debug"] = debug


class RichProgress:
    """Adapts the engine's progress callback to a rich progress bar on stderr."""

    def __init__(self, progress: Progress) -> None:
        self._p = progress
        self._task: Any = None

    def start(self, label: str, total: int) -> None:
        self._task = self._p.add_task(label, total=max(total, 1))
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
    device: Annotated[
        str | None, typer.Option(help="auto, cpu or cuda (default: engine.device).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Override data.batch_size.")
    ] = None,
    trust_model: Annotated[
        bool,
        typer.Option(
            "--trust-model", help="Allow pickled whole-module checkpoints (unpickling runs code)."
        ),
    ] = False,
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
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="No progress or summary; errors only.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
) -> None:
    """Attack MODEL as CONFIG describes, write the report, and exit 1 if the gate fails."""
    from robaudit.api import scan as api_scan
    from robaudit.report.console import print_summary
    from robaudit.report.writers import prepare_out_dir

    _state["debug"] = _state["debug"] or debug
    _check_flags(samples, batch_size, device)
    if access is not None and access not in ("white-box", "score", "decision"):
        raise UserInputError(f"--access {access!r}: valid values are white-box, score, decision")
    load_config(config)  # a bad config fails before any folder is created
    if not model.exists():
        raise UserInputError(f"{model}: model file not found")
    check_max_drop(max_drop)
    if baseline is not None:
        load_document(baseline)
    prepare_out_dir(out)
    console = _err_console()
    kwargs: dict[str, Any] = {
        "config": config, "device": device, "samples": samples, "seed": seed,
        "batch_size": batch_size, "trust_model": trust_model,
        "save_adversarial": save_adversarial, "save_unbroken": save_unbroken, "access": access,
        "baseline": baseline, "max_drop": max_drop,
    }
    if quiet or not console.is_terminal:  # bars only for a person at a terminal
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
    written = report.save(out)
    if not quiet:
        print_summary(report.to_dict(), console, written)
    if not report.passed and not exit_zero:
        raise typer.Exit(EXIT_GATE_FAILED)


def _check_flags(samples: int | None, batch_size: int | None, device: str | None) -> None:
    """Flag values the API would also refuse, named as flags."""
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
    device: Annotated[
        str | None, typer.Option(help="auto, cpu or cuda (default: engine.device).")
    ] = None,
    batch_size: Annotated[
        int | None, typer.Option("--batch-size", help="Override data.batch_size.")
    ] = None,
    trust_model: Annotated[
        bool,
        typer.Option(
            "--trust-model", help="Allow pickled whole-module checkpoints (unpickling runs code)."
        ),
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    quiet: Annotated[
        bool, typer.Option("--quiet", "-q", help="Print nothing; the exit code is the verdict.")
    ] = False,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
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
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
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
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks on errors.")] = False,
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
        _print_comparison(comparison)
    if not comparison.passed:
        raise typer.Exit(EXIT_GATE_FAILED)


def _print_comparison(c: Comparison) -> None:
    """The diff as a terminal table: drops above the limit red, other drops yellow, gains green."""
    console = Console(highlight=False, soft_wrap=True)
    table = Table(
        title=f"robaudit diff: {c.base_path} → {c.new_path}", title_justify="left",
    )
    for col in ("threat", "baseline", "new", "change (points)", "95% CI (points)", "noise"):
        table.add_column(col, justify="left" if col in ("threat", "noise") else "right")
    for ch in (*c.clean, *c.robust):
        lo, hi = ch.delta_ci
        pts = 100 * ch.delta
        style = "red" if ch.exceeds else "yellow" if pts < -1e-9 else "green" if pts > 1e-9 else ""
        noise = "larger than noise" if ch.significant else "within noise"
        if ch.p_value is not None:
            noise += f", McNemar p={ch.p_value:.3g}, lost {ch.lost}, gained {ch.gained}"
        table.add_row(
            Text(ch.label), f"{ch.base:.1%}", f"{ch.new:.1%}", Text(f"{pts:+.1f}", style=style),
            f"{100 * lo:+.1f} to {100 * hi:+.1f}", noise,
        )
    console.print(table)
    how = "paired" if c.paired else "not paired"
    console.print(Text(f"Samples: {how}: {c.pairing}"))
    for side, names in (("baseline", c.only_in_base), ("new report", c.only_in_new)):
        if names:
            console.print(Text(f"Only in the {side} (not compared): {', '.join(names)}"))
    for note in c.notes:
        console.print(Text(f"Note: {note}"))
    limit = points_text(c.max_drop_points)
    if not c.robust:
        console.print(Text("FAIL: no threat in common; nothing was compared", style="bold red"))
    elif c.failures:
        console.print(Text(f"FAIL: robust accuracy dropped by more than {limit}:", style="bold red"))
        for ch in c.failures:
            console.print(Text(f"  ✗ {ch.describe(c.max_drop_points)}"))
    else:
        console.print(
            Text(f"PASS: no robust accuracy dropped by more than {limit}", style="bold green")
        )


@app.command()
@handle_errors
def init(
    preset: Annotated[
        str, typer.Option(help=f"Starter preset: {', '.join(PRESET_NAMES)}.")
    ] = "standard",
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write to a file instead of stdout.")
    ] = None,
) -> None:
    """Print a commented starter config (a preset) to stdout or a file."""
    text = preset_path(preset).read_text(encoding="utf-8")
    if output is None:
        sys.stdout.write(text)
        return
    if output.exists():
        raise UserInputError(f"{output}: already exists; not overwriting it")
    if not output.parent.is_dir():
        raise UserInputError(f"{output}: folder {output.parent} does not exist")
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
        threats = cfg.threats()
        typer.echo(
            f"{config}: valid · {len(cfg.attacks)} attack entr{'y' if len(cfg.attacks) == 1 else 'ies'}, "
            f"{len(threats)} threat(s): " + ", ".join(f"{t.norm} {t.label}" for t in threats)
        )


@app.command()
@handle_errors
def attacks(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
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
    table = Table(title="Registered attacks", show_lines=True)
    table.add_column("attack", style="bold")
    table.add_column("norms")
    table.add_column("needs")
    table.add_column("parameters (default)")
    table.add_column("what / paper")
    for r in rows:
        params = "\n".join(f"{p['name']}: {p['type']} = {p['default']}" for p in r["params"]) or "—"
        table.add_row(
            r["name"], ", ".join(r["norms"]), r["requires"], params, f"{r['summary']}\n{r['paper']}"
        )
    dtable = Table(title="Defenses (config `defenses:`, audited as variants)", show_lines=True)
    for col in ("defense", "adaptive gradients", "parameters (default)", "what / paper"):
        dtable.add_column(col, style="bold" if col == "defense" else None)
    for d in defenses:
        params = "\n".join(f"{p['name']}: {p['type']} = {p['default']}" for p in d["params"]) or "—"
        dtable.add_row(
            str(d["name"]), str(d["gradients"]), params, f"{d['summary']}\n{d['paper']}"
        )
    out = Console(highlight=False)
    out.print(table)
    out.print(dtable)


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
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Audit a built-in corpus of models with known answers; exit 1 if any case disagrees."""
    from dataclasses import asdict

    from robaudit.selftest import run_selftest

    resolve_device(device)
    results = run_selftest(device=device)
    if as_json:
        typer.echo(json.dumps([asdict(r) for r in results], indent=2))
    else:
        table = Table(title="robaudit selftest: expected vs measured")
        for col in ("case", "threat", "expected robust acc.", "measured", "expected findings", "fired", "ok"):
            table.add_column(col)
        for r in results:
            table.add_row(
                r.name, r.threat, f"{r.expected[0]:.3f}–{r.expected[1]:.3f}", f"{r.measured:.3f}",
                ", ".join(r.expected_findings) or "none", ", ".join(r.fired) or "none",
                Text("OK", style="green") if r.ok else Text("; ".join(r.problems), style="red"),
            )
        Console(highlight=False).print(table)
    if not all(r.ok for r in results):
        raise typer.Exit(EXIT_GATE_FAILED)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
