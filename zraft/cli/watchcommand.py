"""What `zraft-client watch KEY [RANGE_END] [OPTIONS]` does: print every change of a key
or range as it happens, until Ctrl-C.

    watch KEY [RANGE_END] [--prefix|--from-key] [--rev N] [--prev-kv] [--filter F]

Each event prints, as etcdctl's watch does: its type (`PUT` or `DELETE`), with --prev-kv
the key and value it replaced (when there was one), then the key and its new value (empty
for a delete); `-w json` prints each event as one JSON line (`type`, `kv`, `prev_kv`), `-w
table` each as a small table. Every line is flushed, so a pipe sees an event when it
happens.

The events come from `Client.watch` (`zraft.client.watch`): in order, each once, resumed
by itself when the node it talks to dies or loses its leader. Without --rev it starts
after a linearizable read of the range (every change made after the command started);
--rev N starts at revision N (its changes included), --rev 0 after the answering node's
current revision. It ends on Ctrl-C (KeyboardInterrupt, which the entry point and the
REPL handle), or with exit 1 when the start is compacted (the message says the oldest
revision still watchable) or a node refuses the watch.
"""

from __future__ import annotations

import argparse
import dataclasses

from zraft.cli import kvargs, kvrender
from zraft.cli.handlers import CommandContext
from zraft.cli.usage import EXIT_FAILED, int_at_least
from zraft.client.watch import Compacted, WatchError, WatchEvent

FILTERS = ("noput", "nodelete")
"""What --filter may leave out."""


def watch_arguments(parser: argparse.ArgumentParser) -> None:
    """`KEY [RANGE_END] [--prefix|--from-key] [--rev N] [--prev-kv] [--filter F]`."""
    kvargs.bounds_arguments(parser)
    parser.add_argument(
        "--rev",
        type=int_at_least(0),
        metavar="N",
        help="start at revision N (0: after the node's current one; default: after a "
        "linearizable read)",
    )
    parser.add_argument("--prev-kv", action="store_true", help="also print what each replaced")
    parser.add_argument(
        "--filter",
        action="append",
        choices=FILTERS,
        default=[],
        help="leave out puts (noput) or deletes (nodelete)",
    )


def watch(ctx: CommandContext, args: argparse.Namespace) -> int:
    """Print every event until Ctrl-C; 1 when the watch ends otherwise."""
    fields = kvargs.bounds_fields(args)
    running = ctx.client().watch(
        fields["key"],
        fields.get("range_end"),
        prefix=bool(fields.get("prefix")),
        start_revision=args.rev,
        prev_kv=args.prev_kv,
        filters=tuple(dict.fromkeys(args.filter)),
    )
    try:
        for event in running:
            _show(ctx, event)
    except Compacted as exc:
        ctx.fail(f"error: compacted: {exc}")
        return EXIT_FAILED
    except WatchError as exc:
        ctx.fail(f"error: {exc}")
        return EXIT_FAILED
    finally:
        running.cancel()
    return 0  # not reached: only Ctrl-C or an error ends a watch


def _show(ctx: CommandContext, event: WatchEvent) -> None:
    raw = {
        "type": event.type,
        "kv": dataclasses.asdict(event.kv),
        **({"prev_kv": dataclasses.asdict(event.prev_kv)} if event.prev_kv else {}),
    }
    if ctx.write_out == "json":
        ctx.out_json(raw, flush=True)
        return
    for line in kvrender.watch_event_lines(raw, ctx.write_out):
        ctx.out(line, flush=True)
