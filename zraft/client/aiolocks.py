"""Locks and leader elections for the `AsyncClient`: the same recipe, steps and guarantees
as the sync ones (`zraft.client.recipes`, `zraft.client.locks`), driven with `await`.

    async with client.lock("jobs", ttl=10) as held:
        await held.put("jobs/owner", "me")        # a guarded write
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any

from zraft.client.aioleases import AsyncLease
from zraft.client.recipes import (
    ELECTION_PREFIX,
    LOCK_PREFIX,
    Ask,
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

if TYPE_CHECKING:  # annotations only: `aio` imports this module
    from zraft.client.aio import AsyncClient

AsyncLostHook = Callable[["AsyncHolding", str], None]


async def drive_async(client: AsyncClient, steps: Steps) -> Any:
    """Run recipe steps with `client`; returns their result."""
    try:
        step = next(steps)
        while True:
            if isinstance(step, Ask):
                step = steps.send(await client.request(step.op, **step.fields))
            else:
                watch = client.watch(step.key, start_revision=step.after, filters=["noput"])
                try:
                    async for _event in watch:
                        break  # the predecessor is gone: look at the queue again
                except Compacted:
                    pass  # history gone since the queue was read: read the queue again
                step = steps.send(None)
    except StopIteration as done:
        return done.value


class AsyncHolding:
    """A lock or leadership of an `AsyncClient` (see `zraft.client.locks.Holding`)."""

    def __init__(
        self,
        client: AsyncClient,
        prefix: bytes,
        name: str,
        *,
        ttl: int,
        timeout: float | None,
        on_lost: AsyncLostHook | None,
        value: bytes = b"",
    ) -> None:
        self.name = name
        self.lease: AsyncLease | None = None
        self._client, self._prefix = client, prefix
        self._ttl, self._timeout, self._on_lost, self._value = ttl, timeout, on_lost, value
        self._place: Place | None = None
        self._acquiring: asyncio.Task[Any] | None = None
        self.lost = asyncio.Event()
        """Set once the holding is lost; `lost_reason` says why."""
        self.lost_reason: str | None = None

    @property
    def key(self) -> bytes | None:
        """This holder's key, once it joined the queue."""
        return None if self._place is None else self._place.key

    @property
    def fencing_token(self) -> int:
        """The key's create revision: higher for every later holder."""
        if self._place is None:
            raise LockLost(f"{self.name!r} is not held")
        return self._place.token

    async def acquire(self) -> AsyncHolding:
        """Grant the lease, join the queue, wait for the turn (`LockTimeout`, `LockLost`)."""
        self.lost.clear()  # may be entered again after a timeout or loss
        self.lost_reason = None
        self.lease = await self._client.lease(self._ttl, keepalive=True, on_lost=self._lost)
        self._acquiring = asyncio.ensure_future(self._queue(self.lease.id))
        try:
            await asyncio.wait_for(self._acquiring, self._timeout)
        except TimeoutError:
            await self.release()
            raise LockTimeout(f"{self.name!r} was not acquired within {self._timeout} s") from None
        except asyncio.CancelledError:
            await self.release()
            if self.lost.is_set():  # cancelled by the lease's loss, not by the caller
                raise LockLost(f"{self.name!r}: {self.lost_reason}") from None
            raise
        except BaseException:
            await self.release()
            raise
        finally:
            self._acquiring = None
        return self

    async def _queue(self, lease_id: int) -> None:
        self._place = await drive_async(self._client, enqueue(self._prefix, lease_id, self._value))
        await drive_async(self._client, wait_turn(self._place))

    async def release(self) -> None:
        """Delete the key and revoke the lease (a lost holding is released quietly)."""
        lease, self.lease = self.lease, None
        place, self._place = self._place, None
        if lease is None:
            return
        await lease.stop_keepalive()
        if place is not None and not lease.lost.is_set():
            await drive_async(self._client, leave(place))
        reply = await self._client.lease_revoke(lease.id)
        if not reply.ok and reply.error_code != "lease_not_found":
            raise LockLost(f"releasing {self.name!r}: {reply.error_code}")

    def guard(self) -> list[dict[str, Any]]:
        """Compares that hold exactly while this holds."""
        if self._place is None:
            raise LockLost(f"{self.name!r} is not held")
        return self._place.guard()

    async def txn(self, success: list[dict[str, Any]]) -> Reply:
        """Run `success` only while holding (`LockLost`: nothing was written)."""
        if self._place is None:
            raise LockLost(f"{self.name!r} is not held")
        if self.lost.is_set():  # the cluster may not have expired it yet: do not write
            raise LockLost(f"{self.name!r}: {self.lost_reason}")
        reply: Reply = await drive_async(self._client, guarded(self._place, success))
        return reply

    async def put(self, key: Key, value: Key) -> Reply:
        """A guarded put."""
        return await self.txn([{"op": "put", "key": key, "value": value}])

    def _lost(self, lease: AsyncLease, reason: str) -> None:
        self.lost_reason = reason
        self.lost.set()
        if self._acquiring is not None:
            self._acquiring.cancel()
        if self._on_lost is not None:
            self._on_lost(self, reason)

    async def __aenter__(self) -> AsyncHolding:
        return await self.acquire()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()


