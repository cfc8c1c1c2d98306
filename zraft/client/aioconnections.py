"""The asyncio side of one `AsyncClient`: pools of REQ sockets (and their monitors) per
endpoint, and one bounded attempt at a time on each (the asyncio twin of
`zraft.client.connections`). It asks the policy whether to send and what a connection
change means, and reports what happened as a reply map or a `NoReply`; it decides
nothing else.
"""

from __future__ import annotations

import asyncio
import struct
import time
from typing import Any

import zmq
import zmq.asyncio

from zraft import wire
from zraft.client import monitor
from zraft.client.policy import ClientPolicy, NoReply
from zraft.net.security import ClientCurve

MAX_SOCKETS_PER_ENDPOINT = 64
"""Concurrent requests to one node at most; more wait for a socket to come free (each
socket and its monitor hold a few file descriptors: the process's limit is often 1,024)."""


class _Pool:
    """The REQ sockets (and their monitors) of one endpoint; free ones are reused."""

    def __init__(self) -> None:
        self.free: list[tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]] = []
        self.open = 0
        self.available = asyncio.Condition()


class AsyncConnections:
    """The asyncio side of one client: pools of REQ sockets, one bounded attempt each."""

    def __init__(
        self, context: zmq.asyncio.Context, curve: ClientCurve | None, policy: ClientPolicy
    ) -> None:
        self._context = context
        self._curve = curve
        self._policy = policy
        self._pools: dict[str, _Pool] = {}

    async def attempt(self, endpoint: str, frame: bytes, wait_s: float) -> dict[str, Any] | NoReply:
        """One send and bounded wait on `endpoint` (see `Connections.attempt`)."""
        pool = self._pools.setdefault(endpoint, _Pool())
        pair = await self._take(endpoint, pool)
        sock, monitor_sock = pair
        ok = False
        try:
            await self._read_monitor(endpoint, monitor_sock)
            blocked = self._policy.before_send(endpoint)
            if blocked is not None:
                ok = True  # nothing was sent: the socket stays usable
                return blocked
            try:
                await sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                return NoReply.unsent("cannot send (queue full)")
            poller = zmq.asyncio.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor_sock, zmq.POLLIN)
            deadline = time.monotonic() + wait_s
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return NoReply.timed_out(wait_s)
                ready = dict(await poller.poll(max(1, int(remaining * 1000))))
                if sock in ready:
                    break
                if monitor_sock in ready:
                    await self._read_monitor(endpoint, monitor_sock)
                    ended = self._policy.while_waiting(endpoint)
                    if ended is not None:
                        return ended
            buf = await sock.recv()
            try:
                reply = wire.decode_reply(buf)
            except wire.DecodeError as exc:
                return NoReply.malformed(exc.reason)
            ok = True
            return reply
        finally:
            # Also when the task is cancelled: a REQ socket left waiting is closed.
            await self._give(endpoint, pool, pair, keep=ok)

    async def _take(
        self, endpoint: str, pool: _Pool
    ) -> tuple[zmq.asyncio.Socket, zmq.asyncio.Socket]:
        async with pool.available:
            while not pool.free and pool.open >= MAX_SOCKETS_PER_ENDPOINT:
                await pool.available.wait()
            if pool.free:
                return pool.free.pop()
            pool.open += 1
        sock = self._context.socket(zmq.REQ)
        sock.linger = 0
        if self._curve is not None:
            self._curve.apply(sock, endpoint)
        monitor_sock = sock.get_monitor_socket(monitor.MONITOR_EVENTS)
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            monitor.release(sock, monitor_sock)
            pool.open -= 1
            raise ValueError(f"cannot connect to {endpoint!r}: {exc}") from exc
        return sock, monitor_sock

    async def _give(
        self,
        endpoint: str,
        pool: _Pool,
        pair: tuple[zmq.asyncio.Socket, zmq.asyncio.Socket],
        *,
        keep: bool,
    ) -> None:
        if keep:
            pool.free.append(pair)
        else:
            monitor.release(*pair)
            pool.open -= 1
            if not pool.open:
                self._policy.links.forget(endpoint)  # no connection left to know about
        async with pool.available:
            pool.available.notify()

    async def _read_monitor(self, endpoint: str, monitor_sock: zmq.asyncio.Socket) -> None:
        curve = self._curve is not None
        while monitor_sock.get(zmq.EVENTS) & zmq.POLLIN:
            frames = await monitor_sock.recv_multipart()
            event: int = struct.unpack("=H", frames[0][:2])[0]
            monitor.apply_event(self._policy.links, endpoint, event, curve=curve)

    def close(self) -> None:
        """Close every pooled socket (sockets in use close as their attempts end)."""
        for pool in self._pools.values():
            for pair in pool.free:
                monitor.release(*pair)
            pool.open -= len(pool.free)
            pool.free.clear()
