"""The outgoing half of a node's transport: one DEALER per peer, and dialing again the
peers that refused our CURVE handshake.

`Dealers` owns the DEALER sockets (their options are explained in `zraft.net.transport`'s
module doc), their handshake monitors under CURVE, and the redial schedule. It does not
send, count or poll for input: `ZmqTransport` does, and makes and closes every socket
through the two callables it hands in, so that it can close them all at once.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import zmq
from zmq.utils.monitor import recv_monitor_message

from zraft.net.base import TransportError

REDIAL_FIRST_S = 0.2
"""Delay before a DEALER whose handshake was refused is dialed again (see `redial_refused`)."""

REDIAL_MAX_S = 5.0
"""Ceiling of that delay, which doubles while the peer keeps refusing."""

_MONITOR_EVENTS = (
    zmq.EVENT_DISCONNECTED
    | zmq.EVENT_HANDSHAKE_SUCCEEDED
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
)

_INBOUND_MAX_BYTES = 4096  # nothing legit arrives on a DEALER; keep junk bounded
_RCVHWM = 16


class CurveClient(Protocol):
    """This node's CURVE keypair (Z85 bytes) and its peers' server keys."""

    public: bytes
    secret: bytes
    peer_server_keys: Mapping[str, bytes]


@dataclass(frozen=True, slots=True)
class DealerOptions:
    """Socket options of every DEALER (see `zraft.net.transport` for why each)."""

    sndhwm: int
    reconnect_ivl_ms: int
    reconnect_ivl_max_ms: int
    heartbeat_ivl_ms: int
    heartbeat_timeout_ms: int
    connect_timeout_ms: int
    cluster_id: str = ""
    """Sent in every connection's handshake (`CLUSTER_PROPERTY`); empty: none."""


CLUSTER_PROPERTY = "X-Zraft-Cluster"
"""The ZMTP metadata property that names the sender's cluster identity on a peer link."""


