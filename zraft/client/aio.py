"""The asyncio client: `AsyncClient`, the sync `Client`'s twin on pyzmq's asyncio support.

It shares everything that is not I/O with the sync client: the store's and the cluster's
methods (`KeyValueMethods`, `ClusterMethods`: here each returns an awaitable `Reply`), the
pure policy (`ClientPolicy`: endpoints, rotation, deadlines, retries by each op's `Retry`,
the meaning of every outcome), the monitor events, the replies and errors, and a watch's
resume logic (`WatchCursor`). What it adds is the driver:

- **Many tasks, one client.** A REQ socket carries one request at a time, so each
  endpoint has a pool of them (and a monitor each, read while waiting, so a node that
  dies ends the attempt at once, as in the sync client); a request takes a free socket or
  opens one. A write takes a *session* of its own from a pool for as long as it runs: a
  session's writes must not overlap (the node remembers one seq per session), so
  concurrent writes use distinct sessions, each still exactly-once across retries.
- **Watches** are async iterators (`async for event in client.watch(...)`), with the sync
  watch's guarantees; `cancel()` or cancelling the iterating task ends one.
- **Leases** keep themselves alive in a task (`await client.lease(ttl, keepalive=True)`),
  and say when they are lost (`lease.lost`, an `asyncio.Event`, and `on_lost`).

Everything runs in the event loop's thread; a client belongs to one loop. `close()` (or
leaving `async with`) stops its lease tasks and closes every socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import zmq
import zmq.asyncio

from zraft.client.aioconnections import AsyncConnections
from zraft.client.aioleases import AsyncLease
from zraft.client.aiolocks import AsyncCoordinationMethods
from zraft.client.aiowatch import AsyncWatch
from zraft.client.clustermethods import ClusterMethods
from zraft.client.kvmethods import KeyValueMethods
from zraft.client.leases import LeaseError
from zraft.client.policy import (
    DEFAULT_TIMEOUT_S,
    ClientPolicy,
    Exchange,
    Finish,
    NoReply,
    Pause,
    Send,
    Session,
)
from zraft.client.reply import ClientError, Reply
from zraft.client.sync import arguments_from_config
from zraft.client.txn import Key, as_lease_id
from zraft.client.watch import DEFAULT_WAIT_S, WatchCursor
from zraft.net.security import ClientCurve
from zraft.wire import ops


class AsyncClient(KeyValueMethods, ClusterMethods, AsyncCoordinationMethods):
    """A connection to a zraft cluster for asyncio programs (see the module doc).

    Its arguments are the sync `Client`'s (`zraft.client.sync.Client`): `endpoints`,
    `timeout`, `attempt_timeout`, `node_endpoints`, `curve`, and `client_id` (the prefix
    of its sessions' ids). Each method of the store and the cluster returns an awaitable
    `Reply`: `reply = await client.put("k", "v")`.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        attempt_timeout: float | None = None,
        client_id: str | None = None,
        node_endpoints: Mapping[str, str] | None = None,
        curve: ClientCurve | None = None,
    ) -> None:
        self._policy = ClientPolicy(
            endpoints,
            timeout=timeout,
            attempt_timeout=attempt_timeout,
            client_id=client_id,
            node_endpoints=node_endpoints,
        )
        self._context = zmq.asyncio.Context()
        self._connections = AsyncConnections(self._context, curve, self._policy)
        self._sessions: list[Session] = []  # free ones; a write holds one while it runs
        self._session_count = 0
        self._curve = curve
        self._attempt_timeout = attempt_timeout
        self._leases: set[AsyncLease] = set()
        self._closed = False

    @classmethod
    def from_config(
        cls,
        path: Path | str,
        *,
        timeout: float | None = None,
        key_file: Path | str | None = None,
        **kwargs: Any,
    ) -> AsyncClient:
        """A client for every node of a cluster configuration file (as `Client.from_config`)."""
        return cls(**arguments_from_config(path, timeout, key_file, kwargs))

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints this client may use, in preference order at construction."""
        return self._policy.endpoints

    @property
    def policy(self) -> ClientPolicy:
        """The policy that makes this client's decisions (read it; do not drive it)."""
        return self._policy

    # --- requests ---------------------------------------------------------------------------

    async def request(self, op: str, **fields: Any) -> Reply:  # type: ignore[override]
        """Send one request and wait for its reply, retried as the sync client does.

        Raises:
            ValueError: an unknown op or field. ClientTimeout, ClientAuthError,
            ClientError: as `Client.request`.
        """
        self._check_open()
        spec = ops.lookup(op)
        session = None
        if spec is not None and spec.has_session and "client" not in fields:
            session = self._session()
            fields = {**fields, **session.peek()}
        try:
            exchange = self._policy.begin(op, fields, time.monotonic())
            if session is not None:
                session.take()  # the frame is good: its seq is used up
            return await self._run(exchange)
        finally:
            if session is not None:
                self._sessions.append(session)

    async def request_at(self, endpoint: str, op: str, **fields: Any) -> Reply:
        """One attempt of `op` at `endpoint`, as `Client.request_at`."""
        if endpoint not in self.endpoints:
            raise ValueError(f"{endpoint!r} is not one of this client's endpoints")
        self._check_open()
        return await self._run(self._policy.begin_at(endpoint, op, fields, time.monotonic()))

    async def request_within(self, seconds: float, op: str, **fields: Any) -> Reply:
        """`request`, giving up after `seconds` (ops that may be re-sent only)."""
        spec = ops.lookup(op)
        if spec is None or spec.has_session or not seconds > 0:
            raise ValueError("request_within takes seconds > 0 and an op without a session")
        self._check_open()
        exchange = self._policy.begin(op, fields, time.monotonic())
        exchange.deadline = min(exchange.deadline, time.monotonic() + seconds)
        return await self._run(exchange)

    async def _run(self, exchange: Exchange) -> Reply:
        while True:
            step = exchange.next_step(time.monotonic())
            if isinstance(step, Send):
                outcome = await self._connections.attempt(
                    step.endpoint, exchange.frame, step.wait_s
                )
                if isinstance(outcome, NoReply):
                    exchange.failed(outcome)
                else:
                    exchange.received(outcome)
            elif isinstance(step, Pause):
                await asyncio.sleep(step.wait_s)
            elif isinstance(step, Finish):
                return step.reply
            else:
                raise step.error

    def _session(self) -> Session:
        if self._sessions:
            return self._sessions.pop()
        self._session_count += 1
        return Session()

    def _check_open(self) -> None:
        if self._closed:
            raise ClientError("the client is closed")

    async def status(self) -> Reply:
        """The answering node's own view (`reply.status`)."""
        return await self.request("status")

    # --- watches and leases -------------------------------------------------------------------

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
    ) -> AsyncWatch:
        """Watch a key or range: `async for event in client.watch(...)` (see `Client.watch`
        for every argument and guarantee)."""
        cursor = WatchCursor(
            self.endpoints,
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
        return AsyncWatch(self, cursor)

    async def lease(
        self,
        ttl: int,
        *,
        lease_id: int = 0,
        keepalive: bool = False,
        on_lost: Callable[[AsyncLease, str], None] | None = None,
    ) -> AsyncLease:
        """Grant a lease of `ttl` seconds (see `Client.lease`); `keepalive` starts its task.

        Raises:
            LeaseError: the cluster refused the grant. ValueError: a bad TTL or id.
        """
        if type(ttl) is not int or ttl < 1:
            raise ValueError(f"ttl must be an int >= 1 (seconds), got {ttl!r}")
        sent = time.monotonic()
        fields = {"ttl": ttl, **({"lease": as_lease_id(lease_id)} if lease_id else {})}
        reply = await self.request("lease_grant", **fields)
        if not reply.ok or reply.lease is None:
            raise LeaseError(
                f"lease_grant: {reply.error_code}: {reply.error_message}", lease_id, reply
            )
        lease = AsyncLease(self, reply.lease, reply.ttl or ttl, sent, on_lost)
        if keepalive:
            lease.start_keepalive()
        return lease

    # --- closing ------------------------------------------------------------------------------

    async def close(self) -> None:
        """Stop the lease tasks, close every socket and the context. Idempotent."""
        if self._closed:
            return
        for lease in list(self._leases):
            await lease.stop_keepalive()
        self._closed = True
        self._connections.close()
        self._context.destroy(linger=0)

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()
