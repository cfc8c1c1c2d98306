"""The `zraft-client` command table (`zraft.cli.commands`) and what is generated from it.

Every op of the client protocol (`zraft.wire.ops.OPS`) must be reachable from a command;
every command must be complete (summary, parser, handler, known ops); and `help`, the
`--help` epilog, the REPL's commands and its completion must list exactly the declared
names and aliases. `table_problems` is the check; a test feeds it broken tables to show
that it catches them.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import textwrap
from collections.abc import Mapping, Sequence

import pytest

from zraft.cli.client import Session, Target, build_parser
from zraft.cli.commands import (
    COMMAND_ALIASES,
    COMMAND_SUMMARY,
    COMMANDS,
    Command,
    command_words,
    commands_for_op,
    find_command,
    summary_lines,
)
from zraft.cli.repl import LEAVE_WORDS, Repl, method_name
from zraft.cli.usage import EXIT_OK, EXIT_USAGE
from zraft.wire.ops import OPS, Retry

DECLARED_WORDS = {word for command in COMMANDS.values() for word in command.words}


def table_problems(commands: Mapping[str, Command]) -> list[str]:
    """Everything wrong with a command table, as sentences ([] for a sound one)."""
    problems = []
    for op in OPS:
        if not any(op in command.ops and command.summary.strip() for command in commands.values()):
            problems.append(f"op {op!r}: no command with a summary sends it")
    for name, command in commands.items():
        if name != command.name:
            problems.append(f"{name!r}: declared under another name ({command.name!r})")
        if not command.summary.strip() or not command.synopsis.startswith(command.name):
            problems.append(f"{name!r}: no summary, or a synopsis not naming it")
        if not callable(command.handler):
            problems.append(f"{name!r}: no handler")
        if unknown := [op for op in command.ops if op not in OPS]:
            problems.append(f"{name!r}: unknown ops {unknown}")
        try:
            parser = command.build_parser()
        except Exception as exc:  # any failure to build is the finding
            problems.append(f"{name!r}: its parser cannot be built ({exc!r})")
            continue
        if not isinstance(parser, argparse.ArgumentParser) or parser.prog != name:
            problems.append(f"{name!r}: its parser is not named after it")
    return problems


class Recorder:
    """A REPL runner that records the command lines it is handed."""

    def __init__(self, words: Mapping[str, str]) -> None:
        self.command_words = dict(words)
        self.lines: list[list[str]] = []
        self.failures: list[str] = []

    def execute(self, argv: Sequence[str]) -> int:
        """Record the line."""
        self.lines.append(list(argv))
        return EXIT_OK

    def fail(self, text: str) -> None:
        """Record the error."""
        self.failures.append(text)


def session(stdout: io.StringIO) -> Session:
    """A REPL-mode session toward a closed port (the tests here never send a request)."""
    target = Target(((None, "tcp://127.0.0.1:1"),), 0.2, 1.0)
    return Session(target, json_output=False, repl=True, stdout=stdout, stderr=io.StringIO())


def run(*argv: str) -> tuple[int, list[str]]:
    """Run one command line in a session: (exit code, output lines)."""
    out = io.StringIO()
    code = session(out).execute(argv)
    return code, out.getvalue().splitlines()


# --- the table --------------------------------------------------------------------------


def test_the_table_is_sound() -> None:
    """Every op has a command; every command a summary, a parser, a handler, known ops."""
    assert table_problems(COMMANDS) == []


@pytest.mark.parametrize("op", sorted(OPS))
def test_every_op_is_reachable_from_a_command_with_help(op: str) -> None:
    """`commands_for_op` finds a command for each op, and `help` describes it."""
    commands = commands_for_op(op)
    assert commands, f"no zraft-client command sends {op!r}"
    for command in commands:
        assert command.help_lines()[0].startswith(command.synopsis)
        assert command.build_parser().format_help().startswith(f"usage: {command.name}")
    for alias in OPS[op].aliases:
        assert commands_for_op(alias) == commands


def test_changes_are_flagged_as_their_ops_demand() -> None:
    """A command carries the membership-change flag exactly when an op it sends is never
    re-sent after its outcome became unknown (`Retry.IF_UNSENT`)."""
    for command in COMMANDS.values():
        unsure = any(OPS[op].retry is Retry.IF_UNSENT for op in command.ops)
        assert command.changes_membership == unsure, command.name


def test_the_check_catches_a_broken_table() -> None:
    """`table_problems` has teeth: a missing handler, summary or command is reported."""
    broken = dict(COMMANDS)
    broken["promote"] = dataclasses.replace(COMMANDS["promote"], handler=None)  # type: ignore[arg-type]
    broken["remove"] = dataclasses.replace(COMMANDS["remove"], summary=" ")
    broken["put"] = dataclasses.replace(COMMANDS["put"], ops=("put", "frobnicate"))
    del broken["members"]
    assert table_problems(broken) == [
        "op 'members': no command with a summary sends it",
        "op 'remove_member': no command with a summary sends it",
        "'put': unknown ops ['frobnicate']",
        "'promote': no handler",
        "'remove': no summary, or a synopsis not naming it",
    ]


# --- what is generated from it ----------------------------------------------------------


def help_words(lines: Sequence[str]) -> tuple[set[str], set[str]]:
    """The command words and the aliases a `help` listing shows."""
    names: set[str] = set()
    aliases: set[str] = set()
    for line in lines:
        if "(alias: " in line:  # in the summary, under a long synopsis or after a short one
            aliases |= set(line.split("(alias: ")[1].rstrip(")").split(", "))
        if line.startswith(" "):  # a summary under a long synopsis
            continue
        synopsis = line[:30] if len(line) > 30 else line
        names |= {form.split()[0] for form in synopsis.split(" | ")}
    return names, aliases


def test_help_lists_exactly_the_declared_names_and_aliases() -> None:
    """`help` names every command (aliases in its line) and the REPL's ways out."""
    code, lines = run("help")
    assert code == EXIT_OK and lines == COMMAND_SUMMARY.splitlines() == summary_lines()
    names, aliases = help_words(lines)
    assert names == set(COMMANDS) | set(LEAVE_WORDS)
    assert aliases == set(COMMAND_ALIASES)
    epilog = build_parser().format_help()
    assert textwrap.indent(COMMAND_SUMMARY, "  ") in epilog


