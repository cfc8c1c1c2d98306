"""The fields of client requests: how each is validated, and what it means.

`FIELDS` maps every field name an op may declare (`zraft.wire.ops`) to its `FieldSpec`:
a parser that turns the value a msgpack map carried into the value the node uses (str
keys and values become UTF-8 bytes, names are checked against their allowed set) or
raises `DecodeError` (`TooLarge` for a size limit) with a message meant for the client.

A transaction's `compare`, `success` and `failure` are lists of small maps, validated
here field by field with the same parsers as the top-level ops, so a put inside a
transaction is checked exactly like a put on its own. Parsed values stay plain msgpack
values (maps, lists, bytes, ints), because a write's fields are also what its log entry
carries (`zraft.wire.entries`). This module must not know how an op is served.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from zraft.wire.codec import (
    MAX_CLIENT_ID_LEN,
    MAX_NODE_ID_LEN,
    DecodeError,
    TooLarge,
    describe,
    short_str,
    type_name,
)

MAX_ENDPOINT_LEN = 256
"""Longest endpoint string (`peer`, `client_endpoint`) in a request."""

CONSISTENCY_LEVELS = frozenset({"linearizable", "serializable"})
"""Accepted values of a read's `consistency` field."""

DEFAULT_MAX_TXN_OPS = 128
"""Default bound on the operations of one transaction branch (etcd's `max-txn-ops`)."""

MAX_LEASE_ID = (1 << 63) - 1
"""The largest lease id (etcd's are int64)."""

MAX_WATCH_WAIT_MS = 60_000
"""The longest a `watch` may be held without news (`wait_ms`)."""

DEFAULT_WATCH_WAIT_MS = 1_000
"""How long a `watch` without `wait_ms` is held: short enough for any REQ client's timeout."""

MAX_WATCH_EVENTS = 10_000
"""The most events a `watch` may ask for in one reply (`max_events`)."""

DEFAULT_WATCH_EVENTS = 1_000
"""The events a `watch` reply carries at most, unless it asks otherwise."""

WATCH_FILTERS = ("noput", "nodelete")
"""What a `watch` may filter out (etcd's `filters`)."""

SORT_TARGETS = ("key", "version", "create", "mod", "value")
"""What a range may sort by (etcd's `sort_target`)."""

SORT_ORDERS = ("none", "ascend", "descend")
"""How a range may sort (`none`: by key, ascending)."""

COMPARE_TARGETS = {
    "value": "value",
    "version": "version",
    "create": "create",
    "create_revision": "create",
    "mod": "mod",
    "mod_revision": "mod",
    "lease": "lease",
}
"""A compare's `target` names (etcd's, and the key attribute names), to the canonical."""

COMPARE_RESULTS = {
    "equal": "equal",
    "=": "equal",
    "not_equal": "not_equal",
    "!=": "not_equal",
    "less": "less",
    "<": "less",
    "greater": "greater",
    ">": "greater",
}
"""A compare's `result` names (words or symbols), to the canonical word."""

TXN_OP_FIELDS: Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "range": (("key",), ("range_end", "prefix", "limit", "keys_only", "count_only")),
    "put": (("key", "value"), ("prev_kv", "lease")),
    "delete_range": (("key",), ("range_end", "prefix", "prev_kv")),
}
"""The ops a transaction branch may hold: required and optional fields of each."""


