"""What a client request returns or raises: `Reply` (with the store's `Header`, `KeyValue`
and `TxnResponse` values read from it), the `ClientError` family, `StatusProbe`.

These are plain values, shared by every driver (the ZeroMQ `Client` in `sync`, the status
probe in `probe`, the benchmarks and test workloads) and by the pure policy in `policy`,
which decides when one of them is the answer. Nothing here talks to a socket, reads a
clock or decides anything about retries: this module must stay free of I/O and of zmq,
so the policy (and any future driver, e.g. an asyncio one) can import it.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

AUTH_HINT = (
    "check the client key (--key, ZRAFT_CLIENT_KEY, [client] secret_key_file), that the "
    "cluster admits it ([[client_key]]), and that both sides use the same security"
)
"""Where a refused client should look; the tail of every `ClientAuthError` message.

`ZRAFT_CLIENT_KEY` is `zraft.net.security.ENV_CLIENT_KEY`, spelled out here because that
module imports zmq (a test keeps the two equal)."""


class ClientError(Exception):
    """Base class of the errors the client library raises (besides ValueError for misuse)."""


class ClientAuthError(ClientError):
    """Every node refused this client's security handshake: its key is not admitted, it
    speaks plaintext to a CURVE node (or the reverse), or it holds a wrong server key.

    libzmq never retries a refused handshake, so waiting longer cannot help; the client
    raises this as soon as each endpoint has refused once instead of timing out.

    Attributes:
        refusals: `(endpoint, what happened)` per refusing endpoint.
    """

    def __init__(self, message: str, refusals: Sequence[tuple[str, str]]) -> None:
        super().__init__(message)
        self.refusals = tuple(refusals)


class ClientTimeout(ClientError, TimeoutError):
    """No usable reply arrived within the deadline.

    Attributes:
        timeout: the deadline that expired, in seconds.
        attempts: `(endpoint, outcome)` for every attempt, in order.
    """

    def __init__(self, message: str, timeout: float, attempts: Sequence[tuple[str, str]]) -> None:
        super().__init__(message)
        self.timeout = timeout
        self.attempts = tuple(attempts)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The distinct endpoints tried, in the order first tried."""
        return tuple(dict.fromkeys(endpoint for endpoint, _ in self.attempts))


