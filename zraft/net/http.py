"""A small HTTP/1.1 server on a ZeroMQ STREAM socket, served from the node's own poller.

The node has one thread and one `zmq.Poller`; its metrics and health endpoint must not add
a thread or a second process. A ZeroMQ STREAM socket speaks raw TCP: each frame pair is
(connection id, bytes), an empty payload announces a connection or its end, and sending
an empty payload closes one. That is enough to serve HTTP from the loop: the socket sits in
the node's poller, and `handle` reads what arrived without ever blocking.

HTTP itself is parsed by h11 (a sans-I/O HTTP/1.1 state machine: it never touches a
socket, so it fits a poll loop, and it is strict about framing, which is what a server
facing arbitrary input needs). This module keeps the limits a production endpoint needs:
at most `max_connections` connections (the next get a 503 and are closed), requests of at most
`max_request_bytes` of head (431 beyond), GET and HEAD only (405 otherwise, and the
connection closed: no request body is ever read), connections idle for `idle_timeout_s`
closed (a slow client cannot hold a slot), and a reply that does not fit the socket's
queue drops its connection instead of blocking the loop. Keep-alive and pipelining work
as h11 allows.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import h11
import zmq

from zraft.config import http_listen_address

MAX_CONNECTIONS = 64
MAX_REQUEST_BYTES = 8192
IDLE_TIMEOUT_S = 30.0
RECV_BUDGET = 256  # frames per `handle` call: the loop's other work keeps its turn
BUSY = b"HTTP/1.1 503 Service Unavailable\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
"""What a connection beyond `max_connections` gets before it is closed."""


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What a handler answers: a status, a content type and a body."""

    status: int
    content_type: str
    body: bytes
    headers: tuple[tuple[str, str], ...] = ()


Handler = Callable[[str, str, Mapping[str, str]], HttpResponse]
"""(method, target, request headers with lower-case names) -> the response."""


@dataclass(slots=True)
class _Connection:
    machine: h11.Connection
    last_active: float
    method: str = ""
    target: str = ""
    headers: dict[str, str] = field(default_factory=dict)


