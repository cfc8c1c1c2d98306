"""The arguments of the key-value commands, and the request fields they mean.

`get`, `del` and `put` are declared in `zraft.cli.commands`; a transaction's request
lines (`get k --prefix` inside `txn`) take the same arguments, minus those a transaction
op has no field for. So both use the functions here: `*_arguments` add the arguments to
a parser, `*_fields` turn the parsed arguments into a request's fields (`zraft.wire.ops`
names), the one place where a CLI option becomes a wire field:

- `get KEY` alone is the op `get`; any range option (RANGE_END, --prefix, --from-key,
  --limit, --keys-only, --count-only, --rev, --sort-by, --order) makes it a `range`.
- `del KEY` alone is `delete`; RANGE_END, --prefix or --from-key make it `delete_range`.
- `put --lease ID` attaches the key to lease ID (`lease_id`: decimal, or hex with `0x`,
  since etcdctl prints lease ids in hex; 0: no lease).
- RANGE_END, --prefix and --from-key exclude each other. --from-key means every key from
  KEY on (`range_end` `\\0`); an empty KEY with --prefix or --from-key means every key
  (key and range_end `\\0`: the protocol has no empty keys).

It must not send requests or print: the handlers (`zraft.cli.kvcommands`) do.
"""

from __future__ import annotations

import argparse
from typing import Any

from zraft.cli.usage import UsageError, int_at_least
from zraft.wire.fields import MAX_LEASE_ID

SORT_TARGETS = {
    "key": "key",
    "version": "version",
    "create": "create",
    "modify": "mod",
    "value": "value",
}
"""`--sort-by` names (etcdctl's) -> the wire's `sort_target`."""

SORT_ORDERS = ("ascend", "descend")
"""`--order` values (the wire's `sort_order`)."""

EVERY_KEY = "\0"
"""The key and range_end that mean every key (`get "" --prefix`)."""

_RANGE_OPTIONS = ("range_end", "limit", "rev", "sort_by", "order")
_RANGE_FLAGS = ("prefix", "from_key", "keys_only", "count_only")


def lease_id(text: str, *, minimum: int = 1) -> int:
    """An argparse type: a lease id in decimal, or in hex with `0x` (etcdctl prints hex).

    Raises:
        argparse.ArgumentTypeError: not a number, or outside `minimum`..2**63-1.
    """
    try:
        value = int(text[2:], 16) if text[:2].lower() == "0x" else int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a lease id (decimal, or hex with 0x), got {text!r}"
        ) from None
    if not minimum <= value <= MAX_LEASE_ID:
        raise argparse.ArgumentTypeError(f"a lease id is {minimum} to 2**63-1, got {text!r}")
    return value


def lease_or_none(text: str) -> int:
    """An argparse type: a lease id, or 0 for none (`put --lease 0`)."""
    return lease_id(text, minimum=0)


def put_arguments(parser: argparse.ArgumentParser, *, value_required: bool = False) -> None:
    """`KEY [VALUE] [--prev-kv] [--lease ID]` (VALUE required inside a transaction)."""
    parser.add_argument("key", metavar="KEY")
    if value_required:
        parser.add_argument("value", metavar="VALUE")
    else:
        parser.add_argument(
            "value", nargs="?", metavar="VALUE", help="the value; omitted: read from stdin"
        )
    parser.add_argument("--prev-kv", action="store_true", help="also print the previous kv")
    parser.add_argument(
        "--lease",
        type=lease_or_none,
        default=0,
        metavar="ID",
        help="attach the key to lease ID (decimal, or hex with 0x; 0: none)",
    )


