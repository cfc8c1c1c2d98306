"""`zraft-client`: one-shot commands and a REPL over the client library.

    zraft-client [--config FILE] [--key FILE] [--endpoint tcp://HOST:PORT] [--timeout S]
                 [--json] [CMD ...]

The contract scripts and tests rely on (DESIGN.md §5):

- **One-shot mode**: results go to stdout; errors and `(not found)` go to stderr; the exit
  code says what happened (`EXIT_*` below; the table is also in `--help`).
- **REPL mode** (no CMD; see `zraft.cli.repl`): each kv command prints exactly one line to
  stdout, errors included (`error: CODE: MESSAGE`, `(not found)`). `status`, `bench` and
  `help` print several lines. The REPL exits 0.
- **`--json`**: each command prints one JSON object on one line. For kv commands and
  `snapshot` that is the node's reply map (DESIGN.md §2); `status` prints
  `{"ok", "nodes": [...]}`;
  `bench` prints its summary. Bytes are UTF-8 text with `\\xNN` for bad bytes. A
  client-side timeout prints a reply-shaped object with the error code `client_timeout`.
- Options go before CMD. A value that starts with `-` needs `--` before it.
- **Node-addressed commands** (`snapshot`) go to one node, named by id (`snapshot n2`,
  with `--config`) or by `--endpoint`; they are never retried on another node.
- **Membership commands** (`members`, `add-learner`, `add-member`, `promote`, `remove`,
  `transfer-leader`) go to any node, which forwards changes to the leader. A change is
  never re-sent after its outcome became unknown (a lost reply, or a `timeout` answer):
  the error says so and exits 3; look with `members` before trying again.
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn, TextIO

from zraft.bench.load import BENCH_OPS, BenchProgress, BenchSpec, run_bench
from zraft.cli import render
from zraft.cli.repl import run_repl
from zraft.client import (
    DEFAULT_TIMEOUT_S,
    Client,
    ClientAuthError,
    ClientTimeout,
    Reply,
    check_endpoint,
    probe_status,
)
from zraft.config import ConfigError, load
from zraft.net import security
from zraft.net.security import ENV_CLIENT_KEY, ClientCurve, SecurityError, client_curve

EXIT_OK = 0
"""The command succeeded."""
EXIT_FAILED = 1
"""The cluster refused: cas_failed, key not found (get), bad_request, too_large, internal,
conflict (another membership change is not committed yet)."""
EXIT_USAGE = 2
"""Bad command line, unknown command, unreadable config, malformed endpoint."""
EXIT_UNAVAILABLE = 3
"""No reply in time, or the reply was `unavailable`, `timeout` or `not_leader`."""
EXIT_AUTH = 4
"""Every node refused the client's security handshake (unknown key, plaintext vs CURVE)."""
EXIT_INTERRUPTED = 130
"""Ctrl-C in one-shot mode."""

STATUS_TIMEOUT_S = 1.0
"""How long `status` waits for the nodes, unless --timeout is given."""

SNAPSHOT_TIMEOUT_S = 60.0
"""How long `snapshot` waits for the file to be durable, unless --timeout is given (a big
state takes seconds: the node writes 1 MiB per loop turn between its other work)."""

_UNAVAILABLE_CODES = frozenset({"unavailable", "timeout", "not_leader"})

COMMAND_SUMMARY = """\
put KEY VALUE                 set KEY to VALUE
get KEY [--serializable]      print the value of KEY ((not found): exit 1)
del KEY                       delete KEY (alias: delete)
cas KEY OLD NEW               set KEY to NEW if its value is OLD
cas --absent KEY NEW          set KEY to NEW if KEY does not exist
status [--verbose]            a table of every node of the config (or of --endpoint)
snapshot [NODE]               take a snapshot now on NODE (or the --endpoint node)
members                       a table of the members: role, endpoints, match index
add-learner ID PEER CLIENT [--public-key KEY]
                              add node ID (started with --join) as a learner
add-member ID PEER CLIENT [--public-key KEY]
                              add node ID as a learner; the leader promotes it when caught up
promote ID                    make the learner ID a voter
remove ID                     remove ID (voter or learner; the leader too) from the cluster
transfer-leader [ID]          hand leadership to ID (default: the most up-to-date voter)
bench [OPTIONS]               load generator; see `help bench`
help [CMD]                    this list, or one command's usage
quit | exit                   leave the REPL (so does end of input)"""
"""One line per command: `help` prints it, and so does `--help`."""

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