class TooManyOps(DecodeError):
    """A transaction branch (or compare list) longer than `max_txn_ops`: answered
    `too_many_ops`, not `bad_request`, so a client can tell a limit from a mistake."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits of one cluster (`max_key_bytes`, `max_value_bytes`, `max_txn_ops`)."""

    max_key: int
    max_value: int
    max_ops: int = DEFAULT_MAX_TXN_OPS


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One request field: how to validate it, and what it means (for the docs)."""

    parse: Callable[[Any, Limits], Any]
    doc: str
    default: Any = None  # what a request without the field means


# --- parsers ----------------------------------------------------------------------------


def _blob(value: Any, name: str, limit: int, *, nullable: bool = False) -> bytes | None:
    if value is None and nullable:
        return None
    if type(value) is str:
        value = value.encode("utf-8")
    elif type(value) is not bytes:
        kinds = "bytes, str or nil" if nullable else "bytes or str"
        raise DecodeError(f"field {name!r} must be {kinds}, got {type_name(value)}")
    if len(value) > limit:
        raise TooLarge(f"field {name!r} is {len(value)} bytes, the limit is {limit}")
    return value


def _key(value: Any, limits: Limits) -> bytes:
    key = _blob(value, "key", limits.max_key)
    if not key:
        raise DecodeError("field 'key' must not be empty")
    return key


def _range_end(value: Any, limits: Limits) -> bytes:
    end = _blob(value, "range_end", limits.max_key)
    assert end is not None
    return end


def _uint(name: str) -> Callable[[Any, Limits], int]:
    def parse(value: Any, limits: Limits) -> int:
        if type(value) is not int or value < 0:
            raise DecodeError(f"field {name!r} must be an int >= 0, got {_shown(value)}")
        return value

    return parse


def _choice(
    name: str, allowed: Mapping[str, str] | tuple[str, ...]
) -> Callable[[Any, Limits], str]:
    names = allowed if isinstance(allowed, Mapping) else {a: a for a in allowed}

    def parse(value: Any, limits: Limits) -> str:
        if type(value) is not str or value not in names:
            raise DecodeError(f"field {name!r} must be one of: {', '.join(names)}")
        return names[value]

    return parse


def _lease_id(value: Any, limits: Limits) -> int:
    if type(value) is not int or not 0 <= value <= MAX_LEASE_ID:
        raise DecodeError(f"field 'lease' must be an int from 0 to 2**63-1, got {_shown(value)}")
    return value


def _flag(name: str) -> Callable[[Any, Limits], bool]:
    def parse(value: Any, limits: Limits) -> bool:
        if type(value) is not bool:
            raise DecodeError(f"field {name!r} must be a bool, got {type_name(value)}")
        return value

    return parse


def _bounded(name: str, low: int, high: int) -> Callable[[Any, Limits], int]:
    def parse(value: Any, limits: Limits) -> int:
        if type(value) is not int or not low <= value <= high:
            raise DecodeError(
                f"field {name!r} must be an int from {low} to {high}, got {_shown(value)}"
            )
        return value

    return parse


def _filters(value: Any, limits: Limits) -> list[str]:
    if type(value) is not list or len(value) > len(WATCH_FILTERS):
        raise DecodeError(f"field 'filters' must be an array of: {', '.join(WATCH_FILTERS)}")
    for item in value:
        if type(item) is not str or item not in WATCH_FILTERS:
            raise DecodeError(f"field 'filters' must be an array of: {', '.join(WATCH_FILTERS)}")
    return value


def _text(name: str, limit: int) -> Callable[[Any, Limits], str]:
    return lambda value, limits: short_str(value, name, limit)


def _shown(value: Any) -> str:
    return repr(value) if type(value) is int else type_name(value)


def _map_list(value: Any, name: str, limit: int) -> list[dict[Any, Any]]:
    if type(value) is not list:
        raise DecodeError(f"field {name!r} must be an array of maps, got {type_name(value)}")
    if len(value) > limit:
        raise TooManyOps(
            f"field {name!r} has {len(value)} entries, the limit is {limit} (max_txn_ops)"
        )
    for item in value:
        if type(item) is not dict:
            raise DecodeError(f"every entry of {name!r} must be a map, got {type_name(item)}")
    return value


def _fields_of(
    raw: Mapping[Any, Any],
    required: tuple[str, ...],
    optional: tuple[str, ...],
    where: str,
    limits: Limits,
) -> dict[str, Any]:
    """Validate a nested map's fields (a compare, or an op of a branch)."""
    for name in required:
        if name not in raw:
            raise DecodeError(f"{where}: missing field {name!r}")
    parsed = {}
    for name, value in raw.items():
        if name not in required and name not in optional:
            raise DecodeError(f"{where}: unknown field {describe(name)}")
        parsed[name] = FIELDS[name].parse(value, limits)
    return parsed


def check_range_shape(fields: Mapping[str, Any], where: str) -> None:
    """`prefix` and `range_end` exclude each other (both would say where a range ends)."""
    if fields.get("prefix") and fields.get("range_end") is not None:
        raise DecodeError(f"{where}: give 'prefix' or 'range_end', not both")


def _compares(value: Any, limits: Limits) -> list[dict[str, Any]]:
    compares = []
    for position, raw in enumerate(_map_list(value, "compare", limits.max_ops)):
        where = f"compare[{position}]"
        for name in ("target", "result"):
            if name not in raw:
                raise DecodeError(f"{where}: missing field {name!r}")
        target = _choice("target", COMPARE_TARGETS)(raw["target"], limits)
        result = _choice("result", COMPARE_RESULTS)(raw["result"], limits)
        rest = {k: v for k, v in raw.items() if k not in ("target", "result", "operand")}
        parsed = _fields_of(rest, ("key",), ("range_end", "prefix"), where, limits)
        check_range_shape(parsed, where)
        if "operand" not in raw:
            raise DecodeError(f"{where}: missing field 'operand'")
        operand = raw["operand"]
        if target == "value":
            operand = _blob(operand, f"{where}.operand", limits.max_value)
        elif type(operand) is not int or operand < 0:
            raise DecodeError(f"{where}: a {target} operand must be an int >= 0")
        compares.append({**parsed, "target": target, "result": result, "operand": operand})
    return compares


def _branch(name: str) -> Callable[[Any, Limits], list[dict[str, Any]]]:
    def parse(value: Any, limits: Limits) -> list[dict[str, Any]]:
        ops = []
        for position, raw in enumerate(_map_list(value, name, limits.max_ops)):
            where = f"{name}[{position}]"
            op = raw.get("op")
            if op not in TXN_OP_FIELDS:
                raise DecodeError(f"{where}: 'op' must be one of: {', '.join(TXN_OP_FIELDS)}")
            required, optional = TXN_OP_FIELDS[op]
            rest = {k: v for k, v in raw.items() if k != "op"}
            parsed = _fields_of(rest, required, optional, f"{where} ({op})", limits)
            check_range_shape(parsed, where)
            ops.append({"op": op, **parsed})
        return ops

    return parse


