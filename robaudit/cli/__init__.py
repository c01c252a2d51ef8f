"""The ``robaudit`` command line: parse flags, load the config, call the library, map errors
to exit codes (0 pass, 1 gate failed, 2 bad input, 3 runtime failure, 130 interrupted).

No audit logic lives here: ``scan`` and ``verify`` call the Python API (:mod:`robaudit.api`),
the same functions a notebook or the pytest plugin calls. This module lists the commands, in
the order ``robaudit --help`` shows them; each lives in its own module (``scan_command``,
``harden_command``, ``commands``), the app and its error handling in ``base``.
"""

from __future__ import annotations

from robaudit.cli.base import app as app
from robaudit.cli.base import handle_errors as handle_errors
from robaudit.cli.commands import DIFF_FORMATS as DIFF_FORMATS
from robaudit.cli.commands import (
    attacks,
    diff,
    explain,
    init,
    report_command,
    selftest,
    validate,
    verify,
)
from robaudit.cli.harden_command import harden
from robaudit.cli.options import BatchSizeOption as BatchSizeOption
from robaudit.cli.options import DebugOption as DebugOption
from robaudit.cli.options import DeviceOption as DeviceOption
from robaudit.cli.options import JsonOption as JsonOption
from robaudit.cli.options import TrustModelOption as TrustModelOption
from robaudit.cli.scan_command import scan
from robaudit.report.terminal_bars import RichProgress as RichProgress

app.command()(scan)
app.command()(verify)
app.command("report")(report_command)
app.command()(diff)
app.command()(init)
app.command()(validate)
app.command()(attacks)
app.command()(explain)
app.command()(selftest)
app.command()(harden)


def main() -> None:
    """Console-script entry point."""
    app()


__all__ = ["app", "main"]
