"""The zraft client library: requests with a deadline, failover and safe retries.

A `Client` talks to the nodes' client endpoints with the protocol of DESIGN.md §2 (one
msgpack map per request, one per reply, over ZeroMQ REQ sockets). Any node accepts any
request, so the client needs no leader discovery; it only has to survive lost replies and
dead nodes. It does so in the "Lazy Pirate" way:

- one REQ socket per endpoint, LINGER=0; after a send it polls for the reply until the
  attempt's deadline, never blocking without a timeout and never sleeping;
- a REQ socket whose reply was lost is stuck (it may not send again), so on an attempt
  timeout the socket is closed and the next attempt goes to the next endpoint on a new one;
- a reply whose error is `unavailable` or `not_leader` is retried on another endpoint
  (the leader, when the reply names one this client knows), until the overall deadline;
  every other reply, success or error, is returned as is.

Rules it keeps:

- **Writes are retried only inside a session.** Every `put`, `delete` and `cas` carries
  `client` (a random id per `Client`, unless given) and `seq`, a per-client number that
  grows by one per write. A retry of the same write reuses its `seq`, and the server's
  session table (`zraft.state.kv`) applies a `(client, seq)` pair at most once and answers a
  duplicate with the first answer. Reads (`get`) and local ops (`status`, `members`) are
  retried freely.
- **Admin ops are never re-sent after an ambiguous outcome.** Membership and leadership
  changes (`add_member`, `promote`, `remove`, `transfer_leader`) carry no session, and a
  change that was made answers a repeat with an error (`bad_request` "already a learner"),
  so a blind retry would turn a success into a confusing failure. They are retried only
  when nothing can have happened: an `unavailable` or `not_leader` answer (the node says
  it did not act: no leader, not a member, a learner still catching up, a change that lost
  its log slot) or an attempt that never sent the request (the node was already known to
  be down, or refused the connection). Each attempt waits for the rest of the deadline
  (the node answers `timeout` itself when its own request timeout passes first); a reply
  lost after sending raises `ClientTimeout` saying that the outcome is unknown, and a
  `timeout` answer is returned as is. Either way the caller should look (`members`) before
  trying again. `conflict` (another change is not committed yet) is returned, not retried.
- **Node-addressed ops go to that node only.** `snapshot(node)` is about the node named:
  one attempt there, never a failover to another node, whatever the answer.
- **Bounded waits.** Every call returns or raises within `timeout` seconds (plus the time
  of one socket close). Back-off between rounds of error replies is a poll with a timeout.
- A `Client` is not thread-safe: use one per thread (ZeroMQ sockets are not either).
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq
from zmq.utils.monitor import recv_monitor_message

from zraft import config as _config
from zraft import wire
from zraft.net import security
from zraft.net.security import ClientCurve
from zraft.wire import ops

DEFAULT_TIMEOUT_S = 6.0
"""Default overall deadline of a request: a little above the server's default request
timeout (5 s), so the server's own `unavailable`/`timeout` answer normally arrives first."""

MIN_ATTEMPT_TIMEOUT_S = 0.5
"""Lower bound of the default per-attempt timeout with several endpoints."""

RETRYABLE_ERRORS = frozenset({"unavailable", "not_leader"})
_RETRY_LOST = frozenset({ops.Retry.ALWAYS, ops.Retry.SESSION})  # re-sent after a lost reply
"""Error codes that mean "not done here, try elsewhere"; retried until the deadline."""

_UNSENT = "not sent: "
"""Prefix of an attempt outcome where the request never left this client (so even a
non-idempotent op may be tried elsewhere)."""

_BACKOFF_FIRST_S = 0.05
_BACKOFF_MAX_S = 0.5

# zmq endpoint forms a client may connect to; checked early so a typo fails at once
# instead of as a timeout.
_ENDPOINT_RE = re.compile(r"tcp://[^\s:]+:[0-9]{1,5}|tcp://\[[0-9A-Fa-f:.]+\]:[0-9]{1,5}|ipc://\S+")


