"""What the key-value commands of `zraft-client` do once their arguments are parsed.

`put`, `get`, `del`, `cas`, `txn`, `compact` and `alarm`, each `(ctx, args) -> exit code` like the
cluster commands of `zraft.cli.handlers` (whose `CommandContext` they run in). Requests
go through the generic `Client.request(op, **fields)`; the fields come from
`zraft.cli.kvargs` (a command's options) or `zraft.cli.txnparse` (a transaction), the
lines from `zraft.cli.kvrender`, in the context's output format (`-w`): `json` prints the
node's whole reply, `simple` and `table` the lines `kvrender` makes of it.

Rules it keeps:

- `get KEY` without a range option, `del KEY` without one and `put KEY VALUE` print what
  they always printed (the value or `(not found)` with exit 1, `N keys deleted`, `OK`).
  A range that matches nothing prints nothing and succeeds, as etcdctl's does.
- A value or document read from stdin is read whole, as bytes (`put KEY` without VALUE,
  `txn --file -`); in the REPL, where stdin holds the next commands, that is a usage
  error. `txn` and `txn -i` read their lines from stdin in both modes; `-i` prompts on
  stderr, so stdout holds only the result.
- A transaction whose compares failed prints `FAILURE` and its failure branch's
  responses, and exits 0: the request succeeded (etcdctl's behaviour).

It must not parse command lines or pick where output goes (the session does).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

from zraft.cli import kvargs, kvrender, render, txnparse
from zraft.cli.handlers import CommandContext
from zraft.cli.usage import EXIT_FAILED, UsageError, exit_code
from zraft.client import Reply


def put(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`put KEY [VALUE] [--prev-kv] [--lease ID]`: no VALUE reads it from stdin (bytes, as
    they are).

    Raises:
        UsageError: no VALUE in the REPL, or nothing on stdin.
    """
    value: str | bytes = (
        args.value if args.value is not None else ctx.read_stdin_bytes("put KEY VALUE")
    )
    if args.value is None and not value:
        raise UsageError("error: put: no VALUE, and nothing on stdin to read it from")
    fields = kvargs.put_fields(args)
    reply = ctx.client().request("put", key=args.key, value=value, **fields)
    return show(ctx, reply, lambda fmt: kvrender.put_lines(reply.raw, fmt))


def get(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`get KEY [RANGE_END] [options]`: a plain `get`, or a `range` with a range option.

    Raises:
        UsageError: RANGE_END together with --prefix or --from-key.
    """
    if kvargs.is_range(args):
        fields = kvargs.range_fields(args)
        reply = ctx.client().request("range", **fields)
        keys_only, count_only = args.keys_only, args.count_only
        return show(
            ctx,
            reply,
            lambda fmt: kvrender.range_lines(
                reply.raw, fmt, keys_only=keys_only, count_only=count_only
            ),
        )
    consistency = "serializable" if args.serializable else "linearizable"
    reply = ctx.client().request("get", key=args.key, consistency=consistency)
    missing = reply.ok and not reply.found
    if missing and ctx.write_out != "json":
        ctx.fail("(not found)")
    else:
        value = reply.value or b""
        show(ctx, reply, lambda fmt: kvrender.value_lines(args.key, value, fmt))
    return EXIT_FAILED if missing else exit_code(reply)


def delete(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`del KEY [RANGE_END] [--prefix|--from-key] [--prev-kv]`: says how many keys it
    deleted (0 when none matched; exit 0 all the same: deleting what is absent succeeds).

    Raises:
        UsageError: RANGE_END together with --prefix or --from-key.
    """
    op, fields = kvargs.delete_fields(args)
    reply = ctx.client().request(op, **fields)
    if type(reply.raw.get("deleted")) is not int:  # a node too old to say
        return show(ctx, reply, lambda fmt: ["OK"])
    return show(ctx, reply, lambda fmt: kvrender.delete_lines(reply.raw, fmt))


def cas(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`cas KEY OLD NEW` or `cas --absent KEY NEW`.

    Raises:
        UsageError: the wrong number of values for the form.
    """
    if len(args.values) != (1 if args.absent else 2):
        shape = "cas --absent KEY NEW" if args.absent else "cas KEY OLD NEW"
        raise UsageError(f"usage: {shape}")
    expected = None if args.absent else args.values[0]
    reply = ctx.client().cas(args.key, expected, args.values[-1])
    return show(ctx, reply, lambda fmt: ["OK"])


def txn(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`txn [-i] [--file F]`: etcdctl's syntax from stdin (prompted with -i), or a JSON
    document from F (`-`: stdin); prints SUCCESS or FAILURE, then each response.

    Raises:
        UsageError: -i with --file, an unreadable file, or input that does not parse.
    """
    if args.file is not None and args.interactive:
        raise UsageError("error: txn: give -i or --file, not both")
    if args.file is None:
        fields = txnparse.read_sections(ctx.read_line, ctx.note if args.interactive else None)
    elif args.file == "-":
        fields = txnparse.from_json(ctx.read_stdin_text("txn --file F"), "stdin")
    else:
        try:
            text = Path(args.file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"error: txn: cannot read {args.file}: {exc}") from None
        fields = txnparse.from_json(text, args.file)
    reply = ctx.client().request("txn", **fields)
    branch = fields.get("success" if reply.raw.get("succeeded") is True else "failure", [])
    return show(ctx, reply, lambda fmt: kvrender.txn_lines(reply.raw, branch, fmt))


COMPACT_HINTS = {
    **render.ERROR_HINTS,
    "compacted": "it is compacted up to {compact} already: give a later revision",
    "future_revision": "the newest revision is {revision}",
}
"""What `compact` adds to its errors (a read's hints would point the wrong way)."""


def compact(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`compact REV`: forget the history before revision REV."""
    reply = ctx.client().request("compact", revision=args.revision)
    lines = [kvrender.compact_line(reply.raw, args.revision)]
    return show(ctx, reply, lambda fmt: lines, hints=COMPACT_HINTS)


def alarm(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`alarm list` (one alarm a line; nothing when none is raised) or `alarm disarm`."""
    if args.action == "disarm":
        reply = ctx.client().request("alarm_disarm")
        return show(ctx, reply, lambda fmt: ["OK: every alarm lowered"])
    reply = ctx.client().request("alarm_list")
    return show(ctx, reply, lambda fmt: kvrender.alarm_lines(reply.raw, fmt))


def show(
    ctx: CommandContext,
    reply: Reply,
    lines: Callable[[str], list[str]],
    hints: Mapping[str, str] = render.ERROR_HINTS,
) -> int:
    """Print `reply` in the context's format: the reply (`json`), `lines(format)` when it
    succeeded, else its error line (with `hints`: see `render.error_line`); returns the
    exit code it means."""
    if ctx.write_out == "json":
        ctx.out_json(reply.raw)
    elif reply.ok:
        for line in lines(ctx.write_out):
            ctx.out(line)
    else:
        ctx.fail(render.error_line(reply, hints))
    return exit_code(reply)
