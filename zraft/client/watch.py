"""Watches as iterators: every change of a key range, in order, exactly once, resumed by
themselves across lost replies, node deaths and leader changes.

A watch is a series of long polls (`watch` requests, README "Watch"): each asks for the
changes from `next_revision` on and gets them (whole revisions, oldest first) or, after
its wait, none and a later `next_revision`. `WatchCursor` is that series without I/O:
where the watch stands, what the next poll asks and of which node, what a reply means;
`Watch` drives it with a client of its own.

- **No gap, no duplicate.** The cursor asks for `next_revision` and moves it only to the
  `next_revision` of a reply it accepted, after checking the reply's events are at or
  above it, in revision order, below the new one. A poll that fails in any way (lost
  reply, dead node, timeout) is simply asked again, at the next node, from the same
  revision: a node that has not applied that far holds the request until it has.
- **Where it starts.** `start_revision=None` (the default) reads the range once,
  linearizably, and starts after that revision: the watch sees every change made after
  everything acknowledged before `watch()` was called. `start_revision=0` is the
  protocol's "after the answering node's current revision", which on a lagging node can
  be older; any other value starts there (its changes included).
- **Compaction** ends the watch with `Compacted` (its `compact_revision` says the oldest
  revision still watchable minus one): the caller decides how to catch up (read the range,
  then watch from that read's revision + 1).
- **Nodes.** A watch stays with the node that answers it (watches spread over the
  cluster; none needs the leader). It moves to the next endpoint when a poll fails or the
  node answers `unavailable` (`require_leader`, on by default: a node cut off from its
  leader would hold the watch without news), pausing (with back-off) once every endpoint
  has failed in a row. It never gives up by itself: `cancel()` ends it, from any thread,
  within `CANCEL_CHECK_S`.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import TYPE_CHECKING, Any

from zraft.client.policy import RETRYABLE_ERRORS, Backoff
from zraft.client.reply import ClientAuthError, ClientError, KeyValue, Reply
from zraft.client.txn import Key, range_shape

if TYPE_CHECKING:  # annotations only: `sync` imports this module
    from zraft.client.sync import Client

DEFAULT_WAIT_S = 2.0
"""How long a poll is held by a node without news (`wait_ms`)."""

REPLY_MARGIN_S = 1.0
"""How much longer than its wait a poll waits for a reply before trying another node."""

CANCEL_CHECK_S = 0.1
"""How often a poll in progress looks at `cancel()`."""

EventCallback = Callable[["WatchEvent"], None]
ErrorCallback = Callable[[BaseException], None]


class Compacted(ClientError):
    """The watch's next revision is compacted: changes it would deliver are gone.

    Attributes:
        revision: the revision the watch needed next.
        compact_revision: the cluster's compact revision (watchable: above it).
    """

    def __init__(self, revision: int, compact_revision: int) -> None:
        super().__init__(
            f"watch: revision {revision} is compacted (the compact revision is "
            f"{compact_revision}); read the range and watch from its revision + 1"
        )
        self.revision = revision
        self.compact_revision = compact_revision


class WatchError(ClientError):
    """A node refused the watch (`bad_request`, `forbidden`, ...), or answered against
    the protocol (events out of order): `reply` holds its answer, if any."""

    def __init__(self, message: str, reply: Reply | None = None) -> None:
        super().__init__(message)
        self.reply = reply


@dataclass(frozen=True, slots=True)
class WatchEvent:
    """One key's change: `type` is `put` or `delete`; `kv` the key's record after it (a
    delete: the key, `mod_revision` the delete's, the rest 0 or empty); `prev_kv` the
    record it replaced, when the watch asked for it and there was one."""

    type: str
    kv: KeyValue
    prev_kv: KeyValue | None = None

    @property
    def revision(self) -> int:
        """The revision of the change."""
        return self.kv.mod_revision

    @property
    def key(self) -> bytes:
        """The key that changed."""
        return self.kv.key


class WatchCursor:
    """Where a watch stands, what its next poll asks and of which node (no I/O).

    Args:
        endpoints: the nodes' client endpoints, in the order to try them.
        key, range_end, prefix: the range (as `Client.range`; str is sent as UTF-8).
        start_revision: the first revision wanted (see the module doc; None: resolved
            by the driver before the first poll).
        prev_kv, filters, max_events, require_leader, wait_s: as the protocol's fields.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        key: Key,
        *,
        range_end: bytes | None = None,
        prefix: bool = False,
        start_revision: int | None = None,
        prev_kv: bool = False,
        filters: Sequence[str] = (),
        max_events: int | None = None,
        require_leader: bool = True,
        wait_s: float = DEFAULT_WAIT_S,
    ) -> None:
        if not endpoints:
            raise ValueError("a watch needs at least one endpoint")
        if start_revision is not None and (type(start_revision) is not int or start_revision < 0):
            raise ValueError(f"start_revision must be an int >= 0, got {start_revision!r}")
        if not 0 < wait_s <= 60:
            raise ValueError("wait_s must be > 0 and at most 60 seconds")
        self._range = range_shape(key, range_end, prefix=prefix)
        self.endpoints = tuple(endpoints)
        self.next_revision = start_revision
        self._turn = 0  # index of the endpoint in use
        self._failures = 0  # consecutive failed polls
        self._backoff = Backoff()
        self._fields: dict[str, Any] = {**self._range, "wait_ms": int(wait_s * 1000)}
        if prev_kv:
            self._fields["prev_kv"] = True
        if filters:
            self._fields["filters"] = list(filters)
        if max_events is not None:
            self._fields["max_events"] = max_events
        if require_leader:
            self._fields["require_leader"] = True
        self.wait_s = wait_s
        self.pause_s = 0.0
        """How long the driver should pause before the next poll (then reset it to 0)."""

    @property
    def range_fields(self) -> dict[str, Any]:
        """The range's fields (`key`, and `prefix` or `range_end`), for a `range` read."""
        return dict(self._range)

    @property
    def endpoint(self) -> str:
        """The node the next poll goes to."""
        return self.endpoints[self._turn]

    def move_to(self, endpoint: str) -> None:
        """Send the next poll to `endpoint` (one of `endpoints`): nothing is lost or
        repeated, the next poll asks from `next_revision` as always.

        Raises:
            ValueError: not one of the endpoints.
        """
        if endpoint not in self.endpoints:
            raise ValueError(f"{endpoint!r} is not one of the watch's endpoints")
        self._turn = self.endpoints.index(endpoint)

    def fields(self) -> dict[str, Any]:
        """The next poll's fields."""
        if self.next_revision is None:
            raise RuntimeError("resolve the start revision first")
        fields = dict(self._fields)
        if self.next_revision:
            fields["start_revision"] = self.next_revision
        return fields

    def failed(self) -> None:
        """The poll at `endpoint` failed (no reply, or `unavailable`): move to the next
        node, and once every node failed in a row, ask for a pause (`pause_s`)."""
        self._turn = (self._turn + 1) % len(self.endpoints)
        self._failures += 1
        if not self._failures % len(self.endpoints):
            self.pause_s = self._backoff.next()

    def settle(self, reply: Reply | None) -> list[WatchEvent]:
        """What one poll's outcome means: the events of a watch reply (`take`), the start
        fixed by the first read's revision, or (None: no usable reply; a retryable
        refusal) a move to the next node. Drivers call it once per poll.

        Raises:
            WatchError: the first read was refused for good; as `take`.
        """
        resolving = self.next_revision is None
        if reply is not None and not resolving:
            return self.take(reply)
        if reply is not None and reply.ok and reply.revision is not None:
            self.next_revision = reply.revision + 1
        elif reply is not None and reply.error_code not in RETRYABLE_ERRORS:
            raise WatchError(f"watch: reading the start: {reply.error_code}", reply)
        else:
            self.failed()
        return []

    def take(self, reply: Reply) -> list[WatchEvent]:
        """The events of a poll's reply, with the cursor moved past them.

        Raises:
            Compacted: the next revision is compacted.
            WatchError: a refusal other than `unavailable`/`not_leader` (those move the
                cursor to the next node and give no events), or a reply breaking the
                protocol (the cursor does not move then).
        """
        if not reply.ok:
            code = reply.error_code
            if code in ("unavailable", "not_leader", "timeout"):
                self.failed()
                return []
            if code == "compacted":
                compact = reply.compact_revision or 0
                raise Compacted(self.next_revision or 0, compact)
            raise WatchError(f"watch refused: {code}: {reply.error_message}", reply)
        raw_events = reply.raw.get("events")
        after = reply.raw.get("next_revision")
        if not isinstance(raw_events, list) or type(after) is not int:
            raise WatchError("a watch reply without events or next_revision", reply)
        events = [_event(raw, reply) for raw in raw_events]
        floor = self.next_revision or 0
        last = floor
        for event in events:
            if not floor <= last <= event.revision < after:
                raise WatchError(
                    f"watch reply breaks the order: event at revision {event.revision} "
                    f"after {last}, asked from {floor}, next {after}",
                    reply,
                )
            last = event.revision
        if after < floor:
            raise WatchError(f"watch reply moves back from {floor} to {after}", reply)
        self.next_revision = after
        self._failures = 0
        self._backoff.reset()
        return events


