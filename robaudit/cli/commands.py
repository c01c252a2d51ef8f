"""The commands besides ``scan`` and ``harden``: verify, report, diff, init, validate, attacks,
explain and selftest. Each parses its flags, calls the library, and leaves what the user
reads to robaudit.report.terminal."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from robaudit.attacks.base import param_table, registry
from robaudit.baseline import DEFAULT_MAX_DROP, check_max_drop
from robaudit.classifier import resolve_device
from robaudit.cli.base import err_console, handle_errors, note_debug
from robaudit.cli.options import (
    BatchSizeOption,
    DebugOption,
    DeviceOption,
    JsonOption,
    TrustModelOption,
)
from robaudit.config import PRESET_NAMES, load_config, preset_path
from robaudit.documents import load_document
from robaudit.errors import EXIT_GATE_FAILED, UserInputError
from robaudit.loading.audio import waveform_source
from robaudit.loading.tabular import is_tabular
from robaudit.report.terminal import (
    catalog_lines,
    catalogue_tables,
    fitted_line,
    print_comparison,
    print_files,
    selftest_table,
    validation_lines,
)
from robaudit.report.writers import FILE_NAMES


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
    from robaudit.api.arguments import FLAGS, check_overrides
    from robaudit.api.verifying import run_verify

    note_debug(debug)
    check_overrides(None, batch_size, device, None, FLAGS)
    cfg = load_config(config)  # loaded once: the run below takes it
    if not model.exists():
        raise UserInputError(f"{model}: model file not found")
    if not examples.is_file():
        raise UserInputError(f"{examples}: adversarial file not found")
    result = run_verify(
        model, examples, cfg, str(config), data=data, device=device, batch_size=batch_size,
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

    note_debug(debug)
    formats = _formats(fmt)
    doc = load_document(report_json)
    folder = out if out is not None else (report_json if report_json.is_dir() else report_json.parent)
    written = write_reports(doc, folder, formats)
    if not quiet:
        print_files(written, err_console(), width=5)


DIFF_FORMATS = ("table", "json", "md")


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

    note_debug(debug)
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


@handle_errors
def init(
    preset: Annotated[
        str | None,
        typer.Option(
            help=f"Starter preset: {', '.join(PRESET_NAMES)} for images (default standard); "
            "tabular for tables (picked when --data is a CSV or Parquet); audio for waveforms "
            "(picked when --data is a WAV folder or a .npz with a sample_rate)."
        ),
    ] = None,
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
    label: Annotated[
        str | None, typer.Option(help="A table's label column (with a CSV/Parquet --data).")
    ] = None,
    schema: Annotated[
        str | None,
        typer.Option(help="A table's feature schema YAML; omitted: inferred and written inline."),
    ] = None,
    trust_model: TrustModelOption = False,
) -> None:
    """Print a commented starter config (a preset) to stdout or a file; with --model and
    --data, one already fitted to that model."""
    if (model is None) != (data is None):
        raise UserInputError("--model and --data go together: give both to fit the config, or neither")
    table = data is not None and is_tabular(data)
    wave = data is not None and not table and waveform_source(data, "test") is not None
    name = preset or ("tabular" if table else "audio" if wave else "standard")
    if (label is not None or schema is not None) and not table:
        raise UserInputError("--label and --schema describe a table: give a CSV or Parquet --data")
    for kind, starter, yes in (("a table", "tabular", table), ("waveforms", "audio", wave)):
        if yes and name != starter:
            raise UserInputError(
                f"--preset {name} is not for {kind}; {data} holds {kind}: use --preset "
                f"{starter} (the default for such data)"
            )
    if model is not None and data is not None and name == "audio" and not wave:
        raise UserInputError(
            f"--preset audio needs waveforms; {data} is neither a folder of WAV files in class "
            "subfolders nor a .npz with x of N x C x T and a sample_rate"
        )
    path = preset_path(name)
    text = path.read_text(encoding="utf-8")
    if output is not None and output.exists():
        raise UserInputError(f"{output}: already exists; not overwriting it")
    if output is not None and not output.parent.is_dir():
        raise UserInputError(f"{output}: folder {output.parent} does not exist")
    if model is not None and data is not None:
        from robaudit.starter import fitted_audio, fitted_preset, fitted_table

        if not model.exists():
            raise UserInputError(f"{model}: model file not found")
        if table:
            fit = fitted_table(
                text, load_config(path), model, data, label, schema, trust_model=trust_model
            )
        elif wave:
            fit = fitted_audio(text, load_config(path), model, data, trust_model=trust_model)
        else:
            fit = fitted_preset(text, load_config(path), model, data, trust_model=trust_model)
        text = fit.text
        err_console().print(fitted_line(name, model, fit), highlight=False)
    if output is None:
        sys.stdout.write(text)
        return
    from robaudit.report.writers import atomic_write_text

    atomic_write_text(output, text)


@handle_errors
def validate(
    config: Annotated[Path, typer.Argument(help="Threat-model YAML to check.")],
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="Print nothing when valid.")] = False,
) -> None:
    """Check a config against the schema without loading any model."""
    cfg = load_config(config)
    if not quiet:
        for line in validation_lines(config, cfg):
            typer.echo(line)


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


@handle_errors
def explain(
    finding_id: Annotated[str | None, typer.Argument(help="A finding ID such as RA003; omit to list all.")] = None,
) -> None:
    """Explain a finding: when it is raised, why it matters, what to do."""
    from robaudit.findings import CATALOG
    from robaudit.findings import explain as explain_text

    if finding_id is None:
        for line in catalog_lines(CATALOG.values()):
            typer.echo(line)
        return
    key = finding_id.strip().upper()
    if key not in CATALOG:
        raise UserInputError(
            f"unknown finding {finding_id!r}; valid: {', '.join(CATALOG)} (robaudit explain lists them)"
        )
    typer.echo(explain_text(key), nl=False)


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

