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

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

# The fields live in their own module; callers look them up here, with the ops.
from zraft.wire.fields import (
    CONSISTENCY_LEVELS,
    DEFAULT_MAX_TXN_OPS,
    FIELDS,
    MAX_ENDPOINT_LEN,
    SESSION_FIELDS,
    FieldSpec,
    Limits,
)

ROLES = ("read", "write", "admin")
"""Client roles, each allowed everything the previous one is."""


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
    """Held by the receiving node until its condition holds or its wait ends (`watch`);
    served where it arrives, never forwarded."""


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


_MEMBER_REPLY = ("members", "config_index", "retired")


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
    OpSpec(
        "put",
        "set `key` to `value`",
        "write",
        Route.LOG,
        Retry.SESSION,
        ("key", "value"),
        ("prev_kv", "lease"),
        reply=("prev_kv",),
    ),
    OpSpec(
        "delete",
        "remove `key` (succeeds when absent)",
        "write",
        Route.LOG,
        Retry.SESSION,
        ("key",),
        ("prev_kv",),
        reply=("deleted", "prev_kvs"),
        aliases=("del",),
    ),
    OpSpec(
        "delete_range",
        "remove every key of a range; says how many",
        "write",
        Route.LOG,
        Retry.SESSION,
        ("key",),
        ("range_end", "prefix", "prev_kv"),
        reply=("deleted", "prev_kvs"),
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
    OpSpec(
        "range",
        "the keys of a range, at one revision",
        "read",
        Route.READ,
        Retry.ALWAYS,
        ("key",),
        (
            "range_end",
            "prefix",
            "limit",
            "sort_order",
            "sort_target",
            "keys_only",
            "count_only",
            "revision",
            "serializable",
            "consistency",
        ),
        reply=("kvs", "more", "count", "compact_revision"),
    ),
    OpSpec(
        "txn",
        "if every `compare` holds run `success`, else `failure`; atomically, one revision",
        "write",
        Route.LOG,
        Retry.SESSION,
        (),
        ("compare", "success", "failure"),
        reply=("succeeded", "responses", "compact_revision"),
    ),
    OpSpec(
        "compact",
        "forget the history before `revision` (reads below it answer `compacted`)",
        "write",
        Route.LOG,
        Retry.SESSION,
        ("revision",),
        reply=("compact_revision",),
    ),
    OpSpec(
        "alarm_list",
        "the alarms raised (`nospace`: the space quota is exhausted)",
        "read",
        Route.READ,
        Retry.ALWAYS,
        reply=("alarms", "size_bytes"),
    ),
    OpSpec(
        "alarm_disarm",
        "lower every alarm (after freeing space; a leader raises it again if still full)",
        "admin",
        Route.LOG,
        Retry.SESSION,
        reply=("alarms",),
    ),
    OpSpec(
        "watch",
        "the changes of a range from `start_revision` on, held until one happens",
        "read",
        Route.LONG_POLL,
        Retry.ALWAYS,
        ("key",),
        (
            "range_end",
            "prefix",
            "start_revision",
            "prev_kv",
            "filters",
            "max_events",
            "wait_ms",
            "require_leader",
        ),
        reply=("events", "next_revision", "compact_revision"),
    ),
    # --- leases ---------------------------------------------------------------------------
    OpSpec(
        "lease_grant",
        "a new lease of `ttl` seconds (`lease`: the id to give it; default: one is chosen)",
        "write",
        Route.LOG,
        Retry.SESSION,
        ("ttl",),
        ("lease",),
        reply=("lease", "ttl"),
    ),
    OpSpec(
        "lease_revoke",
        "end lease `lease` now: its keys are deleted at one revision",
        "write",
        Route.LOG,
        Retry.SESSION,
        ("lease",),
    ),
    OpSpec(
        "lease_keepalive",
        "restart lease `lease`'s clock: it lives `ttl` seconds more",
        "write",
        Route.LEADER,
        Retry.ALWAYS,
        ("lease",),
        reply=("lease", "ttl", "remaining"),
    ),
    OpSpec(
        "lease_timetolive",
        "lease `lease`'s granted and remaining seconds, and its keys if asked",
        "read",
        Route.LEADER,
        Retry.ALWAYS,
        ("lease",),
        ("keys",),
        reply=("lease", "ttl", "remaining", "keys"),
    ),
    OpSpec(
        "lease_leases",
        "the ids of every lease",
        "read",
        Route.READ,
        Retry.ALWAYS,
        reply=("leases",),
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
    OpSpec(
        "snapshot_read",
        "bytes of one of the receiving node's snapshot files, from `offset` (backups)",
        "admin",
        Route.NODE,
        Retry.ALWAYS,
        ("offset",),
        ("snapshot_index",),
        reply=("snapshot", "data"),
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


__all__ = [
    "CONSISTENCY_LEVELS",
    "DEFAULT_MAX_TXN_OPS",
    "FIELDS",
    "MAX_ENDPOINT_LEN",
    "OPS",
    "OP_ALIASES",
    "ROLES",
    "SESSION_FIELDS",
    "FieldSpec",
    "Limits",
    "OpSpec",
    "Retry",
    "Route",
    "lookup",
    "role_allows",
]
