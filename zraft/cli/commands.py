"""The table of `zraft-client` commands: every command, declared once.

Each `Command` says everything the rest of the CLI needs: its name and aliases, the line
`help` prints (synopsis and summary), its arguments (a function that adds them to its
argparse parser), its handler, the wire ops it sends (`zraft.wire.ops.OPS` names: the
mapping from CLI names such as `add-learner` to op names such as `add_member` lives here
and nowhere else), and whether it changes the membership (so a lost reply gets the
"check `members`" hint and its help text the note on how changes are made).

Everything else is generated from `COMMANDS`: `help` and the `--help` epilog
(`COMMAND_SUMMARY`), the session's dispatch (`find_command`), the REPL's commands and
its completion (`command_words`). `commands_for_op` lets a test check that every op of
the client protocol is reachable from some command. Adding a command: write its
handler (`zraft.cli.handlers`, or `zraft.cli.kvcommands` for the key-value store and
`zraft.cli.leasecommands` for leases), its
arguments below (the key-value ones in `zraft.cli.kvargs`, which transactions share),
and declare it in `COMMANDS`. Every command's parser also takes the output options
(`-w/--write-out simple|json|table`, and `--json` for `-w json`), added here.

This module must not run commands, print or talk to nodes: `help` is the one handler
here, because it reads the table; the others live in `zraft.cli.handlers`.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping

from zraft.cli import (
    backupcommands,
    endpointcommand,
    handlers,
    kvargs,
    kvcommands,
    leasecommands,
    lockcommands,
    watchcommand,
)
from zraft.cli.command import Command, help_entry
from zraft.cli.handlers import SNAPSHOT_TIMEOUT_S, CommandContext
from zraft.cli.repl import LEAVE_SUMMARY, LEAVE_WORDS
from zraft.cli.usage import EXIT_OK, EXIT_USAGE, int_at_least, positive_float
from zraft.wire.ops import lookup as lookup_op

# --- arguments --------------------------------------------------------------------------


def _no_arguments(parser: argparse.ArgumentParser) -> None:
    pass


def _txn_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-i", "--interactive", action="store_true", help="prompt for each section (on stderr)"
    )
    parser.add_argument(
        "--file", metavar="F", help="a JSON document {compare, success, failure}; - for stdin"
    )


def _alarm_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("list", "disarm"), metavar="list|disarm")


def _compact_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("revision", type=int_at_least(1), metavar="REV")


def _cas_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--absent", action="store_true", help="KEY must not exist (no OLD)")
    parser.add_argument("key", metavar="KEY")
    parser.add_argument("values", nargs="+", metavar="[OLD] NEW")


def _status_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--verbose", "-v", action="store_true", help="show every status field")


def _snapshot_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("node", nargs="?", metavar="NODE", help="node id (from --config)")


def _bench_arguments(parser: argparse.ArgumentParser) -> None:
    positive_int, size = int_at_least(1), int_at_least(0)
    parser.add_argument("--clients", type=positive_int, default=8, help="clients (default 8)")
    amount = parser.add_mutually_exclusive_group()
    amount.add_argument("--requests", type=positive_int, help="per client (default 1000)")
    amount.add_argument("--duration", type=positive_float, help="run for S seconds instead")
    parser.add_argument("--value-size", type=size, default=256, help="bytes (default 256)")
    parser.add_argument("--keys", type=positive_int, default=1000, help="distinct keys (1000)")
    parser.add_argument("--op", choices=("put", "get"), default="put", help="default put")
    parser.add_argument("--serializable", action="store_true", help="serializable gets")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress lines")


def _add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID", help="the new member's node id")
    parser.add_argument("peer", metavar="PEER", help="its peer endpoint, tcp://HOST:PORT")
    parser.add_argument("client", metavar="CLIENT", help="its client endpoint")
    parser.add_argument(
        "--public-key",
        metavar="KEY",
        help="its public key: Z85 text or a .pub file (required with CURVE, the default)",
    )


def _id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", metavar="ID")


def _optional_id_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("id", nargs="?", metavar="ID")


def _help_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("topic", nargs="?", metavar="CMD")


# --- help -------------------------------------------------------------------------------


def show_help(ctx: CommandContext, args: argparse.Namespace) -> int:
    """`help [CMD]`: the summary of every command, or one command's usage."""
    if args.topic is None:
        for line in COMMAND_SUMMARY.splitlines():
            ctx.out(line)
        return EXIT_OK
    command = find_command(args.topic)
    if command is None:
        ctx.fail(f"error: unknown command {args.topic!r}; try help")
        return EXIT_USAGE
    ctx.out(command.build_parser().format_help().rstrip())
    return EXIT_OK


