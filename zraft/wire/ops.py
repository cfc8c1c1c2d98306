"""The table of client operations: every op the client protocol knows, declared once.

Each `OpSpec` says everything the rest of zraft needs to know about an op, as three
separate policies and a field list:

- `role`: the weakest client-key role that may call it (`read` < `write` < `admin`); the
  node checks it against the key's role before anything else (`role_allows`).
- `route`: where it is served (`Route`): answered by the receiving node, proposed through
  the leader's log, read at a ReadIndex point, carried out by the leader, or held as a
  long poll. The node's serving code dispatches on it; followers forward what the route
  sends to the leader.
- `retry`: what a client library may do when an attempt fails (`Retry`): retry anywhere,
  retry inside a session (writes: `client`/`seq` are attached), retry only when nothing
  can have happened, or never.
- `required` / `optional`: the request fields (`FIELDS` holds how each is validated and
  what it means) and `reply`: the reply fields beyond the standard ones.

The node registers a handler for every op (`zraft.node.serving`), the state machine the
commands and reads it serves (`zraft.state.machine`), the CLI a command per op
(`zraft.cli.commands`); tests check that none is missing and that the README documents
every op and field. Adding an op starts here: see the README's "How to add an operation".
This module must not know how an op is served: only what it is.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from zraft.wire.codec import (
    MAX_CLIENT_ID_LEN,
    MAX_NODE_ID_LEN,
    DecodeError,
    TooLarge,
    short_str,
    type_name,
)

MAX_ENDPOINT_LEN = 256
"""Longest endpoint string (`peer`, `client_endpoint`) in a request."""

ROLES = ("read", "write", "admin")
"""Client roles, each allowed everything the previous one is."""

CONSISTENCY_LEVELS = frozenset({"linearizable", "serializable"})
"""Accepted values of a get's `consistency` field."""


class Route(StrEnum):
    """Where an op is served."""

    LOCAL = "local"
    """Answered at once by the receiving node from its own state (any member or not)."""
    NODE = "node"
    """About the receiving node itself: served there, never forwarded (nor failed over)."""
    LOG = "log"
    """A state machine command: proposed through the leader's log (followers forward)."""
    READ = "read"
    """A state machine read: linearizable at a ReadIndex point, or local if serializable."""
    LEADER = "leader"
    """Carried out by the leader itself (membership, leadership); followers forward."""
    LONG_POLL = "long_poll"
    """Held by the receiving node until its condition holds or its wait ends (room for
    watches: no op uses it yet, and the node refuses to start with one it cannot serve)."""


class Retry(StrEnum):
    """What a client may do after an attempt without a usable answer."""

    ALWAYS = "always"
    """Idempotent: retry on any node, after any failure."""
    SESSION = "session"
    """A write: carries a session (`client`, `seq`) so a retry is applied at most once."""
    IF_UNSENT = "if_unsent"
    """Not idempotent: retried only after an answer or a failure that guarantees nothing
    happened (`unavailable`, `not_leader`, never sent); a lost reply is reported as such."""
    NEVER = "never"
    """One attempt at the node addressed, whatever happens."""


