"""The `zraft-client` REPL: a `cmd.Cmd` loop over the one-shot command runner.

Each line is split with shell quoting rules (`shlex`) and handed to the same runner the
one-shot commands use, so both modes accept exactly the same commands and arguments.

Rules it keeps:

- **On a terminal**: a `zraft> ` prompt, readline history (in `$ZRAFT_HISTORY`, else
  `~/.zraft_history`, 1000 lines) and tab-completion of command names (dashed names such
  as `add-learner` included: only whitespace separates words for completion).
- Command names may contain `-`: the first word of a line is the command, with `-` read
  as `_` to find its `do_` method (cmd.Cmd alone would stop the name at the dash).
- **On a pipe**: no prompt, no readline (importing it there may print terminal escapes),
  plain line reading; so the output is exactly the commands' result lines.
- An empty line does nothing (cmd.Cmd's default would repeat the last command); `quit`,
  `exit` and end of input leave; Ctrl-C abandons the current line, not the session.
"""

from __future__ import annotations

import cmd
import contextlib
import os
import shlex
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

HISTORY_LENGTH = 1000
"""Lines of history kept."""


class CommandRunner(Protocol):
    """What the REPL needs from the one-shot side (`zraft.cli.client.Session`)."""

    @property
    def command_names(self) -> list[str]:
        """Every command name, for completion."""
        ...

    def execute(self, argv: Sequence[str]) -> int:
        """Run one command line and return its exit code."""
        ...

    def fail(self, text: str) -> None:
        """Print an error line."""
        ...


class Repl(cmd.Cmd):
    """The interactive loop: one command per line.

    Args:
        runner: runs the commands and prints their results.
        interactive: stdin is a terminal (prompt, readline, completion).
        stdin, stdout: the streams to use.
    """

    def __init__(
        self, runner: CommandRunner, *, interactive: bool, stdin: TextIO, stdout: TextIO
    ) -> None:
        # completekey="" keeps cmd.Cmd from importing readline when reading a pipe.
        super().__init__(completekey="tab" if interactive else "", stdin=stdin, stdout=stdout)
        self.use_rawinput = interactive
        self.prompt = "zraft> " if interactive else ""
        self._runner = runner
        self._interactive = interactive

    def _run(self, name: str, arg: str) -> bool:
        try:
            words = shlex.split(arg)
        except ValueError as exc:
            self._runner.fail(f"error: cannot parse the line: {exc}")
            return False
        self._runner.execute([name, *words])
        return False

    def do_put(self, arg: str) -> bool:
        """put KEY VALUE: set KEY to VALUE."""
        return self._run("put", arg)

    def do_get(self, arg: str) -> bool:
        """get KEY [--serializable]: print the value of KEY."""
        return self._run("get", arg)

    def do_del(self, arg: str) -> bool:
        """del KEY: delete KEY."""
        return self._run("del", arg)

    def do_delete(self, arg: str) -> bool:
        """delete KEY: same as del."""
        return self._run("del", arg)

    def do_cas(self, arg: str) -> bool:
        """cas KEY OLD NEW | cas --absent KEY NEW: compare-and-swap."""
        return self._run("cas", arg)

    def do_status(self, arg: str) -> bool:
        """status [--verbose]: every node's role, term and indexes."""
        return self._run("status", arg)

    def do_snapshot(self, arg: str) -> bool:
        """snapshot [NODE]: take a snapshot now on one node."""
        return self._run("snapshot", arg)

    def do_members(self, arg: str) -> bool:
        """members: the members, their roles, endpoints and match indexes."""
        return self._run("members", arg)

    def do_add_learner(self, arg: str) -> bool:
        """add-learner ID PEER CLIENT: add a node as a learner."""
        return self._run("add-learner", arg)

    def do_add_member(self, arg: str) -> bool:
        """add-member ID PEER CLIENT: add a node; the leader promotes it once caught up."""
        return self._run("add-member", arg)

    def do_promote(self, arg: str) -> bool:
        """promote ID: make a learner a voter."""
        return self._run("promote", arg)

    def do_remove(self, arg: str) -> bool:
        """remove ID: remove a member."""
        return self._run("remove", arg)

    def do_transfer_leader(self, arg: str) -> bool:
        """transfer-leader [ID]: hand leadership to another voter."""
        return self._run("transfer-leader", arg)

    def do_bench(self, arg: str) -> bool:
        """bench [OPTIONS]: the load generator."""
        return self._run("bench", arg)

    def do_help(self, arg: str) -> bool:
        """help [CMD]: list the commands, or show CMD's usage."""
        return self._run("help", arg)

    def do_quit(self, arg: str) -> bool:
        """quit: leave the REPL."""
        return True

    def do_exit(self, arg: str) -> bool:
        """exit: leave the REPL."""
        return True

    def do_EOF(self, arg: str) -> bool:  # noqa: N802 (the name cmd.Cmd dispatches EOF to)
        """Leave the REPL at end of input."""
        if self._interactive:
            self.stdout.write("\n")  # end the prompt's line after Ctrl-D
        return True

    def preloop(self) -> None:
        """On a terminal, complete whole words: readline's default splits at `-`."""
        if self._interactive:
            with contextlib.suppress(ImportError):
                import readline  # only on a terminal (see the module doc)

                readline.set_completer_delims(" \t\n")

    def parseline(self, line: str) -> tuple[str | None, str | None, str]:
        """Split a line into (command, argument, line); `add-learner` -> `add_learner`."""
        line = line.strip()
        if line.startswith("?"):
            line = f"help {line[1:]}"
        if not line:
            return None, None, line
        name, *rest = line.split(maxsplit=1)
        return name.replace("-", "_"), rest[0] if rest else "", line

    def emptyline(self) -> bool:
        """Do nothing."""
        return False

    def default(self, line: str) -> bool:
        """An unknown command."""
        self._runner.fail(f"error: unknown command {line.split()[0]!r}; try help")
        return False

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        """Complete command names (EOF excluded)."""
        names = {*self._runner.command_names, "exit", "quit"}
        return sorted(name for name in names if name.startswith(text))


def run_repl(runner: CommandRunner, stdin: TextIO, stdout: TextIO) -> int:
    """Run the REPL until quit, exit or end of input. Returns 0."""
    interactive = stdin.isatty()
    repl = Repl(runner, interactive=interactive, stdin=stdin, stdout=stdout)
    history = History() if interactive else None
    if history is not None:
        history.load()
    try:
        while True:
            try:
                repl.cmdloop()
                return 0
            except KeyboardInterrupt:
                stdout.write("^C\n")
    finally:
        if history is not None:
            history.save()


class History:
    """readline history in `$ZRAFT_HISTORY` or `~/.zraft_history`; failures only lose it."""

    def __init__(self) -> None:
        try:
            import readline  # here, not at the top: only ever on a terminal
        except ImportError:  # a Python built without readline
            self._readline: Any = None
        else:
            self._readline = readline
        self.path = os.environ.get("ZRAFT_HISTORY") or str(Path.home() / ".zraft_history")

    def load(self) -> None:
        """Read the history file, if there is one."""
        if self._readline is None:
            return
        self._readline.set_history_length(HISTORY_LENGTH)
        with contextlib.suppress(OSError):  # no history yet, or unreadable: start empty
            self._readline.read_history_file(self.path)

    def save(self) -> None:
        """Write the history file."""
        if self._readline is None:
            return
        with contextlib.suppress(OSError):
            self._readline.write_history_file(self.path)
