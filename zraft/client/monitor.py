"""ZeroMQ socket-monitor events, translated into what the client policy knows (`Links`).

A REQ socket never says that its node died or refused it; its monitor does. Every zmq
driver (the blocking `Client`, `probe_status`, a future asyncio client) reads monitor
events and hands them to `apply_event`, so they all draw the same conclusions. This
module knows zmq's event numbers and how a monitor is stopped safely (`release`); it
makes no decision about retries (that is `zraft.client.policy`'s) and owns no socket.
"""

from __future__ import annotations

import struct
from typing import Any

import zmq

from zraft.client.endpoints import Links

MONITOR_EVENTS = (
    zmq.EVENT_CONNECTED
    | zmq.EVENT_DISCONNECTED
    | zmq.EVENT_CONNECT_RETRIED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)
"""The events a client's monitor subscribes to."""

HANDSHAKE_EVENTS = {
    zmq.EVENT_HANDSHAKE_FAILED_AUTH: "the node refused this client's key",
    zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL: (
        "security handshake failed (plaintext client and CURVE node, or the reverse)"
    ),
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL: "security handshake failed (wrong server key?)",
}
"""Monitor events that end a connection for good (libzmq does not retry), and what they
mean for a zraft client."""


def is_final(event: int, curve: bool) -> bool:
    """Whether a monitor event means the handshake is refused for good.

    A plaintext client may see HANDSHAKE_FAILED_NO_DETAIL when a connection breaks
    mid-handshake (seen under load); only with CURVE does it mean a key problem (a wrong
    server key: the node cannot read our HELLO), so only then is it final.
    """
    if event == zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL:
        return curve
    return event in HANDSHAKE_EVENTS


def apply_event(links: Links, endpoint: str, event: int, *, curve: bool) -> None:
    """Record what one monitor event of `endpoint`'s socket says in `links`."""
    if event in HANDSHAKE_EVENTS and is_final(event, curve):
        # Final: libzmq will not try this connection again. The driver drops the socket
        # after the attempt, so a later request (a fixed config) starts afresh.
        links.refused(endpoint, HANDSHAKE_EVENTS[event])
    elif event in (zmq.EVENT_DISCONNECTED, zmq.EVENT_CONNECT_RETRIED):
        links.lost(endpoint)  # lost, or refused (nothing listens there)
    elif event == zmq.EVENT_CONNECTED:
        links.connected(endpoint)


def read_event(monitor: zmq.Socket[Any]) -> int:
    """The event number of the next message on a monitor socket (libzmq's layout: the
    first frame starts with the event as uint16, then its value as uint32). Read here
    rather than with `zmq.utils.monitor`, whose import pulls in pyzmq's asyncio support
    and costs a one-shot command a fifth of its start-up."""
    frames = monitor.recv_multipart()
    event: int = struct.unpack("=H", frames[0][:2])[0]
    return event


def release(sock: zmq.Socket[Any], monitor: zmq.Socket[Any]) -> None:
    """Stop `sock`'s monitor and close both sockets (linger 0).

    The monitor's pending events are read first: libzmq's `disable_monitor` sends one
    last event, and waits, holding the GIL (the whole process stops), while the monitor's
    queue is full; a socket reconnecting to a dead or refusing node for a few minutes,
    its monitor unread, fills it (about 2,000 events). Works for asyncio sockets too (it
    reads through a blocking shadow of the same socket).
    """
    if sock.closed:  # the client was closed (its context destroyed) meanwhile
        return
    reader = zmq.Socket.shadow(monitor.underlying)
    try:
        while True:
            reader.recv_multipart(zmq.NOBLOCK)
    except zmq.Again:
        pass
    sock.disable_monitor()
    monitor.close(linger=0)
    sock.close(linger=0)