# --- the table --------------------------------------------------------------------------


def _declare(*commands: Command) -> Mapping[str, Command]:
    """The table by name; a name or alias declared twice is a bug in this module."""
    table: dict[str, Command] = {}
    words: set[str] = set()
    for command in commands:
        if reused := words & set(command.words):
            raise RuntimeError(f"command {command.name!r} reuses {sorted(reused)}")
        words |= set(command.words)
        table[command.name] = command
    return table


_ADD_SYNOPSIS = "ID PEER CLIENT [--public-key KEY]"

COMMANDS: Mapping[str, Command] = _declare(
    # --- the key-value store --------------------------------------------------------------
    Command(
        name="put",
        synopsis="put KEY [VALUE] [--prev-kv] [--lease ID]",
        summary="set KEY to VALUE (none: read from stdin)",
        description="Set KEY to VALUE and print OK. Without VALUE, the value is all of "
        "stdin, as bytes (one-shot mode only: in the REPL give it on the line). With "
        "--prev-kv, the key and value it had before follow (nothing for a new key). "
        "--lease ID attaches the key to lease ID (see `help lease`): the key is deleted "
        "when the lease ends; a put without --lease detaches it.",
        arguments=kvargs.put_arguments,
        handler=kvcommands.put,
        ops=("put",),
    ),
    Command(
        name="get",
        synopsis="get KEY [RANGE_END] [OPTIONS]",
        summary="print KEY's value, or a range's keys and values",
        description="Print the value of KEY; a missing key prints (not found), exit 1. "
        "With a range option it reads a range, at one revision, and prints each key and "
        "then its value (--keys-only: the keys; --count-only: how many); an empty range "
        "prints nothing. RANGE_END is excluded; --prefix: every key that starts with KEY; "
        "--from-key: every key from KEY on (an empty KEY with either: every key). "
        "--sort-by without --order sorts ascending.",
        arguments=kvargs.get_arguments,
        handler=kvcommands.get,
        ops=("get", "range"),
    ),
    Command(
        name="del",
        synopsis="del KEY [RANGE_END] [--prefix|--from-key] [--prev-kv]",
        summary="delete KEY, or a range; prints how many",
        description="Delete KEY, or every key of a range (RANGE_END, --prefix or "
        "--from-key, as for get), and print how many keys were deleted (0 when none "
        "matched, which still succeeds). With --prev-kv, each deleted key and its value "
        "follow.",
        arguments=kvargs.delete_arguments,
        handler=kvcommands.delete,
        ops=("delete", "delete_range"),
        aliases=("delete",),
    ),
    Command(
        name="cas",
        synopsis="cas KEY OLD NEW",
        summary="set KEY to NEW if its value is OLD",
        description="Compare-and-swap: set KEY to NEW if its value is OLD, or with --absent "
        "if KEY does not exist. On a mismatch it prints the current value and exits 1.",
        arguments=_cas_arguments,
        handler=kvcommands.cas,
        ops=("cas",),
        usage="cas KEY OLD NEW | cas --absent KEY NEW",
        more_forms=(("cas --absent KEY NEW", "set KEY to NEW if KEY does not exist"),),
    ),
    Command(
        name="txn",
        synopsis="txn [-i] [--file F]",
        summary="if the compares hold run the success requests, else the failure ones",
        description="Run a transaction, atomically, at one revision, and print SUCCESS "
        "(the compares held) or FAILURE, then the response of each request of the branch "
        "that ran (exit 0 either way). From stdin, etcdctl's syntax: compares, then "
        "success requests, then failure requests, each section ended by an empty line "
        '(-i prompts for each on stderr). A compare is TARGET("KEY") OP "OPERAND" with '
        "TARGET value, version, create, mod or lease and OP =, !=, < or >; a request is "
        "put KEY VALUE [--prev-kv] [--lease ID], get KEY [RANGE_END] [--prefix|--from-key] "
        "[--limit N] [--keys-only] [--count-only] or del KEY [RANGE_END] [--prefix|--from-key] "
        "[--prev-kv]. --file F reads a JSON document instead (- for stdin): "
        '{"compare": [...], "success": [...], "failure": [...]} in the wire shape, '
        'keys and values as UTF-8 strings or {"base64": "..."}.',
        arguments=_txn_arguments,
        handler=kvcommands.txn,
        ops=("txn",),
    ),
    Command(
        name="compact",
        synopsis="compact REV",
        summary="forget the history before revision REV",
        description="Compact the store's history: reads at revisions below REV answer "
        "compacted from then on. Prints the compact revision.",
        arguments=_compact_arguments,
        handler=kvcommands.compact,
        ops=("compact",),
    ),
    Command(
        name="alarm",
        synopsis="alarm list|disarm",
        summary="list the alarms raised (nospace), or lower them",
        description="alarm list prints each alarm raised, one a line (nothing when none "
        "is); nospace means the space quota (quota_bytes) is exhausted, so writes that "
        "may grow the store are refused (no_space). alarm disarm lowers every alarm, once "
        "space was freed (del, then compact); the leader raises it again at the next "
        "write if the store is still full.",
        arguments=_alarm_arguments,
        handler=kvcommands.alarm,
        ops=("alarm_list", "alarm_disarm"),
    ),
    Command(
        name="watch",
        synopsis="watch KEY [RANGE_END] [--prefix|--from-key] [--rev N] [--prev-kv]",
        summary="print every change of KEY or a range as it happens, until Ctrl-C",
        description="Print each change of KEY (or of the range: RANGE_END excluded, "
        "--prefix, --from-key) as it happens, as etcdctl does: PUT or DELETE, then the key "
        "and its value (with --prev-kv, first the key and value it replaced); -w json: one "
        "JSON line per event. Events come in revision order, each once, and the watch "
        "carries on by itself when its node dies or loses its leader. It starts after a "
        "linearizable read of the range; --rev N starts at revision N (its changes "
        "included; 0: after the answering node's current revision). --filter noput or "
        "--filter nodelete leaves those events out. Ctrl-C ends it; a compacted start "
        "ends it with exit 1.",
        arguments=watchcommand.watch_arguments,
        handler=watchcommand.watch,
        ops=("watch",),
    ),
    Command(
        name="lock",
        synopsis="lock NAME [--ttl N] [--timeout S] [-- CMD [ARG ...]]",
        summary="hold lock NAME until Ctrl-C, or while CMD runs",
        description="Acquire the lock NAME (waiting in line behind earlier contenders), print "
        "its key and fencing token, and hold it until Ctrl-C. With a command (after --), run "
        "it while holding the lock, with ZRAFT_LOCK_KEY and ZRAFT_LOCK_TOKEN in its "
        "environment, then release it and exit with the command's exit code. The lock lives "
        "on a lease of --ttl seconds (default 10) kept alive meanwhile; if the lease is lost "
        "(this process hung, or no node answered for a TTL) the command is terminated and the "
        "exit code is 1: the next holder has a higher fencing token, so a protected resource "
        "that checks tokens refuses the old holder. --timeout S: give up after S seconds.",
        arguments=lockcommands.lock_arguments,
        handler=lockcommands.lock,
        usage="lock [-h] [--ttl N] [--timeout S] [-w {simple,json,table} | --json] NAME "
        "[-- CMD [ARG ...]]",
        ops=("txn", "range", "delete", "lease_grant", "lease_keepalive", "lease_revoke", "watch"),
    ),
    Command(
        name="elect",
        synopsis="elect NAME [VALUE] [--ttl N] [--timeout S]",
        summary="campaign in election NAME with VALUE, or follow its leader",
        description="With VALUE, campaign: once elected, print the key, the value and the "
        "fencing token, and lead until Ctrl-C (then resign); the leadership lives on a lease "
        "of --ttl seconds kept alive meanwhile. Without VALUE, print the leader's value (or "
        "(no leader)), then the new one each time the leadership changes, until Ctrl-C.",
        arguments=lockcommands.elect_arguments,
        handler=lockcommands.elect,
        ops=("txn", "range", "delete", "lease_grant", "lease_keepalive", "lease_revoke", "watch"),
    ),
    Command(
        name="lease",
        synopsis=leasecommands.USAGE["grant"],
        summary="grant a lease of TTL seconds; prints its id",
        description="Leases, as etcdctl's (ids in decimal, as the protocol carries them; "
        "an ID may also be given in hex with 0x, as etcdctl prints them). grant: a lease "
        "of TTL seconds (the cluster's minimum is 1.5 election timeouts), with --id ID "
        "that id; prints `lease ID granted with TTL(TTLs)`. revoke: end it now, deleting "
        "its keys. keep-alive: refresh it every TTL/3 seconds, printing `lease ID "
        "keepalived with TTL(N)` each time, until Ctrl-C or the lease is lost (then it "
        "says why and exits 1: lease_not_found when it is gone, lease_lost when no "
        "refresh was acknowledged within its TTL); --once: one refresh. timetolive: its "
        "TTL and the seconds it has left, with --keys the keys attached. list: every "
        "lease id. Attach a key with put KEY VALUE --lease ID.",
        arguments=leasecommands.lease_arguments,
        handler=leasecommands.lease,
        ops=(
            "lease_grant",
            "lease_revoke",
            "lease_keepalive",
            "lease_timetolive",
            "lease_leases",
        ),
        usage=" | ".join(leasecommands.USAGE.values()),
        more_forms=(
            (leasecommands.USAGE["revoke"], "end lease ID now: its keys are deleted"),
            (leasecommands.USAGE["keep-alive"], "refresh lease ID every TTL/3 until Ctrl-C"),
            (leasecommands.USAGE["timetolive"], "lease ID's TTL and seconds left (and keys)"),
            (leasecommands.USAGE["list"], "every lease id"),
        ),
    ),
    # --- the cluster ----------------------------------------------------------------------
    Command(
        name="status",
        synopsis="status [--verbose]",
        summary="a table of every node of the config (or of --endpoint)",
        description="Ask every node for its role, term, leader and log indexes.",
        arguments=_status_arguments,
        handler=handlers.status,
        ops=("status",),
    ),
    Command(
        name="backup",
        synopsis="backup FILE [NODE]",
        summary="copy a fresh snapshot of NODE (default: the leader) into FILE",
        description="Ask NODE (a node id of the config; default: the leader) to take a "
        "snapshot now, then copy that file into FILE, 1 MiB a request, while clients go on "
        "writing: the backup is the state at the snapshot's index. The copy is verified "
        "(CRC, structure, the state restoring) and sealed with its SHA-256 before FILE "
        "appears; until then it is FILE.partial, removed if anything fails. An existing FILE "
        "is never overwritten. Prints the index, term, revision and key count. Restore with "
        "zraft-node restore --from FILE --config NEW.toml.",
        arguments=backupcommands.backup_arguments,
        handler=backupcommands.backup,
        ops=("status", "snapshot", "snapshot_read"),
    ),
    Command(
        name="backup-status",
        synopsis="backup-status FILE",
        summary="verify a backup file and say what it holds (no cluster needed)",
        description="Read FILE in full, check its checksum and the snapshot inside, and "
        "print its cluster, node, index, term, revision, key count, creation time and "
        "SHA-256; -w json prints them as one object. A truncated, damaged or unknown file is "
        "refused with what is wrong (exit 1).",
        arguments=backupcommands.status_arguments,
        handler=backupcommands.backup_status,
        ops=(),
        offline=True,
    ),
    Command(
        name="endpoint",
        synopsis="endpoint health|status",
        summary="each node's health (as its /health judges it), or a status row each",
        description="Ask every node of the config (or the --endpoint node) for its status, "
        "each on its own. health: `ENDPOINT is healthy: took = Nms` when the node knows a "
        "leader, applies what is committed (within 5000 entries) and has no alarm raised, "
        "else `ENDPOINT is unhealthy: REASONS` on stderr; exit 1 if any node is unhealthy "
        "or silent, 3 if none answered. status: per node its endpoint, id, version, store "
        "size, whether it leads and whether it is a learner, term, commit and applied "
        "indexes, and errors (alarms, or why it did not answer); -w table aligns them "
        "under a header, -w json prints one object.",
        arguments=endpointcommand.endpoint_arguments,
        handler=endpointcommand.endpoint,
        ops=("status",),
    ),
    Command(
        name="snapshot",
        synopsis="snapshot [NODE]",
        summary="take a snapshot now on NODE (or the --endpoint node)",
        description="Ask one node to write a snapshot of its state now and compact its log; "
        "prints the snapshot's index and size once the file is durable. NODE is a node id "
        "of the config; with --endpoint it may be left out. The request is never retried "
        f"on another node. Waits up to {SNAPSHOT_TIMEOUT_S:g} s unless --timeout is given.",
        arguments=_snapshot_arguments,
        handler=handlers.snapshot,
        ops=("snapshot",),
    ),
    # --- membership -----------------------------------------------------------------------
    Command(
        name="members",
        synopsis="members",
        summary="a table of the members: role, endpoints, match index",
        description="Show the cluster's members: id, role (voter or learner), peer and "
        "client endpoints, and how far each one's log matches the leader's (known only to "
        "the leader, which is asked when another node answered). * marks the leader.",
        arguments=_no_arguments,
        handler=handlers.members,
        ops=("members",),
    ),
    Command(
        name="add-learner",
        synopsis=f"add-learner {_ADD_SYNOPSIS}",
        summary="add node ID (started with --join) as a learner",
        description="Add node ID, already running (zraft-node --join), as a learner: it "
        "receives the log but does not vote until promoted.",
        arguments=_add_arguments,
        handler=handlers.add_learner,
        ops=("add_member",),
        changes_membership=True,
    ),
    Command(
        name="add-member",
        synopsis=f"add-member {_ADD_SYNOPSIS}",
        summary="add node ID as a learner; the leader promotes it when caught up",
        description="Add node ID, already running (zraft-node --join), as a learner that "
        "the leader promotes to voter by itself once its log has caught up.",
        arguments=_add_arguments,
        handler=handlers.add_member,
        ops=("add_member",),
        changes_membership=True,
    ),
    Command(
        name="promote",
        synopsis="promote ID",
        summary="make the learner ID a voter",
        description="Make the learner ID a voter (waits while it catches up).",
        arguments=_id_arguments,
        handler=handlers.promote,
        ops=("promote_member",),
        changes_membership=True,
    ),
    Command(
        name="remove",
        synopsis="remove ID",
        summary="remove ID (voter or learner; the leader too) from the cluster",
        description="Remove ID from the cluster (a voter, a learner, or the leader itself). "
        "The node keeps running until you stop it.",
        arguments=_id_arguments,
        handler=handlers.remove,
        ops=("remove_member",),
        changes_membership=True,
    ),
    Command(
        name="transfer-leader",
        synopsis="transfer-leader [ID]",
        summary="hand leadership to ID (default: the most up-to-date voter)",
        description="Hand leadership to the voter ID (default: the most up-to-date voter); "
        "answers once ID leads.",
        arguments=_optional_id_arguments,
        handler=handlers.transfer_leader,
        ops=("transfer_leader",),
        changes_membership=True,
    ),
    # --- tools ----------------------------------------------------------------------------
    Command(
        name="bench",
        synopsis="bench [OPTIONS]",
        summary="load generator; see `help bench`",
        description="Drive concurrent clients (one request in flight each) and report "
        "throughput and latency. Progress goes to stderr every second, the summary to stdout.",
        arguments=_bench_arguments,
        handler=handlers.bench,
        ops=(),  # it drives clients of its own (put or get), outside the session
    ),
    Command(
        name="help",
        synopsis="help [CMD]",
        summary="this list, or one command's usage (each takes -w simple|json|table)",
        description="List the commands, or show one command's usage.",
        arguments=_help_arguments,
        handler=show_help,
        ops=(),
        offline=True,
    ),
)
"""Every command, by name, in the order `help` lists them."""


