"""`zraft.net.http`: HTTP/1.1 on a STREAM socket, driven like the node drives it (a poll
loop; here in a thread of the test), reached by real TCP clients."""

from __future__ import annotations

import http.client
import socket
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

import pytest
import zmq

from zraft.config import http_listen_address as bind_address
from zraft.net.http import HttpResponse, HttpServer
from zraft.testing.cluster import free_ports, wait_for


class Clock:
    """A settable monotonic clock."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def _answer(method: str, target: str, headers: Mapping[str, str]) -> HttpResponse:
    body = f"{method} {target} {headers.get('x-test', '-')}\n".encode()
    return HttpResponse(200, "text/plain", body)


@contextmanager
def serving(**options: object) -> Iterator[tuple[HttpServer, int, threading.Event]]:
    """A server on a free port, polled by a thread until the block ends."""
    port = free_ports(1)[0]
    context: zmq.Context[object] = zmq.Context()
    server = HttpServer(context, f"http://127.0.0.1:{port}", _answer, **options)  # type: ignore[arg-type]
    stop = threading.Event()
    lock = threading.Lock()

    def loop() -> None:
        poller = zmq.Poller()
        poller.register(server.socket, zmq.POLLIN)
        while not stop.is_set():
            if poller.poll(20):
                with lock:
                    server.handle()

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield server, port, stop
    finally:
        stop.set()
        thread.join(5)
        server.close()
        context.term()


def _raw(port: int, payload: bytes) -> bytes:
    """Send `payload` on a fresh connection; everything received until the server closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(payload)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_get_with_keep_alive_and_head() -> None:
    with serving() as (_, port, _stop):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        for path in ("/metrics", "/health?x=1"):
            conn.request("GET", path, headers={"X-Test": "yes"})
            reply = conn.getresponse()
            assert reply.status == 200
            assert reply.read() == f"GET {path} yes\n".encode()
        conn.request("HEAD", "/metrics")
        reply = conn.getresponse()
        assert reply.status == 200 and reply.read() == b""
        assert int(reply.headers["content-length"]) == len(b"HEAD /metrics -\n")
        conn.close()


def test_other_methods_bad_requests_and_big_heads_are_refused_and_closed() -> None:
    with serving() as (server, port, _stop):
        posted = _raw(port, b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc")
        assert posted.startswith(b"HTTP/1.1 405 ") and b"allow: GET, HEAD" in posted
        garbage = _raw(port, b"\x00\x01 not http at all\r\n\r\n")
        assert garbage.startswith(b"HTTP/1.1 400 ")
        huge = _raw(port, b"GET / HTTP/1.1\r\nHost: a\r\nX: " + b"a" * 20000 + b"\r\n\r\n")
        assert huge.startswith(b"HTTP/1.1 431 ")
        wait_for(lambda: len(server) == 0, 5, what="every refused connection closed")


def test_connections_beyond_the_limit_are_closed_at_once() -> None:
    with serving(max_connections=2) as (server, port, _stop):
        held = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(2)]
        wait_for(lambda: len(server) == 2, 5, what="two connections open")
        with socket.create_connection(("127.0.0.1", port), timeout=5) as extra:
            assert extra.recv(100).startswith(b"HTTP/1.1 503 ")  # then closed
            assert extra.recv(100) == b""
        assert server.refused == 1
        held[0].sendall(b"GET /ok HTTP/1.1\r\nHost: a\r\n\r\n")
        assert held[0].recv(1000).startswith(b"HTTP/1.1 200 ")
        for sock in held:
            sock.close()


def test_idle_connections_are_closed_on_a_tick() -> None:
    clock = Clock()
    with (
        serving(clock=clock, idle_timeout_s=30.0) as (server, port, _stop),
        socket.create_connection(("127.0.0.1", port), timeout=5) as idle,
    ):
        idle.sendall(b"GET / HTTP/1.1\r\n")  # half a request, then silence
        wait_for(lambda: len(server) == 1, 5, what="the connection open")
        server.on_tick(29.0)
        assert len(server) == 1
        server.on_tick(31.0)
        assert len(server) == 0
        assert idle.recv(100) == b""


@pytest.mark.parametrize(
    "url",
    ["tcp://127.0.0.1:9", "http://127.0.0.1", "http://:9101", "http://h:9/metrics", "http://h:x"],
)
def test_bind_address_refuses_what_is_not_http_host_port(url: str) -> None:
    with pytest.raises(ValueError, match="expected http://HOST:PORT with PORT"):
        bind_address(url)


def test_bind_address() -> None:
    assert bind_address("http://127.0.0.1:9101") == "tcp://127.0.0.1:9101"
    assert bind_address("http://[::1]:9101/") == "tcp://[::1]:9101"
