"""Watches of an `AsyncClient`: `AsyncWatch`, an async iterator over the same resume
logic as the sync `Watch` (`zraft.client.watch.WatchCursor`), with the same guarantees."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from zraft.client.reply import ClientAuthError, ClientError, Reply
from zraft.client.watch import REPLY_MARGIN_S, WatchCursor, WatchEvent

if TYPE_CHECKING:  # annotations only: `aio` imports this module
    from zraft.client.aio import AsyncClient


class AsyncWatch:
    """A running watch of an `AsyncClient`: an async iterator of `WatchEvent`s that resumes
    by itself (see `zraft.client.watch`); `cancel()` ends it."""

    def __init__(self, client: AsyncClient, cursor: WatchCursor) -> None:
        self.cursor = cursor
        self._client = client
        self._cancelled = asyncio.Event()
        self._waiter: asyncio.Task[Any] | None = None

    @property
    def next_revision(self) -> int | None:
        """The revision the watch needs next (every change below it was delivered)."""
        return self.cursor.next_revision

    def cancel(self) -> None:
        """End the watch: the iteration stops (a poll in flight is abandoned)."""
        self._cancelled.set()
        if self._waiter is not None:
            self._waiter.cancel()

    def __aiter__(self) -> AsyncIterator[WatchEvent]:
        return self._events()

    async def _events(self) -> AsyncIterator[WatchEvent]:
        while not self._cancelled.is_set():
            self._waiter = asyncio.ensure_future(self._poll())
            try:
                events = await self._waiter
            except asyncio.CancelledError:
                if self._cancelled.is_set():
                    return
                raise
            finally:
                self._waiter = None
            for event in events:
                yield event

    async def _poll(self) -> list[WatchEvent]:
        cursor, client = self.cursor, self._client
        resolving = cursor.next_revision is None
        reply: Reply | None = None
        try:
            if resolving:
                reply = await client.request("range", count_only=True, **cursor.range_fields)
            else:
                exchange = client.policy.begin_at(
                    cursor.endpoint, "watch", cursor.fields(), time.monotonic()
                )
                exchange.deadline = time.monotonic() + cursor.wait_s + REPLY_MARGIN_S
                reply = await client._run(exchange)
        except ClientAuthError:
            raise
        except ClientError:
            reply = None
        events = cursor.settle(reply)
        if cursor.pause_s:
            await asyncio.sleep(cursor.pause_s * (0.5 + random.random()))  # jitter
            cursor.pause_s = 0.0
        return events
