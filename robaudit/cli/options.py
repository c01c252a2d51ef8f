"""Options several commands share, written once (typer reads the help from these)."""

from __future__ import annotations

from typing import Annotated

import typer

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

QuietOption = Annotated[
    bool, typer.Option("--quiet", "-q", help="No progress or summary; errors only.")
]