def command_words(commands: Mapping[str, Command] = COMMANDS) -> dict[str, str]:
    """Every name and alias a user may type, mapped to its command's name."""
    return {word: command.name for command in commands.values() for word in command.words}


def find_command(word: str) -> Command | None:
    """The command `word` (a name or an alias) names, or None."""
    name = command_words().get(word)
    return None if name is None else COMMANDS[name]


def commands_for_op(op: str) -> list[Command]:
    """The commands that send the wire op `op` (a canonical name or an alias)."""
    spec = lookup_op(op)
    if spec is None:
        return []
    return [command for command in COMMANDS.values() if spec.name in command.ops]


def summary_lines(commands: Mapping[str, Command] = COMMANDS) -> list[str]:
    """What `help` prints: each command's lines, then the REPL's way out."""
    lines = [line for command in commands.values() for line in command.help_lines()]
    return [*lines, *help_entry(" | ".join(LEAVE_WORDS), LEAVE_SUMMARY)]


COMMAND_SUMMARY = "\n".join(summary_lines())
"""One line per command (two for a long synopsis): `help` prints it, and so does `--help`."""

COMMAND_ALIASES: Mapping[str, str] = {
    alias: command.name for command in COMMANDS.values() for alias in command.aliases
}
"""Alternative command names, mapped to the command's name."""


def command_parsers() -> dict[str, argparse.ArgumentParser]:
    """One fresh parser per command, by name."""
    return {name: command.build_parser() for name, command in COMMANDS.items()}