FIELDS: Mapping[str, FieldSpec] = {
    "key": FieldSpec(_key, "bytes or UTF-8 str, not empty; at most `max_key_bytes`"),
    "value": FieldSpec(
        lambda v, limits: _blob(v, "value", limits.max_value),
        "bytes or UTF-8 str; at most `max_value_bytes`",
    ),
    "expected": FieldSpec(
        lambda v, limits: _blob(v, "expected", limits.max_value, nullable=True),
        "`cas`: the value that must be current; nil = the key must be absent",
    ),
    "client": FieldSpec(
        _text("client", MAX_CLIENT_ID_LEN), "session id (with `seq`): exactly-once writes"
    ),
    "seq": FieldSpec(_uint("seq"), "the session's sequence number of this write, an int >= 0"),
    "consistency": FieldSpec(
        _choice("consistency", tuple(sorted(CONSISTENCY_LEVELS))),
        "`linearizable` (default) or `serializable`",
        "linearizable",
    ),
    "range_end": FieldSpec(
        _range_end,
        "end of a range, excluded; `\\0` = every key from `key` on; empty = `key` alone",
    ),
    "prefix": FieldSpec(_flag("prefix"), "true: every key that starts with `key`", False),
    "limit": FieldSpec(_uint("limit"), "at most this many keys (0: no limit)", 0),
    "sort_order": FieldSpec(
        _choice("sort_order", SORT_ORDERS), "`none` (by key), `ascend`, `descend`", "none"
    ),
    "sort_target": FieldSpec(
        _choice("sort_target", SORT_TARGETS),
        "what to sort by: `key`, `version`, `create`, `mod`, `value`",
        "key",
    ),
    "keys_only": FieldSpec(_flag("keys_only"), "true: keys without their values", False),
    "count_only": FieldSpec(_flag("count_only"), "true: only how many keys match", False),
    "revision": FieldSpec(
        _uint("revision"), "`range`: read at this revision (0: now); `compact`: up to it", 0
    ),
    "serializable": FieldSpec(
        _flag("serializable"), "true: served from the answering node's state (may be stale)", False
    ),
    "prev_kv": FieldSpec(_flag("prev_kv"), "true: the reply carries what was there before", False),
    "compare": FieldSpec(
        _compares,
        "`txn`: maps {`key`, *`range_end`*/*`prefix`*, `target`, `result`, `operand`}",
        (),
    ),
    "success": FieldSpec(_branch("success"), "`txn`: ops run if every compare holds", ()),
    "failure": FieldSpec(_branch("failure"), "`txn`: ops run otherwise", ()),
    "id": FieldSpec(_text("id", MAX_NODE_ID_LEN), "the member an admin op is about"),
    "peer": FieldSpec(_text("peer", MAX_ENDPOINT_LEN), "the new node's peer endpoint"),
    "client_endpoint": FieldSpec(
        _text("client_endpoint", MAX_ENDPOINT_LEN), "the new node's client endpoint"
    ),
    "public_key": FieldSpec(
        _text("public_key", MAX_ENDPOINT_LEN), "the new node's Z85 public key (CURVE on)"
    ),
    "learner": FieldSpec(_flag("learner"), "true: stay a learner until promoted by hand", False),
    "lease": FieldSpec(
        _lease_id, "a lease id (`put`: attach the key to it; 0, the default: none)", 0
    ),
    "ttl": FieldSpec(_uint("ttl"), "`lease_grant`: seconds the lease lives without a keepalive"),
    "keys": FieldSpec(_flag("keys"), "`lease_timetolive`: true lists the attached keys", False),
    "start_revision": FieldSpec(
        _uint("start_revision"),
        "`watch`: the first revision wanted (0: the one after the answering node's current)",
        0,
    ),
    "wait_ms": FieldSpec(
        _bounded("wait_ms", 0, MAX_WATCH_WAIT_MS),
        "`watch`: how long to hold the request when nothing has happened yet",
        DEFAULT_WATCH_WAIT_MS,
    ),
    "max_events": FieldSpec(
        _bounded("max_events", 1, MAX_WATCH_EVENTS),
        "`watch`: events per reply at most (a revision is never split)",
        DEFAULT_WATCH_EVENTS,
    ),
    "filters": FieldSpec(_filters, "`watch`: `noput` and/or `nodelete`", ()),
    "offset": FieldSpec(_uint("offset"), "`snapshot_read`: the first byte wanted"),
    "snapshot_index": FieldSpec(
        _uint("snapshot_index"), "`snapshot_read`: which snapshot (0: the newest)", 0
    ),
    "require_leader": FieldSpec(
        _flag("require_leader"),
        "`watch`: answer `unavailable` rather than wait on a node without a leader",
        False,
    ),
}
"""Every request field an op may declare, with its validation."""

SESSION_FIELDS = frozenset({"client", "seq"})
"""Accepted by every op (a client library may send them on every request); they only
mean something for ops with `Retry.SESSION`."""