@dataclass(frozen=True, slots=True)
class Reply:
    """One reply of a node (DESIGN.md §2), with typed access to its standard fields.

    Attributes:
        ok: whether the request succeeded.
        value: the value of a `get`, or the current value after a failed `cas`.
        found: for `get`, whether the key exists (None for other ops).
        error_code: None, or one of `wire.ERROR_CODES` (a newer server may send others).
        error_message: the server's text for the error, or None.
        leader: the leader the answering node knows of, or None.
        index: the log index at which a write was applied, or None.
        raw: the whole reply map, including keys this class does not know (e.g. `status`).
        endpoint: the endpoint that answered.

    The store's replies carry more, read through properties (each None when the reply
    does not carry it, or carries it malformed): `header` and `revision` (every store
    reply, errors included), `kvs`, `count` and `more` (`range`), `prev_kv` (`put` with
    `prev_kv`), `deleted` and `prev_kvs` (`delete`, `delete_range`), `succeeded` and
    `responses` (`txn`), `compact_revision` (`compact`, and the `compacted` error); the
    lease ops' `lease`, `ttl`, `remaining`, `keys` and `leases`.
    """

    ok: bool
    value: bytes | None = None
    found: bool | None = None
    error_code: str | None = None
    error_message: str | None = None
    leader: str | None = None
    index: int | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)
    endpoint: str | None = None

    @classmethod
    def from_map(cls, raw: Mapping[str, Any], endpoint: str | None = None) -> Reply:
        """Build a Reply from a decoded reply map (as `wire.decode_reply` returns it).

        Fields of unexpected types are treated as absent rather than trusted.
        """
        error = raw.get("error")
        code = message = None
        if isinstance(error, Mapping):
            code = _str_or_none(error.get("code"))
            message = _str_or_none(error.get("message"))
        value = raw.get("value")
        found = raw.get("found")
        index = raw.get("index")
        return cls(
            ok=raw.get("ok") is True,
            value=value if isinstance(value, bytes) else None,
            found=found if isinstance(found, bool) else None,
            error_code=code,
            error_message=message or code,
            leader=_str_or_none(raw.get("leader")),
            index=index if type(index) is int else None,
            raw=raw,
            endpoint=endpoint,
        )

    @property
    def replayed(self) -> bool:
        """Whether this answers a retry of a write the cluster had applied already: the
        first answer's key-values (`prev_kv`, `prev_kvs`, a transaction's `kvs`) are
        left out of it; a failed cas still says the value it saw."""
        return self.raw.get("replayed") is True

    @property
    def status(self) -> dict[str, Any] | None:
        """The `status` map of a status reply, or None if the reply has none."""
        status = self.raw.get("status")
        return status if isinstance(status, dict) else None

    @property
    def members(self) -> list[dict[str, Any]] | None:
        """The member rows of a `members` reply (or of a membership change's answer).

        Each row is a map with `id`, `role` (`voter` or `learner`), `peer`, `client` and
        `match_index` (an int when the answering node is the leader, else None). None if
        the reply has no (well-formed) member list.
        """
        rows = self.raw.get("members")
        if not isinstance(rows, list) or not all(isinstance(r, dict) for r in rows):
            return None
        return rows

    @property
    def config_index(self) -> int | None:
        """The log index of the membership the answering node uses, if the reply has it."""
        index = self.raw.get("config_index")
        return index if type(index) is int else None

    @property
    def retired(self) -> list[str]:
        """The ids removed from the cluster (never members again), if the reply has them."""
        ids = self.raw.get("retired")
        return ids if isinstance(ids, list) and all(type(i) is str for i in ids) else []

    def member(self, node_id: str) -> dict[str, Any] | None:
        """The row of `node_id` in `members`, or None if it is not a member."""
        return next((row for row in self.members or () if row.get("id") == node_id), None)

    # --- the store's replies (issue 13) ------------------------------------------------

    @property
    def header(self) -> Header | None:
        """Where a store reply stands (revision, Raft term, answering member), or None."""
        return Header.from_map(self.raw.get("header"))

    @property
    def revision(self) -> int | None:
        """The store revision the reply reflects (`header.revision`), or None."""
        header = self.header
        return None if header is None else header.revision

    @property
    def kvs(self) -> tuple[KeyValue, ...] | None:
        """A `range`'s key-values, in the order asked for (values empty with `keys_only`,
        none with `count_only`)."""
        return _kv_tuple(self.raw.get("kvs"))

    @property
    def count(self) -> int | None:
        """How many keys a `range` matched (all of them, not just the `limit` returned)."""
        return _uint_or_none(self.raw.get("count"))

    @property
    def more(self) -> bool | None:
        """Whether a `range` left keys out because of its `limit`."""
        return _bool_or_none(self.raw.get("more"))

    @property
    def deleted(self) -> int | None:
        """How many keys a `delete` (0 or 1) or `delete_range` removed."""
        return _uint_or_none(self.raw.get("deleted"))

    @property
    def prev_kv(self) -> KeyValue | None:
        """What a `put` asked with `prev_kv` replaced; None also when the key was new."""
        return KeyValue.from_map(self.raw.get("prev_kv"))

    @property
    def prev_kvs(self) -> tuple[KeyValue, ...] | None:
        """What a `delete` or `delete_range` asked with `prev_kv` removed."""
        return _kv_tuple(self.raw.get("prev_kvs"))

    @property
    def succeeded(self) -> bool | None:
        """Whether a `txn`'s compares all held (so its `success` branch ran)."""
        return _bool_or_none(self.raw.get("succeeded"))

    @property
    def responses(self) -> tuple[TxnResponse, ...] | None:
        """A `txn`'s answers, one per op of the branch that ran, in order."""
        rows = self.raw.get("responses")
        if not isinstance(rows, list):
            return None
        responses = tuple(TxnResponse.from_map(row) for row in rows)
        return None if any(r is None for r in responses) else responses  # type: ignore[return-value]

    @property
    def compact_revision(self) -> int | None:
        """After a `compact`, the revision compacted up to; with the error `compacted`,
        the oldest revision still readable."""
        return _uint_or_none(self.raw.get("compact_revision"))

    # --- leases (issue 14) ---------------------------------------------------------------

    @property
    def lease(self) -> int | None:
        """The lease id a `lease_grant`, `lease_keepalive` or `lease_timetolive` is about."""
        return _uint_or_none(self.raw.get("lease"))

    @property
    def ttl(self) -> int | None:
        """The lease's granted TTL, in seconds (`lease_grant`, `lease_keepalive`,
        `lease_timetolive`)."""
        return _uint_or_none(self.raw.get("ttl"))

    @property
    def remaining(self) -> int | None:
        """The seconds the lease has left (`lease_timetolive`, rounded up); after a
        `lease_keepalive`, its whole TTL again."""
        return _uint_or_none(self.raw.get("remaining"))

    @property
    def keys(self) -> tuple[bytes, ...] | None:
        """The keys attached to the lease, in key order (`lease_timetolive` with `keys`)."""
        rows = self.raw.get("keys")
        if not isinstance(rows, list) or not all(isinstance(k, bytes) for k in rows):
            return None
        return tuple(rows)

    @property
    def leases(self) -> tuple[int, ...] | None:
        """The id of every lease, ascending (`lease_leases`)."""
        rows = self.raw.get("leases")
        if not isinstance(rows, list) or any(_uint_or_none(i) is None for i in rows):
            return None
        return tuple(rows)


