"""The contract of `zraft-client` with its caller: exit codes, usage errors, strict parsers.

It owns what an outcome means to a script (the `EXIT_*` codes, and which reply maps to
which), the exception a bad command line raises, and the argparse parser every command
uses, which raises instead of exiting so that the REPL survives a typo, with the one way
every command line is parsed (`parse_words`).

It must not print, talk to a node, or know any command: the commands are declared in
`zraft.cli.commands`, run by `zraft.cli.session`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import NoReturn

from zraft.client import Reply

EXIT_OK = 0
"""The command succeeded."""
EXIT_FAILED = 1
"""The cluster refused: cas_failed, key not found (get), bad_request, too_large, internal,
conflict (another membership change is not committed yet), forbidden, compacted (a read
below the compact revision), future_revision (above the current one), too_many_ops (a
transaction branch over max_txn_ops), no_space (the space quota's alarm is raised),
lease_not_found (a lease that expired, was revoked or never existed), lease_lost (`lease
keep-alive` could not refresh the lease within its TTL: it may have expired)."""
EXIT_USAGE = 2
"""Bad command line, unknown command, unreadable config, malformed endpoint."""
EXIT_UNAVAILABLE = 3
"""No reply in time, or the reply was `unavailable`, `timeout` or `not_leader`."""
EXIT_AUTH = 4
"""Every node refused the client's security handshake (unknown key, plaintext vs CURVE)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C in one-shot mode."""

_UNAVAILABLE_CODES = frozenset({"unavailable", "timeout", "not_leader"})


class UsageError(Exception):
    """A command line or REPL line that does not parse; the message says why."""


class HelpShown(Exception):
    """argparse has printed --help and wants to stop: not an error.

    Args:
        status: the exit status argparse asked for (0).
    """

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class CommandParser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so the REPL survives typos."""

    def error(self, message: str) -> NoReturn:
        """Raise UsageError with the usage line and `message`."""
        raise UsageError(f"{self.format_usage().strip()}\n{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """Raise instead of calling sys.exit (after --help, for one)."""
        if message:
            raise UsageError(message.strip())
        raise HelpShown(status)


def exit_code(reply: Reply) -> int:
    """The exit code a node's answer means: 0, 3 for unavailability, else 1."""
    if reply.ok:
        return EXIT_OK
    return EXIT_UNAVAILABLE if reply.error_code in _UNAVAILABLE_CODES else EXIT_FAILED


def positive_float(text: str) -> float:
    """An argparse type accepting numbers > 0, with a clear message otherwise."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def int_at_least(minimum: int) -> Callable[[str], int]:
    """An argparse type accepting integers >= `minimum`, with a clear message otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected an integer >= {minimum}, got {text!r}")
        return value

    return parse


def parse_words(parser: argparse.ArgumentParser, words: list[str]) -> argparse.Namespace:
    """Parse a command's words the way every command line is parsed.

    Options may sit between positionals (`cas k --absent v`: argparse's intermixed mode),
    except on a line with `--`, which needs no mixing (and which the intermixed mode
    mishandles); a word that starts with `-` but names no option is a value (see
    `values_may_start_with_dash`).

    Raises:
        UsageError: the words do not parse (with a `CommandParser`).
    """
    passthrough = parser.get_default(PASSTHROUGH)
    if passthrough and "--" in words:
        # `lock NAME --ttl 5 -- CMD ARGS`: the words after `--` are the command's own.
        at = words.index("--")
        namespace = parse_words(parser, words[:at])
        setattr(namespace, passthrough, words[at + 1 :])
        return namespace
    rest = values_may_start_with_dash(parser, words)
    parse = parser.parse_args if "--" in rest else parser.parse_intermixed_args
    return parse(rest)


PASSTHROUGH = "passthrough_dest"
"""A parser whose default for this names a destination takes every word after `--` into
it, untouched (`parser.set_defaults(passthrough_dest="command", command=[])`)."""


def values_may_start_with_dash(parser: argparse.ArgumentParser, words: list[str]) -> list[str]:
    """`put k -x` means the value `-x`: a word that starts with `-` but names none of the
    command's options is a value, so `--` goes before it (argparse would take it for an
    unknown option and say so, misleadingly). Negative numbers are values to argparse
    already; a line that has `--` is left as it is."""
    if "--" in words:
        return words
    options = parser._option_string_actions  # every option string the parser knows
    for position, word in enumerate(words):
        if word.startswith("-") and word != "-" and word.split("=", 1)[0] not in options:
            return [*words[:position], "--", *words[position:]]
    return words
