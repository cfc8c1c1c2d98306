"""What each cluster command of `zraft-client` does once its arguments are parsed.

One function per command (`help` excepted: it is about the table, so it lives with it in
`zraft.cli.commands`; the key-value commands live in `zraft.cli.kvcommands`), each
`(ctx, args) -> exit code`: it makes its requests through the context's client, prints
through the context, and maps the answer to an `EXIT_*`. Here `-w table` prints what
`simple` does (status and members are tables already); `-w json` the reply.

It must not parse command lines, declare commands or pick where output goes: the table
in `zraft.cli.commands` names the handler of each command, and the `CommandContext`
(a `zraft.cli.session.Session`) owns the streams, the client and the error reporting.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Protocol

from zraft.cli import render
from zraft.cli.target import Target
from zraft.cli.usage import (
    EXIT_AUTH,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_UNAVAILABLE,
    UsageError,
    exit_code,
)
from zraft.client import Client, Reply, probe_status
from zraft.net import security
from zraft.net.security import SecurityError

STATUS_TIMEOUT_S = 1.0
"""How long `status` waits for the nodes, unless --timeout is given."""

SNAPSHOT_TIMEOUT_S = 60.0
"""How long `snapshot` waits for the file to be durable, unless --timeout is given (a big
state takes seconds: the node writes 1 MiB per loop turn between its other work)."""

CHANGE_HINT = " (the change may or may not have been made: check `members` before retrying)"
"""Appended to a membership change's `timeout` answer: its outcome is unknown."""


class CommandContext(Protocol):
    """What a handler needs from the session that runs it."""

    @property
    def target(self) -> Target:
        """The nodes and timeouts."""
        ...

    @property
    def json_output(self) -> bool:
        """Whether to print JSON objects instead of text (`write_out` is `json`)."""
        ...

    @property
    def write_out(self) -> str:
        """The output format of the command: `simple`, `json` or `table`."""
        ...

    def client(self) -> Client:
        """The session's client, made on first use."""
        ...

    def out(self, line: str, *, flush: bool = False) -> None:
        """Print a result line (`flush`: now, for a command that runs on)."""
        ...

    def out_json(self, obj: Any, *, flush: bool = False) -> None:
        """Print `obj` as one JSON line (`flush`: now)."""
        ...

    def fail(self, line: str) -> None:
        """Print an error line."""
        ...

    def note(self, line: str) -> None:
        """Print a progress line to stderr (never mixed with the results)."""
        ...

    def auth_failed(self, message: str) -> None:
        """Report a refused security handshake."""
        ...

    def read_line(self) -> str | None:
        """The next line of stdin without its newline; None at the end of input."""
        ...

    def read_stdin_bytes(self, instead: str) -> bytes:
        """The rest of stdin, as bytes (`instead`: what to type in the REPL instead).

        Raises:
            UsageError: in the REPL, where stdin holds the next commands.
        """
        ...

    def read_stdin_text(self, instead: str) -> str:
        """The rest of stdin, as text (`instead`: what to type in the REPL instead).

        Raises:
            UsageError: in the REPL, where stdin holds the next commands.
        """
        ...


# --- status, snapshot, bench ------------------------------------------------------------


