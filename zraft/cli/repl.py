"""The `zraft-client` REPL: a `cmd.Cmd` loop over the one-shot command runner.

Each line is split with shell quoting rules (`shlex`) and handed to the same runner the
one-shot commands use, so both modes accept exactly the same commands and arguments.
The REPL declares no command of its own but the ways out (`LEAVE_WORDS`): its `do_`
methods and its completion are made from the runner's command words, which come from
the command table (`zraft.cli.commands`).

Rules it keeps:

- **On a terminal**: a `zraft> ` prompt, readline history (in `$ZRAFT_HISTORY`, else
  `~/.zraft_history`, 1000 lines) and tab-completion of command names (dashed names such
  as `add-learner` included: only whitespace separates words for completion) and of a
  command's options (`get k --ser<TAB>`).
- Command names may contain `-`: the first word of a line is the command, with `-` read
  as `_` to find its `do_` method (cmd.Cmd alone would stop the name at the dash).
- **On a pipe**: no prompt, no readline (importing it there may print terminal escapes),
  plain line reading; so the output is exactly the commands' result lines.
- An empty line does nothing (cmd.Cmd's default would repeat the last command); `quit`,
  `exit` and end of input leave; Ctrl-C abandons the current line, not the session.

It must not know any particular command, nor print results: the runner does both.
"""

from __future__ import annotations

import cmd
import contextlib
import functools
import os
import re
import shlex
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, TextIO

HISTORY_LENGTH = 1000
"""Lines of history kept."""

LEAVE_WORDS = ("quit", "exit")
"""What leaves the REPL (so does end of input); REPL words, not commands."""

LEAVE_SUMMARY = "leave the REPL (so does end of input)"
"""Their line in `help`."""


class CommandRunner(Protocol):
    """What the REPL needs from the one-shot side (`zraft.cli.session.Session`)."""

    @property
    def command_words(self) -> Mapping[str, str]:
        """Every command name and alias, mapped to the command's name."""
        ...

    def execute(self, argv: Sequence[str]) -> int:
        """Run one command line and return its exit code."""
        ...

    def fail(self, text: str) -> None:
        """Print an error line."""
        ...

    def options_of(self, name: str) -> list[str]:
        """The long options of command `name`, for completion."""
        ...

    def first_words_of(self, name: str) -> list[str]:
        """The fixed words of command `name`'s first argument (`lease grant`), if any."""
        ...

    def keys_for(self, name: str, text: str) -> list[str]:
        """Keys starting with `text`, when command `name`'s first argument is a KEY and
        the cluster answers at once ([] otherwise)."""
        ...


def method_name(word: str) -> str:
    """The `do_` method that runs `word`: `add-learner` -> `do_add_learner`."""
    return "do_" + word.replace("-", "_")


class Repl(cmd.Cmd):
    """The interactive loop: one command per line.

    Args:
        runner: runs the commands and prints their results; each of its command words
            gets a `do_` method here (see `method_name`), which hands the line over.
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
        self.last_failure: int = 0  # exit code of the last command that failed
        self._words = dict(runner.command_words)
        # Instance attributes, not class ones: the commands are the runner's, and
        # cmd.Cmd finds a command's method with getattr, which sees both.
        for word, name in self._words.items():
            setattr(self, method_name(word), functools.partial(self._run, name))
        for word in LEAVE_WORDS:
            setattr(self, method_name(word), self._leave)

    @property
    def words(self) -> list[str]:
        """Every word that starts a line (commands, aliases, ways out), sorted."""
        return sorted({*self._words, *LEAVE_WORDS})

    def _run(self, name: str, arg: str) -> bool:
        try:
            words = split_line(arg)
        except ValueError as exc:
            self._runner.fail(f"error: cannot parse the line: {exc}")
            self.last_failure = 2  # a usage error, like a command line that does not parse
            return False
        code = self._runner.execute([name, *words])
        if code:
            self.last_failure = code  # a script on a pipe must see that a command failed
        return False

    def _leave(self, arg: str) -> bool:
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
        self.last_failure = 2  # as the one-shot mode's exit code for it
        return False

    def completedefault(self, text: str, line: str, *ignored: Any) -> list[str]:
        """Complete a command's options (`get k --ser<TAB>`), the fixed words of its
        first argument (`lease gr<TAB>`) and, where that argument is a key, the keys that
        start with what is typed (`get app/<TAB>`: one serializable read of at most 50
        keys, given up after half a second); other values are not guessed."""
        words = line.split()
        name = self._words.get(words[0]) if words else None
        if name is None:
            return []
        if text.startswith("-"):
            options = self._runner.options_of(name)
            return [option for option in options if option.startswith(text)]
        first = len(words) == 1 or (len(words) == 2 and not line.endswith(" "))
        if not first:
            return []
        fixed = self._runner.first_words_of(name)
        if fixed:
            return [word for word in fixed if word.startswith(text)]
        return self._runner.keys_for(name, text)

    def completenames(self, text: str, *ignored: Any) -> list[str]:
        """Complete command names (EOF excluded)."""
        return [word for word in self.words if word.startswith(text)]


def run_repl(runner: CommandRunner, stdin: TextIO, stdout: TextIO) -> int:
    """Run the REPL until quit, exit or end of input.

    Returns:
        0 on a terminal (a person saw every error); on a pipe, the exit code of the last
        command that failed (0 if none did), so a script notices a failure.
    """
    interactive = stdin.isatty()
    repl = Repl(runner, interactive=interactive, stdin=stdin, stdout=stdout)
    history = History() if interactive else None
    if history is not None:
        history.load()
    try:
        while True:
            try:
                repl.cmdloop()
                return 0 if interactive else repl.last_failure
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


_APOSTROPHE = re.compile(r"(?<=\w)'(?=\w)")


def split_line(line: str) -> list[str]:
    """Split a REPL line into words with shell quoting rules; an apostrophe inside a word
    (`put q don't`) is a letter, not an unclosed quote.

    Raises:
        ValueError: the quoting is still unbalanced (the message says why).
    """
    try:
        return shlex.split(line)
    except ValueError:
        return shlex.split(_APOSTROPHE.sub("\\'", line))
