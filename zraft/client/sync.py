"""The zraft client library's ZeroMQ driver: `Client`, requests with a deadline, failover
and safe retries.

A `Client` talks to the nodes' client endpoints with the protocol of DESIGN.md §2 (one
msgpack map per request, one per reply, over ZeroMQ REQ sockets). Any node accepts any
request, so the client needs no leader discovery; it only has to survive lost replies and
dead nodes. Every decision (which endpoint next, how long to wait, whether an outcome is
the answer, a retry or a failure, the session's seq) is made by the pure policy in
`zraft.client.policy`; this module carries it out, in the "Lazy Pirate" way:

- one REQ socket per endpoint, LINGER=0; after a send it polls for the reply until the
  attempt's deadline, never blocking without a timeout and never sleeping;
- a REQ socket whose reply was lost is stuck (it may not send again), so on an attempt
  timeout the socket is closed and the next attempt goes to the next endpoint on a new one;
- a monitor per socket reports connects, disconnects and refused handshakes to the
  policy (`zraft.client.monitor`), so a killed node is left at once, not after a timeout.

Rules it keeps (the policy's module doc has the full table):

- **Writes are retried only inside a session.** Every write (`put`, `delete`,
  `delete_range`, `cas`, `txn`, `compact`) carries `client` (a random id per `Client`,
  unless given) and `seq`; a retry reuses its `seq`, and the server's session table
  (`zraft.state.sessions`) applies a `(client, seq)` pair at most once. Reads (`get`,
  `range`) and local ops (`status`, `members`) are retried freely.
- **Admin ops are never re-sent after an ambiguous outcome.** Membership and leadership
  changes carry no session, and a change that was made answers a repeat with an error
  (`bad_request` "already a learner"). They are retried only when nothing can have
  happened: an `unavailable` or `not_leader` answer, or an attempt that never sent the
  request (the node was known to be down, or refused the connection). Each attempt waits
  for the rest of the deadline; a reply lost after sending raises `ClientTimeout` saying
  that the outcome is unknown, and a `timeout` answer is returned as is: either way the
  caller should look (`members`) before trying again. `conflict` is returned, not retried.
- **Node-addressed ops go to that node only.** `snapshot(node)` is about the node named:
  one attempt there, never a failover to another node, whatever the answer.
- **Bounded waits.** Every call returns or raises within `timeout` seconds (plus the time
  of one socket close). Back-off between rounds of error replies is a poll with a timeout.
- A `Client` is not thread-safe: use one per thread (ZeroMQ sockets are not either).

The key-value methods (one per store op, python-etcd3-familiar, the raw lease ops
included) are in `zraft.client.kvmethods`; they only build requests for `Client.request`.
`Client.lease` grants a lease and returns a `zraft.client.leases.Lease`, whose keepalive
thread uses a client of its own (`clone`); `close` stops those threads first.

This module must not decide anything itself: a rule about retries, endpoints or sessions
belongs in the policy, where a second driver (an asyncio client) finds it too.
"""

from __future__ import annotations

import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq

from zraft import config as _config
from zraft import wire
from zraft.client.clustermethods import ClusterMethods
from zraft.client.connections import Connections
from zraft.client.kvmethods import KeyValueMethods
from zraft.client.leases import KeepAlives, Lease, LeaseError, LostCallback, check_interval
from zraft.client.locks import CoordinationMethods
from zraft.client.policy import (
    DEFAULT_TIMEOUT_S,
    RESEND_AFTER_LOST_REPLY,
    ClientPolicy,
    Exchange,
    Finish,
    NoReply,
    Pause,
    Send,
    leader_to_ask,
    members_answer,
)
from zraft.client.reply import ClientError, ClientTimeout, Reply, timeout_error
from zraft.client.txn import Key
from zraft.client.watch import DEFAULT_WAIT_S, ErrorCallback, EventCallback, Watch, WatchCursor
from zraft.net import security
from zraft.net.security import ClientCurve
from zraft.wire import ops


