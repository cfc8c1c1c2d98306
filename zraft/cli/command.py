"""One `zraft-client` command as the table declares it (`Command`), and what every
command's parser shares (the output options). The table itself is `zraft.cli.commands`,
assembled from the declarations of each area (`commands`, `lockcommands`, ...).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass

from zraft.cli.handlers import CommandContext
from zraft.cli.kvrender import FORMATS
from zraft.cli.usage import CommandParser

Handler = Callable[[CommandContext, argparse.Namespace], int]
"""Runs a parsed command and returns its exit code."""

SUMMARY_COLUMN = 30
"""Where the summaries start in `help`; a longer synopsis gets a line of its own."""

CHANGE_NOTE = (
    "Any node accepts it and forwards it to the leader; one change at a time (conflict, "
    "exit 1, while another is uncommitted). It is never re-sent once its outcome is "
    "unknown (exit 3): check `members` before trying again."
)
"""Ends the description (`help CMD`) of every command that changes the membership."""


@dataclass(frozen=True, slots=True)
class Command:
    """One `zraft-client` command.

    Attributes:
        name: what the user types (`add-learner`); also the prog of its parser.
        synopsis: its shape in `help` (`add-learner ID PEER CLIENT [--public-key KEY]`).
        summary: the one line `help` prints after the synopsis (aliases are appended).
        description: the paragraph `help NAME` prints.
        arguments: adds the command's arguments to its parser.
        handler: runs it (`zraft.cli.handlers`); returns the exit code.
        ops: the wire ops it sends (canonical `zraft.wire.ops.OPS` names); () for none.
        aliases: other names for it (`delete` for `del`).
        changes_membership: a membership change: never re-sent once its outcome is
            unknown, so a lost reply tells the user to check `members`.
        usage: the parser's usage line, when argparse's own would mislead (`cas`).
        more_forms: further `(synopsis, summary)` lines for `help` (`cas --absent`).
        offline: it needs no cluster (`help`, `backup-status`): no config or key is read.
    """

    name: str
    synopsis: str
    summary: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Handler
    ops: tuple[str, ...]
    aliases: tuple[str, ...] = ()
    changes_membership: bool = False
    usage: str | None = None
    more_forms: tuple[tuple[str, str], ...] = ()
    offline: bool = False

    @property
    def words(self) -> tuple[str, ...]:
        """The name and the aliases."""
        return (self.name, *self.aliases)

    def build_parser(self) -> CommandParser:
        """A fresh parser for the arguments; its help is what `help NAME` prints."""
        description = self.description
        if self.changes_membership:
            description = f"{description} {CHANGE_NOTE}"
        parser = CommandParser(prog=self.name, description=description, usage=self.usage)
        self.arguments(parser)
        output_arguments(parser)
        return parser

    def help_lines(self) -> list[str]:
        """This command's lines in `help`: synopsis, then summary from `SUMMARY_COLUMN`."""
        summary = self.summary
        if self.aliases:
            summary += f" (alias{'es' if len(self.aliases) > 1 else ''}: "
            summary += f"{', '.join(self.aliases)})"
        return [
            line
            for synopsis, text in ((self.synopsis, summary), *self.more_forms)
            for line in help_entry(synopsis, text)
        ]


def help_entry(synopsis: str, summary: str) -> list[str]:
    if len(synopsis) < SUMMARY_COLUMN:
        return [synopsis.ljust(SUMMARY_COLUMN) + summary]
    return [synopsis, " " * SUMMARY_COLUMN + summary]


def output_arguments(parser: argparse.ArgumentParser) -> None:
    """Every command's: the output format, default the session's (`--json`, else simple)."""
    output = parser.add_mutually_exclusive_group()
    output.add_argument(
        "-w",
        "--write-out",
        choices=FORMATS,
        help="output format: simple (default), json (the reply), table (kv lists aligned)",
    )
    output.add_argument(
        "--json", dest="write_out", action="store_const", const="json", help="-w json"
    )