def _event(raw: Any, reply: Reply) -> WatchEvent:
    if not isinstance(raw, Mapping) or raw.get("type") not in ("put", "delete"):
        raise WatchError("a malformed watch event", reply)
    kv = KeyValue.from_map(raw.get("kv"))
    if kv is None:
        raise WatchError("a watch event without its kv", reply)
    previous = KeyValue.from_map(raw.get("prev_kv")) if "prev_kv" in raw else None
    return WatchEvent(raw["type"], kv, previous)


class Watch:
    """A running watch: iterate it (`for event in watch`), or `start(callback)` to have a
    thread of its own call back; `cancel()` from any thread ends it (see the module doc).

    Made by `Client.watch`. It polls through a client of its own (`Client.clone`: the
    same endpoints and keys, its own sockets and context), closed when the watch ends.
    """

    def __init__(self, client: Client, cursor: WatchCursor) -> None:
        self.cursor = cursor
        self._client = client.clone(
            timeout=cursor.wait_s + REPLY_MARGIN_S,
            attempt_timeout=cursor.wait_s + REPLY_MARGIN_S,
        )
        self._cancelled = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._iterating = False  # the iterating thread closes the client when it ends
        self.error: BaseException | None = None
        """What ended a callback watch's thread, if not `cancel()`."""

    @property
    def next_revision(self) -> int | None:
        """The revision the watch needs next (every change below it was delivered)."""
        return self.cursor.next_revision

    @property
    def cancelled(self) -> bool:
        """Whether `cancel()` was called."""
        return self._cancelled.is_set()

    def move_to(self, node: str) -> None:
        """Poll `node` (an id the client knows, or an endpoint) from the next poll on, as
        if the current one had failed over: no event is lost or repeated."""
        endpoint = node if node in self.cursor.endpoints else self._client.policy.endpoint_of(node)
        self.cursor.move_to(endpoint)

    def cancel(self) -> None:
        """End the watch (from any thread): the iteration stops within `CANCEL_CHECK_S`."""
        self._cancelled.set()

    def __iter__(self) -> Iterator[WatchEvent]:
        with self._lock:
            if self._iterating:
                raise RuntimeError("this watch is already being iterated")
            self._iterating = True
        try:
            while not self._cancelled.is_set():
                yield from self._poll()
        finally:
            self._client.close()

    def _poll(self) -> list[WatchEvent]:
        """One poll (or, first, the read that fixes the start): its events, if any."""
        cursor, client = self.cursor, self._client
        resolving = cursor.next_revision is None
        reply: Reply | None = None
        try:
            if resolving:
                reply = client.request("range", count_only=True, **cursor.range_fields)
            else:
                reply = client.request_at(
                    cursor.endpoint, "watch", interrupt=self._cancelled.is_set, **cursor.fields()
                )
        except ClientAuthError:
            raise
        except ClientError:  # no usable reply: ask again, at the next node
            if self._cancelled.is_set():
                return []
        events = cursor.settle(reply)
        if cursor.pause_s:
            self._cancelled.wait(cursor.pause_s * (0.5 + random.random()))  # jitter
            cursor.pause_s = 0.0
        return events

    def start(self, callback: EventCallback, on_error: ErrorCallback | None = None) -> Watch:
        """Deliver events to `callback(event)` from a thread of the watch's own; an error
        that ends it (`Compacted`, a refusal, an exception of `callback`) is kept in
        `error` and passed to `on_error`. Returns the watch."""
        if self._thread is not None:
            raise RuntimeError("this watch is already running")

        def run() -> None:
            try:
                for event in self:
                    callback(event)
            except BaseException as exc:  # reported, not lost
                self.error = exc
                if on_error is not None:
                    on_error(exc)

        self._thread = threading.Thread(target=run, name="zraft-watch", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout: float | None = None) -> bool:
        """Wait for a callback watch's thread to end; returns whether it has (from the
        callback itself, which runs in that thread: whether it was cancelled)."""
        if self._thread is None:
            return True
        if self._thread is threading.current_thread():
            return self._cancelled.is_set()
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def close(self) -> None:
        """Cancel, wait for a callback thread to end, and close the watch's client if no
        iteration holds it (one that does closes it as it ends, within `CANCEL_CHECK_S`)."""
        self.cancel()
        self.join()
        with self._lock:
            idle, self._iterating = not self._iterating, True  # no iteration after this
        if idle:
            self._client.close()

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