@dataclass(frozen=True, slots=True)
class Header:
    """Where a store reply stands (etcd's response header).

    Attributes:
        revision: the store revision the reply reflects: after a write, the revision it
            made (or the current one, if it changed nothing); after a read, the current.
        raft_term: the Raft term of the answering node.
        member: the id of the answering node.
    """

    revision: int
    raft_term: int
    member: str

    @classmethod
    def from_map(cls, raw: Any) -> Header | None:
        """The header of a reply's `header` map, or None if absent or malformed."""
        if not isinstance(raw, Mapping):
            return None
        revision, term = _uint_or_none(raw.get("revision")), _uint_or_none(raw.get("raft_term"))
        member = _str_or_none(raw.get("member"))
        if revision is None or term is None or member is None:
            return None
        return cls(revision=revision, raft_term=term, member=member)


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One key with its value and revisions, as a store reply carries it.

    Attributes:
        key: the key.
        value: its value (empty in a `keys_only` range).
        create_revision: the revision that created the key (its current life).
        mod_revision: the revision of its last change.
        version: 1 at creation, +1 per put (a deleted and re-created key starts again).
        lease: its lease id, 0 for none.
    """

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    @classmethod
    def from_map(cls, raw: Any) -> KeyValue | None:
        """The key-value of a reply's map, or None if absent or malformed."""
        if not isinstance(raw, Mapping):
            return None
        key, value = raw.get("key"), raw.get("value")
        numbers = [_uint_or_none(raw.get(name)) for name in _KV_NUMBERS]
        if not isinstance(key, bytes) or not isinstance(value, bytes) or None in numbers:
            return None
        create, mod, version, lease = numbers
        return cls(key, value, create, mod, version, lease)  # type: ignore[arg-type]


_KV_NUMBERS = ("create_revision", "mod_revision", "version", "lease")


