"""The etcd driver's HTTP reply framing (`zraft.bench.etcd`): a reply is consumed whole,
whether etcd's gateway framed it with a Content-Length or, once a reply outgrows Go's
2 KiB write buffer (a get of a large value), chunked; never before it is complete."""

from __future__ import annotations

from zraft.bench.etcd import _Conn

CHUNKED = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    + b"800\r\n"
    + b"x" * 0x800
    + b"\r\n1a;ext=1\r\n"
    + b"y" * 0x1A
    + b"\r\n0\r\n\r\n"
)
SIZED = b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}"


def _conn(buffer: bytes) -> _Conn:
    conn = _Conn.__new__(_Conn)  # framing only: no socket
    conn.buffer = buffer
    return conn


def test_a_reply_is_taken_only_once_complete_and_whole() -> None:
    for reply, status in ((CHUNKED, 200), (SIZED, 404)):
        for cut in range(len(reply)):
            conn = _conn(reply[:cut])
            assert conn.reply() is None, (status, cut)
            assert conn.buffer == reply[:cut]
        conn = _conn(reply + SIZED)
        assert conn.reply() == status and conn.buffer == SIZED
        assert conn.reply() == 404 and conn.buffer == b""