--json prints one JSON object per command (bytes as UTF-8, bad bytes as \\xNN).
Options go before CMD; put `--` before a value that starts with '-'."""

COMMAND_ALIASES: Mapping[str, str] = {"delete": "del"}
"""Alternative command names."""


class UsageError(Exception):
    """A command line or REPL line that does not parse; the message says why."""


class _HelpShown(Exception):
    """argparse has printed --help and wants to stop: not an error."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that raises instead of exiting, so the REPL survives typos."""

    def error(self, message: str) -> NoReturn:
        """Raise UsageError with the usage line and `message`."""
        raise UsageError(f"{self.format_usage().strip()}\n{self.prog}: error: {message}")

    def exit(self, status: int = 0, message: str | None = None) -> NoReturn:
        """Raise instead of calling sys.exit (after --help, for one)."""
        if message:
            raise UsageError(message.strip())
        raise _HelpShown(status)


def build_parser() -> argparse.ArgumentParser:
    """The top-level command line (each command parses its own arguments)."""
    parser = _Parser(
        prog="zraft-client",
        usage="zraft-client [--config FILE] [--key FILE] [--endpoint tcp://HOST:PORT] "
        "[--timeout S] [--json] [CMD [ARGS ...]]",
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
        "[client] secret_key_file); needs --config, which holds the nodes' public keys",
    )
    parser.add_argument(
        "--endpoint",
        metavar="tcp://HOST:PORT",
        help="use only this node's client endpoint (no config file needed)",
    )
    parser.add_argument(
        "--timeout",
        type=_positive_float,
        metavar="S",
        help="seconds per request (default: the config's request timeout + 1 s, else "
        f"{DEFAULT_TIMEOUT_S:g}; status: {STATUS_TIMEOUT_S:g})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object per command")
    parser.add_argument(
        "command", nargs=argparse.REMAINDER, metavar="CMD ...", help="a command and its arguments"
    )
    return parser


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a number > 0, got {text!r}")
    return value


def _int_at_least(minimum: int) -> Callable[[str], int]:
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