class HttpServer:
    """HTTP/1.1 on one STREAM socket; `handle` when the poller says it is readable.

    Args:
        context: the zmq context to make the socket in (the node's).
        url: `http://HOST:PORT` to listen on (port 0 is not allowed: say which).
        handler: answers one complete request.
        clock: a monotonic clock in seconds (for the idle timeout).

    Raises:
        ValueError: `url` is not `http://HOST:PORT`.
        zmq.ZMQError: the address cannot be bound (in use, no such interface).
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        url: str,
        handler: Handler,
        *,
        clock: Callable[[], float] = time.monotonic,
        max_connections: int = MAX_CONNECTIONS,
        max_request_bytes: int = MAX_REQUEST_BYTES,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
    ) -> None:
        self._handler = handler
        self._clock = clock
        self._max_connections = max_connections
        self._max_request_bytes = max_request_bytes
        self._idle_timeout_s = idle_timeout_s
        self._connections: dict[bytes, _Connection] = {}
        self.refused = 0
        """Connections closed at once because `max_connections` were open."""
        self.socket: zmq.Socket[bytes] = context.socket(zmq.STREAM)
        self.socket.setsockopt(zmq.LINGER, 0)
        try:
            self.socket.bind(http_listen_address(url))
        except (ValueError, zmq.ZMQError):
            self.socket.close()
            raise

    def __len__(self) -> int:
        return len(self._connections)

    def handle(self, budget: int = RECV_BUDGET) -> None:
        """Read up to `budget` frames pairs and answer every request they complete."""
        for _ in range(budget):
            try:
                ident, data = self.socket.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            except ValueError:
                continue  # not an (id, payload) pair: libzmq never sends one
            connection = self._connections.get(ident)
            if not data:
                if connection is not None:
                    del self._connections[ident]  # the client went away
                elif len(self._connections) >= self._max_connections:
                    self.refused += 1
                    with contextlib.suppress(zmq.ZMQError):
                        self.socket.send_multipart([ident, BUSY], zmq.NOBLOCK)
                    self._close(ident)
                else:
                    self._connections[ident] = _Connection(
                        h11.Connection(
                            h11.SERVER, max_incomplete_event_size=self._max_request_bytes
                        ),
                        self._clock(),
                    )
                continue
            if connection is None:
                continue  # data of a connection we already closed
            connection.last_active = self._clock()
            connection.machine.receive_data(data)
            self._serve(ident, connection)

    def on_tick(self, now: float) -> None:
        """Close connections idle for longer than the idle timeout."""
        idle = [
            ident
            for ident, connection in self._connections.items()
            if now - connection.last_active > self._idle_timeout_s
        ]
        for ident in idle:
            self._drop(ident)

    def close(self) -> None:
        """Close every connection and the socket."""
        self._connections.clear()
        self.socket.close()

    def _serve(self, ident: bytes, connection: _Connection) -> None:
        """Advance one connection's parser; answer each request it completes."""
        machine = connection.machine
        while True:
            try:
                event = machine.next_event()
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint
                body = f"{status} {exc}\n".encode()
                self._fail(ident, connection, HttpResponse(status, "text/plain", body))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.ConnectionClosed):
                self._drop(ident)
                return
            if isinstance(event, h11.Request):
                connection.method = event.method.decode("ascii", "replace")
                connection.target = event.target.decode("ascii", "replace")
                connection.headers = {
                    name.decode("ascii", "replace"): value.decode("latin-1")
                    for name, value in event.headers
                }
                if connection.method not in ("GET", "HEAD"):
                    body = b"405 only GET and HEAD are served here\n"
                    allow = (("allow", "GET, HEAD"),)
                    self._fail(ident, connection, HttpResponse(405, "text/plain", body, allow))
                    return
            elif isinstance(event, h11.EndOfMessage):
                answer = self._handler(connection.method, connection.target, connection.headers)
                if not self._respond(ident, connection, answer):
                    return
                if machine.our_state is h11.MUST_CLOSE:
                    self._drop(ident)
                    return
                machine.start_next_cycle()
            # h11.Data: a GET or HEAD has no body worth reading; nothing to do.

    def _respond(self, ident: bytes, connection: _Connection, answer: HttpResponse) -> bool:
        """Send `answer`; False if the connection had to be dropped."""
        machine = connection.machine
        headers = [
            ("content-type", answer.content_type),
            ("content-length", str(len(answer.body))),
            *answer.headers,
        ]
        try:
            data = machine.send(h11.Response(status_code=answer.status, headers=headers))
            if connection.method != "HEAD":
                data += machine.send(h11.Data(data=answer.body)) or b""
            data += machine.send(h11.EndOfMessage()) or b""
        except h11.LocalProtocolError:
            self._drop(ident)
            return False
        try:
            self.socket.send_multipart([ident, data or b""], zmq.NOBLOCK)
        except zmq.ZMQError:
            self._drop(ident)  # its queue is full: a reader this slow loses its connection
            return False
        return True

    def _fail(self, ident: bytes, connection: _Connection, answer: HttpResponse) -> None:
        """Answer a bad request (when h11 still lets us) and close the connection."""
        if connection.machine.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            closing = HttpResponse(
                answer.status,
                answer.content_type,
                answer.body,
                (*answer.headers, ("connection", "close")),
            )
            self._respond(ident, connection, closing)
        self._drop(ident)

    def _drop(self, ident: bytes) -> None:
        if self._connections.pop(ident, None) is not None:
            self._close(ident)

    def _close(self, ident: bytes) -> None:
        with contextlib.suppress(zmq.ZMQError):  # already gone
            self.socket.send_multipart([ident, b""], zmq.NOBLOCK)
