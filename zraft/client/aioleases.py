"""Leases of an `AsyncClient`: `AsyncLease`, kept alive by a task (the asyncio twin of
`zraft.client.leases.Lease`, with the same local deadline and the same ways to end)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING

from zraft.client.leases import RETRY_PAUSE_S, LeaseError, LeaseLost, LeaseNotFound
from zraft.client.reply import ClientTimeout

if TYPE_CHECKING:  # annotations only: `aio` imports this module
    from zraft.client.aio import AsyncClient


class AsyncLease:
    """A granted lease of an `AsyncClient` (see `zraft.client.leases.Lease`): `refresh()`,
    `remaining()`, `revoke()`, and a keepalive task that sets `lost` (and calls `on_lost`)
    when the lease is gone or may have expired. `async with` revokes it on exit."""

    def __init__(
        self,
        client: AsyncClient,
        lease_id: int,
        ttl: int,
        acked_at: float,
        on_lost: Callable[[AsyncLease, str], None] | None,
    ) -> None:
        self.id, self.ttl = lease_id, ttl
        self.lost = asyncio.Event()
        self.lost_reason: str | None = None
        self._client = client
        self._deadline = acked_at + ttl
        self._on_lost = on_lost
        self._task: asyncio.Task[None] | None = None

    async def refresh(self) -> int:
        """One keepalive; returns the seconds left. Raises LeaseNotFound when gone."""
        sent = time.monotonic()
        reply = await self._client.request("lease_keepalive", lease=self.id)
        if reply.error_code == "lease_not_found":
            self._lose(f"lease {self.id} does not exist (expired or revoked?)")
            raise LeaseNotFound(self.lost_reason or "", self.id, reply)
        if not reply.ok:
            raise LeaseError(f"lease_keepalive: {reply.error_code}", self.id, reply)
        self._deadline = sent + self.ttl
        return reply.remaining or self.ttl

    async def remaining(self) -> int:
        """The seconds the cluster gives the lease (its time-to-live)."""
        reply = await self._client.request("lease_timetolive", lease=self.id)
        if reply.error_code == "lease_not_found":
            self._lose(f"lease {self.id} does not exist (expired or revoked?)")
            raise LeaseNotFound(self.lost_reason or "", self.id, reply)
        return reply.remaining or 0

    async def revoke(self) -> None:
        """Stop the keepalive and end the lease now (its keys are deleted)."""
        await self.stop_keepalive()
        reply = await self._client.request("lease_revoke", lease=self.id)
        if not reply.ok and reply.error_code != "lease_not_found":
            raise LeaseError(f"lease_revoke: {reply.error_code}", self.id, reply)

    def start_keepalive(self, interval: float | None = None) -> None:
        """Refresh the lease every `interval` seconds (default TTL / 3) in a task."""
        if self.lost.is_set():
            raise LeaseLost(f"lease {self.id} is lost: {self.lost_reason}", self.id)
        every = self.ttl / 3 if interval is None else interval
        if not 0 < every < self.ttl:
            raise ValueError(f"the keepalive interval must be > 0 and below the TTL ({self.ttl} s)")
        if self._task is None or self._task.done():
            self._task = asyncio.ensure_future(self._keep(every))
            self._client._leases.add(self)

    async def stop_keepalive(self) -> None:
        """Stop the keepalive task (the lease is left as it is)."""
        task, self._task = self._task, None
        self._client._leases.discard(self)
        if task is not None and not task.done():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _keep(self, every: float) -> None:
        next_at = self._deadline - self.ttl + every
        while not self.lost.is_set():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            left = self._deadline - time.monotonic()
            if left <= 0:
                self._lose(f"no keepalive acknowledged within {self.ttl} s: it may have expired")
                return
            try:
                sent = time.monotonic()
                reply = await self._client.request_within(
                    min(left, 2.0), "lease_keepalive", lease=self.id
                )
            except ClientTimeout:
                next_at = time.monotonic() + RETRY_PAUSE_S
                continue
            if reply.error_code == "lease_not_found":
                self._lose(f"lease {self.id} does not exist (expired or revoked?)")
                return
            if reply.ok:
                self._deadline = sent + self.ttl
                next_at = sent + every
            else:
                next_at = time.monotonic() + RETRY_PAUSE_S

    def _lose(self, reason: str) -> None:
        if self.lost.is_set():
            return
        self.lost_reason = reason
        self.lost.set()
        if self._on_lost is not None:
            self._on_lost(self, reason)

    async def __aenter__(self) -> AsyncLease:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.revoke()
