"""The client protocol's bytes: request and reply maps (the README's "Protocol" section).

This contract is public: any REQ client in any language speaks it, so it only grows.
A field or op may be added; an existing one keeps its name, type and meaning, and a
reply never loses a key. Requests are msgpack maps with short named keys, validated
against the op table (`zraft.wire.ops`): unknown ops and fields, wrong types and
oversized values are refused with a message meant for the client. This module knows
what a request looks like, never what it does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zraft.wire.codec import (
    DecodeError,
    TooLarge,
    describe,
    packb,
    type_name,
    unpack,
)
from zraft.wire.fields import DEFAULT_MAX_TXN_OPS, check_range_shape
from zraft.wire.ops import FIELDS, OP_ALIASES, OPS, Limits, OpSpec, lookup

DEFAULT_MAX_KEY = 4096
"""Default limit on a key, in bytes (DESIGN.md §2)."""

DEFAULT_MAX_VALUE = 1 << 20
"""Default limit on a value, in bytes (DESIGN.md §2)."""

REQUEST_OVERHEAD = 4096
"""Bytes a request frame may use beyond its key and values (field names, ids, numbers)."""

ERROR_CODES = frozenset(
    {
        "bad_request",
        "too_large",
        "cas_failed",
        "unavailable",
        "timeout",
        "not_leader",
        "internal",
        "conflict",
        "forbidden",  # the client key's role does not allow the op (ops.role_allows)
        "compacted",  # a read or compaction below the compact revision (reply: compact_revision)
        "future_revision",  # a read or compaction above the current revision
        "too_many_ops",  # a transaction branch longer than max_txn_ops
        "no_space",  # the space quota's alarm is raised: writes are refused
        "lease_not_found",  # a lease that does not exist (never granted, expired, revoked)
    }
)
"""The error codes a reply may carry (DESIGN.md §2)."""

STANDARD_REPLY_KEYS = frozenset(
    {"ok", "value", "found", "error", "leader", "index", "header", "replayed"}
)
"""Keys every reply may carry; an op's own are declared in its `OpSpec.reply`."""


class Request:
    """A validated client request: its op and its fields, exactly as the map carried them
    (aliases resolved, str keys and values UTF-8 encoded). Immutable by convention.

    Args:
        op: the canonical op name (a key of `ops.OPS`; `spec` is its declaration).
        fields: the validated fields (never `op`); keyword arguments add more, so
            `Request("put", key=b"k", value=b"v")` reads naturally in code.
    """

    __slots__ = ("fields", "op", "spec")

    def __init__(self, op: str, fields: Mapping[str, Any] | None = None, **more: Any) -> None:
        self.op = op
        self.fields: Mapping[str, Any] = {**(fields or {}), **more}
        self.spec: OpSpec = OPS[op]  # looked up once: serving reads it several times

    @classmethod
    def _validated(cls, spec: OpSpec, fields: dict[str, Any]) -> Request:
        """A request the decoder just built (it hands over `fields`: no copy)."""
        request = cls.__new__(cls)
        request.op, request.fields, request.spec = spec.name, fields, spec
        return request

    @classmethod
    def of(cls, op: str, **fields: Any) -> Request:
        """`Request.of("put", key=b"k", value=b"v")`: build one in code (tests, tools)."""
        return cls(op, fields)

    def get(self, name: str, default: Any = None) -> Any:
        """The field `name`, or `default` when the request did not carry it."""
        return self.fields.get(name, default)

    def __getattr__(self, name: str) -> Any:
        """A declared field as an attribute (`request.peer`): its value, or the field's
        declared default when the request did not carry it."""
        spec = FIELDS.get(name)
        if spec is None:
            raise AttributeError(f"{type(self).__name__!r} has no field {name!r}")
        return self.fields.get(name, spec.default)

    def to_map(self) -> dict[str, Any]:
        """The map form; decoding it gives an equal Request back."""
        return {"op": self.op, **self.fields}

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Request):
            return NotImplemented
        return self.op == other.op and self.fields == other.fields

    def __hash__(self) -> int:
        return hash(self.op)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self.fields.items())
        return f"Request({self.op!r}{', ' if shown else ''}{shown})"


def request_from_map(raw: dict[Any, Any], limits: Limits) -> Request:
    """Validate a request map against the op table and build the Request.

    Raises:
        TooLarge: a key or value exceeds `limits`.
        DecodeError: anything else wrong; the message is meant for the client.
    """
    op = raw.get("op")
    if op is None:
        raise DecodeError("missing field 'op'")
    if type(op) is not str:
        raise DecodeError(f"field 'op' must be a str, got {type_name(op)}")
    spec = lookup(op)
    if spec is None:
        raise DecodeError(f"unknown op {describe(op)}; known ops: {', '.join(sorted(OPS))}")
    allowed = spec.fields
    for name in raw:
        if name != "op" and name not in allowed:
            if type(name) is not str:
                raise DecodeError("map keys must be str")
            raise DecodeError(f"unknown field {describe(name)} for op {spec.name!r}")
    for name in spec.required:
        if name not in raw:
            raise DecodeError(f"missing field {name!r} for op {spec.name!r}")
    fields = {
        name: FIELDS[name].parse(value, limits) for name, value in raw.items() if name != "op"
    }
    if ("client" in fields) != ("seq" in fields):
        raise DecodeError("fields 'client' and 'seq' must be given together")
    if "prefix" in fields:
        check_range_shape(fields, f"op {spec.name!r}")
    return Request._validated(spec, fields)


