"""The blocking ZeroMQ side of one client: a REQ socket and its monitor per endpoint, and
one bounded attempt at a time (the `Client` driver in `sync` uses it).

It owns the sockets and the polling: send without blocking, poll for the reply until the
attempt's wait ends, read the monitor while waiting, and close a socket whose attempt
failed (a REQ socket whose reply is missing cannot send again). It must not decide where
to send, whether to send or what an outcome means: it asks the policy (`before_send`,
`while_waiting`) and reports what happened as a reply map or a `NoReply`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import zmq

from zraft import wire
from zraft.client import monitor
from zraft.client.policy import ClientPolicy, NoReply
from zraft.client.reply import ClientError
from zraft.net.security import ClientCurve

INTERRUPT_CHECK_S = 0.1
"""How often an interruptible wait looks at its `interrupt`."""


class Interrupted(ClientError):
    """An interruptible attempt was interrupted (`Connections.attempt`)."""


class Connections:
    """One REQ socket (and its monitor) per endpoint, and one bounded attempt at a time.

    What the monitors report goes to the policy's `Links`; whether to send, and whether
    a connection change ends a wait, the policy says.
    """

    def __init__(
        self, context: zmq.Context[Any], curve: ClientCurve | None, policy: ClientPolicy
    ) -> None:
        self._context = context
        self._curve = curve
        self._policy = policy
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        # A monitor per REQ socket reports connects and disconnects: a REQ socket never
        # says that its node died, so without this a client would wait out a whole attempt
        # timeout on a killed leader (seconds) instead of moving on at once.
        self._monitors: dict[str, zmq.Socket[bytes]] = {}

    def attempt(
        self,
        endpoint: str,
        frame: bytes,
        wait_s: float,
        interrupt: Callable[[], bool] | None = None,
    ) -> dict[str, Any] | NoReply:
        """One send and bounded wait on `endpoint`: the decoded reply, or why there is none.

        On any failure the endpoint's socket is closed (a REQ socket whose reply is
        missing cannot send again), so the next attempt there starts clean. With
        `interrupt`, the wait looks at it every `INTERRUPT_CHECK_S` and raises
        `Interrupted` once it returns True (a watch cancelled from another thread).
        """
        sock = self.socket(endpoint)
        monitor_sock = self._monitors[endpoint]
        self._read_monitor(endpoint)
        blocked = self._policy.before_send(endpoint)
        if blocked is not None:
            return blocked
        ok = False
        try:
            try:
                sock.send(frame, zmq.NOBLOCK)
            except zmq.Again:
                return NoReply.unsent("cannot send (queue full)")
            poller = zmq.Poller()
            poller.register(sock, zmq.POLLIN)
            poller.register(monitor_sock, zmq.POLLIN)
            deadline = time.monotonic() + wait_s
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return NoReply.timed_out(wait_s)
                if interrupt is not None:
                    if interrupt():
                        raise Interrupted("interrupted while waiting for a reply")
                    remaining = min(remaining, INTERRUPT_CHECK_S)
                ready = dict(poller.poll(max(1, int(remaining * 1000))))
                if sock in ready:
                    break
                if monitor_sock in ready:
                    self._read_monitor(endpoint)
                    ended = self._policy.while_waiting(endpoint)
                    if ended is not None:
                        return ended
            buf = sock.recv(zmq.NOBLOCK)
            try:
                reply = wire.decode_reply(buf)
            except wire.DecodeError as exc:
                return NoReply.malformed(exc.reason)
            ok = True
            return reply
        finally:
            # Also on KeyboardInterrupt: never leave a REQ socket waiting for a reply.
            if not ok:
                self.drop(endpoint)

    def pause(self, endpoint: str, wait_s: float) -> None:
        """Wait `wait_s` seconds as a poll on `endpoint`'s socket (no sleeping in zraft)."""
        self.socket(endpoint).poll(int(wait_s * 1000), zmq.POLLIN)

    def socket(self, endpoint: str) -> zmq.Socket[bytes]:
        """The REQ socket of `endpoint`, made and connected (with its monitor) if needed.

        Raises:
            ValueError: zmq cannot connect to `endpoint`.
        """
        sock = self._sockets.get(endpoint)
        if sock is None:
            sock = self._context.socket(zmq.REQ)
            sock.linger = 0
            if self._curve is not None:
                self._curve.apply(sock, endpoint)
            self._monitors[endpoint] = sock.get_monitor_socket(monitor.MONITOR_EVENTS)
            try:
                sock.connect(endpoint)
            except zmq.ZMQError as exc:
                monitor.release(sock, self._monitors.pop(endpoint))
                raise ValueError(f"cannot connect to {endpoint!r}: {exc}") from exc
            self._sockets[endpoint] = sock
        return sock

    def _read_monitor(self, endpoint: str) -> None:
        """Hand every pending monitor event of `endpoint` to the policy's `Links`."""
        monitor_sock = self._monitors[endpoint]
        curve = self._curve is not None
        while monitor_sock.poll(0, zmq.POLLIN):
            event = monitor.read_event(monitor_sock)
            monitor.apply_event(self._policy.links, endpoint, event, curve=curve)

    def drop(self, endpoint: str) -> None:
        """Close `endpoint`'s socket (if any); the policy forgets what it knew of it."""
        sock = self._sockets.pop(endpoint, None)
        if sock is not None:
            monitor.release(sock, self._monitors.pop(endpoint))
            self._policy.links.forget(endpoint)  # a new socket starts a new connection

    def close(self) -> None:
        """Close every socket."""
        for endpoint in list(self._sockets):
            self.drop(endpoint)
