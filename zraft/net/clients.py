"""The client ROUTER's traffic: requests in, with their envelopes, and replies out.

A request is `[identity, *hops, b"", body]`: what a REQ client sends, or a DEALER client
sending `[b"", body]`. The envelope is everything up to and including the first empty
frame, kept so the reply finds its way back, which lets replies wait for commit while
other requests keep arriving (the zguide's asynchronous REP). `ClientRouter` reads and
answers through a socket `ZmqTransport` made and configured; it must not know what a
body means.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence

import zmq

from zraft.net.base import BadInput, BadInputReason, ClientRequest
from zraft.net.dealers import CLUSTER_PROPERTY

# Plain ints: pyzmq's flag constants are enum members, and combining or passing them costs
# an enum construction each time (about 2 µs a reply with send_multipart, measured).
NOBLOCK = int(zmq.NOBLOCK)
POLLIN = int(zmq.POLLIN)
_MORE = int(zmq.SNDMORE | zmq.NOBLOCK)
_RCVMORE = int(zmq.RCVMORE)


def _recv_with_frame(sock: zmq.Socket[bytes]) -> tuple[list[bytes], zmq.Frame]:
    """One message's parts, and its second part as a `zmq.Frame` (for the connection's
    metadata: every delivered part carries it, and the first is the ROUTER's routing id).
    Only that part is received as a Frame, which costs more than bytes.

    Raises:
        zmq.Again: nothing to read.
    """
    parts = [sock.recv(NOBLOCK)]
    frame = sock.recv(NOBLOCK, copy=False)  # a ROUTER message has at least two parts
    parts.append(frame.bytes)
    while sock.get(_RCVMORE):
        parts.append(sock.recv(NOBLOCK))
    return parts, frame


def recv_authenticated(sock: zmq.Socket[bytes], *, secured: bool) -> tuple[list[bytes], bytes]:
    """One message and who sent it: the ZAP User-Id with CURVE, else the routing id.

    Raises:
        zmq.Again: nothing to read.
    """
    if not secured:
        parts = sock.recv_multipart(NOBLOCK)
        return parts, parts[0]
    parts, frame = _recv_with_frame(sock)
    return parts, (frame.get("User-Id") or "").encode()


def recv_peer(sock: zmq.Socket[bytes], *, secured: bool) -> tuple[list[bytes], bytes, str]:
    """One peer message, who sent it (as `recv_authenticated`), and the cluster identity
    its connection named (`CLUSTER_PROPERTY`; empty when it named none).

    Raises:
        zmq.Again: nothing to read.
    """
    parts, frame = _recv_with_frame(sock)
    sender = (frame.get("User-Id") or "").encode() if secured else parts[0]
    try:
        cluster = frame.get(CLUSTER_PROPERTY) or ""
    except zmq.ZMQError:  # no such property: a node of an older release, or a new joiner
        cluster = ""
    return parts, sender, cluster


class ClientRouter:
    """Reads requests from, and writes replies to, the client ROUTER.

    Args:
        sock: the bound client ROUTER.
        secured: CURVE is on (a request's `User-Id` is its key's role).
        counts: the transport's running totals (updated in place).
        bad: the transport's record of malformed input (appended to).
    """

    def __init__(
        self,
        sock: zmq.Socket[bytes],
        *,
        secured: bool,
        counts: dict[str, int],
        bad: deque[BadInput],
    ) -> None:
        self._sock = sock
        self._secured = secured
        self._counts = counts
        self._bad = bad

    def recv(self, budget: int) -> list[ClientRequest]:
        """Read up to `budget` requests, stopping at `zmq.Again`.

        A message with no empty frame, or not exactly one frame after it, is dropped and
        recorded as `BadInput` (with its envelope when there is one, so the node can
        answer it).
        """
        out: list[ClientRequest] = []
        for _ in range(budget):
            try:
                parts, user = recv_authenticated(self._sock, secured=self._secured)
            except zmq.Again:
                break
            try:
                split = parts.index(b"", 1) + 1
            except ValueError:
                self._refuse(parts[0], BadInputReason.NO_DELIMITER, None)
                continue
            if len(parts) - split != 1:
                self._refuse(parts[0], BadInputReason.FRAME_COUNT, tuple(parts[:split]))
                continue
            self._counts["client_requests_received"] += 1
            role = user.decode("utf-8", "replace") if self._secured else None
            out.append(ClientRequest(parts[:split], parts[split], role))
        return out

    def _refuse(
        self, sender: bytes, reason: BadInputReason, envelope: tuple[bytes, ...] | None
    ) -> None:
        self._counts["client_bad_input"] += 1
        self._bad.append(BadInput(source="client", sender=sender, reason=reason, envelope=envelope))

    def reply(self, envelope: Sequence[bytes], body: bytes) -> bool:
        """Send `envelope + [body]` to a client without blocking.

        A client that has disconnected is not an error: libzmq discards the reply
        silently (`ROUTER_MANDATORY=0`), and this still returns True. So True means
        "handed to libzmq", not "delivered".

        Returns:
            False only if libzmq refused the message (counted as a dropped reply).
        """
        sock = self._sock
        try:
            # Frame by frame with int flags: half the cost of send_multipart (measured).
            for part in envelope:
                sock.send(part, _MORE)
            sock.send(body, NOBLOCK)
        except zmq.Again:
            self._counts["client_replies_dropped"] += 1
            return False
        self._counts["client_replies_sent"] += 1
        return True
