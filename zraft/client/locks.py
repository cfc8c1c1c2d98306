"""Locks and leader elections for the sync `Client`, with fencing tokens (the recipe and
its guarantees: `zraft.client.recipes`).

    with client.lock("jobs", ttl=10) as held:
        held.put("jobs/owner", "me")          # a guarded write: only while holding
        do_work(fencing_token=held.fencing_token)

- `Client.lock(name, ttl=10, timeout=None, on_lost=None)` returns a `Lock`; entering it
  grants a lease (kept alive by a thread), joins the queue and waits for its turn
  (`LockTimeout` after `timeout` seconds, having left the queue); leaving it deletes the
  key and revokes the lease.
- **Loss is never silent.** If the lease is lost (expired while the process hung, or
  revoked), `held.lost` (a `threading.Event`) is set, `held.lost_reason` says why,
  `on_lost(held, reason)` is called, and every guarded write raises `LockLost`.
- `Client.election(name)` returns an `Election`: `campaign(value)` (a `Leadership`, held
  like a lock: `proclaim(value)`, `resign()`), `leader()`, `observe()`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TYPE_CHECKING, Any

from zraft.client.leases import Lease
from zraft.client.recipes import (
    ELECTION_PREFIX,
    LOCK_PREFIX,
    Ask,
    AwaitDelete,
    LockLost,
    LockTimeout,
    Place,
    Steps,
    enqueue,
    first_in,
    guarded,
    leave,
    queue_prefix,
    wait_turn,
)
from zraft.client.reply import KeyValue, Reply
from zraft.client.txn import Key
from zraft.client.watch import Compacted

if TYPE_CHECKING:  # annotations only: `sync` imports this module
    from zraft.client.sync import Client
    from zraft.client.watch import Watch

LostHook = Callable[["Holding", str], None]


class Holding:
    """A lock or a leadership being acquired or held (see the module doc).

    Attributes:
        name: the lock's (election's) name; key: this holder's key.
        fencing_token: the key's `create_revision`: higher for every later holder.
        lease: the lease the key is attached to.
        lost: set once the holding is lost; lost_reason says why.
    """

    def __init__(
        self,
        client: Client,
        prefix: bytes,
        name: str,
        *,
        ttl: int,
        timeout: float | None,
        on_lost: LostHook | None,
        value: bytes = b"",
    ) -> None:
        self.name = name
        self.lost = threading.Event()
        self.lost_reason: str | None = None
        self._client = client
        self._prefix = prefix
        self._ttl, self._timeout, self._on_lost = ttl, timeout, on_lost
        self.value = value
        """The value of the key (an election's candidate value)."""
        self._place: Place | None = None
        self.lease: Lease | None = None
        self._waiting: Watch | None = None
        self._give_up = threading.Event()

    @property
    def key(self) -> bytes | None:
        """This holder's key, once it joined the queue."""
        return None if self._place is None else self._place.key

    @property
    def fencing_token(self) -> int:
        """The fencing token (the key's create revision).

        Raises:
            LockLost: not acquired.
        """
        if self._place is None:
            raise LockLost(f"{self.name!r} is not held")
        return self._place.token

    def acquire(self) -> Holding:
        """Grant the lease, join the queue and wait for the turn; returns self.

        Raises:
            LockTimeout: not acquired within `timeout` (the key was deleted again).
            LockLost: the lease ended while waiting.
        """
        self._give_up.clear()  # a Holding may be entered again after a timeout or loss
        self.lost.clear()
        self.lost_reason = None
        self.lease = self._client.lease(self._ttl, keepalive=True, on_lost=self._lease_lost)
        timer = None
        if self._timeout is not None:
            timer = threading.Timer(self._timeout, self._stop_waiting)
            timer.daemon = True
            timer.start()
        try:
            self._place = self._drive(enqueue(self._prefix, self.lease.id, self.value))
            self._drive(wait_turn(self._place))
        except BaseException:
            self._quit()
            raise
        finally:
            if timer is not None:
                timer.cancel()
        return self

    def release(self) -> None:
        """Delete the key and revoke the lease (a lost holding is released quietly)."""
        self._quit()

    def guard(self) -> list[dict[str, Any]]:
        """Compares that hold exactly while this holds (add them to a transaction)."""
        if self._place is None:
            raise LockLost(f"{self.name!r} is not held")
        return self._place.guard()

    def txn(self, success: list[dict[str, Any]]) -> Reply:
        """Run the ops of `success` (`zraft.client.txn` builders) only while holding.

        Raises:
            LockLost: not held any more: nothing was written.
        """
        if self._place is None:
            raise LockLost(f"{self.name!r} is not held")
        if self.lost.is_set():  # the cluster may not have expired it yet: do not write
            raise LockLost(f"{self.name!r}: {self.lost_reason}")
        reply: Reply = self._drive(guarded(self._place, success))
        return reply

    def put(self, key: Key, value: Key) -> Reply:
        """A guarded put (see `txn`)."""
        return self.txn([{"op": "put", "key": key, "value": value}])

    def _drive(self, steps: Steps) -> Any:
        reply: Reply | None = None
        try:
            step = next(steps)
            while True:
                if isinstance(step, Ask):
                    reply = self._client.request(step.op, **step.fields)
                    step = steps.send(reply)
                else:
                    self._await_delete(step)
                    step = steps.send(None)
        except StopIteration as done:
            return done.value

    def _await_delete(self, step: AwaitDelete) -> None:
        watch = self._client.watch(step.key, start_revision=step.after, filters=["noput"])
        self._waiting = watch
        try:
            if self._give_up.is_set():
                watch.cancel()
            for _event in watch:
                break  # the predecessor is gone: look at the queue again
        except Compacted:
            pass  # history gone since the queue was read: read the queue again
        finally:
            self._waiting = None
            watch.close()
        if self.lost.is_set():
            raise LockLost(f"{self.name!r}: {self.lost_reason}")
        if self._give_up.is_set():
            raise LockTimeout(f"{self.name!r} was not acquired within {self._timeout} s")

    def _stop_waiting(self) -> None:
        self._give_up.set()
        waiting = self._waiting
        if waiting is not None:
            waiting.cancel()

    def _lease_lost(self, lease: Lease, reason: str) -> None:
        self.lost_reason = reason
        self.lost.set()
        self._stop_waiting()
        if self._on_lost is not None:
            self._on_lost(self, reason)

    def _quit(self) -> None:
        lease, self.lease = self.lease, None
        place, self._place = self._place, None
        if lease is None:
            return
        lease.stop_keepalive()
        if place is not None and not self.lost.is_set():
            self._drive(leave(place))
        reply = self._client.lease_revoke(lease.id)
        if not reply.ok and reply.error_code != "lease_not_found":
            raise LockLost(f"releasing {self.name!r}: {reply.error_code}")

    def __enter__(self) -> Holding:
        return self.acquire()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()


class Lock(Holding):
    """A distributed lock (`Client.lock`)."""

    def __init__(
        self,
        client: Client,
        name: str,
        *,
        ttl: int = 10,
        timeout: float | None = None,
        on_lost: LostHook | None = None,
    ) -> None:
        prefix = queue_prefix(LOCK_PREFIX, name)
        super().__init__(client, prefix, name, ttl=ttl, timeout=timeout, on_lost=on_lost)


class Leadership(Holding):
    """A campaign of an `Election`: held while this candidate leads."""

    def proclaim(self, value: Key) -> Reply:
        """Change the leader's value, only while leading.

        Raises:
            LockLost: not the leader any more.
        """
        if self.lease is None or self.key is None:
            raise LockLost(f"{self.name!r}: not leading")
        return self.txn([{"op": "put", "key": self.key, "value": value, "lease": self.lease.id}])

    def resign(self) -> None:
        """Stop leading (the next candidate takes over)."""
        self.release()


class Election:
    """A leader election (`Client.election`): etcd's recipe, with fencing tokens."""

    def __init__(self, client: Client, name: str) -> None:
        self.name = name
        self._client = client
        self._prefix = queue_prefix(ELECTION_PREFIX, name)

    def campaign(
        self,
        value: Key,
        *,
        ttl: int = 10,
        timeout: float | None = None,
        on_lost: LostHook | None = None,
    ) -> Leadership:
        """A `Leadership`: entering it waits until this candidate leads (as `Lock`)."""
        raw = value.encode() if isinstance(value, str) else value
        return Leadership(
            self._client,
            self._prefix,
            self.name,
            ttl=ttl,
            timeout=timeout,
            on_lost=on_lost,
            value=raw,
        )

    def leader(self) -> KeyValue | None:
        """The current leader's key and value (None: no leader)."""
        return self._leader()[0]

    def _leader(self) -> tuple[KeyValue | None, int]:
        steps = first_in(self._prefix)
        step = next(steps)
        try:
            while True:
                assert isinstance(step, Ask)
                step = steps.send(self._client.request(step.op, **step.fields))
        except StopIteration as done:
            result: tuple[KeyValue | None, int] = done.value
            return result

    def observe(self, *, stop: threading.Event | None = None) -> Iterator[KeyValue | None]:
        """The leader now (None: none), then again each time it changes (a new leader, or
        a value proclaimed), until `stop` is set (from any thread) or the caller stops."""
        current, revision = self._leader()
        yield current
        shown = _identity(current)
        watch = self._client.watch(self._prefix, prefix=True, start_revision=revision + 1)
        if stop is not None:

            def stopper() -> None:  # ends with the watch, or cancels it when told to
                while not stop.wait(0.2):
                    if watch.cancelled:
                        return
                watch.cancel()

            threading.Thread(target=stopper, daemon=True).start()
        try:
            for _event in watch:
                current = self.leader()
                if _identity(current) != shown:
                    shown = _identity(current)
                    yield current
        finally:
            watch.close()


class CoordinationMethods:
    """`lock` and `election` (mixed into `Client`)."""

    __slots__ = ()

    def lock(
        self,
        name: str,
        *,
        ttl: int = 10,
        timeout: float | None = None,
        on_lost: LostHook | None = None,
    ) -> Lock:
        """A `Lock` named `name`: `with client.lock("name") as held: ...` (module doc).

        Args:
            ttl: the lease's TTL: how long the lock outlives a holder that hangs or dies.
            timeout: give up acquiring after this many seconds (`LockTimeout`).
            on_lost: called as `on_lost(held, reason)` if the lock is lost while held.
        """
        return Lock(self, name, ttl=ttl, timeout=timeout, on_lost=on_lost)  # type: ignore[arg-type]

    def election(self, name: str) -> Election:
        """The `Election` named `name` (`campaign`, `leader`, `observe`)."""
        return Election(self, name)  # type: ignore[arg-type]


def _identity(kv: KeyValue | None) -> tuple[bytes, int] | None:
    return None if kv is None else (kv.key, kv.mod_revision)
