"""What `zraft-client lock` and `zraft-client elect` do: etcdctl's commands of those names,
on the recipes of `zraft.client.locks` (fencing tokens included).

    lock NAME [--ttl N] [--timeout S] [-- CMD [ARG ...]]
    elect NAME [VALUE] [--ttl N] [--timeout S]

- `lock` acquires the lock, then prints its key and fencing token and holds it until
  Ctrl-C; with a command, runs it while holding the lock (its environment has
  `ZRAFT_LOCK_KEY` and `ZRAFT_LOCK_TOKEN`), releases the lock when it ends and exits with
  its exit code. If the lock is lost meanwhile (its lease expired: the process hung, or
  the cluster was unreachable for a TTL), the command is terminated (SIGTERM), the loss
  is printed and the exit code is 1: whoever acquires the lock next has a higher token.
- `elect NAME VALUE` campaigns with VALUE, prints the key, the value and the fencing token
  once elected, and leads until Ctrl-C (then resigns); `elect NAME` prints the leader's
  value, then each new one as the leadership changes, until Ctrl-C (`-w json`: a JSON
  line each).
"""

from __future__ import annotations

import argparse
import os

from zraft.cli.handlers import CommandContext
from zraft.cli.usage import EXIT_FAILED, EXIT_OK, PASSTHROUGH, UsageError, int_at_least
from zraft.client.locks import Holding
from zraft.client.recipes import LockLost, LockTimeout
from zraft.client.reply import KeyValue

POLL_S = 0.2
"""How often a held lock checks on its command and its lease."""


def lock_arguments(parser: argparse.ArgumentParser) -> None:
    """`NAME [--ttl N] [--timeout S] [-- CMD [ARG ...]]`."""
    parser.add_argument("name", metavar="NAME")
    parser.set_defaults(command=[], **{PASSTHROUGH: "command"})  # the words after --
    _holding_options(parser)


def elect_arguments(parser: argparse.ArgumentParser) -> None:
    """`NAME [VALUE] [--ttl N] [--timeout S]`."""
    parser.add_argument("name", metavar="NAME")
    parser.add_argument("value", nargs="?", metavar="VALUE", help="campaign with this value")
    _holding_options(parser)


def _holding_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--ttl",
        type=int_at_least(1),
        default=10,
        metavar="N",
        help="seconds the lock outlives this process if it hangs or dies (default 10)",
    )
    parser.add_argument(
        "--timeout", type=float, metavar="S", help="give up waiting after S seconds (exit 1)"
    )


def lock(ctx: CommandContext, args: argparse.Namespace) -> int:
    """Acquire, then hold until Ctrl-C or run the command."""
    held = ctx.client().lock(args.name, ttl=args.ttl, timeout=args.timeout)
    return _hold(ctx, held, args.command)


def elect(ctx: CommandContext, args: argparse.Namespace) -> int:
    """Campaign and lead until Ctrl-C, or observe the leader."""
    election = ctx.client().election(args.name)
    if args.value is None:
        for leader in election.observe():
            _show_leader(ctx, leader)
        return EXIT_OK  # not reached: observing ends with Ctrl-C
    held = election.campaign(args.value, ttl=args.ttl, timeout=args.timeout)
    return _hold(ctx, held, [])


def _hold(ctx: CommandContext, held: Holding, command: list[str]) -> int:
    try:
        held.acquire()
    except LockTimeout as exc:
        ctx.fail(f"error: timeout: {exc}")
        return EXIT_FAILED
    except LockLost as exc:
        ctx.fail(f"error: lock_lost: {exc}")
        return EXIT_FAILED
    try:
        key = (held.key or b"").decode("utf-8", "replace")
        if ctx.write_out == "json":
            ctx.out_json(
                {"name": held.name, "key": key, "fencing_token": held.fencing_token}, flush=True
            )
        elif not command:
            ctx.out(key, flush=True)
            if held.value:
                ctx.out(held.value.decode("utf-8", "replace"), flush=True)
            ctx.out(f"fencing token {held.fencing_token}", flush=True)
        if command:
            return _run(ctx, held, command, key)
        held.lost.wait()  # until Ctrl-C, or the loss
        ctx.fail(f"error: lock_lost: {held.name!r}: {held.lost_reason}")
        return EXIT_FAILED
    finally:
        held.release()


def _run(ctx: CommandContext, held: Holding, command: list[str], key: str) -> int:
    env = {**os.environ, "ZRAFT_LOCK_KEY": key, "ZRAFT_LOCK_TOKEN": str(held.fencing_token)}
    try:
        import subprocess  # here: only `lock -- CMD` runs a child

        child = subprocess.Popen(command, env=env)
    except OSError as exc:
        raise UsageError(f"error: cannot run {command[0]!r}: {exc}") from None
    try:
        while child.poll() is None:
            if held.lost.wait(POLL_S):
                child.terminate()
                child.wait()
                ctx.fail(
                    f"error: lock_lost: {held.name!r}: {held.lost_reason}; "
                    f"the command was terminated"
                )
                return EXIT_FAILED
        return child.returncode
    finally:
        if child.poll() is None:  # Ctrl-C: the child got it too (same process group)
            child.wait()


def _show_leader(ctx: CommandContext, leader: KeyValue | None) -> None:
    if ctx.write_out == "json":
        shown = (
            None
            if leader is None
            else {
                "key": leader.key.decode("utf-8", "replace"),
                "value": leader.value.decode("utf-8", "replace"),
                "fencing_token": leader.create_revision,
            }
        )
        ctx.out_json({"leader": shown}, flush=True)
    elif leader is None:
        ctx.out("(no leader)", flush=True)
    else:
        ctx.out(leader.value.decode("utf-8", "replace"), flush=True)