def arguments_from_config(
    path: Path | str, timeout: float | None, key_file: Path | str | None, kwargs: dict[str, Any]
) -> dict[str, Any]:
    """A client's constructor arguments for every node of a cluster configuration file
    (`Client.from_config`, `AsyncClient.from_config`): its endpoints and node ids, the
    timeout (default the cluster's request timeout + 1 s), the CURVE keys, and `kwargs`.

    Raises:
        ConfigError, SecurityError: as `Client.from_config`.
    """
    cluster = _config.load(path)
    if "curve" not in kwargs:
        kwargs = {**kwargs, "curve": security.client_curve(cluster, key_file)}
    return {
        "endpoints": [node.client for node in cluster.nodes],
        "timeout": cluster.request_timeout_ms / 1000 + 1.0 if timeout is None else timeout,
        "node_endpoints": {node.id: node.client for node in cluster.nodes},
        **kwargs,
    }


class Client(KeyValueMethods, ClusterMethods, CoordinationMethods):
    """A connection to a zraft cluster through the client endpoints of its nodes.

    The store's ops (`put`, `get`, `range`, `delete_range`, `transaction`, `compact`, ...)
    come from `KeyValueMethods` (`zraft.client.kvmethods`), the membership and leadership
    ops from `ClusterMethods` (`zraft.client.clustermethods`); this class carries them out.

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
        self._policy = ClientPolicy(
            endpoints,
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            client_id=client_id,
            first_seq=first_seq,
            node_endpoints=node_endpoints,
        )
        self._own_context = context is None
        self._context: zmq.Context[Any] = zmq.Context() if context is None else context
        self._connections = Connections(self._context, curve, self._policy)
        self._closed = False
        self._curve = curve
        self._attempt_timeout = attempt_timeout  # as given: `clone` passes it on
        self._keepalives = KeepAlives()
        self._watches: weakref.WeakSet[Watch] = weakref.WeakSet()  # with a callback thread

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
        return cls(**arguments_from_config(path, timeout, key_file, kwargs))

    # --- properties -------------------------------------------------------------------

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints this client may use, in preference order at construction."""
        return self._policy.endpoints

    @property
    def client_id(self) -> str:
        """The session id carried by this client's writes."""
        return self._policy.session.client_id

    @property
    def next_seq(self) -> int:
        """The seq the next new write will carry."""
        return self._policy.session.next_seq

    @property
    def timeout(self) -> float:
        """The overall deadline of one request, in seconds."""
        return self._policy.timeout

    @property
    def keepalives(self) -> KeepAlives:
        """The leases whose keepalive thread this client started (`close` stops them)."""
        return self._keepalives

    @property
    def policy(self) -> ClientPolicy:
        """The policy that makes this client's decisions (read it; do not drive it)."""
        return self._policy

    # --- the node's own view ---------------------------------------------------------

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
        endpoint = leader_to_ask(reply) if match_from_leader else None
        if endpoint is None:
            return reply
        frame = wire.encode_request("members")
        raw = self._connections.attempt(endpoint, frame, self._policy.attempt_timeout)
        if isinstance(raw, NoReply):
            return reply
        return members_answer(reply, Reply.from_map(raw, endpoint))

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
        endpoint = self._policy.endpoint_of(node)
        if self._closed:
            raise ClientError("the client is closed")
        return self._run(self._policy.begin_at(endpoint, "snapshot", {}, time.monotonic()))

    # --- leases (issue 14) -----------------------------------------------------------------

    def lease(
        self,
        ttl: int,
        *,
        lease_id: int = 0,
        keepalive: bool = False,
        on_lost: LostCallback | None = None,
        interval: float | None = None,
    ) -> Lease:
        """Grant a lease of `ttl` seconds and return it as a `Lease`.

        `with client.lease(10, keepalive=True) as lease:` keeps it alive for the block
        and revokes it at the end (see `zraft.client.leases`).

        Args:
            ttl: seconds it lives without a keepalive (the cluster's minimum is 1.5
                election timeouts, rounded up to a second).
            lease_id: the id to give it; 0, the default: the cluster picks one.
            keepalive: start its keepalive thread at once (`Lease.start_keepalive`).
            on_lost: called as `on_lost(lease, reason)` once the lease is found lost.
            interval: seconds between keepalives (default TTL / 3).

        Raises:
            LeaseError: the cluster refused the grant (`bad_request`: a TTL out of range,
                or an id in use); `error.reply` is its answer.
            ValueError: a TTL, id or interval that is not one (nothing is sent).
            ClientTimeout: no node answered within the deadline.
        """
        if type(ttl) is not int or ttl < 1:
            raise ValueError(f"ttl must be an int >= 1 (seconds), got {ttl!r}")
        check_interval(interval, ttl)  # before the grant: no lease left without a handle
        sent = time.monotonic()
        reply = self.lease_grant(ttl, lease_id)
        if not reply.ok or reply.lease is None:
            message = f"lease_grant: {reply.error_code}: {reply.error_message}"
            raise LeaseError(message, lease_id, reply)
        lease = Lease(self, reply.lease, reply.ttl or ttl, acked_at=sent, on_lost=on_lost)
        if keepalive:
            lease.start_keepalive(interval)
        return lease

    # --- watches (issue 15) ----------------------------------------------------------------

    def watch(
        self,
        key: Key,
        range_end: Key | None = None,
        *,
        prefix: bool = False,
        start_revision: int | None = None,
        prev_kv: bool = False,
        filters: Sequence[str] = (),
        max_events: int | None = None,
        require_leader: bool = True,
        wait_s: float = DEFAULT_WAIT_S,
        node: str | None = None,
        callback: EventCallback | None = None,
        on_error: ErrorCallback | None = None,
    ) -> Watch:
        """Watch a key or range: iterate the returned `Watch` for its events (or pass
        `callback` to have a thread of its own call it); `zraft.client.watch` says how it
        resumes, where it starts and how it ends.

        Args:
            key, range_end, prefix: the range, as `range`.
            start_revision: None (default): after a linearizable read of the range; 0: after
                the answering node's current revision; N: from N on, N's changes included.
            prev_kv: events carry the record each change replaced.
            filters: `noput` and/or `nodelete`: leave those events out.
            max_events: events per poll at most (the node's default: 1,000).
            require_leader: move on from a node that has no leader (default).
            wait_s: how long a node holds one poll without news.
            node: the node (id) or endpoint to watch from first (default: the first).
            callback, on_error: see `Watch.start`; `close` stops the thread.

        Raises:
            ValueError: a bad range, revision, wait or node.
        """
        endpoints = list(self.endpoints)
        if node is not None:
            first = node if node in endpoints else self._policy.endpoint_of(node)
            at = endpoints.index(first)
            endpoints = endpoints[at:] + endpoints[:at]
        cursor = WatchCursor(
            endpoints,
            key,
            range_end=range_end,
            prefix=prefix,
            start_revision=start_revision,
            prev_kv=prev_kv,
            filters=filters,
            max_events=max_events,
            require_leader=require_leader,
            wait_s=wait_s,
        )
        running = Watch(self, cursor)
        if callback is not None:
            self._watches.add(running)
            running.start(callback, on_error)
        return running

    def clone(
        self, *, timeout: float | None = None, attempt_timeout: float | None = None
    ) -> Client:
        """A new client of the same cluster, for another thread: the same endpoints,
        timeouts (unless given), node endpoints and keys, with a session and a ZeroMQ
        context of its own.

        Raises:
            ClientError: this client is closed.
        """
        if self._closed:
            raise ClientError("the client is closed")
        return Client(
            self.endpoints,
            timeout=self.timeout if timeout is None else timeout,
            attempt_timeout=self._attempt_timeout if attempt_timeout is None else attempt_timeout,
            node_endpoints=self._policy.rotation.node_endpoints,
            curve=self._curve,
        )

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
            ClientAuthError: every endpoint refused this client's security handshake.
            ClientError: the client is closed.
        """
        if self._closed:
            raise ClientError("the client is closed")
        return self._run(self._policy.begin(op, fields, time.monotonic()))

    def request_within(self, seconds: float, op: str, **fields: Any) -> Reply:
        """`request`, giving up after `seconds` (when shorter than the client's timeout).

        For an op that may be re-sent after a lost reply (`Retry.ALWAYS` or `SESSION`):
        the keepalive of a lease must not wait past the lease's deadline.

        Raises:
            ValueError: `seconds` <= 0, an op that may not be re-sent, or as `request`.
            ClientTimeout: no usable reply within `seconds` (or the timeout).
            ClientAuthError, ClientError: as `request`.
        """
        spec = ops.lookup(op)
        if spec is not None and spec.retry not in RESEND_AFTER_LOST_REPLY:
            raise ValueError(f"{op!r} may not be re-sent after a lost reply: use request")
        if not seconds > 0:
            raise ValueError("seconds must be > 0")
        if self._closed:
            raise ClientError("the client is closed")
        now = time.monotonic()
        exchange = self._policy.begin(op, fields, now)
        if seconds >= self._policy.timeout:
            return self._run(exchange)
        exchange.deadline = now + seconds  # the policy's retries all stop there
        try:
            return self._run(exchange)
        except ClientTimeout as exc:  # the deadline's (no other for these ops): say which
            shown = round(seconds, 2)
            raise timeout_error(exchange.op, shown, self.endpoints, exc.attempts) from None

    def request_at(
        self, endpoint: str, op: str, *, interrupt: Callable[[], bool] | None = None, **fields: Any
    ) -> Reply:
        """One attempt of `op` at `endpoint` (one of this client's), waiting up to the
        timeout for whatever that node answers; no session is attached.

        Args:
            interrupt: looked at while waiting; once it returns True the attempt ends
                with `Interrupted` (another thread cancelling a watch).

        Raises:
            ValueError: an unknown op or field, or an endpoint this client does not use.
            ClientTimeout: no reply (its outcome is unknown); Interrupted; ClientError:
                the client is closed.
        """
        if endpoint not in self.endpoints:
            raise ValueError(f"{endpoint!r} is not one of this client's endpoints")
        if self._closed:
            raise ClientError("the client is closed")
        exchange = self._policy.begin_at(endpoint, op, fields, time.monotonic())
        return self._run(exchange, interrupt)

    def _run(self, exchange: Exchange, interrupt: Callable[[], bool] | None = None) -> Reply:
        """Carry out `exchange`'s steps until it finishes: the driver's whole loop."""
        last: str | None = None  # the endpoint of the latest attempt
        while True:
            step = exchange.next_step(time.monotonic())
            if isinstance(step, Send):
                last = step.endpoint
                outcome = self._connections.attempt(
                    step.endpoint, exchange.frame, step.wait_s, interrupt
                )
                if isinstance(outcome, NoReply):
                    exchange.failed(outcome)
                else:
                    exchange.received(outcome)
            elif isinstance(step, Pause):
                if last is not None:  # a pause always follows an attempt
                    self._connections.pause(last, step.wait_s)
            elif isinstance(step, Finish):
                return step.reply
            else:
                raise step.error

    def close(self) -> None:
        """Stop the keepalive threads of this client's leases (waiting for each), then
        close every socket (and the context, if the client made it). Idempotent."""
        if self._closed:
            return
        self._keepalives.stop_all()
        for running in list(self._watches):
            running.close()
        self._closed = True
        self._connections.close()
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