def decode_request(
    buf: bytes,
    *,
    max_key: int = DEFAULT_MAX_KEY,
    max_value: int = DEFAULT_MAX_VALUE,
    max_ops: int = DEFAULT_MAX_TXN_OPS,
) -> Request:
    """Decode and validate a client request frame (DESIGN.md §2).

    Args:
        buf: the frame.
        max_key: the longest key accepted, in bytes (after UTF-8 encoding).
        max_value: the longest `value` or `expected` accepted, in bytes.
        max_ops: the most operations a transaction branch (or compares) may hold.

    Returns:
        The request, with the op alias resolved and str keys/values encoded to bytes.

    Raises:
        TooLarge: the frame, the key or a value exceeds the limits.
        DecodeError: anything else wrong; the message is meant for the client.
    """
    if type(buf) is not bytes:
        raise DecodeError("a frame must be bytes")
    max_frame = max_key + 2 * max_value + REQUEST_OVERHEAD
    if len(buf) > max_frame:
        raise TooLarge(f"request of {len(buf)} bytes exceeds the limit of {max_frame}")
    # The frame size bounds every string; arrays only hold a transaction's compares and
    # ops (the field parsers name the limit when one is too long).
    raw = unpack(buf, max_frame, max_frame, max(16, max_ops + 1), 32, unique_keys=True)
    if type(raw) is not dict:
        raise DecodeError(f"a request must be a msgpack map, got {type_name(raw)}")
    return request_from_map(raw, Limits(max_key, max_value, max_ops))


def encode_request(op: str, **fields: Any) -> bytes:
    """Encode a client request map ``{"op": op, **fields}`` (client library side).

    Pass only the fields to send; ``expected=None`` sends nil ("the key must be absent").

    Raises:
        ValueError: `op` or a field name is unknown.
    """
    spec = lookup(op)
    if spec is None:
        raise ValueError(f"unknown op {op!r}")
    unknown = set(fields) - spec.fields
    if unknown:
        raise ValueError(f"unknown fields for op {op!r}: {sorted(unknown)}")
    return packb({"op": op, **fields})


# --- replies ----------------------------------------------------------------------------


def encode_reply(
    *,
    ok: bool,
    value: bytes | None = None,
    found: bool | None = None,
    error: str | None = None,
    message: str | None = None,
    leader: str | None = None,
    index: int | None = None,
    extra: Mapping[str, Any] | None = None,
    op: str | None = None,
    header: Mapping[str, Any] | None = None,
    replayed: bool = False,
) -> bytes:
    """Encode a reply map (DESIGN.md §2).

    Args:
        ok: whether the request succeeded; must be False exactly when `error` is set.
        value: the value of a get, or the current value after a failed cas.
        found: for get only (omitted from the map when None).
        error: an error code from `ERROR_CODES`, or None.
        message: text for the error (defaults to the code).
        leader: the leader this node knows of, or None.
        index: the log index at which a write was applied, or None.
        extra: more top-level keys (e.g. a status's `status` map); they must not collide
            with the standard ones and, when `op` is given, must be declared in its
            `OpSpec.reply`.
        op: the op answered, when known: its declaration says which extra keys it has.
        header: where the answer stands (`revision`, `raft_term`, `member`), for replies
            that touch the store (omitted when None).
        replayed: the answer to a retried session write, without the values the first
            answer carried (omitted when False).

    Raises:
        ValueError: an unknown error code, `ok` inconsistent with `error`, or an extra key
            that collides or is not declared.
    """
    if error is not None and error not in ERROR_CODES:
        raise ValueError(f"unknown error code {error!r}")
    if ok == (error is not None):
        raise ValueError("ok must be False exactly when an error is given")
    reply: dict[str, Any] = {
        "ok": ok,
        "value": value,
        "error": None if error is None else {"code": error, "message": message or error},
        "leader": leader,
        "index": index,
    }
    if found is not None:
        reply["found"] = found
    if header is not None:
        reply["header"] = header
    if replayed:
        reply["replayed"] = True
    if extra:
        clash = STANDARD_REPLY_KEYS.intersection(extra)
        if clash:
            raise ValueError(f"extra keys collide with reply keys: {sorted(clash)}")
        if op is not None:
            undeclared = set(extra) - set(OPS[op].reply)
            if undeclared:
                raise ValueError(f"reply keys {sorted(undeclared)} are not declared for {op!r}")
        reply.update(extra)
    return packb(reply)


def decode_reply(buf: bytes) -> dict[str, Any]:
    """Decode a reply frame (client library side).

    Returns:
        The reply map: `ok` is a bool, `error` None or a map with a str `code`.

    Raises:
        DecodeError: not a map, or the checks above fail.
    """
    limit = len(buf) if type(buf) is bytes else 0
    reply = unpack(buf, limit, limit, limit, limit)  # the frame bounds every part
    if type(reply) is not dict:
        raise DecodeError(f"a reply must be a msgpack map, got {type_name(reply)}")
    if type(reply.get("ok")) is not bool:
        raise DecodeError("a reply needs a bool 'ok'")
    error = reply.get("error")
    if error is not None and (type(error) is not dict or type(error.get("code")) is not str):
        raise DecodeError("a reply's 'error' must be nil or a map with a str 'code'")
    return reply


__all__ = [
    "DEFAULT_MAX_KEY",
    "DEFAULT_MAX_VALUE",
    "ERROR_CODES",
    "OP_ALIASES",
    "REQUEST_OVERHEAD",
    "STANDARD_REPLY_KEYS",
    "Request",
    "decode_reply",
    "decode_request",
    "encode_reply",
    "encode_request",
    "request_from_map",
]
