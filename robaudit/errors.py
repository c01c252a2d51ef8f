"""Error tree: every error a person can cause carries its exit code and a one-line message.

The CLI prints ``str(err)`` on one line and exits with ``err.exit_code``; library callers
catch :class:`RobauditError` to handle all of them at once.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_GATE_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_RUNTIME = 3
EXIT_INTERRUPTED = 130


class RobauditError(Exception):
    """Base class: a message meant for a person, and the exit code that goes with it."""

    exit_code: int = EXIT_RUNTIME


class UserInputError(RobauditError):
    """Bad input the user can fix: a config, a file, a flag (exit 2)."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(UserInputError):
    """The threat-model YAML is malformed or fails validation."""


class ModelLoadError(UserInputError):
    """The checkpoint cannot be loaded, or loads but does not fit the config."""


class DataError(UserInputError):
    """The data source is missing, malformed, or does not fit the model's input."""


class RuntimeFailure(RobauditError):
    """Something broke while attacking: the model raised, returned NaN, ran out of memory (exit 3).

    ``partial`` holds the result of the work finished before the failure (a
    :class:`robaudit.results.RunResult` marked incomplete) when there is one, so the front end
    can still write a report.
    """

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, *, partial: object | None = None) -> None:
        super().__init__(message)
        self.partial = partial
