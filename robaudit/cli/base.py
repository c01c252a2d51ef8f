"""The typer app every command hangs on, and how a command fails: one line on stderr and its
exit code (0 pass, 1 gate failed, 2 bad input, 3 runtime failure, 130 interrupted)."""

from __future__ import annotations

import contextlib
import functools
import inspect
import traceback
from collections.abc import Callable, Iterator
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.text import Text
from typer.core import TyperGroup
from typer.exceptions import TyperException

import robaudit
from robaudit.cli.options import DebugOption
from robaudit.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_RUNTIME, RobauditError


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
        err_console().print(Text.assemble(("robaudit: error: ", "red"), f"{message}{where}"))
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


def err_console() -> Console:
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
            err_console().print(Text.assemble(("robaudit: error: ", "red"), msg))
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err_console().print("robaudit: interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None
        except Exception as exc:
            if _state["debug"]:
                traceback.print_exc()
            first = (str(exc).splitlines() or [""])[0][:300]
            err_console().print(
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



def note_debug(debug: bool) -> None:
    """A command's own ``--debug`` (also accepted before the command name)."""
    _state["debug"] = _state["debug"] or debug