_positive_int = _int_at_least(1)
_size = _int_at_least(0)


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """One parser per command: they parse the arguments and give `help CMD` its text."""

    def make(name: str, description: str, usage: str | None = None) -> _Parser:
        return _Parser(prog=name, description=description, usage=usage)

    put = make("put", "Set KEY to VALUE.")
    put.add_argument("key", metavar="KEY")
    put.add_argument("value", metavar="VALUE")

    get = make("get", "Print the value of KEY; a missing key prints (not found), exit 1.")
    get.add_argument("key", metavar="KEY")
    get.add_argument(
        "--serializable",
        action="store_true",
        help="read the answering node's own state (no leader round trip; may be stale)",
    )

    delete = make("del", "Delete KEY (succeeds when KEY is absent).")
    delete.add_argument("key", metavar="KEY")

    cas = make(
        "cas",
        "Compare-and-swap: set KEY to NEW if its value is OLD, or with --absent if KEY "
        "does not exist. On a mismatch it prints the current value and exits 1.",
        usage="cas KEY OLD NEW | cas --absent KEY NEW",
    )
    cas.add_argument("--absent", action="store_true", help="KEY must not exist (no OLD)")
    cas.add_argument("key", metavar="KEY")
    cas.add_argument("values", nargs="+", metavar="[OLD] NEW")

    status = make("status", "Ask every node for its role, term, leader and log indexes.")
    status.add_argument("--verbose", "-v", action="store_true", help="show every status field")

    snapshot = make(
        "snapshot",
        "Ask one node to write a snapshot of its state now and compact its log; prints the "
        "snapshot's index and size once the file is durable. NODE is a node id of the "
        "config; with --endpoint it may be left out. The request is never retried on "
        f"another node. Waits up to {SNAPSHOT_TIMEOUT_S:g} s unless --timeout is given.",
    )
    snapshot.add_argument("node", nargs="?", metavar="NODE", help="node id (from --config)")

    bench = make(
        "bench",
        "Drive concurrent clients (one request in flight each) and report throughput and "
        "latency. Progress goes to stderr every second, the summary to stdout.",
    )
    bench.add_argument("--clients", type=_positive_int, default=8, help="clients (default 8)")
    amount = bench.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=_positive_int, help="per client (default 1000)")
    amount.add_argument("--duration", type=_positive_float, help="run for S seconds instead")
    bench.add_argument("--value-size", type=_size, default=256, help="bytes (default 256)")
    bench.add_argument("--keys", type=_positive_int, default=1000, help="distinct keys (1000)")
    bench.add_argument("--op", choices=BENCH_OPS, default="put", help="default put")
    bench.add_argument("--serializable", action="store_true", help="serializable gets")
    bench.add_argument("--quiet", "-q", action="store_true", help="no progress lines")

    members = make(
        "members",
        "Show the cluster's members: id, role (voter or learner), peer and client endpoints, "
        "and how far each one's log matches the leader's (known only to the leader, which "
        "is asked when another node answered). * marks the leader.",
    )

    def change(name: str, description: str) -> _Parser:
        return make(name, f"{description} {_CHANGE_NOTE}")

    add_learner = change(
        "add-learner",
        "Add node ID, already running (zraft-node --join), as a learner: it receives the "
        "log but does not vote until promoted.",
    )
    add_member = change(
        "add-member",
        "Add node ID, already running (zraft-node --join), as a learner that the leader "
        "promotes to voter by itself once its log has caught up.",
    )
    for parser in (add_learner, add_member):
        parser.add_argument("id", metavar="ID", help="the new member's node id")
        parser.add_argument("peer", metavar="PEER", help="its peer endpoint, tcp://HOST:PORT")
        parser.add_argument("client", metavar="CLIENT", help="its client endpoint")
        parser.add_argument(
            "--public-key",
            metavar="KEY",
            help="its public key: Z85 text or a .pub file (required with CURVE, the default)",
        )
    promote = change("promote", "Make the learner ID a voter (waits while it catches up).")
    promote.add_argument("id", metavar="ID")
    remove = change(
        "remove",
        "Remove ID from the cluster (a voter, a learner, or the leader itself). The node "
        "keeps running until you stop it.",
    )
    remove.add_argument("id", metavar="ID")
    transfer = change(
        "transfer-leader",
        "Hand leadership to the voter ID (default: the most up-to-date voter); answers "
        "once ID leads.",
    )
    transfer.add_argument("id", nargs="?", metavar="ID")

    helper = make("help", "List the commands, or show one command's usage.")
    helper.add_argument("topic", nargs="?", metavar="CMD")
    parsers = (put, get, delete, cas, status, snapshot, bench, members, add_learner, add_member)
    parsers += (promote, remove, transfer, helper)
    return {p.prog: p for p in parsers}


