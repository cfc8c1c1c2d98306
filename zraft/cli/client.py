"""`zraft-client`: one-shot commands and a REPL over the client library.

    zraft-client [--config FILE] [--key FILE] [--endpoint tcp://HOST:PORT]
                 [--server-key KEY] [--timeout S] [--json] [CMD ...]

The contract scripts and tests rely on (DESIGN.md §5):

- **One-shot mode**: results go to stdout; errors and `(not found)` go to stderr; the exit
  code says what happened (`EXIT_*` below; the table is also in `--help`).
- **REPL mode** (no CMD; see `zraft.cli.repl`): a single-key command prints exactly one
  line to stdout, errors included (`error: CODE: MESSAGE`, `(not found)`). Ranges,
  transactions, `--prev-kv`, `status`, `bench` and `help` print several lines. On a
  terminal the REPL exits 0; on a pipe it exits with the code of the last command that
  failed (0 if none did), so a script notices.
- **`--json`**: each command prints one JSON object on one line. For kv commands and
  `snapshot` that is the node's reply map (DESIGN.md §2); `status` prints
  `{"ok", "nodes": [...]}`;
  `bench` prints its summary. Bytes are UTF-8 text, or `{"base64": ...}` when they are
  not valid UTF-8 (`-w json` after a command does the same for that command). A
  client-side timeout prints a reply-shaped object with the error code `client_timeout`.
- Options go before CMD. A value that starts with `-` and names none of the command's
  options is a value (`put k -x`); `--` before it makes sure (`put k -- --prev-kv`).
- **Node-addressed commands** (`snapshot`) go to one node, named by id (`snapshot n2`,
  with `--config`) or by `--endpoint`; they are never retried on another node.
- **Membership commands** (`members`, `add-learner`, `add-member`, `promote`, `remove`,
  `transfer-leader`) go to any node, which forwards changes to the leader. A change is
  never re-sent after its outcome became unknown (a lost reply, or a `timeout` answer):
  the error says so and exits 3; look with `members` before trying again.

This module is the entry point: the global options, `--help`, and running a session in
one-shot or REPL mode. It must not declare or implement commands: they are declared once
in `zraft.cli.commands` (the table `help`, the REPL and the dispatch are made from),
implemented in `zraft.cli.handlers` and run by `zraft.cli.session.Session`. The names
scripts and tests import from here (`main`, `Session`, `Target`, `build_parser`, the
`EXIT_*` codes, ...) are re-exported.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from zraft.cli.commands import (
    COMMAND_ALIASES,
    COMMAND_SUMMARY,
    COMMANDS,
    command_parsers,
    find_command,
)
from zraft.cli.handlers import SNAPSHOT_TIMEOUT_S, STATUS_TIMEOUT_S
from zraft.cli.repl import run_repl
from zraft.cli.session import Session
from zraft.cli.target import Target
from zraft.cli.usage import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    EXIT_USAGE,
    CommandParser,
    HelpShown,
    UsageError,
    positive_float,
)
from zraft.client import DEFAULT_TIMEOUT_S
from zraft.config import ConfigError
from zraft.net.security import ENV_CLIENT_KEY, SecurityError

__all__ = [
    "COMMANDS",
    "COMMAND_ALIASES",
    "COMMAND_SUMMARY",
    "EPILOG",
    "EXIT_AUTH",
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_UNAVAILABLE",
    "EXIT_USAGE",
    "SNAPSHOT_TIMEOUT_S",
    "STATUS_TIMEOUT_S",
    "Session",
    "Target",
    "UsageError",
    "build_parser",
    "command_parsers",
    "main",
]

EPILOG = f"""\
commands:
{textwrap.indent(COMMAND_SUMMARY, "  ")}

Without CMD: a REPL (history in $ZRAFT_HISTORY or ~/.zraft_history).

exit codes:
  0  success
  1  the cluster refused: cas_failed, key not found (get), bad_request, conflict, ...
  2  usage error: bad arguments, unknown command, unreadable config, bad endpoint
  3  unavailable: no reply within --timeout, or unavailable/timeout/not_leader
     (for a membership change: its outcome may be unknown; check `members`)
  4  auth_failed: every node refused the client's key or security handshake

A secured cluster (security = "curve") needs the client's secret key file: --key FILE,
else $ZRAFT_CLIENT_KEY, else the config's [client] secret_key_file.

--json prints one JSON object per command (bytes as UTF-8 text, other bytes as
{{"base64": ...}}); -w json|table|simple after a command sets its format.
Options go before CMD. A value may start with '-' (put k -x) unless it is one of the
command's options; `--` before it makes sure."""


def build_parser() -> argparse.ArgumentParser:
    """The top-level command line (each command parses its own arguments)."""
    parser = CommandParser(
        prog="zraft-client",
        usage="zraft-client [--config FILE] [--key FILE] [--endpoint tcp://HOST:PORT] "
        "[--server-key KEY] [--timeout S] [--json] [CMD [ARGS ...]]",
        description="Talk to a zraft cluster: run one command, or a REPL when CMD is omitted.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", type=Path, metavar="FILE", help="cluster TOML file (all nodes are used)"
    )
    parser.add_argument(
        "--key",
        type=Path,
        metavar="FILE",
        help=f"the client's secret key file (default: ${ENV_CLIENT_KEY}, else the config's "
        "[client] secret_key_file); with --config, which holds the nodes' public keys, or "
        "with --endpoint and --server-key",
    )
    parser.add_argument(
        "--server-key",
        metavar="KEY",
        help="with --endpoint and no config: that node's public key (Z85 text or its .pub "
        "file), to reach a secured node (--server-key=KEY when the text starts with -)",
    )
    parser.add_argument(
        "--endpoint",
        metavar="tcp://HOST:PORT",
        help="use only this node's client endpoint (no config file needed)",
    )
    parser.add_argument(
        "--timeout",
        type=positive_float,
        metavar="S",
        help="seconds per request (default: the config's request timeout + 1 s, else "
        f"{DEFAULT_TIMEOUT_S:g}; status: {STATUS_TIMEOUT_S:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per command")
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="CMD ...", help="a command and its arguments"
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `zraft-client`; returns the exit code (`EXIT_*`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        command = find_command(args.command[0]) if args.command else None
        if command is not None and command.offline:
            # help, backup-status: no cluster, config or key is needed.
            target = Target((), args.timeout, DEFAULT_TIMEOUT_S)
        else:
            target = Target.from_args(args)
    except HelpShown as exc:  # argparse has printed the help
        return exc.status
    except UsageError as exc:
        print(exc, file=sys.stderr)
        return EXIT_USAGE
    except (ConfigError, SecurityError) as exc:
        print(f"zraft-client: {exc}", file=sys.stderr)
        return EXIT_USAGE
    session = Session(
        target, json_output=args.json, repl=not args.command, stdout=sys.stdout, stderr=sys.stderr
    )
    try:
        if args.command:
            return session.execute(args.command)
        return run_repl(session, sys.stdin, sys.stdout)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    finally:
        session.close()