class Dealers:
    """One DEALER per peer (see the module doc).

    Args:
        routing_id: this node's routing id (plaintext only; under CURVE the key names us).
        curve: CURVE keys, or None for plaintext.
        new_socket: makes a socket the transport tracks (and closes at the end).
        track: has the transport track a socket made elsewhere (a monitor).
        forget_socket: closes a tracked socket early (a DEALER being replaced).
        options: the DEALERs' socket options.

    Raises (from `update`):
        TransportError: an endpoint could not be connected (malformed).
    """

    def __init__(
        self,
        routing_id: bytes,
        curve: CurveClient | None,
        new_socket: Callable[[int], zmq.Socket[bytes]],
        track: Callable[[zmq.Socket[bytes]], None],
        forget_socket: Callable[[zmq.Socket[bytes]], None],
        options: DealerOptions,
    ) -> None:
        self._rid = routing_id
        self._curve = curve
        self._new_socket = new_socket
        self._track = track
        self._forget_socket = forget_socket
        self._options = options
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self._endpoints: dict[str, str] = {}
        # Peer id -> server key; grows when membership changes add peers (`update`).
        self._server_keys: dict[str, bytes] = dict(curve.peer_server_keys) if curve else {}
        # A monitor per DEALER: broken links, and (CURVE) when to dial again a peer that
        # refused us.
        self._monitors: dict[str, zmq.Socket[bytes]] = {}
        self._lost: list[str] = []
        self._redial_at: dict[str, float] = {}
        self._redial_backoff: dict[str, float] = {}

    def set_cluster_id(self, cluster_id: str) -> None:
        """Name this cluster identity on the connections made from now on."""
        self._options = dataclasses.replace(self._options, cluster_id=cluster_id)

    @property
    def connected(self) -> frozenset[str]:
        """The peers that have a DEALER."""
        return frozenset(self._sockets)

    def socket(self, peer_id: str) -> zmq.Socket[bytes]:
        """The DEALER to `peer_id`.

        Raises:
            KeyError: no such peer (a local bug, not remote input).
        """
        return self._sockets[peer_id]

    def update(
        self, peers: Mapping[str, str], server_keys: Mapping[str, bytes] | None
    ) -> list[str]:
        """Connect to peers not yet known and reconnect those whose endpoint (or, with
        CURVE, server key) changed; returns the peers (re)connected.

        Peers missing from `peers` are kept: a removed member may come back, and an idle
        DEALER costs nothing. With CURVE, a peer with no server key is skipped.
        """
        changed = []
        for pid, endpoint in peers.items():
            key = None
            if self._curve is not None:
                key = (server_keys or {}).get(pid) or self._server_keys.get(pid)
                if key is None:
                    continue
            if self._endpoints.get(pid) == endpoint and self._server_keys.get(pid) == key:
                continue
            if key is not None:
                self._server_keys[pid] = key
            self._close(pid)
            self._redial_at.pop(pid, None)
            self._sockets[pid] = self._connect(endpoint, pid)
            self._endpoints[pid] = endpoint
            changed.append(pid)
        return changed

    def take_lost(self) -> list[str]:
        """The peers whose established link broke since the last call (read from the
        monitors by `redial_refused`): a peer process that died closed its connections."""
        lost, self._lost = self._lost, []
        return lost

    def redial_refused(self, now: float) -> list[str]:
        """Dial again the peers whose CURVE handshake failed; returns those redialed now.

        libzmq never retries a handshake the other side refused (PLATFORM.md §4a), so
        without this a refusal would cut the link for good, even after the peer comes to
        admit our key: a node added to the cluster is refused by a member that has not
        yet caught up with the change (or by a joining node that has not yet learned of
        us), and that member then never hears our answers. A refused peer is dialed
        again `REDIAL_FIRST_S` later, the delay doubling up to `REDIAL_MAX_S` while it
        keeps refusing, and reset by a handshake that succeeds. Cheap: call it once a tick.

        Args:
            now: monotonic seconds (the transport keeps no clock of its own).
        """
        for pid, monitor in self._monitors.items():
            while monitor.poll(0, zmq.POLLIN):
                event = recv_monitor_message(monitor)["event"]
                if event == zmq.EVENT_DISCONNECTED:
                    self._lost.append(pid)  # a link broke (or a handshake failed on it)
                elif event == zmq.EVENT_HANDSHAKE_SUCCEEDED:
                    self._redial_backoff.pop(pid, None)
                elif pid not in self._redial_at:  # refused: by ZAP, or a key mismatch
                    delay = self._redial_backoff.get(pid, REDIAL_FIRST_S)
                    self._redial_at[pid] = now + delay
                    self._redial_backoff[pid] = min(2 * delay, REDIAL_MAX_S)
        due = sorted(pid for pid, at in self._redial_at.items() if at <= now)
        for pid in due:
            del self._redial_at[pid]
            self._close(pid)
            self._sockets[pid] = self._connect(self._endpoints[pid], pid)
        return due

    def _connect(self, endpoint: str, peer_id: str) -> zmq.Socket[bytes]:
        options = self._options
        sock = self._new_socket(zmq.DEALER)
        if self._curve is None:
            sock.setsockopt(zmq.ROUTING_ID, self._rid)
        else:
            sock.setsockopt(zmq.CURVE_SERVERKEY, self._server_keys[peer_id])
            sock.setsockopt(zmq.CURVE_PUBLICKEY, self._curve.public)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret)
        if options.cluster_id:
            property_line = f"{CLUSTER_PROPERTY}:{options.cluster_id}"
            sock.setsockopt(zmq.METADATA, property_line.encode())
        sock.setsockopt(zmq.IMMEDIATE, 1)
        sock.setsockopt(zmq.SNDHWM, options.sndhwm)
        sock.setsockopt(zmq.RCVHWM, _RCVHWM)
        sock.setsockopt(zmq.MAXMSGSIZE, _INBOUND_MAX_BYTES)
        sock.setsockopt(zmq.RECONNECT_IVL, options.reconnect_ivl_ms)
        sock.setsockopt(zmq.RECONNECT_IVL_MAX, options.reconnect_ivl_max_ms)
        sock.setsockopt(zmq.CONNECT_TIMEOUT, options.connect_timeout_ms)
        if options.heartbeat_ivl_ms > 0:
            sock.setsockopt(zmq.HEARTBEAT_IVL, options.heartbeat_ivl_ms)
            sock.setsockopt(zmq.HEARTBEAT_TIMEOUT, options.heartbeat_timeout_ms)
        # Every DEALER has a monitor: broken links (`take_lost`); with CURVE, refusals too.
        monitor = sock.get_monitor_socket(
            _MONITOR_EVENTS if self._curve is not None else zmq.EVENT_DISCONNECTED
        )
        self._track(monitor)  # closed with the transport's other sockets
        self._monitors[peer_id] = monitor
        try:
            sock.connect(endpoint)
        except zmq.ZMQError as exc:
            raise TransportError(
                f"cannot connect to {endpoint}: {exc.strerror}", endpoint, exc.errno
            ) from exc
        return sock

    def _close(self, peer_id: str) -> None:
        """Close the DEALER to `peer_id` and its monitor (if there are any)."""
        old = self._sockets.pop(peer_id, None)
        monitor = self._monitors.pop(peer_id, None)
        if old is not None:
            if monitor is not None:
                old.disable_monitor()
            self._forget_socket(old)
        if monitor is not None:
            self._forget_socket(monitor)