def status(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`status [--verbose]`: every node's view; exit 0 if any node answered."""
    target = ctx.target
    probes = probe_status(
        target.endpoints, timeout=target.timeout or STATUS_TIMEOUT_S, curve=target.curve
    )
    reachable = any(probe.reachable for probe in probes)
    refused = [p for p in probes if p.problem and p.problem.startswith("refused")]
    if len(refused) == len(probes):
        detail = "; ".join(f"{p.endpoint}: {p.problem}" for p in refused)
        ctx.auth_failed(f"status: authentication failed at every node ({detail})")
        return EXIT_AUTH
    if ctx.json_output:
        nodes = [render.probe_map(i, p) for i, p in zip(target.node_ids, probes, strict=True)]
        ctx.out_json({"ok": reachable, "nodes": nodes})
    else:
        for line in render.status_table(target.node_ids, probes, verbose=args.verbose):
            ctx.out(line)
    return EXIT_OK if reachable else EXIT_UNAVAILABLE


def node_client(target: Target, endpoint: str) -> Client:
    """A client of its own for one node's snapshot work: its deadline is a snapshot's
    (longer than a request's), and the session's client must not be pointed at one node."""
    return Client(
        [endpoint],
        timeout=target.timeout or SNAPSHOT_TIMEOUT_S,
        node_endpoints={i: ep for i, ep in target.nodes if i is not None},
        curve=target.curve,
    )


def snapshot(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`snapshot [NODE]`: one request to one node, never retried elsewhere.

    Raises:
        UsageError: no NODE with several nodes, or a NODE the config does not name.
    """
    target = ctx.target
    if args.node is None and len(target.nodes) != 1:
        raise UsageError("usage: snapshot NODE (a node id of the config), or --endpoint")
    if args.node is not None and args.node not in target.node_ids:
        known = ", ".join(str(i) for i in target.node_ids if i is not None) or "none"
        raise UsageError(f"snapshot: unknown node {args.node!r} (known: {known})")
    endpoints = {i: ep for i, ep in target.nodes if i is not None}
    endpoint = endpoints[args.node] if args.node is not None else target.endpoints[0]
    with node_client(target, endpoint) as client:
        reply = client.snapshot()
    if ctx.json_output:
        ctx.out_json(reply.raw)
    elif reply.ok:
        ctx.out(render.snapshot_line(reply))
    else:
        ctx.fail(render.error_line(reply))
    return exit_code(reply)


def bench(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`bench [OPTIONS]`: progress to stderr, the summary to stdout.

    Returns:
        0 without errors; 1 with errors among completed ops; 3 when nothing completed.
    """
    # Here, not at the top: a one-shot `get` should not pay for the load generator.
    from zraft.bench.load import BenchProgress, BenchSpec, run_bench

    target = ctx.target
    spec = BenchSpec(
        clients=args.clients,
        requests=None if args.duration is not None else (args.requests or 1000),
        duration=args.duration,
        op=args.op,
        value_size=args.value_size,
        keys=args.keys,
        timeout=target.timeout or target.request_timeout,
        consistency="serializable" if args.serializable else "linearizable",
    )

    def progress(p: BenchProgress) -> None:
        # To stderr, so stdout holds only the summary (or its JSON).
        ctx.note(
            f"bench: {p.elapsed:5.1f} s  {p.ops} ops  {p.ops_per_s:.0f} ops/s  {p.errors} errors"
        )

    result = run_bench(
        target.endpoints, spec, progress=None if args.quiet else progress, curve=target.curve
    )
    if ctx.json_output:
        ctx.out_json(result.to_dict())
    else:
        for line in render.bench_summary(result):
            ctx.out(line)
    if result.errors == 0:
        return EXIT_OK
    return EXIT_FAILED if result.ops else EXIT_UNAVAILABLE


# --- membership -------------------------------------------------------------------------


def members(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`members`: the members table (match indexes when the leader answered)."""
    reply = ctx.client().members()
    if ctx.json_output:
        ctx.out_json(reply.raw)
    elif reply.ok:
        for line in render.members_table(reply):
            ctx.out(line)
    else:
        ctx.fail(render.error_line(reply))
    return exit_code(reply)


def add_learner(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`add-learner ID PEER CLIENT [--public-key KEY]`: stays a learner until promoted."""
    return _add(ctx, args, learner=True)


def add_member(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`add-member ID PEER CLIENT [--public-key KEY]`: promoted by the leader when caught up."""
    return _add(ctx, args, learner=False)


def _add(ctx: CommandContext, args: argparse.Namespace, *, learner: bool) -> int:
    try:
        reply = ctx.client().add_member(
            args.id,
            args.peer,
            args.client,
            learner=learner,
            public_key=_public_key_arg(args.public_key),
        )
    except ValueError as exc:  # a malformed endpoint, refused before sending
        raise UsageError(f"error: {exc}") from None
    then = "" if learner else "; the leader promotes it once caught up"
    return _show_change(ctx, reply, f"{args.id} added as a {{role}}{then}", args.id)


def promote(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`promote ID`: the learner becomes a voter."""
    return _show_change(ctx, ctx.client().promote(args.id), f"{args.id} is a {{role}}", args.id)


def remove(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`remove ID`: a voter, a learner or the leader leaves the cluster."""
    return _show_change(ctx, ctx.client().remove(args.id), f"{args.id} removed", None)


def transfer_leader(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`transfer-leader [ID]`: answered once the new leader leads."""
    reply = ctx.client().transfer_leader(args.id)
    target = reply.raw.get("transferred_to")
    return _show_change(ctx, reply, f"{render.text_cell(target)} is the leader", None)


def _show_change(ctx: CommandContext, reply: Reply, summary: str, member: str | None) -> int:
    """Print a change's outcome: `OK: <summary> (config index N)` or the error."""
    if ctx.json_output:
        ctx.out_json(reply.raw)
    elif reply.ok:
        row = reply.member(member) if member is not None else None
        # replace, not format: a member id may hold braces.
        line = summary.replace("{role}", str((row or {}).get("role", "member")))
        if reply.config_index is not None and "members" in reply.raw:
            line += f" (config index {reply.config_index})"
        ctx.out(f"OK: {line}")
    else:
        hint = CHANGE_HINT if reply.error_code == "timeout" else ""
        ctx.fail(render.error_line(reply) + hint)
    return exit_code(reply)


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
