"""What `zraft-client lease ...` does: etcdctl v3's lease commands.

    lease grant TTL [--id ID]      lease ID granted with TTL(10s)
    lease revoke ID                lease ID revoked
    lease keep-alive ID [--once]   lease ID keepalived with TTL(10)   (every TTL/3, until
                                   Ctrl-C or the lease is lost; --once: one refresh)
    lease timetolive ID [--keys]   lease ID granted with TTL(10s), remaining(7s)[,
                                   attached keys([k1 k2])]
    lease list                     found N leases, then each id

One command (`lease`, declared in `zraft.cli.commands`) with the action as its first
word, like `alarm list|disarm`: a command's parser is parsed in argparse's intermixed
mode, which sub-parsers do not support, so each action's arguments are checked here
(`--id` only with grant, `--once` only with keep-alive, `--keys` only with timetolive).
Ids are printed in decimal, as the protocol carries them (etcdctl prints hex), and taken
in decimal or, for ids copied from etcdctl habits, in hex with `0x` (`kvargs.lease_id`).

Rules it keeps:

- A refusal (`lease_not_found`, `bad_request`) prints its error line and exits 1, as the
  other commands do; `-w json` prints the node's reply.
- `keep-alive` without `--once` refreshes `TTL / 3` seconds after each acknowledged
  refresh (the loop of `zraft.client.leases.Lease.keep_alive`, with the session's client
  in this thread), flushing each line; it ends on Ctrl-C (KeyboardInterrupt, which the
  entry point and the REPL handle) or when the lease is lost: then it prints why
  (`lease_not_found`: it is gone; `lease_lost`: no refresh was acknowledged within its
  TTL, so it may have expired) and exits 1.

It must not parse the command line's shape or pick where output goes (the session
does); the lines come from `zraft.cli.kvrender`.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from zraft.cli import kvargs, kvrender
from zraft.cli.handlers import CommandContext
from zraft.cli.kvcommands import show
from zraft.cli.usage import EXIT_FAILED, UsageError, exit_code
from zraft.client import Lease, LeaseLost, LeaseNotFound, Reply

ACTIONS = ("grant", "revoke", "keep-alive", "timetolive", "list")
"""The actions, in the order `help` lists them."""

ACTION_ALIASES = {"keepalive": "keep-alive"}
"""Other spellings of an action."""

USAGE = {
    "grant": "lease grant TTL [--id ID]",
    "revoke": "lease revoke ID",
    "keep-alive": "lease keep-alive ID [--once]",
    "timetolive": "lease timetolive ID [--keys]",
    "list": "lease list",
}
"""Each action's synopsis (the command's usage line joins them)."""

_OWN_OPTIONS = {"id": "grant", "once": "keep-alive", "keys": "timetolive"}


def lease_arguments(parser: argparse.ArgumentParser) -> None:
    """`ACTION [TTL|ID]` and every action's options (checked against the action later)."""
    parser.add_argument(
        "action",
        choices=(*ACTIONS, *ACTION_ALIASES),
        metavar="grant|revoke|keep-alive|timetolive|list",
    )
    parser.add_argument(
        "operands",
        nargs="*",
        metavar="TTL|ID",
        help="grant: the TTL in seconds; the others but list: the lease id (decimal, or "
        "hex with 0x)",
    )
    parser.add_argument(
        "--id",
        type=kvargs.lease_id,
        metavar="ID",
        help="grant: the id to give the lease (default: the cluster picks one)",
    )
    parser.add_argument("--once", action="store_true", help="keep-alive: refresh once, exit")
    parser.add_argument("--keys", action="store_true", help="timetolive: list the attached keys")