@dataclass(frozen=True, slots=True)
class Limits:
    """Size limits of one cluster (`max_key_bytes`, `max_value_bytes`)."""

    max_key: int
    max_value: int


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One request field: how to validate it, and what it means (for the docs)."""

    parse: Callable[[Any, Limits], Any]
    doc: str
    default: Any = None  # what a request without the field means


@dataclass(frozen=True, slots=True)
class OpSpec:
    """One client op (see the module doc for the meaning of each policy).

    Attributes:
        name: the canonical op name on the wire.
        summary: one line for docs and help.
        role, route, retry: the three policies.
        required, optional: request field names (each a key of `FIELDS`).
        reply: reply fields beyond `ok`, `error`, `leader`, `value`, `index`.
        aliases: other names a request may use for it.
    """

    name: str
    summary: str
    role: str
    route: Route
    retry: Retry
    required: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    reply: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    fields: frozenset[str] = field(init=False)
    """Every field a request of this op may carry (the session fields included)."""

    def __post_init__(self) -> None:
        # Computed once: decoding a request checks its fields against this set.
        every = frozenset(self.required) | frozenset(self.optional) | SESSION_FIELDS
        object.__setattr__(self, "fields", every)

    @property
    def has_session(self) -> bool:
        """Whether a client attaches a session (`client`, `seq`) to this op."""
        return self.retry is Retry.SESSION


# --- field parsers ----------------------------------------------------------------------


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


def _seq(value: Any, limits: Limits) -> int:
    if type(value) is not int or value < 0:
        raise DecodeError(f"field 'seq' must be an int >= 0, got {type_name(value)}")
    return value


def _consistency(value: Any, limits: Limits) -> str:
    if type(value) is not str or value not in CONSISTENCY_LEVELS:
        raise DecodeError(
            f"field 'consistency' must be one of: {', '.join(sorted(CONSISTENCY_LEVELS))}"
        )
    return value


def _flag(name: str) -> Callable[[Any, Limits], bool]:
    def parse(value: Any, limits: Limits) -> bool:
        if type(value) is not bool:
            raise DecodeError(f"field {name!r} must be a bool, got {type_name(value)}")
        return value

    return parse


def _text(name: str, limit: int) -> Callable[[Any, Limits], str]:
    return lambda value, limits: short_str(value, name, limit)


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
    "seq": FieldSpec(_seq, "the session's sequence number of this write, an int >= 0"),
    "consistency": FieldSpec(
        _consistency, "`linearizable` (default) or `serializable`", "linearizable"
    ),
    "id": FieldSpec(_text("id", MAX_NODE_ID_LEN), "the member an admin op is about"),
    "peer": FieldSpec(_text("peer", MAX_ENDPOINT_LEN), "the new node's peer endpoint"),
    "client_endpoint": FieldSpec(
        _text("client_endpoint", MAX_ENDPOINT_LEN), "the new node's client endpoint"
    ),
    "public_key": FieldSpec(
        _text("public_key", MAX_ENDPOINT_LEN), "the new node's Z85 public key (CURVE on)"
    ),
    "learner": FieldSpec(_flag("learner"), "true: stay a learner until promoted by hand", False),
}
"""Every request field an op may declare, with its validation."""

SESSION_FIELDS = frozenset({"client", "seq"})
"""Accepted by every op (a client library may send them on every request); they only
mean something for ops with `Retry.SESSION`."""

_MEMBER_REPLY = ("members", "config_index")


def _declare(*specs: OpSpec) -> Mapping[str, OpSpec]:
    table: dict[str, OpSpec] = {}
    for spec in specs:
        unknown = (set(spec.required) | set(spec.optional)) - set(FIELDS)
        if unknown or spec.role not in ROLES or spec.name in table:
            raise RuntimeError(f"bad op declaration {spec.name!r}: {sorted(unknown)}")
        table[spec.name] = spec
    return table


OPS: Mapping[str, OpSpec] = _declare(
    # --- the key-value store --------------------------------------------------------------
    OpSpec("put", "set `key` to `value`", "write", Route.LOG, Retry.SESSION, ("key", "value")),
    OpSpec(
        "delete",
        "remove `key` (succeeds when absent)",
        "write",
        Route.LOG,
        Retry.SESSION,
        ("key",),
        reply=("deleted",),
        aliases=("del",),
    ),
    OpSpec(
        "cas",
        "set `key` to `value` if its value is `expected` (nil: if absent)",
        "write",
        Route.LOG,
        Retry.SESSION,
        # `expected` is required (nil allowed): forgetting it must not mean "absent".
        ("key", "expected", "value"),
    ),
    OpSpec(
        "get",
        "read `key`",
        "read",
        Route.READ,
        Retry.ALWAYS,
        ("key",),
        ("consistency",),
        reply=("found",),
    ),
    # --- the cluster ----------------------------------------------------------------------
    OpSpec(
        "status", "the answering node's view", "read", Route.LOCAL, Retry.ALWAYS, reply=("status",)
    ),
    OpSpec(
        "members",
        "the members as the answering node sees them",
        "read",
        Route.LOCAL,
        Retry.ALWAYS,
        reply=_MEMBER_REPLY,
    ),
    OpSpec(
        "add_member",
        "add a running node as a learner (promoted once caught up unless `learner`)",
        "admin",
        Route.LEADER,
        Retry.IF_UNSENT,
        ("id", "peer"),
        ("client_endpoint", "learner", "public_key"),
        reply=_MEMBER_REPLY,
    ),
    OpSpec(
        "promote_member",
        "make learner `id` a voter",
        "admin",
        Route.LEADER,
        Retry.IF_UNSENT,
        ("id",),
        reply=_MEMBER_REPLY,
    ),
    OpSpec(
        "remove_member",
        "remove member `id` (the leader too)",
        "admin",
        Route.LEADER,
        Retry.IF_UNSENT,
        ("id",),
        reply=_MEMBER_REPLY,
    ),
    OpSpec(
        "transfer_leader",
        "hand leadership to voter `id` (default: the most up-to-date)",
        "admin",
        Route.LEADER,
        Retry.IF_UNSENT,
        (),
        ("id",),
        reply=("transferred_to",),
    ),
    OpSpec(
        "snapshot",
        "the receiving node takes a snapshot now",
        "admin",
        Route.NODE,
        Retry.NEVER,
        reply=("snapshot",),
    ),
)
"""Every op a request may name, by canonical name."""

OP_ALIASES: Mapping[str, str] = {
    alias: spec.name for spec in OPS.values() for alias in spec.aliases
}
"""Alternative op names, mapped to the canonical one."""


def lookup(name: str) -> OpSpec | None:
    """The op `name` (or alias) names, or None."""
    return OPS.get(OP_ALIASES.get(name, name))


_RANK = {role: rank for rank, role in enumerate(ROLES)}


def role_allows(role: str, spec: OpSpec) -> bool:
    """Whether a client key with `role` may call `spec`. An unknown role allows nothing."""
    rank = _RANK.get(role)
    return rank is not None and rank >= _RANK[spec.role]