@pytest.mark.parametrize("word", sorted(DECLARED_WORDS))
def test_help_describes_every_name_and_alias(word: str) -> None:
    """`help WORD` prints the usage of the command WORD names."""
    command = find_command(word)
    assert command is not None
    code, lines = run("help", word)
    assert code == EXIT_OK and lines[0].startswith(f"usage: {command.name}")


def test_session_dispatch_is_the_table() -> None:
    """The session runs exactly the declared words; anything else is unknown."""
    out = io.StringIO()
    assert session(out).command_words == command_words(COMMANDS)
    assert set(command_words(COMMANDS)) == DECLARED_WORDS
    code, lines = run("quit")  # a REPL word, not a command
    assert code == EXIT_USAGE and lines == ["error: unknown command 'quit'; try help"]


def test_repl_has_a_method_for_every_name_and_alias() -> None:
    """Each declared word (dashed, underscored) runs its command; so do the ways out."""
    runner = Recorder(session(io.StringIO()).command_words)
    repl = Repl(runner, interactive=False, stdin=io.StringIO(), stdout=io.StringIO())
    methods = {name for name in dir(repl) if name.startswith("do_")}
    assert methods == {method_name(word) for word in DECLARED_WORDS | set(LEAVE_WORDS)} | {"do_EOF"}
    for word in sorted(DECLARED_WORDS):
        for typed in (word, word.replace("-", "_")):
            runner.lines.clear()
            assert repl.onecmd(f"{typed} 'an arg'") is False
            assert runner.lines == [[command_words()[word], "an arg"]], typed
    assert all(repl.onecmd(word) is True for word in LEAVE_WORDS)
    assert repl.onecmd("frobnicate") is False and runner.failures == [
        "error: unknown command 'frobnicate'; try help"
    ]


def test_completion_lists_exactly_the_declared_names_and_aliases() -> None:
    """Tab completion offers every declared word and the ways out, and nothing else."""
    runner = Recorder(session(io.StringIO()).command_words)
    repl = Repl(runner, interactive=False, stdin=io.StringIO(), stdout=io.StringIO())
    assert repl.completenames("") == sorted(DECLARED_WORDS | set(LEAVE_WORDS))
    assert repl.completenames("add-") == ["add-learner", "add-member"]
    assert repl.completenames("de") == ["del", "delete"]


def test_the_repl_completes_a_commands_options() -> None:
    """`get k --ser<TAB>` completes to `--serializable`; values are never guessed (keys
    are offered only when a cluster answers: `tests/test_cli_kv.py`; none runs here)."""
    runner = session(io.StringIO())
    repl = Repl(runner, interactive=False, stdin=io.StringIO(), stdout=io.StringIO())
    assert repl.completedefault("--ser", "get k --ser", 6, 11) == ["--serializable"]
    assert repl.completedefault("--", "cas k --", 6, 8) == ["--absent", "--json", "--write-out"]
    assert repl.completedefault("ab", "get ab", 4, 6) == []
    assert repl.completedefault("--x", "bogus --x", 6, 9) == []
    assert "--help" not in runner.options_of("bench")
    assert {"--clients", "--duration", "--op"} <= set(runner.options_of("bench"))


def test_the_repl_completes_the_fixed_first_words() -> None:
    """`lease gr<TAB>` and `alarm <TAB>`: a first argument with fixed words is completed,
    free-form arguments are not (nor keys, with no cluster to ask)."""
    runner = session(io.StringIO())
    repl = Repl(runner, interactive=False, stdin=io.StringIO(), stdout=io.StringIO())
    assert repl.completedefault("gr", "lease gr", 6, 8) == ["grant"]
    assert repl.completedefault("", "alarm ", 6, 6) == ["disarm", "list"]
    assert repl.completedefault("", "lease grant ", 12, 12) == []  # the TTL is free-form
    assert repl.completedefault("", "get ", 4, 4) == []