def lease(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`lease ACTION ...`: runs the action (see the module doc).

    Raises:
        UsageError: the wrong operands for the action, or another action's option.
    """
    action = ACTION_ALIASES.get(args.action, args.action)
    for option, owner in _OWN_OPTIONS.items():
        if getattr(args, option) not in (None, False) and owner != action:
            raise UsageError(f"error: --{option} goes with `lease {owner}`; usage: {USAGE[action]}")
    wanted = 0 if action == "list" else 1
    if len(args.operands) != wanted:
        raise UsageError(f"usage: {USAGE[action]}")
    return _ACTIONS[action](ctx, args)


def _grant(ctx: CommandContext, args: argparse.Namespace) -> int:
    try:
        ttl = int(args.operands[0])
    except ValueError:
        raise UsageError(
            f"error: TTL must be a number of seconds, got {args.operands[0]!r}"
        ) from None
    if ttl < 1:
        raise UsageError(f"error: TTL must be at least 1 second, got {ttl}")
    fields = {"lease": args.id} if args.id else {}
    reply = ctx.client().request("lease_grant", ttl=ttl, **fields)
    return show(ctx, reply, lambda fmt: kvrender.lease_grant_lines(reply.raw, fmt))


def _revoke(ctx: CommandContext, args: argparse.Namespace) -> int:
    lease_id = _lease_operand(args)
    reply = ctx.client().request("lease_revoke", lease=lease_id)
    return show(ctx, reply, lambda fmt: [f"lease {lease_id} revoked"])


def _timetolive(ctx: CommandContext, args: argparse.Namespace) -> int:
    fields = {"keys": True} if args.keys else {}
    reply = ctx.client().request("lease_timetolive", lease=_lease_operand(args), **fields)
    keys = args.keys
    return show(ctx, reply, lambda fmt: kvrender.lease_ttl_lines(reply.raw, fmt, keys=keys))


def _list(ctx: CommandContext, args: argparse.Namespace) -> int:
    reply = ctx.client().request("lease_leases")
    return show(ctx, reply, lambda fmt: kvrender.lease_list_lines(reply.raw, fmt))


def _keep_alive(ctx: CommandContext, args: argparse.Namespace) -> int:
    lease_id = _lease_operand(args)
    client = ctx.client()
    sent = time.monotonic()
    reply = client.request("lease_keepalive", lease=lease_id)
    code = _show_refresh(ctx, reply)
    if args.once or not reply.ok:
        return code
    if reply.ttl is None or reply.ttl < 1:
        ctx.fail(f"error: the keepalive of lease {lease_id} was answered without its TTL")
        return EXIT_FAILED
    held = Lease(client, lease_id, reply.ttl, acked_at=sent)
    try:
        held.keep_alive(on_refresh=lambda refreshed: _show_refresh(ctx, refreshed))
    except LeaseLost as exc:
        code_name = "lease_not_found" if isinstance(exc, LeaseNotFound) else "lease_lost"
        if ctx.write_out == "json":
            error = {"code": code_name, "message": str(exc)}
            ctx.out_json({"ok": False, "error": error, "lease": lease_id}, flush=True)
        else:
            ctx.fail(f"error: {code_name}: {exc}")
    return EXIT_FAILED  # keep_alive returns only when the lease is lost


def _show_refresh(ctx: CommandContext, reply: Reply) -> int:
    """One refresh's line (its reply with -w json), flushed: the loop runs on."""
    if ctx.write_out == "json":
        ctx.out_json(reply.raw, flush=True)
    elif reply.ok:
        ctx.out(kvrender.lease_keepalive_line(reply.raw), flush=True)
    else:
        return show(ctx, reply, lambda fmt: [])
    return exit_code(reply)


def _lease_operand(args: argparse.Namespace) -> int:
    """The lease id operand.

    Raises:
        UsageError: it is not a lease id.
    """
    try:
        return kvargs.lease_id(args.operands[0])
    except argparse.ArgumentTypeError as exc:
        raise UsageError(f"error: {exc}") from None


_ACTIONS: dict[str, Callable[[CommandContext, argparse.Namespace], int]] = {
    "grant": _grant,
    "revoke": _revoke,
    "keep-alive": _keep_alive,
    "timetolive": _timetolive,
    "list": _list,
}