class ClientError(Exception):
    """Base class of the errors this module raises (besides ValueError for misuse)."""


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


_HANDSHAKE_EVENTS = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the node refused this client's key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: (
        "security handshake failed (plaintext client and CURVE node, or the reverse)"
    ),
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "security handshake failed (wrong server key?)",
}
"""Monitor events that end a connection for good (libzmq does not retry), and what they
mean for a zraft client."""


def _final(event: int, curve: bool) -> bool:
    """Whether a monitor event means the handshake is refused for good.

    A plaintext client may see HANDSHAKE_FAILED_NO_DETAIL when a connection breaks
    mid-handshake (seen under load); only with CURVE does it mean a key problem (a wrong
    server key: the node cannot read our HELLO), so only then is it final.
    """
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return curve
    return event in _HANDSHAKE_EVENTS


_REFUSED = "refused: "  # prefix of an attempt outcome whose handshake failed

_MONITOR_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)


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

    def member(self, node_id: str) -> dict[str, Any] | None:
        """The row of `node_id` in `members`, or None if it is not a member."""
        return next((row for row in self.members or () if row.get("id") == node_id), None)


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def check_endpoint(endpoint: str) -> str:
    """Return `endpoint` if it is a `tcp://HOST:PORT` (or `ipc://PATH`) endpoint.

    Raises:
        ValueError: it is not; the message names the endpoint and the expected form.
    """
    if not isinstance(endpoint, str) or not _ENDPOINT_RE.fullmatch(endpoint):
        raise ValueError(f"bad endpoint {endpoint!r}: expected tcp://HOST:PORT")
    return endpoint