_CHANGE_NOTE = (
    "Any node accepts it and forwards it to the leader; one change at a time (conflict, "
    "exit 1, while another is uncommitted). It is never re-sent once its outcome is "
    "unknown (exit 3): check `members` before trying again."
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where commands go: `(node id or None, client endpoint)` pairs and the timeouts."""

    nodes: tuple[tuple[str | None, str], ...]
    timeout: float | None  # --timeout, or None for the defaults
    request_timeout: float  # the default for requests
    curve: ClientCurve | None = None  # the client's keys when the cluster runs CURVE

    @property
    def endpoints(self) -> list[str]:
        """The client endpoints, in config order."""
        return [endpoint for _, endpoint in self.nodes]

    @property
    def node_ids(self) -> list[str | None]:
        """The node ids (None where unknown), in config order."""
        return [node_id for node_id, _ in self.nodes]

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Target:
        """Resolve --config and --endpoint (which, given both, narrows to one node).

        Raises:
            ConfigError: the config file is unreadable or invalid.
            SecurityError: the cluster runs CURVE and the client key is missing or bad.
            UsageError: neither option given, or a malformed endpoint.
        """
        if args.config is None and args.endpoint is None:
            raise UsageError("zraft-client: give --config FILE or --endpoint tcp://HOST:PORT")
        if args.key is not None and args.config is None:
            raise UsageError("zraft-client: --key needs --config (it names the nodes' keys)")
        request_timeout = DEFAULT_TIMEOUT_S
        nodes: tuple[tuple[str | None, str], ...] = ()
        curve = None
        if args.config is not None:
            cluster = load(args.config)
            nodes = tuple((node.id, node.client) for node in cluster.nodes)
            request_timeout = cluster.request_timeout_ms / 1000 + 1.0
            curve = client_curve(cluster, args.key)
        if args.endpoint is not None:
            try:
                check_endpoint(args.endpoint)
            except ValueError as exc:
                raise UsageError(f"zraft-client: --endpoint: {exc}") from None
            known = {endpoint: node_id for node_id, endpoint in nodes}
            nodes = ((known.get(args.endpoint), args.endpoint),)
        return cls(nodes, args.timeout, request_timeout, curve)


class Session:
    """Runs commands against one target and prints their results.

    Args:
        target: the endpoints.
        json_output: print JSON objects instead of text.
        repl: REPL mode (errors on stdout, flushed per line) rather than one-shot.
        stdout, stderr: where to print.
    """

    def __init__(
        self, target: Target, *, json_output: bool, repl: bool, stdout: TextIO, stderr: TextIO
    ) -> None:
        self._target = target
        self._json = json_output
        self._repl = repl
        self._stdout = stdout
        self._stderr = stderr
        self._parsers = command_parsers()
        self._client: Client | None = None
        self._handlers: dict[str, Callable[[argparse.Namespace], int]] = {
            "put": self._put,
            "get": self._get,
            "del": self._delete,
            "cas": self._cas,
            "status": self._status,
            "snapshot": self._snapshot,
            "bench": self._bench,
            "members": self._members,
            "add-learner": self._add_learner,
            "add-member": self._add_member,
            "promote": self._promote,
            "remove": self._remove,
            "transfer-leader": self._transfer_leader,
            "help": self._help,
        }

    @property
    def command_names(self) -> list[str]:
        """Every command name and alias, sorted."""
        return sorted([*self._handlers, *COMMAND_ALIASES])

    def out(self, line: str) -> None:
        """Print a result line to stdout."""
        print(line, file=self._stdout, flush=self._repl)

    def fail(self, line: str) -> None:
        """Print an error line: to stderr in one-shot mode, to stdout in the REPL."""
        print(line, file=self._stdout if self._repl else self._stderr, flush=True)

    def out_json(self, obj: Any) -> None:
        """Print `obj` as one JSON line."""
        self.out(json.dumps(render.jsonable(obj)))

    def execute(self, argv: Sequence[str]) -> int:
        """Run one command line (`["put", "k", "v"]`) and return its exit code."""
        if not argv:
            return EXIT_OK
        name = COMMAND_ALIASES.get(argv[0], argv[0])
        parser = self._parsers.get(name)
        if parser is None:
            self.fail(f"error: unknown command {argv[0]!r}; try help")
            return EXIT_USAGE
        try:
            # Intermixed, so options may sit between positionals (`cas k --absent v`);
            # but argparse's intermixed mode mishandles `--`, which needs no mixing anyway.
            rest = list(argv[1:])
            parse = parser.parse_args if "--" in rest else parser.parse_intermixed_args
            args = parse(rest)
            return self._handlers[name](args)
        except _HelpShown:
            return EXIT_OK
        except UsageError as exc:
            self.fail(str(exc))
            return EXIT_USAGE
        except ClientTimeout as exc:
            if self._json:
                self.out_json(render.timeout_map(exc))
            else:
                hint = "; check `members` before retrying" if name in _CHANGE_COMMANDS else ""
                self.fail(f"error: client_timeout: {exc}{hint}")
            return EXIT_UNAVAILABLE
        except ClientAuthError as exc:
            self.auth_failed(str(exc))
            return EXIT_AUTH

    def auth_failed(self, message: str) -> None:
        """Report a refused security handshake (a reply-shaped object with --json)."""
        if self._json:
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

    # --- kv commands --------------------------------------------------------------------

    def _put(self, args: argparse.Namespace) -> int:
        return self._show_write(self.client().put(args.key, args.value))

    def _delete(self, args: argparse.Namespace) -> int:
        return self._show_write(self.client().delete(args.key))

    def _cas(self, args: argparse.Namespace) -> int:
        if len(args.values) != (1 if args.absent else 2):
            shape = "cas --absent KEY NEW" if args.absent else "cas KEY OLD NEW"
            raise UsageError(f"usage: {shape}")
        expected = None if args.absent else args.values[0]
        return self._show_write(self.client().cas(args.key, expected, args.values[-1]))

    def _get(self, args: argparse.Namespace) -> int:
        consistency = "serializable" if args.serializable else "linearizable"
        reply = self.client().get(args.key, consistency)
        if self._json:
            self.out_json(reply.raw)
        elif reply.ok and reply.found:
            self.out(render.text(reply.value or b""))
        elif reply.ok:
            self.fail("(not found)")
        else:
            self.fail(render.error_line(reply))
        return EXIT_FAILED if reply.ok and not reply.found else _exit_code(reply)

    def _show_write(self, reply: Reply) -> int:
        if self._json:
            self.out_json(reply.raw)
        elif reply.ok:
            self.out("OK")
        else:
            self.fail(render.error_line(reply))
        return _exit_code(reply)

    # --- status, bench, help ------------------------------------------------------------

    def _status(self, args: argparse.Namespace) -> int:
        target = self._target
        probes = probe_status(
            target.endpoints, timeout=target.timeout or STATUS_TIMEOUT_S, curve=target.curve
        )
        reachable = any(probe.reachable for probe in probes)
        refused = [p for p in probes if p.problem and p.problem.startswith("refused")]
        if len(refused) == len(probes):
            detail = "; ".join(f"{p.endpoint}: {p.problem}" for p in refused)
            self.auth_failed(f"status: authentication failed at every node ({detail})")
            return EXIT_AUTH
        if self._json:
            nodes = [render.probe_map(i, p) for i, p in zip(target.node_ids, probes, strict=True)]
            self.out_json({"ok": reachable, "nodes": nodes})
        else:
            for line in render.status_table(target.node_ids, probes, verbose=args.verbose):
                self.out(line)
        return EXIT_OK if reachable else EXIT_UNAVAILABLE

    def _snapshot(self, args: argparse.Namespace) -> int:
        target = self._target
        if args.node is None and len(target.nodes) != 1:
            raise UsageError("usage: snapshot NODE (a node id of the config), or --endpoint")
        if args.node is not None and args.node not in target.node_ids:
            known = ", ".join(str(i) for i in target.node_ids if i is not None) or "none"
            raise UsageError(f"snapshot: unknown node {args.node!r} (known: {known})")
        # A client of its own: the snapshot's deadline is longer than a request's, and the
        # session client must not be pointed at this node.
        endpoints = {i: ep for i, ep in target.nodes if i is not None}
        endpoint = endpoints[args.node] if args.node is not None else target.endpoints[0]
        with Client(
            [endpoint],
            timeout=target.timeout or SNAPSHOT_TIMEOUT_S,
            node_endpoints=endpoints,
            curve=target.curve,
        ) as client:
            reply = client.snapshot()
        if self._json:
            self.out_json(reply.raw)
        elif reply.ok:
            self.out(render.snapshot_line(reply))
        else:
            self.fail(render.error_line(reply))
        return _exit_code(reply)

    # --- membership -----------------------------------------------------------------------

    def _members(self, args: argparse.Namespace) -> int:
        reply = self.client().members()
        if self._json:
            self.out_json(reply.raw)
        elif reply.ok:
            for line in render.members_table(reply):
                self.out(line)
        else:
            self.fail(render.error_line(reply))
        return _exit_code(reply)

    def _add_learner(self, args: argparse.Namespace) -> int:
        return self._add(args, learner=True)

    def _add_member(self, args: argparse.Namespace) -> int:
        return self._add(args, learner=False)

    def _add(self, args: argparse.Namespace, *, learner: bool) -> int:
        try:
            reply = self.client().add_member(
                args.id,
                args.peer,
                args.client,
                learner=learner,
                public_key=_public_key_arg(args.public_key),
            )
        except ValueError as exc:  # a malformed endpoint, refused before sending
            raise UsageError(f"error: {exc}") from None
        then = "" if learner else "; the leader promotes it once caught up"
        return self._show_change(reply, f"{args.id} added as a {{role}}{then}", args.id)

    def _promote(self, args: argparse.Namespace) -> int:
        return self._show_change(
            self.client().promote(args.id), f"{args.id} is a {{role}}", args.id
        )

    def _remove(self, args: argparse.Namespace) -> int:
        return self._show_change(self.client().remove(args.id), f"{args.id} removed", None)

    def _transfer_leader(self, args: argparse.Namespace) -> int:
        reply = self.client().transfer_leader(args.id)
        target = reply.raw.get("transferred_to")
        return self._show_change(reply, f"{render.text_cell(target)} is the leader", None)

    def _show_change(self, reply: Reply, summary: str, member: str | None) -> int:
        """Print a change's outcome: `OK: <summary> (config index N)` or the error."""
        if self._json:
            self.out_json(reply.raw)
        elif reply.ok:
            row = reply.member(member) if member is not None else None
            # replace, not format: a member id may hold braces.
            line = summary.replace("{role}", str((row or {}).get("role", "member")))
            if reply.config_index is not None and "members" in reply.raw:
                line += f" (config index {reply.config_index})"
            self.out(f"OK: {line}")
        else:
            hint = _CHANGE_HINT if reply.error_code == "timeout" else ""
            self.fail(render.error_line(reply) + hint)
        return _exit_code(reply)

    def _bench(self, args: argparse.Namespace) -> int:
        spec = BenchSpec(
            clients=args.clients,
            requests=None if args.duration is not None else (args.requests or 1000),
            duration=args.duration,
            op=args.op,
            value_size=args.value_size,
            keys=args.keys,
            timeout=self._target.timeout or self._target.request_timeout,
            consistency="serializable" if args.serializable else "linearizable",
        )
        result = run_bench(
            self._target.endpoints,
            spec,
            progress=None if args.quiet else self._progress,
            curve=self._target.curve,
        )
        if self._json:
            self.out_json(result.to_dict())
        else:
            for line in render.bench_summary(result):
                self.out(line)
        if result.errors == 0:
            return EXIT_OK
        return EXIT_FAILED if result.ops else EXIT_UNAVAILABLE

    def _progress(self, p: BenchProgress) -> None:
        # To stderr, so stdout holds only the summary (or its JSON).
        print(
            f"bench: {p.elapsed:5.1f} s  {p.ops} ops  {p.ops_per_s:.0f} ops/s  {p.errors} errors",
            file=self._stderr,
            flush=True,
        )

    def _help(self, args: argparse.Namespace) -> int:
        if args.topic is None:
            for line in COMMAND_SUMMARY.splitlines():
                self.out(line)
            return EXIT_OK
        parser = self._parsers.get(COMMAND_ALIASES.get(args.topic, args.topic))
        if parser is None:
            self.fail(f"error: unknown command {args.topic!r}; try help")
            return EXIT_USAGE
        self.out(parser.format_help().rstrip())
        return EXIT_OK


_CHANGE_COMMANDS = frozenset({"add-learner", "add-member", "promote", "remove", "transfer-leader"})
_CHANGE_HINT = " (the change may or may not have been made: check `members` before retrying)"


def _public_key_arg(value: str | None) -> str | None:
    """A `--public-key` argument: Z85 text as is, or the key read from a `.pub` file.

    Raises:
        UsageError: neither a key nor a readable key file.
    """
    if value is None or security.is_public_key(value):
        return value
    try:
        return security.read_public_key(Path(value)).decode()
    except SecurityError as exc:
        raise UsageError(f"error: --public-key: {exc}") from None


def _exit_code(reply: Reply) -> int:
    if reply.ok:
        return EXIT_OK
    return EXIT_UNAVAILABLE if reply.error_code in _UNAVAILABLE_CODES else EXIT_FAILED


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of `zraft-client`; returns the exit code (`EXIT_*`)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
        target = Target.from_args(args)
    except _HelpShown as exc:  # argparse has printed the help
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