class AsyncLeadership(AsyncHolding):
    """A campaign of an `AsyncElection`."""

    async def proclaim(self, value: Key) -> Reply:
        """Change the leader's value, only while leading (`LockLost`)."""
        if self.lease is None or self.key is None:
            raise LockLost(f"{self.name!r}: not leading")
        return await self.txn(
            [{"op": "put", "key": self.key, "value": value, "lease": self.lease.id}]
        )

    async def resign(self) -> None:
        """Stop leading."""
        await self.release()


class AsyncElection:
    """A leader election of an `AsyncClient` (see `zraft.client.locks.Election`)."""

    def __init__(self, client: AsyncClient, name: str) -> None:
        self.name = name
        self._client = client
        self._prefix = queue_prefix(ELECTION_PREFIX, name)

    def campaign(
        self,
        value: Key,
        *,
        ttl: int = 10,
        timeout: float | None = None,
        on_lost: AsyncLostHook | None = None,
    ) -> AsyncLeadership:
        """An `AsyncLeadership`: entering it waits until this candidate leads."""
        raw = value.encode() if isinstance(value, str) else value
        return AsyncLeadership(
            self._client,
            self._prefix,
            self.name,
            ttl=ttl,
            timeout=timeout,
            on_lost=on_lost,
            value=raw,
        )

    async def leader(self) -> KeyValue | None:
        """The current leader's key and value (None: no leader)."""
        leader, _ = await drive_async(self._client, first_in(self._prefix))
        return leader  # type: ignore[no-any-return]

    async def observe(self) -> AsyncIterator[KeyValue | None]:
        """The leader now, then each time it changes (stop by leaving the loop)."""
        current, revision = await drive_async(self._client, first_in(self._prefix))
        yield current
        shown = None if current is None else (current.key, current.mod_revision)
        async for _event in self._client.watch(
            self._prefix, prefix=True, start_revision=revision + 1
        ):
            current = await self.leader()
            seen = None if current is None else (current.key, current.mod_revision)
            if seen != shown:
                shown = seen
                yield current


class AsyncCoordinationMethods:
    """`lock` and `election` (mixed into `AsyncClient`)."""

    __slots__ = ()

    def lock(
        self,
        name: str,
        *,
        ttl: int = 10,
        timeout: float | None = None,
        on_lost: AsyncLostHook | None = None,
    ) -> AsyncHolding:
        """A lock named `name`: `async with client.lock("name") as held: ...`."""
        prefix = queue_prefix(LOCK_PREFIX, name)
        return AsyncHolding(self, prefix, name, ttl=ttl, timeout=timeout, on_lost=on_lost)  # type: ignore[arg-type]

    def election(self, name: str) -> AsyncElection:
        """The election named `name`."""
        return AsyncElection(self, name)  # type: ignore[arg-type]