def put_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The options of a parsed `put` as request fields (`prev_kv`, `lease`; defaults
    left out)."""
    fields: dict[str, Any] = {}
    if args.prev_kv:
        fields["prev_kv"] = True
    if args.lease:
        fields["lease"] = args.lease
    return fields


def bounds_arguments(parser: argparse.ArgumentParser) -> None:
    """`KEY [RANGE_END] [--prefix|--from-key]`."""
    parser.add_argument("key", metavar="KEY")
    parser.add_argument(
        "range_end", nargs="?", metavar="RANGE_END", help="the end of the range, excluded"
    )
    shape = parser.add_mutually_exclusive_group()
    shape.add_argument("--prefix", action="store_true", help="every key that starts with KEY")
    shape.add_argument("--from-key", action="store_true", help="every key from KEY on")


def get_arguments(parser: argparse.ArgumentParser, *, in_txn: bool = False) -> None:
    """`KEY [RANGE_END]` and the range options (inside a transaction: no --rev, sort or
    --serializable, which a transaction's range has no field for)."""
    bounds_arguments(parser)
    parser.add_argument("--limit", type=int_at_least(0), metavar="N", help="at most N keys")
    parser.add_argument("--keys-only", action="store_true", help="keys without values")
    parser.add_argument("--count-only", action="store_true", help="only how many keys match")
    if in_txn:
        return
    parser.add_argument(
        "--rev", type=int_at_least(0), metavar="N", help="read at revision N (0: now)"
    )
    parser.add_argument(
        "--sort-by", choices=tuple(SORT_TARGETS), help="sort by this (default order: ascend)"
    )
    parser.add_argument("--order", choices=SORT_ORDERS, help="sort order (default: by key)")
    parser.add_argument(
        "--serializable",
        action="store_true",
        help="read the answering node's own state (no leader round trip; may be stale)",
    )


def delete_arguments(parser: argparse.ArgumentParser) -> None:
    """`KEY [RANGE_END] [--prefix|--from-key] [--prev-kv]`."""
    bounds_arguments(parser)
    parser.add_argument("--prev-kv", action="store_true", help="also print the deleted kvs")


def is_range(args: argparse.Namespace) -> bool:
    """Whether a parsed `get` or `del` names a range (any range option is given)."""
    options = (getattr(args, name, None) is not None for name in _RANGE_OPTIONS)
    flags = (getattr(args, name, False) for name in _RANGE_FLAGS)
    return any(options) or any(flags)


def bounds_fields(args: argparse.Namespace) -> dict[str, Any]:
    """`key`, and `range_end` or `prefix`, of a parsed `get` or `del`.

    Raises:
        UsageError: RANGE_END together with --prefix or --from-key.
    """
    key, end = args.key, args.range_end
    if end is not None and (args.prefix or args.from_key):
        option = "--prefix" if args.prefix else "--from-key"
        raise UsageError(f"error: give RANGE_END or {option}, not both")
    if key == "" and (args.prefix or args.from_key):
        return {"key": EVERY_KEY, "range_end": EVERY_KEY}
    if args.prefix:
        return {"key": key, "prefix": True}
    if args.from_key:
        return {"key": key, "range_end": EVERY_KEY}
    return {"key": key} if end is None else {"key": key, "range_end": end}


def range_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The fields of the `range` a parsed `get` asks for (defaults left out).

    Raises:
        UsageError: see `bounds_fields`.
    """
    fields = bounds_fields(args)
    if args.limit:
        fields["limit"] = args.limit
    for flag in ("keys_only", "count_only"):
        if getattr(args, flag):
            fields[flag] = True
    if getattr(args, "rev", None):
        fields["revision"] = args.rev
    sort_by, order = getattr(args, "sort_by", None), getattr(args, "order", None)
    if sort_by is not None or order is not None:
        fields["sort_target"] = SORT_TARGETS[sort_by or "key"]
        fields["sort_order"] = order or "ascend"
    if getattr(args, "serializable", False):
        fields["serializable"] = True
    return fields


def delete_fields(args: argparse.Namespace) -> tuple[str, dict[str, Any]]:
    """The op (`delete` or `delete_range`) and fields a parsed `del` asks for.

    Raises:
        UsageError: see `bounds_fields`.
    """
    ranged = is_range(args)
    fields = bounds_fields(args)
    if args.prev_kv:
        fields["prev_kv"] = True
    return ("delete_range" if ranged else "delete"), fields
