"""A `zraft-client` session: runs command lines against one target and prints the results.

It owns the plumbing every command shares: finding the command in the table
(`zraft.cli.commands`), parsing its arguments, the session's client (made on first use,
closed at the end), where output goes (stdout, or stderr for errors in one-shot mode)
and in which format (each command's `-w/--write-out`, else the session's `--json`, else
`simple`), what a command may read from stdin (nothing whole in the REPL, whose stdin
holds the next commands), and turning usage errors, client-side timeouts and refused
handshakes into lines and exit codes. It is the `CommandContext` the handlers run in,
and the `CommandRunner` the REPL drives.

It must not know any particular command: what a command does is its handler's
(`zraft.cli.handlers`), which commands exist is the table's.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from typing import Any, TextIO

from zraft.cli import render
from zraft.cli.commands import command_words, find_command
from zraft.cli.target import Target
from zraft.cli.usage import (
    EXIT_AUTH,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    HelpShown,
    UsageError,
    parse_words,
)
from zraft.client import Client, ClientAuthError, ClientError, ClientTimeout

COMPLETE_KEYS = 50
"""Keys the REPL offers at most for one completion."""

COMPLETE_WAIT_S = 0.5
"""How long a key completion waits for the cluster before offering nothing."""


class Session:
    """Runs commands against one target and prints their results.

    Args:
        target: the endpoints.
        json_output: print JSON objects instead of text unless a command says otherwise
            (`--json` before the command; each command's `-w` overrides it).
        repl: REPL mode (errors on stdout, flushed per line) rather than one-shot.
        stdout, stderr: where to print.
        stdin: where commands read input (`put KEY`, `txn`); default `sys.stdin` (its
            `buffer` for bytes), read only when a command asks.
    """

    def __init__(
        self,
        target: Target,
        *,
        json_output: bool,
        repl: bool,
        stdout: TextIO,
        stderr: TextIO,
        stdin: TextIO | None = None,
    ) -> None:
        self._target = target
        self._default_format = "json" if json_output else "simple"
        self._format = self._default_format  # the running command's (`-w`)
        self._repl = repl
        self._stdout = stdout
        self._stderr = stderr
        self._stdin = stdin
        self._client: Client | None = None

    @property
    def target(self) -> Target:
        """The nodes and timeouts commands use."""
        return self._target

    @property
    def json_output(self) -> bool:
        """Whether results are printed as JSON objects."""
        return self._format == "json"

    @property
    def write_out(self) -> str:
        """The running command's output format: `simple`, `json` or `table`."""
        return self._format

    @property
    def command_words(self) -> dict[str, str]:
        """Every command name and alias, mapped to the command's name (for the REPL)."""
        return command_words()

    @property
    def command_names(self) -> list[str]:
        """Every command name and alias, sorted."""
        return sorted(self.command_words)

    def out(self, line: str, *, flush: bool = False) -> None:
        """Print a result line to stdout (flushed in the REPL, or when `flush`: a command
        that runs on, such as `lease keep-alive`)."""
        print(line, file=self._stdout, flush=self._repl or flush)

    def fail(self, line: str) -> None:
        """Print an error line: to stderr in one-shot mode, to stdout in the REPL."""
        print(line, file=self._stdout if self._repl else self._stderr, flush=True)

    def out_json(self, obj: Any, *, flush: bool = False) -> None:
        """Print `obj` as one JSON line (`flush`: see `out`)."""
        self.out(json.dumps(render.jsonable(obj)), flush=flush)

    def note(self, line: str) -> None:
        """Print a progress line to stderr, so stdout holds only the results."""
        print(line, file=self._stderr, flush=True)

    def read_line(self) -> str | None:
        """The next line of stdin without its line end; None at the end of input."""
        line = self._input().readline()
        return line.rstrip("\r\n") if line else None

    def read_stdin_bytes(self, instead: str) -> bytes:
        """The rest of stdin, as bytes (binary-safe).

        Args:
            instead: what to type instead in the REPL (`put KEY VALUE`), for its error.

        Raises:
            UsageError: in the REPL, where stdin holds the next commands.
        """
        stream = self._whole_input(instead)
        buffer = getattr(stream, "buffer", None)
        return buffer.read() if buffer is not None else stream.read().encode("utf-8")

    def read_stdin_text(self, instead: str) -> str:
        """The rest of stdin, as text (`instead`: see `read_stdin_bytes`).

        Raises:
            UsageError: in the REPL, where stdin holds the next commands.
        """
        return self._whole_input(instead).read()

    def _input(self) -> TextIO:
        return self._stdin if self._stdin is not None else sys.stdin

    def _whole_input(self, instead: str) -> TextIO:
        if self._repl:
            raise UsageError(f"error: in the REPL stdin holds the commands: use {instead}")
        return self._input()

    def execute(self, argv: Sequence[str]) -> int:
        """Run one command line (`["put", "k", "v"]`) and return its exit code."""
        if not argv:
            return EXIT_OK
        command = find_command(argv[0])
        if command is None:
            self.fail(f"error: unknown command {argv[0]!r}; try help")
            return EXIT_USAGE
        try:
            args = parse_words(command.build_parser(), list(argv[1:]))
            self._format = args.write_out or self._default_format
            return command.handler(self, args)
        except HelpShown:
            return EXIT_OK
        except UsageError as exc:
            self.fail(str(exc))
            return EXIT_USAGE
        except ClientTimeout as exc:
            if self.json_output:
                self.out_json(render.timeout_map(exc))
            else:
                # A change is never re-sent blindly: whether it happened is for `members`.
                hint = "; check `members` before retrying" if command.changes_membership else ""
                self.fail(f"error: client_timeout: {exc}{hint}")
            return EXIT_UNAVAILABLE
        except ClientAuthError as exc:
            self.auth_failed(str(exc))
            return EXIT_AUTH
        finally:
            self._format = self._default_format

    def options_of(self, name: str) -> list[str]:
        """The long options of command `name` (the REPL completes them)."""
        command = find_command(name)
        if command is None:
            return []
        options = command.build_parser()._option_string_actions  # argparse's own table
        return sorted(o for o in options if o.startswith("--") and o != "--help")

    def first_words_of(self, name: str) -> list[str]:
        """The words command `name`'s first argument may be (`lease grant`, `alarm
        list`), when it has a fixed set; the REPL completes them."""
        command = find_command(name)
        if command is None:
            return []
        for action in command.build_parser()._actions:
            if not action.option_strings and action.dest != "help":
                return sorted(str(choice) for choice in action.choices or ())
        return []

    def keys_for(self, name: str, text: str) -> list[str]:
        """Keys that start with `text` (at most `COMPLETE_KEYS`, UTF-8 and without white
        space: words a line can hold), when command `name`'s first argument is a KEY;
        [] when the cluster does not answer within `COMPLETE_WAIT_S`."""
        command = find_command(name)
        if command is None:
            return []
        first = next(
            (
                a
                for a in command.build_parser()._actions
                if not a.option_strings and a.dest != "help"
            ),
            None,
        )
        if first is None or first.dest != "key":
            return []
        shape = {"key": text, "prefix": True} if text else {"key": "\0", "range_end": "\0"}
        try:
            reply = self.client().request_within(
                COMPLETE_WAIT_S,
                "range",
                keys_only=True,
                limit=COMPLETE_KEYS,
                serializable=True,
                **shape,
            )
        except ClientError:
            return []
        found = []
        for kv in reply.kvs or ():
            try:
                key = kv.key.decode()
            except UnicodeDecodeError:
                continue
            if key and not any(c.isspace() for c in key):
                found.append(key)
        return found

    def auth_failed(self, message: str) -> None:
        """Report a refused security handshake (a reply-shaped object with --json)."""
        if self.json_output:
            self.out_json({"ok": False, "error": {"code": "auth_failed", "message": message}})
        else:
            self.fail(f"error: auth_failed: {message}")

    def client(self) -> Client:
        """The session's client, made on first use."""
        if self._client is None:
            target = self._target
            self._client = Client(
                target.endpoints,
                timeout=target.timeout or target.request_timeout,
                node_endpoints={i: ep for i, ep in target.nodes if i is not None},
                curve=target.curve,
            )
        return self._client

    def close(self) -> None:
        """Close the client, if one was made."""
        if self._client is not None:
            self._client.close()
            self._client = None