class Client:
    """A connection to a zraft cluster through the client endpoints of its nodes.

    Args:
        endpoints: client endpoints (`tcp://HOST:PORT`) of one or more nodes; the first is
            tried first. Any node serves any request.
        timeout: the overall deadline of one request, in seconds.
        attempt_timeout: how long one attempt waits for its reply before the client moves
            on to the next endpoint. Default: the whole `timeout` with one endpoint (the
            node answers `unavailable` itself when it cannot complete), else
            `timeout / len(endpoints)` but at least 0.5 s.
        client_id: the session id carried by writes; default a random id. Two live
            `Client`s must never share one (their seqs would collide).
        first_seq: the seq of the first write; a client that reuses a `client_id` across
            processes must continue above the last seq it used.
        node_endpoints: node id -> client endpoint, so a `leader` named in a reply can be
            tried next (and preferred afterwards). `from_config` fills it in.
        context: a zmq.Context to use; by default the client makes one and terminates it
            in `close`.
        curve: the client's keys and the nodes' server keys for a CURVE cluster
            (`zraft.net.security.client_curve`); None speaks plaintext.

    Raises:
        ValueError: no endpoints, a malformed endpoint, or a timeout <= 0.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        attempt_timeout: float | None = None,
        client_id: str | None = None,
        first_seq: int = 1,
        node_endpoints: Mapping[str, str] | None = None,
        context: zmq.Context[Any] | None = None,
        curve: ClientCurve | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        self._endpoints: tuple[str, ...] = tuple(
            dict.fromkeys(check_endpoint(e) for e in endpoints)
        )
        if not self._endpoints:
            raise ValueError("a Client needs at least one endpoint")
        if timeout <= 0 or (attempt_timeout is not None and attempt_timeout <= 0):
            raise ValueError("timeouts must be > 0 seconds")
        if client_id is not None and not 0 < len(client_id) <= wire.MAX_CLIENT_ID_LEN:
            raise ValueError(f"client_id must have 1..{wire.MAX_CLIENT_ID_LEN} characters")
        if first_seq < 0:
            raise ValueError("first_seq must be >= 0")
        self._timeout = timeout
        if attempt_timeout is None:
            n = len(self._endpoints)
            attempt_timeout = timeout if n == 1 else max(timeout / n, MIN_ATTEMPT_TIMEOUT_S)
        self._attempt_timeout = min(attempt_timeout, timeout)
        self._client_id = client_id or f"c-{secrets.token_hex(8)}"
        self._next_seq = first_seq
        self._node_endpoints = {
            node_id: ep for node_id, ep in (node_endpoints or {}).items() if ep in self._endpoints
        }
        self._own_context = context is None
        self._context: zmq.Context[Any] = zmq.Context() if context is None else context
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        # A monitor per REQ socket reports connects and disconnects: a REQ socket never
        # says that its node died, so without this a client would wait out a whole attempt
        # timeout on a killed leader (seconds) instead of moving on at once.
        self._monitors: dict[str, zmq.Socket[bytes]] = {}
        self._down: set[str] = set()  # endpoints whose connection is known to be lost
        self._refused: dict[str, str] = {}  # endpoint -> why its handshake failed
        self._curve = curve
        self._connected: set[str] = set()  # endpoints whose current socket ever connected
        self._current = 0  # index into _endpoints: where the next request goes first
        self._closed = False

    @classmethod
    def from_config(
        cls,
        path: Path | str,
        *,
        timeout: float | None = None,
        key_file: Path | str | None = None,
        **kwargs: Any,
    ) -> Client:
        """A client for every node of a cluster configuration file.

        Args:
            path: the cluster TOML file (DESIGN.md §4).
            timeout: the overall deadline; default the cluster's request timeout + 1 s.
            key_file: the client's secret key file for a CURVE cluster; default
                `$ZRAFT_CLIENT_KEY`, else the config's `[client] secret_key_file`.
            kwargs: passed on to `Client` (attempt_timeout, client_id, context, ...).

        Raises:
            ConfigError: the file is unreadable or invalid (the message names it).
            SecurityError: the cluster runs CURVE and no usable client key was found.
        """
        cluster = _config.load(path)
        if "curve" not in kwargs:
            kwargs["curve"] = security.client_curve(cluster, key_file)
        if timeout is None:
            timeout = cluster.request_timeout_ms / 1000 + 1.0
        return cls(
            [node.client for node in cluster.nodes],
            timeout=timeout,
            node_endpoints={node.id: node.client for node in cluster.nodes},
            **kwargs,
        )

    # --- properties -------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints this client may use, in preference order at construction."""
        return self._endpoints

    @property
    def client_id(self) -> str:
        """The session id carried by this client's writes."""
        return self._client_id

    @property
    def next_seq(self) -> int:
        """The seq the next new write will carry."""
        return self._next_seq

    @property
    def timeout(self) -> float:
        """The overall deadline of one request, in seconds."""
        return self._timeout

    # --- the kv operations ------------------------------------------------------------

    def put(self, key: bytes | str, value: bytes | str) -> Reply:
        """Set `key` to `value`. Returns the reply (`index` = where it was applied).

        Raises:
            ClientTimeout: no usable reply within the deadline.
        """
        return self.request("put", key=key, value=value)

    def get(self, key: bytes | str, consistency: str = "linearizable") -> Reply:
        """Read `key`: `reply.found` tells whether it exists, `reply.value` holds it.

        Args:
            consistency: `linearizable` (through the leader) or `serializable` (served by
                the answering node from its own state; may be stale).

        Raises:
            ValueError: an unknown consistency level.
            ClientTimeout: no usable reply within the deadline.
        """
        if consistency not in wire.CONSISTENCY_LEVELS:
            raise ValueError(f"consistency must be one of {sorted(wire.CONSISTENCY_LEVELS)}")
        return self.request("get", key=key, consistency=consistency)

    def delete(self, key: bytes | str) -> Reply:
        """Remove `key` (succeeds when it is already absent).

        Raises:
            ClientTimeout: no usable reply within the deadline.
        """
        return self.request("delete", key=key)

    def cas(self, key: bytes | str, expected: bytes | str | None, new: bytes | str) -> Reply:
        """Set `key` to `new` only if its value is `expected` (None: only if absent).

        A mismatch is the error `cas_failed`, with the current value in `reply.value`.

        Raises:
            ClientTimeout: no usable reply within the deadline.
        """
        return self.request("cas", key=key, expected=expected, value=new)

    def status(self) -> Reply:
        """The answering node's own view (`reply.status`: id, role, term, leader, ...).

        Raises:
            ClientTimeout: no node answered within the deadline.
        """
        return self.request("status")

    # --- membership and leadership (issue 6) -------------------------------------------

    def members(self, *, match_from_leader: bool = True) -> Reply:
        """The cluster's members as one node sees them (`reply.members`, `reply.leader`).

        Any node answers from its own state, so the answer is fast but may lag a change
        that was just made. Only the leader knows how far each member's log matches
        (`match_index`); with `match_from_leader`, when the answering node names another
        node as leader, the leader is asked too (one attempt, at the client endpoint the
        member list gives it) and its answer is returned if it still leads. If that fails,
        the first answer is returned (with `match_index` None).

        Raises:
            ClientTimeout: no node answered within the deadline.
        """
        reply = self.request("members")
        row = reply.member(reply.leader) if reply.ok and reply.leader else None
        if not match_from_leader or row is None or row.get("match_index") is not None:
            return reply
        endpoint = row.get("client")
        if not isinstance(endpoint, str) or not _ENDPOINT_RE.fullmatch(endpoint):
            return reply
        raw = self._attempt(endpoint, wire.encode_request("members"), self._attempt_timeout)
        if isinstance(raw, str):
            return reply
        from_leader = Reply.from_map(raw, endpoint)
        return from_leader if from_leader.ok and from_leader.leader == reply.leader else reply

    def add_member(
        self,
        node_id: str,
        peer: str,
        client_endpoint: str,
        *,
        learner: bool = False,
        public_key: str | None = None,
    ) -> Reply:
        """Add `node_id` to the cluster as a learner (it receives the log but does not vote).

        The reply (the `members` shape) comes once the change is applied on the leader.
        The node must already be running (started with `zraft-node --join`).

        Args:
            node_id: the new member's id.
            peer: its peer endpoint (`tcp://HOST:PORT`), where the members send to it.
            client_endpoint: its client endpoint, for clients and forwards.
            learner: True to keep it a learner (promote it later with `promote`); False to
                let the leader promote it to voter by itself once its log has caught up.
            public_key: its Z85 public key; required when the cluster runs CURVE (the
                members admit and reach it by that key).

        Returns:
            The reply; `ok` False with `bad_request` when the id is already a member or an
            endpoint is invalid, `conflict` while another change is uncommitted,
            `timeout` when the outcome is unknown.

        Raises:
            ValueError: a malformed endpoint (checked here, before anything is sent).
            ClientTimeout: the reply was lost: the outcome is unknown (not retried; see
                the module doc).
        """
        check_endpoint(peer)
        check_endpoint(client_endpoint)
        fields: dict[str, Any] = {"id": node_id, "peer": peer, "client_endpoint": client_endpoint}
        if learner:
            fields["learner"] = True
        if public_key is not None:
            fields["public_key"] = public_key
        return self.request("add_member", **fields)

    def promote(self, node_id: str) -> Reply:
        """Make the learner `node_id` a voter. Answered once the change is applied.

        A learner whose log is still behind is refused with `unavailable`, which this
        client retries until the deadline (nothing was changed).

        Raises:
            ClientTimeout: the reply was lost: the outcome is unknown (see `add_member`).
        """
        return self.request("promote_member", id=node_id)

    def remove(self, node_id: str) -> Reply:
        """Remove `node_id` (voter or learner) from the cluster; it may be the leader.

        Answered once the change is applied. The removed node keeps running (stop it
        yourself) and answers everything but `status` and `members` with `unavailable`.

        Raises:
            ClientTimeout: the reply was lost: the outcome is unknown (see `add_member`).
        """
        return self.request("remove_member", id=node_id)

    def transfer_leader(self, node_id: str | None = None) -> Reply:
        """Hand leadership to the voter `node_id` (default: the most up-to-date voter).

        Answered once the target leads: `reply.raw["transferred_to"]` names it.

        Raises:
            ClientTimeout: the reply was lost: the outcome is unknown (see `add_member`).
        """
        fields = {} if node_id is None else {"id": node_id}
        return self.request("transfer_leader", **fields)

    # --- node-addressed ops ---------------------------------------------------------------

    def snapshot(self, node: str | None = None) -> Reply:
        """Ask one node to take a snapshot now; the reply comes once the file is durable.

        `reply.raw["snapshot"]` is `{"index": N, "size_bytes": B}`, with `size_bytes` None
        when nothing was applied since the node's newest snapshot (no new file).

        The request goes to that node only, in one attempt: a snapshot is about the node
        addressed, so another node's answer would be wrong, and whatever the node answers
        (an error included) is returned as is.

        Args:
            node: a node id this client knows (`node_endpoints`) or one of its endpoints;
                None only when the client has exactly one endpoint.

        Raises:
            ValueError: `node` is unknown, or None with several endpoints.
            ClientTimeout: no reply within the deadline (the outcome is unknown: the node
                may still finish the snapshot).
            ClientError: the client is closed.
        """
        return self._request_at(self._endpoint_of(node), "snapshot")

    def _endpoint_of(self, node: str | None) -> str:
        """The endpoint a node-addressed request goes to (see `snapshot`)."""
        if node is None:
            if len(self._endpoints) != 1:
                raise ValueError("name the node: this client has several endpoints")
            return self._endpoints[0]
        if node in self._node_endpoints:
            return self._node_endpoints[node]
        if node in self._endpoints:
            return node
        known = ", ".join(sorted(self._node_endpoints)) or "none"
        raise ValueError(f"unknown node {node!r} (known ids: {known}; or give an endpoint)")

    def _request_at(self, endpoint: str, op: str, **fields: Any) -> Reply:
        """One attempt of `op` at `endpoint`, waiting up to the whole deadline; no failover."""
        if self._closed:
            raise ClientError("the client is closed")
        raw = self._attempt(endpoint, wire.encode_request(op, **fields), self._timeout)
        if isinstance(raw, str):
            raise ClientTimeout(
                f"{op}: {endpoint}: {raw}; the outcome is unknown (not retried)",
                self._timeout,
                [(endpoint, raw)],
            )
        return Reply.from_map(raw, endpoint)

    # --- the generic request ------------------------------------------------------------

    def request(self, op: str, **fields: Any) -> Reply:
        """Send one request and wait for its reply, retrying as the module doc describes.

        Writes get the session fields `client` and `seq` unless the caller passes them.

        Args:
            op: an op of `wire.ops.OPS` (or an alias such as `del`).
            fields: the request's fields (DESIGN.md §2); str keys and values are sent as
                str and stored UTF-8 encoded.

        Returns:
            The reply. With `ok` False, `error_code` says why; a retryable error
            (`unavailable`, `not_leader`) is returned when it was still the answer at the
            deadline.

        Raises:
            ValueError: an unknown op or field.
            ClientTimeout: no reply within the deadline (or, for an admin op, its one
                attempt got no reply: its outcome is unknown).
            ClientError: the client is closed.
        """
        if self._closed:
            raise ClientError("the client is closed")
        spec = ops.lookup(op)
        if spec is None:
            raise ValueError(f"unknown op {op!r}; known ops: {', '.join(sorted(ops.OPS))}")
        op = spec.name
        if spec.has_session and "client" not in fields and "seq" not in fields:
            # A new write takes the next seq; its retries below reuse the same frame.
            fields = {**fields, "client": self._client_id, "seq": self._next_seq}
            frame = wire.encode_request(op, **fields)
            self._next_seq += 1
        else:
            frame = wire.encode_request(op, **fields)
        return self._exchange(frame, op=op, retry_lost=spec.retry in _RETRY_LOST)

    def _exchange(self, frame: bytes, *, op: str, retry_lost: bool) -> Reply:
        """Send `frame` to one endpoint after another until a usable reply or the deadline."""
        deadline = time.monotonic() + self._timeout
        attempts: list[tuple[str, str]] = []
        last_error: Reply | None = None
        error_streak = 0  # consecutive retryable error replies, for the back-off
        refused: dict[str, str] = {}  # endpoints whose handshake failed during this request
        backoff = _BACKOFF_FIRST_S
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                if last_error is not None:
                    return last_error
                raise self._timeout_error(op, attempts)
            endpoint = self._endpoints[self._current]
            # An op that may not be re-sent gets the whole rest of the deadline: moving
            # on after a partial wait would leave its outcome unknown needlessly.
            wait = min(remaining, self._attempt_timeout) if retry_lost else remaining
            raw = self._attempt(endpoint, frame, wait)
            if isinstance(raw, str):  # no usable reply: the outcome text
                attempts.append((endpoint, raw))
                if raw.startswith(_REFUSED):
                    refused[endpoint] = raw.removeprefix(_REFUSED)
                    if refused.keys() >= set(self._endpoints):
                        raise self._auth_error(op, refused)
                if not retry_lost and not raw.startswith(_UNSENT):
                    raise ClientTimeout(
                        f"{op}: {endpoint}: {raw}; the outcome is unknown (not retried)",
                        self._timeout,
                        attempts,
                    )
                self._advance()
                if retry_lost:
                    continue  # the attempt itself waited; no back-off needed
                error_streak += 1  # never sent (refused at once): pace it like an error
            else:
                reply = Reply.from_map(raw, endpoint)
                if reply.error_code not in RETRYABLE_ERRORS:
                    self._prefer_leader(reply.leader)
                    return reply
                attempts.append((endpoint, f"{reply.error_code}: {reply.error_message}"))
                last_error = reply
                error_streak += 1
                if not self._prefer_leader(reply.leader, exclude=endpoint):
                    self._advance()
            if error_streak >= len(self._endpoints):
                # Every node said "not here": wait a little (a poll, not a sleep) so an
                # election can finish instead of spinning on fast error replies.
                wait = min(backoff, deadline - time.monotonic())
                if wait > 0:
                    self._socket(endpoint).poll(int(wait * 1000), zmq.POLLIN)
                backoff = min(backoff * 2, _BACKOFF_MAX_S)
                error_streak = 0

    def _attempt(self, endpoint: str, frame: bytes, wait_s: float) -> dict[str, Any] | str:
        """One send and bounded wait on `endpoint`: the decoded reply, or why there is none.

        On any failure the endpoint's socket is closed (a REQ socket whose reply is
        missing cannot send again), so the next attempt there starts clean.
        """
        sock = self._socket(endpoint)
        monitor = self._monitors[endpoint]
        self._read_monitor(endpoint)
        if endpoint in self._refused:
            return _REFUSED + self._refused[endpoint]
        if endpoint in self._down and not self._down.issuperset(self._endpoints):
            return _UNSENT + "not connected"  # it went away and has not come back
        ok = False
        try:
            try:
                sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                return _UNSENT + "cannot send (queue full)"
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
            deadline = time.monotonic() + wait_s
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return f"no reply within {wait_s:.1f} s"
                ready = dict(poller.poll(max(1, int(remaining * 1000))))
                if sock in ready:
                    break
                if monitor in ready:
                    self._read_monitor(endpoint)
                    if endpoint in self._refused:
                        return _REFUSED + self._refused[endpoint]
                    if endpoint in self._down and endpoint not in self._connected:
                        # This socket never connected: the request is still queued here.
                        return _UNSENT + "connection refused"
                    if endpoint in self._down:
                        return "connection lost"
            buf = sock.recv(zmq.NOBLOCK)
            try:
                reply = wire.decode_reply(buf)
            except wire.DecodeError as exc:
                return f"malformed reply ({exc.reason})"
            ok = True
            return reply
        finally:
            # Also on KeyboardInterrupt: never leave a REQ socket waiting for a reply.
            if not ok:
                self._drop_socket(endpoint)

    def _timeout_error(self, op: str, attempts: Sequence[tuple[str, str]]) -> ClientTimeout:
        tried = "; ".join(f"{ep}: {outcome}" for ep, outcome in _last_per_endpoint(attempts))
        return ClientTimeout(
            f"{op}: no reply within {self._timeout:g} s from {', '.join(self._endpoints)}"
            f" ({len(attempts)} attempts; last outcome per endpoint: {tried or 'none'})",
            self._timeout,
            attempts,
        )

    def _auth_error(self, op: str, refused: Mapping[str, str]) -> ClientAuthError:
        refusals = [(ep, refused[ep]) for ep in self._endpoints]
        detail = "; ".join(f"{ep}: {why}" for ep, why in refusals)
        return ClientAuthError(
            f"{op}: authentication failed at every node ({detail}); check the client key "
            f"(--key, {security.ENV_CLIENT_KEY}, [client] secret_key_file), that the "
            "cluster admits it ([[client_key]]), and that both sides use the same security",
            refusals,
        )

    def _advance(self) -> None:
        self._current = (self._current + 1) % len(self._endpoints)

    def _prefer_leader(self, leader: str | None, exclude: str | None = None) -> bool:
        """Send the next request to `leader`'s endpoint when known: it saves a forward hop.

        Returns whether the preferred endpoint changed to it.
        """
        endpoint = self._node_endpoints.get(leader) if leader else None
        if endpoint is None or endpoint == exclude:
            return False
        index = self._endpoints.index(endpoint)
        changed = index != self._current
        self._current = index
        return changed

    # --- sockets ------------------------------------------------------------------------

    def _socket(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = self._sockets.get(endpoint)
        if sock is None:
            sock = self._context.socket(zmq.REQ)
            sock.linger = 0
            if self._curve is not None:
                self._curve.apply(sock, endpoint)
            self._monitors[endpoint] = sock.get_monitor_socket(_MONITOR_EVENTS)
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                self._close_pair(sock, self._monitors.pop(endpoint))
                raise ValueError(f"cannot connect to {endpoint!r}: {exc}") from exc
            self._sockets[endpoint] = sock
        return sock

    def _read_monitor(self, endpoint: str) -> None:
        """Apply every pending connect/disconnect event of `endpoint` to `_down`."""
        monitor = self._monitors[endpoint]
        while monitor.poll(0, zmq.POLLIN):
            event = recv_monitor_message(monitor)["event"]
            if event in _HANDSHAKE_EVENTS and _final(event, self._curve is not None):
                # Final: libzmq will not try this connection again. The socket is dropped
                # after the attempt, so a later request (a fixed config) starts afresh.
                self._refused[endpoint] = _HANDSHAKE_EVENTS[event]
            elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CONNECT_RETRIED):
                self._down.add(endpoint)  # lost, or refused (nothing listens there)
            elif event == zmq.EVENT_CONNECTED:
                self._down.discard(endpoint)
                self._connected.add(endpoint)

    @staticmethod
    def _close_pair(sock: zmq.Socket[bytes], monitor: zmq.Socket[bytes]) -> None:
        sock.disable_monitor()
        monitor.close(linger=0)
        sock.close(linger=0)

    def _drop_socket(self, endpoint: str) -> None:
        sock = self._sockets.pop(endpoint, None)
        if sock is not None:
            self._close_pair(sock, self._monitors.pop(endpoint))
            self._down.discard(endpoint)  # a new socket starts with a new connection
            self._refused.pop(endpoint, None)
            self._connected.discard(endpoint)

    def close(self) -> None:
        """Close every socket (and the context, if the client made it). Idempotent."""
        if self._closed:
            return
        self._closed = True
        for endpoint in list(self._sockets):
            self._drop_socket(endpoint)
        if self._own_context:
            self._context.term()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _last_per_endpoint(attempts: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    last: dict[str, str] = {}
    for endpoint, outcome in attempts:
        last[endpoint] = outcome
    return list(last.items())


@dataclass(frozen=True, slots=True)
class StatusProbe:
    """The answer of one node to a status probe.

    Attributes:
        endpoint: the node's client endpoint.
        reply: the reply, or None when the node did not answer in time.
        problem: why there is no reply ("no reply within 1.0 s", "malformed reply ..."),
            None when there is one.
    """

    endpoint: str
    reply: Reply | None
    problem: str | None = None

    @property
    def reachable(self) -> bool:
        """Whether the node answered."""
        return self.reply is not None


def probe_status(
    endpoints: Sequence[str],
    *,
    timeout: float = 1.0,
    context: zmq.Context[Any] | None = None,
    curve: ClientCurve | None = None,
) -> list[StatusProbe]:
    """Ask every endpoint for its `status` at once and wait at most `timeout` in all.

    Unlike `Client.status`, which asks whichever node answers, this asks each node
    individually and never retries: a node that does not answer in time is unreachable,
    and one that refuses the security handshake says so at once (`problem` starts with
    "refused: ").

    Returns:
        One probe per endpoint, in the order given.

    Raises:
        ValueError: a malformed endpoint.
    """
    for endpoint in endpoints:
        check_endpoint(endpoint)
    own = context is None
    ctx: zmq.Context[Any] = zmq.Context() if context is None else context
    frame = wire.encode_request("status")
    sockets: dict[zmq.Socket[bytes], str] = {}
    monitors: dict[zmq.Socket[bytes], zmq.Socket[bytes]] = {}  # monitor -> its socket
    results: dict[str, StatusProbe] = {}
    try:
        poller = zmq.Poller()
        for endpoint in dict.fromkeys(endpoints):
            sock = ctx.socket(zmq.REQ)
            sock.linger = 0
            sockets[sock] = endpoint
            if curve is not None:
                curve.apply(sock, endpoint)
            monitor = sock.get_monitor_socket(_MONITOR_EVENTS)
            monitors[monitor] = sock
            sock.connect(endpoint)
            sock.send(frame, zmq.NOBLOCK)
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor, zmq.POLLIN)
        deadline = time.monotonic() + timeout
        while len(results) < len(sockets):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for ready, _ in poller.poll(max(1, int(remaining * 1000))):
                if ready in monitors:
                    event = recv_monitor_message(ready)["event"]
                    endpoint = sockets[monitors[ready]]
                    if _final(event, curve is not None) and endpoint not in results:
                        problem = _REFUSED + _HANDSHAKE_EVENTS[event]
                        results[endpoint] = StatusProbe(endpoint, None, problem)
                        poller.unregister(monitors[ready])
                    continue
                endpoint = sockets[ready]
                poller.unregister(ready)
                try:
                    reply = Reply.from_map(wire.decode_reply(ready.recv(zmq.NOBLOCK)), endpoint)
                    results[endpoint] = StatusProbe(endpoint, reply)
                except wire.DecodeError as exc:
                    results[endpoint] = StatusProbe(endpoint, None, f"malformed reply ({exc})")
    finally:
        for sock in sockets:
            sock.disable_monitor()
        for monitor in monitors:
            monitor.close(linger=0)
        for sock in sockets:
            sock.close(linger=0)
        if own:
            ctx.term()
    missing = f"no reply within {timeout:g} s"
    return [results.get(e) or StatusProbe(e, None, missing) for e in endpoints]
