"""``--help`` wraps sentences at the terminal's width, not where the source wrapped a docstring."""

from __future__ import annotations

import itertools
import re
from typing import Any

import pytest

from robaudit.cli import app

ANSI = re.compile(r"\x1b\[[0-9;]*m")
COMMANDS = ["scan", "verify", "report", "diff", "init", "validate", "attacks", "explain", "selftest", "harden"]


def _help(cli: Any, *args: str, columns: int = 200) -> str:
    r = cli(*args, "--help", env={"COLUMNS": str(columns)})
    assert r.exit_code == 0, r.output
    return ANSI.sub("", r.stdout)


def _lines(text: str) -> list[str]:
    """Help lines without panel borders and padding."""
    return [" ".join(line.strip(" │").split()) for line in text.splitlines()]


def test_scan_help_keeps_a_sentence_on_one_line(cli: Any) -> None:
    lines = _lines(_help(cli, "scan"))
    sentence = (
        "Under `torchrun --nproc-per-node N -m robaudit scan ...` the samples are sharded over "
        "the processes and rank 0 writes the one report."
    )
    assert any(sentence in line for line in lines), "\n".join(lines[:12])


def test_command_list_keeps_each_description_on_one_line(cli: Any) -> None:
    lines = _lines(_help(cli))
    assert any(
        "verify Re-check every exported example: inside its ball and the bounds, misclassified by a "
        "fresh forward pass. Exit 0 if all hold" in line
        for line in lines
    )
    assert any("harden Adversarially train MODEL (or distill it), then audit the original" in line
               and "model with CONFIG side by side" in line for line in lines)


def test_every_command_description_is_one_line_per_paragraph() -> None:
    """Whatever the terminal width, the help text rich gets has no line break in a paragraph."""
    import typer.main

    group = typer.main.get_group(app)
    assert set(COMMANDS) <= set(group.commands)
    for name, command in [("robaudit", group), *group.commands.items()]:
        for paragraph in (command.help or "").split("\n\n"):
            assert paragraph and "\n" not in paragraph, (name, paragraph)


@pytest.mark.parametrize("command", COMMANDS)
def test_narrow_terminal_wraps_only_where_the_line_is_full(cli: Any, command: str) -> None:
    """At 80 columns a description line ends only where the next word would not fit."""
    text = _help(cli, command, columns=80)
    lines = [line.rstrip() for line in text.splitlines()]
    assert max(len(line) for line in lines) <= 80
    start = next(i for i, line in enumerate(lines) if line.strip().startswith("Usage:")) + 1
    end = next(i for i, line in enumerate(lines) if line.lstrip().startswith("╭"))
    description = lines[start:end]
    assert any(line.strip() for line in description), "the description comes before the panels"
    for line, following in itertools.pairwise(description):
        if line.strip() and following.strip():  # both in one paragraph
            assert len(line) + 1 + len(following.split()[0]) > 78, (line, following)
