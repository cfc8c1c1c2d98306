"""What the node needs from a transport, and the values a transport hands it.

`Transport` is the node's one window on the network: poll for input, drain the peer and
client queues, send peer frames, reply to clients, learn new peers. `ZmqTransport`
(`zraft.net.transport`) is the real one; `InmemTransport` (`zraft.net.inmem`) its
in-memory twin for tests, and `FaultyTransport` (`zraft.net.faults`) wraps either with
the test-only fault hooks. A transport moves opaque `bytes` frames: it must not know any
message format (`zraft.wire` gives them meaning; only the node joins the two).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

LISTEN_BACKLOG = 1024
"""Connections the kernel queues on a listening endpoint until libzmq accepts them (the
kernel caps it at `net.core.somaxconn`). A SYN past a full queue is dropped, and its
client retries only after a second."""


@dataclass(frozen=True, slots=True)
class CurveKeys:
    """The CURVE material of a transport (Z85 bytes, as pyzmq's socket options take them).

    Attributes:
        public, secret: this node's keypair: the server key of both ROUTERs and the
            client key of every DEALER. `secret` is kept out of `repr`.
        peer_server_keys: peer id -> that peer's public key (its ROUTER's server key).
    """

    public: bytes
    secret: bytes = field(repr=False)
    peer_server_keys: Mapping[str, bytes] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Readiness:
    """What one poll found waiting: peer frames, client requests, ZAP requests."""

    peers: bool = False
    clients: bool = False
    zap: bool = False


class TransportError(Exception):
    """An endpoint could not be bound or connected (a local, configuration-level error).

    Attributes:
        endpoint: the endpoint that failed, e.g. `tcp://127.0.0.1:7101`.
        errno: the libzmq errno (`errno.EADDRINUSE` for a port in use), or None.
    """

    def __init__(self, message: str, endpoint: str, errno: int | None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.errno = errno


class BadInputReason(StrEnum):
    """Why a received message was dropped as malformed (the `reason` of `bad_frame`)."""

    FRAME_COUNT = "frame_count"  # peer: not exactly [routing_id, frame]; client: not one body
    EMPTY_FRAME = "empty_frame"  # peer: a zero-length frame (no message encodes to b"")
    UNKNOWN_SENDER = "unknown_sender"  # peer: routing id is not a configured peer
    NO_DELIMITER = "no_delimiter"  # client: no empty frame ends the envelope
    OTHER_CLUSTER = "other_cluster"  # peer: its connection names another cluster identity


@dataclass(frozen=True, slots=True)
class BadInput:
    """One malformed message that was dropped instead of delivered.

    `sender` is the routing id the ROUTER reported: the peer's own id for peers, a
    libzmq-generated id (5 bytes starting with NUL) for anonymous clients. `envelope` is
    set only for a client message whose envelope was well formed but whose body was not;
    the node may `reply()` an error to it so a REQ client does not wait forever.
    """

    source: str  # "peer" or "client"
    sender: bytes
    reason: BadInputReason
    envelope: tuple[bytes, ...] | None = None


@dataclass(frozen=True, slots=True)
class TransportCounters:
    """Running totals since the transport was created; diff two snapshots for rates."""

    peer_frames_sent: int = 0
    peer_frames_received: int = 0
    peer_send_dropped: int = 0  # zmq.Again: peer not connected, or its queue is full
    peer_blocked_dropped: int = 0  # fault hook, both directions
    peer_bad_input: int = 0
    client_requests_received: int = 0
    client_bad_input: int = 0
    client_replies_sent: int = 0
    client_replies_dropped: int = 0
    send_dropped_by_peer: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ClientRequest:
    """One well-formed client request: its envelope (pass it to `reply`), its body, and the
    `User-Id` the ZAP handler gave its connection (the key's role), None without CURVE."""

    envelope: list[bytes]
    body: bytes
    user: str | None


class Transport(Protocol):
    """The sockets of one node, as its loop uses them. Every call is non-blocking except
    `poll`, which waits at most its timeout."""

    node_id: str

    @property
    def zap_socket(self) -> Any:
        """The ZAP handler's socket (CURVE), or None."""
        ...

    def poll(self, timeout_ms: int) -> Readiness:
        """Wait up to `timeout_ms` for input; say what is waiting."""
        ...

    def recv_peers(self, budget: int) -> list[tuple[bytes, bytes]]:
        """Up to `budget` `(sender, frame)` pairs from peers."""
        ...

    def recv_client_requests(self, budget: int) -> list[ClientRequest]:
        """Up to `budget` client requests."""
        ...

    def take_bad_inputs(self) -> list[BadInput]:
        """Malformed input dropped since the last call."""
        ...

    def send(self, peer_id: str, frame: bytes) -> bool:
        """Send one frame to a peer; False if it was dropped."""
        ...

    def send_message(self, peer_id: str, frame: bytes) -> bool:
        """Send one Raft message: `send`, except that fault injection may drop it."""
        ...

    def has_peer(self, peer_id: str) -> bool:
        """Whether `peer_id` can be sent to."""
        ...

    def reply(self, envelope: Sequence[bytes], body: bytes) -> bool:
        """Send a reply to the client behind `envelope`."""
        ...

    def accept_from(self, peer_ids: Iterable[str]) -> None:
        """Also take frames from these peers."""
        ...

    def update_peers(
        self, peers: Mapping[str, str], server_keys: Mapping[str, bytes] | None = None
    ) -> None:
        """Connect to new peers (and reconnect changed ones)."""
        ...

    def set_blocked_peers(self, peer_ids: Iterable[str]) -> None:
        """TESTS ONLY: drop all traffic to and from these peers."""
        ...

    @property
    def learned_cluster_id(self) -> str:
        """The first cluster identity a peer's link named ("" if none yet)."""
        ...

    def set_cluster_id(self, cluster_id: str) -> None:
        """Name and require `cluster_id` on peer links from now on (a joiner learned it)."""
        ...

    def on_tick(self, now: float) -> list[str]:
        """Periodic upkeep (once a tick), `now` in monotonic seconds; returns the peers
        whose established link broke since the last tick (their process died, or closed
        it), for `Raft.leader_unreachable`."""
        ...

    def close(self) -> None:
        """Release everything; idempotent."""
        ...