@dataclass(frozen=True, slots=True)
class TxnResponse:
    """The answer of one op inside a `txn` (see `Reply.responses`).

    Attributes:
        op: `range`, `put` or `delete_range`.
        kvs, more, count: a range's key-values, whether its limit left some out, and how
            many matched (None for the other ops).
        deleted: how many keys a delete_range removed (None for the other ops).
        prev_kv: what a put with `prev_kv` replaced (None too when the key was new).
        prev_kvs: what a delete_range with `prev_kv` removed (None when not asked).
        raw: the response's map.
    """

    op: str
    kvs: tuple[KeyValue, ...] | None = None
    more: bool | None = None
    count: int | None = None
    deleted: int | None = None
    prev_kv: KeyValue | None = None
    prev_kvs: tuple[KeyValue, ...] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def from_map(cls, raw: Any) -> TxnResponse | None:
        """The response of a `responses` entry, or None if it is malformed."""
        if not isinstance(raw, Mapping) or not isinstance(raw.get("op"), str):
            return None
        return cls(
            op=raw["op"],
            kvs=_kv_tuple(raw.get("kvs")),
            more=_bool_or_none(raw.get("more")),
            count=_uint_or_none(raw.get("count")),
            deleted=_uint_or_none(raw.get("deleted")),
            prev_kv=KeyValue.from_map(raw.get("prev_kv")),
            prev_kvs=_kv_tuple(raw.get("prev_kvs")),
            raw=raw,
        )


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _uint_or_none(value: Any) -> int | None:
    return value if type(value) is int and value >= 0 else None


def _bool_or_none(value: Any) -> bool | None:
    return value if isinstance(value, bool) else None


def _kv_tuple(rows: Any) -> tuple[KeyValue, ...] | None:
    """The key-values of a list of maps; None if it is not one, or one entry is malformed."""
    if not isinstance(rows, list):
        return None
    kvs = tuple(KeyValue.from_map(row) for row in rows)
    return None if any(kv is None for kv in kvs) else kvs  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class StatusProbe:
    """The answer of one node to a status probe.

    Attributes:
        endpoint: the node's client endpoint.
        reply: the reply, or None when the node did not answer in time.
        problem: why there is no reply ("no reply within 1.0 s", "malformed reply ..."),
            None when there is one.
        took_s: seconds from the probe's start to this reply (connecting included).
    """

    endpoint: str
    reply: Reply | None
    problem: str | None = None
    took_s: float = 0.0

    @property
    def reachable(self) -> bool:
        """Whether the node answered."""
        return self.reply is not None


# --- the errors' messages (one wording for every driver) -------------------------------


def timeout_error(
    op: str, timeout: float, endpoints: Sequence[str], attempts: Sequence[tuple[str, str]]
) -> ClientTimeout:
    """The `ClientTimeout` of a request whose deadline passed without a usable reply."""
    tried = "; ".join(f"{ep}: {outcome}" for ep, outcome in _last_per_endpoint(attempts))
    # Said plainly first: the usual reason is a cluster that is down or not reachable.
    return ClientTimeout(
        f"{op}: no node answered within {timeout:g} s ({', '.join(endpoints)}); is the "
        f"cluster running and reachable? Last outcome per node: {tried or 'none'}",
        timeout,
        attempts,
    )


def unknown_outcome_error(
    op: str, endpoint: str, outcome: str, timeout: float, attempts: Sequence[tuple[str, str]]
) -> ClientTimeout:
    """The `ClientTimeout` of a request that may not be re-sent and lost its reply."""
    return ClientTimeout(
        f"{op}: {endpoint}: {outcome}; the outcome is unknown (not retried)", timeout, attempts
    )


def auth_error(op: str, refusals: Sequence[tuple[str, str]]) -> ClientAuthError:
    """The `ClientAuthError` once every endpoint refused the handshake (`refusals` in order)."""
    detail = "; ".join(f"{ep}: {why}" for ep, why in refusals)
    return ClientAuthError(
        f"{op}: authentication failed at every node ({detail}); {AUTH_HINT}", refusals
    )


def _last_per_endpoint(attempts: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    last: dict[str, str] = {}
    for endpoint, outcome in attempts:
        last[endpoint] = outcome
    return list(last.items())
