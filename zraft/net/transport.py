"""ZeroMQ transport: the sockets of one node, moving opaque `bytes` frames.

`ZmqTransport` owns a node's sockets and nothing else. It knows no message types (it
never imports `zraft.wire`), never blocks and starts no threads: the node's single
`zmq.Poller` loop registers the two ROUTERs, then drains them and sends through here.

Sockets (STYLE.md B5 "Sockets"):

- **Peer in:** one ROUTER bound at this node's peer endpoint. It only receives. Each
  message must be exactly `[routing_id, frame]` from a configured peer.
- **Peer out:** one DEALER per peer, `routing_id = own id`, connected to that peer's
  ROUTER. It only sends; Raft messages are one-way, so nothing legit ever comes back.
- **Clients:** one ROUTER bound at the client endpoint that keeps the REP envelope
  (`[identity, ..., b"", body]`), so replies can wait for commit while other requests
  keep arriving, and plain REQ clients (and DEALER clients sending `[b"", body]`) work.

Socket options, and why (measurements are in PLATFORM.md §4, libzmq 4.3.5):

- `LINGER=0` everywhere: `ctx.term()` with an unsent message and the default linger hangs
  forever (§4c); Raft retransmits, so unsent frames are worth nothing at shutdown.
- `IMMEDIATE=1` on DEALERs: else frames sent while a peer is dead reach its *next
  incarnation* (§4c, 531 stale messages); with it such a send fails at once (a drop).
- `SNDHWM` (default 1000) on DEALERs, `NOBLOCK` sends: a slow or stopped peer holds at
  most that many frames; past it a send is dropped, never blocking the loop.
- `HEARTBEAT_IVL`/`HEARTBEAT_TIMEOUT` on DEALERs: without heartbeats a stopped or
  partitioned peer looks connected and frames pile up for it (§4c "stop" rows); with them
  the dead link is closed and `IMMEDIATE` turns sends into drops. Pings are answered by
  libzmq's I/O thread, so a busy Python loop (slow fsync) does not trip them.
- `RECONNECT_IVL` 100 ms (max 1 s backoff) and `CONNECT_TIMEOUT` 1 s on DEALERs: a
  restarted peer is reached again quickly, and a connect stuck in SYN retransmits behind
  an iptables DROP partition (§1a) is abandoned and retried instead of waiting minutes.
- `ROUTER_HANDOVER=1` on both ROUTERs: a peer restarted while its old connection is still
  half-open reconnects with the same routing id; without handover the newcomer is
  silently ignored and its frames vanish (§4c, re-verified in tests/test_transport.py).
- `MAXMSGSIZE` on both ROUTERs: libzmq drops the connection of a sender whose frame is
  larger, before Python sees it. Without it a frame declaring 2 GiB grew RSS by 200 MB
  (§4b). The DEALERs get a small `MAXMSGSIZE` and `RCVHWM` too, since nothing legit ever
  arrives on them and they are never read.
- `ZAP_DOMAIN` on both ROUTERs, with no ZAP handler: this makes libzmq refuse ZMTP/1.0
  and 2.0 peers. Without it, raw bytes on the port are parsed as ZMTP/1.0 and *delivered
  to the app*; a crafted `\\x03\\x00n2\\x06\\x00hello` even arrives as `[b"n2", b"hello"]`,
  impersonating peer `n2` (§4b, re-verified in tests). Clients must speak ZMTP 3.x
  (libzmq >= 4.0). If a ZAP handler is ever bound in the same context (for CURVE), it
  will also be asked about these NULL-mechanism connections (domain `zraft`).
- `BACKLOG` (`LISTEN_BACKLOG`, 1024) on both ROUTERs: libzmq's default of 100 let a burst
  of 192 connections overflow the accept queue while the I/O thread waited for the CPU;
  the kernel dropped the SYNs past it and those clients waited 1 s for the retransmit.
- `ROUTER_MANDATORY=0` on the client ROUTER (explicitly): a reply to a client gone away
  is discarded; with it on, libzmq raises `EHOSTUNREACH` (measured) for nothing.
- `METADATA` `X-Zraft-Cluster: <identity>` on DEALERs: a peer frame whose connection
  names another cluster is refused (`other_cluster`); see `zraft.node.identity`.

CURVE (`curve=CurveKeys(...)`, zraft's default; see zraft/net/security.py and zraft/net/zap.py):

- Before any other socket, a ZAP ROUTER is bound at `inproc://zeromq.zap.01` in this
  transport's context (the node polls it and answers with `zraft.net.zap`). Without a ZAP
  handler a CURVE server admits ANY client key (PLATFORM.md §4a).
- Both ROUTERs are CURVE servers with this node's secret key and their own ZAP domain
  (`PEER_ZAP_DOMAIN`, `CLIENT_ZAP_DOMAIN`), so the handler knows which one is asked.
  A plaintext or ZMTP/1.0 peer fails the handshake and nothing it sends is delivered.
- Each DEALER is a CURVE client of its peer's public key, presenting this node's key.
  libzmq never retries a handshake the peer refused, so a monitor on each DEALER reports
  refusals and `redial_refused` (called once a tick) dials that peer again after a
  backoff: a member refuses a node it has not yet learned was added.
- The sender of a peer frame is the ZAP `User-Id` of its connection (the member id the
  handler bound to the key), not the routing id. So the DEALERs set no routing id and the
  peer ROUTER no `ROUTER_HANDOVER`: every connection gets a fresh libzmq id, nobody can
  take over another's, and a restarted peer is simply a new connection. A client
  request carries the `User-Id` of its connection too: the role of its key.

Remote input never raises: malformed messages are dropped, counted, and kept (bounded) as
`BadInput` records for the node to log as `bad_frame`. Local misuse raises.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import fields
from types import TracebackType

import zmq

from zraft.net.base import (
    LISTEN_BACKLOG,
    BadInput,
    BadInputReason,
    ClientRequest,
    Readiness,
    TransportCounters,
    TransportError,
)
from zraft.net.base import CurveKeys as CurveKeys
from zraft.net.clients import NOBLOCK, POLLIN, ClientRouter, recv_peer
from zraft.net.dealers import REDIAL_FIRST_S as REDIAL_FIRST_S
from zraft.net.dealers import REDIAL_MAX_S as REDIAL_MAX_S
from zraft.net.dealers import DealerOptions, Dealers

DEFAULT_PEER_MAX_MESSAGE_BYTES = 8 * 1024 * 1024
"""Largest peer frame accepted (MAXMSGSIZE of the peer ROUTER): appends and snapshot chunks."""

DEFAULT_CLIENT_MAX_MESSAGE_BYTES = 4 * 1024 + 1024 * 1024 + 64 * 1024
"""Largest client frame: a 4 KiB key, a 1 MiB value (DESIGN.md §2) and 64 KiB of slack."""

DEFAULT_RECV_BUDGET = 256
"""How many messages one `recv_*` call reads at most (STYLE.md B5 "Drain, don't trickle")."""

ZAP_DOMAIN = b"zraft"
"""Set on both plaintext ROUTERs only to make libzmq refuse ZMTP/1.0 and 2.0 peers."""

PEER_ZAP_DOMAIN = b"zraft-peer"
"""ZAP domain of the CURVE peer ROUTER: the handler admits members' keys only."""

CLIENT_ZAP_DOMAIN = b"zraft-client"
"""ZAP domain of the CURVE client ROUTER: the handler admits client keys only."""

ZAP_ENDPOINT = "inproc://zeromq.zap.01"
"""Where libzmq sends ZAP requests (RFC 27)."""

_MAX_BAD_KEPT = 64  # BadInput records kept between two `take_bad_inputs` calls


_COUNTER_NAMES = tuple(
    f.name for f in fields(TransportCounters) if f.name != "send_dropped_by_peer"
)


def _routing_id(node_id: str) -> bytes:
    """Encode a node id as a zmq routing id, refusing ids libzmq would reject or reserve."""
    rid = node_id.encode()
    if not 1 <= len(rid) <= 255 or rid[0] == 0:
        raise ValueError(f"node id {node_id!r} must encode to 1..255 bytes, not starting NUL")
    return rid


class ZmqTransport:
    """The sockets of one node: peer ROUTER in, one DEALER per peer out, client ROUTER.

    Made for one thread running one `zmq.Poller` loop: every call is non-blocking.

    Args:
        node_id: this node's id; used as the routing id of every outgoing DEALER.
        peer_endpoint: endpoint to bind the peer ROUTER at, e.g. `tcp://127.0.0.1:7101`.
        client_endpoint: endpoint to bind the client ROUTER at.
        peers: peer id -> peer endpoint for every OTHER node (must not contain `node_id`).
        peer_max_message_bytes: MAXMSGSIZE of the peer ROUTER.
        client_max_message_bytes: MAXMSGSIZE of the client ROUTER.
        sndhwm: per-peer outgoing queue bound; sends beyond it are dropped.
        rcvhwm: per-connection incoming queue bound on the peer ROUTER.
        reconnect_ivl_ms: first reconnect delay of the DEALERs.
        reconnect_ivl_max_ms: reconnect backoff ceiling of the DEALERs.
        heartbeat_ivl_ms, heartbeat_timeout_ms: ZMTP pings on the DEALERs (0: none), and
            how long a silent DEALER link lives.
        connect_timeout_ms: a TCP connect pending this long is abandoned and retried.
        curve: CURVE keys; None runs plaintext (then no peer is authenticated).
        cluster_id: this cluster's identity, named on our links and required of theirs
            (one naming none is accepted; the first seen is `learned_cluster_id`).
        context: a zmq.Context to use; if None, the transport creates one and terminates
            it in `close()`. A given context is left running.

    Raises:
        ValueError: `peers` contains `node_id`, or an id is not a valid routing id.
        TransportError: an endpoint could not be bound (e.g. the port is in use) or
            connected (malformed endpoint). Nothing is left open when this is raised.
    """

    def __init__(
        self,
        node_id: str,
        peer_endpoint: str,
        client_endpoint: str,
        peers: Mapping[str, str],
        *,
        peer_max_message_bytes: int = DEFAULT_PEER_MAX_MESSAGE_BYTES,
        client_max_message_bytes: int = DEFAULT_CLIENT_MAX_MESSAGE_BYTES,
        sndhwm: int = 1000,
        rcvhwm: int = 1000,
        reconnect_ivl_ms: int = 100,
        reconnect_ivl_max_ms: int = 1000,
        heartbeat_ivl_ms: int = 1000,
        heartbeat_timeout_ms: int = 3000,
        connect_timeout_ms: int = 1000,
        curve: CurveKeys | None = None,
        context: zmq.Context[zmq.Socket[bytes]] | None = None,
        cluster_id: str = "",
    ) -> None:
        if node_id in peers:
            raise ValueError(f"peers must not contain this node's own id {node_id!r}")
        self.node_id = node_id
        self._rid = _routing_id(node_id)
        self._peer_ids = {_routing_id(pid): pid for pid in peers}
        self._owns_context = context is None
        self._context: zmq.Context[zmq.Socket[bytes]] = (
            context if context is not None else zmq.Context()
        )
        self._sockets: list[zmq.Socket[bytes]] = []
        self._closed = False
        self._blocked: frozenset[str] = frozenset()
        self._counts: dict[str, int] = dict.fromkeys(_COUNTER_NAMES, 0)
        self._dropped_by_peer: dict[str, int] = dict.fromkeys(peers, 0)
        self._bad: deque[BadInput] = deque(maxlen=_MAX_BAD_KEPT)
        self._curve = curve
        self._cluster_id = cluster_id
        self.learned_cluster_id = ""
        self._zap: zmq.Socket[bytes] | None = None
        self._poller: zmq.Poller | None = None
        if curve is not None:
            missing = set(peers) - set(curve.peer_server_keys)
            if missing:
                raise ValueError(f"no CURVE server key for peers {sorted(missing)}")
        try:
            if curve is not None:
                # First: libzmq asks the handler bound when a connection arrives.
                self._zap = self._bind_zap()
            self._peer_in = self._bind_router(
                peer_endpoint, peer_max_message_bytes, rcvhwm, PEER_ZAP_DOMAIN
            )
            self._client_in = self._bind_router(
                client_endpoint, client_max_message_bytes, None, CLIENT_ZAP_DOMAIN
            )
            self._client_in.setsockopt(zmq.ROUTER_MANDATORY, 0)
            self._clients = ClientRouter(
                self._client_in, secured=curve is not None, counts=self._counts, bad=self._bad
            )
            self._dealers = Dealers(
                self._rid,
                curve,
                self._new_socket,
                self._sockets.append,
                self._forget_socket,
                DealerOptions(
                    sndhwm=sndhwm,
                    reconnect_ivl_ms=reconnect_ivl_ms,
                    reconnect_ivl_max_ms=reconnect_ivl_max_ms,
                    heartbeat_ivl_ms=heartbeat_ivl_ms,
                    heartbeat_timeout_ms=heartbeat_timeout_ms,
                    connect_timeout_ms=connect_timeout_ms,
                    cluster_id=cluster_id,
                ),
            )
            self._dealers.update(peers, None)
        except BaseException:
            self.close()
            raise

    # --- construction ---------------------------------------------------------

    def _new_socket(self, kind: int) -> zmq.Socket[bytes]:
        sock = self._context.socket(kind)
        self._sockets.append(sock)  # tracked before any option can fail, so close() sees it
        sock.setsockopt(zmq.LINGER, 0)
        return sock

    def _bind_zap(self) -> zmq.Socket[bytes]:
        sock = self._new_socket(zmq.ROUTER)
        try:
            sock.bind(ZAP_ENDPOINT)
        except zmq.ZMQError as exc:
            # One handler per context: two secured transports cannot share a context.
            raise TransportError(
                f"cannot bind the ZAP handler at {ZAP_ENDPOINT}: {exc.strerror} (is another "
                "secured transport using this zmq context?)",
                ZAP_ENDPOINT,
                exc.errno,
            ) from exc
        return sock

    def _bind_router(
        self, endpoint: str, max_bytes: int, rcvhwm: int | None, curve_domain: bytes
    ) -> zmq.Socket[bytes]:
        sock = self._new_socket(zmq.ROUTER)
        sock.setsockopt(zmq.MAXMSGSIZE, max_bytes)
        sock.setsockopt(zmq.BACKLOG, LISTEN_BACKLOG)
        if self._curve is None:
            sock.setsockopt(zmq.ROUTER_HANDOVER, 1)
            sock.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN)
        else:
            # No handover: peers are told apart by their key (User-Id), and every
            # connection keeps its own libzmq-made routing id (see the module doc).
            sock.setsockopt(zmq.CURVE_SERVER, 1)
            sock.setsockopt(zmq.CURVE_SECRETKEY, self._curve.secret)
            sock.setsockopt(zmq.ZAP_DOMAIN, curve_domain)
        if rcvhwm is not None:
            sock.setsockopt(zmq.RCVHWM, rcvhwm)
        try:
            sock.bind(endpoint)
        except zmq.ZMQError as exc:
            raise TransportError(
                f"cannot bind {endpoint}: {exc.strerror}", endpoint, exc.errno
            ) from exc
        return sock

    def _forget_socket(self, sock: zmq.Socket[bytes]) -> None:
        """Close a socket this transport made before the end (a DEALER being replaced)."""
        self._sockets.remove(sock)
        sock.close(linger=0)

    # --- poller ---------------------------------------------------------------

    @property
    def peer_socket(self) -> zmq.Socket[bytes]:
        """The peer ROUTER, for checking `dict(poller.poll())` results."""
        return self._peer_in

    @property
    def client_socket(self) -> zmq.Socket[bytes]:
        """The client ROUTER, for checking `dict(poller.poll())` results."""
        return self._client_in

    @property
    def zap_socket(self) -> zmq.Socket[bytes] | None:
        """The ZAP ROUTER (answer it with `zraft.net.zap.ZapHandler`), None without CURVE."""
        return self._zap

    @property
    def secured(self) -> bool:
        """Whether the sockets run CURVE."""
        return self._curve is not None

    def register(self, poller: zmq.Poller) -> None:
        """Register both ROUTERs (and the ZAP socket) for POLLIN. DEALERs are never polled."""
        poller.register(self._peer_in, zmq.POLLIN)
        poller.register(self._client_in, zmq.POLLIN)
        if self._zap is not None:
            poller.register(self._zap, zmq.POLLIN)

    def poll(self, timeout_ms: int) -> Readiness:
        """Wait up to `timeout_ms` on both ROUTERs (and the ZAP socket): the node's one
        poller, owned here so the loop never touches a socket."""
        if self._poller is None:
            self._poller = zmq.Poller()
            self.register(self._poller)
        events = dict(self._poller.poll(timeout_ms))
        peers, clients = self.readable(events)
        zap = self._zap is not None and bool(events.get(self._zap, 0) & POLLIN)
        return Readiness(peers=peers, clients=clients, zap=zap)

    def on_tick(self, now: float) -> list[str]:
        """Once a tick: redial the peers that refused us; return those whose link broke."""
        self.redial_refused(now)
        return self._dealers.take_lost()

    def readable(self, events: Mapping[zmq.Socket[bytes], int]) -> tuple[bool, bool]:
        """`(peers_ready, clients_ready)` from `dict(poller.poll(timeout))` (others ignored)."""
        peers_ready = bool(events.get(self._peer_in, 0) & POLLIN)
        clients_ready = bool(events.get(self._client_in, 0) & POLLIN)
        return peers_ready, clients_ready

    # --- peers ----------------------------------------------------------------

    def send(self, peer_id: str, frame: bytes) -> bool:
        """Send one frame to a peer without blocking.

        Returns:
            True if libzmq accepted the frame (it may still be lost with the connection).
            False if it was dropped (counted): the peer is not connected (`IMMEDIATE`), its
            queue is at `sndhwm`, or it is blocked. Raft retries: callers do nothing else.

        Raises:
            KeyError: `peer_id` is not a configured peer (a local bug, not remote input).
        """
        dealer = self._dealers.socket(peer_id)
        if peer_id in self._blocked:
            self._counts["peer_blocked_dropped"] += 1
            return False
        try:
            dealer.send(frame, NOBLOCK)
        except zmq.Again:
            self._counts["peer_send_dropped"] += 1
            self._dropped_by_peer[peer_id] += 1
            return False
        self._counts["peer_frames_sent"] += 1
        return True

    send_message = send  # a Raft message is just a frame here (faults.FaultyTransport drops some)

    def has_peer(self, peer_id: str) -> bool:
        """Whether `peer_id` has a connection (membership changes add peers)."""
        return peer_id in self._dealers.connected

    def accept_from(self, peer_ids: Iterable[str]) -> None:
        """Also take frames from these peers, even with no connection to them yet (a
        joining node hears from members before it dials them)."""
        for pid in peer_ids:
            if pid != self.node_id:
                self._peer_ids[_routing_id(pid)] = pid

    def update_peers(
        self, peers: Mapping[str, str], server_keys: Mapping[str, bytes] | None = None
    ) -> None:
        """Connect to peers not yet known and reconnect those whose endpoint (or, with
        CURVE, server key) changed.

        Peers missing from `peers` are kept: a removed member may come back, and an idle
        DEALER costs nothing. With CURVE, a peer whose server key is not in `server_keys`
        cannot be reached and is skipped.

        Raises:
            ValueError: `peers` contains this node's own id, or an invalid routing id.
            TransportError: an endpoint could not be connected (malformed).
        """
        if self.node_id in peers:
            raise ValueError(f"peers must not contain this node's own id {self.node_id!r}")
        for pid in self._dealers.update(peers, server_keys):
            self._peer_ids[_routing_id(pid)] = pid
            self._dropped_by_peer.setdefault(pid, 0)

    def redial_refused(self, now: float) -> list[str]:
        """Dial again the peers whose CURVE handshake failed; returns those redialed now
        (see `zraft.net.dealers.Dealers.redial_refused`). Cheap: call it once a tick."""
        return self._dealers.redial_refused(now)

    def send_many(self, frames: Iterable[tuple[str, bytes]]) -> int:
        """Send `(peer_id, frame)` pairs in order; return how many were dropped.

        Raises:
            KeyError: a peer id is not configured. Frames before it were sent.
        """
        dropped = 0
        for peer_id, frame in frames:
            if not self.send(peer_id, frame):
                dropped += 1
        return dropped

    def recv_peers(self, budget: int = DEFAULT_RECV_BUDGET) -> list[tuple[bytes, bytes]]:
        """Drain the peer ROUTER: read up to `budget` messages, stopping at `zmq.Again`.

        Returns:
            `(sender, frame)` for each well-formed message from a configured, unblocked
            peer, in arrival order. The sender is the peer id, UTF-8 encoded: with CURVE,
            the `User-Id` the ZAP handler bound to the connection's key; without, the
            routing id the connection chose.
            Malformed messages (not exactly one non-empty frame, or an unknown sender)
            count against the budget, are dropped and recorded as `BadInput`; frames from
            blocked peers count against the budget and are dropped.
        """
        out: list[tuple[bytes, bytes]] = []
        for _ in range(budget):
            try:
                parts, sender, cluster = recv_peer(self._peer_in, secured=self._curve is not None)
            except zmq.Again:
                break
            if cluster and self._cluster_id and cluster != self._cluster_id:
                self._bad_peer(sender, BadInputReason.OTHER_CLUSTER)
            elif len(parts) != 2:
                self._bad_peer(sender, BadInputReason.FRAME_COUNT)
            elif sender not in self._peer_ids:
                self._bad_peer(sender, BadInputReason.UNKNOWN_SENDER)
            elif not parts[1]:
                self._bad_peer(sender, BadInputReason.EMPTY_FRAME)
            elif self._peer_ids[sender] in self._blocked:
                self._counts["peer_blocked_dropped"] += 1
            else:
                self._counts["peer_frames_received"] += 1
                self.learned_cluster_id = self.learned_cluster_id or cluster
                out.append((sender, parts[1]))
        return out

    def set_cluster_id(self, cluster_id: str) -> None:
        """Adopt `cluster_id` (a joiner that learned it): required and named from now on."""
        self._cluster_id = cluster_id
        self._dealers.set_cluster_id(cluster_id)

    def _bad_peer(self, sender: bytes, reason: BadInputReason) -> None:
        self._counts["peer_bad_input"] += 1
        self._bad.append(BadInput(source="peer", sender=sender, reason=reason))

    # --- clients --------------------------------------------------------------

    def recv_clients(self, budget: int = DEFAULT_RECV_BUDGET) -> list[tuple[list[bytes], bytes]]:
        """Drain the client ROUTER: `(envelope, body)` of up to `budget` well-formed
        requests, in arrival order (see `zraft.net.clients` for what is well formed);
        pass the envelope unchanged to `reply()`."""
        return [(r.envelope, r.body) for r in self.recv_client_requests(budget)]

    def recv_client_requests(self, budget: int = DEFAULT_RECV_BUDGET) -> list[ClientRequest]:
        """Like `recv_clients`, with each request's `User-Id` (its key's role under CURVE)."""
        return self._clients.recv(budget)

    def reply(self, envelope: Sequence[bytes], body: bytes) -> bool:
        """Send `envelope + [body]` to a client without blocking (see `ClientRouter.reply`)."""
        return self._clients.reply(envelope, body)

    # --- diagnostics and fault injection ------------------------------------------

    def take_bad_inputs(self) -> list[BadInput]:
        """Return the malformed inputs recorded since the last call, oldest first.

        At most the latest 64 are kept; `counters()` has the full totals.
        """
        bad = list(self._bad)
        self._bad.clear()
        return bad

    def counters(self) -> TransportCounters:
        """Return a snapshot of the running totals."""
        return TransportCounters(**self._counts, send_dropped_by_peer=dict(self._dropped_by_peer))

    def set_blocked_peers(self, peer_ids: Iterable[str]) -> None:
        """FOR TESTS AND FAULT INJECTION ONLY: cut this node off from `peer_ids`.

        Frames to and from these peers are dropped (and counted in
        `peer_blocked_dropped`) while the TCP links stay up, which models a partition
        without root. An empty set heals it. A node turns this on only from an explicit
        test setting, never from anything received on the wire.

        Raises:
            KeyError: an id is not a configured peer.
        """
        blocked = frozenset(peer_ids)
        unknown = blocked - self._dealers.connected
        if unknown:
            raise KeyError(f"unknown peers: {sorted(unknown)}")
        self._blocked = blocked

    # --- shutdown -------------------------------------------------------------

    def close(self) -> None:
        """Close every socket at once (linger 0) and terminate the context if we own it.

        Idempotent. The transport must not be used afterwards.
        """
        if self._closed:
            return
        self._closed = True
        for sock in self._sockets:
            sock.close(linger=0)
        self._sockets.clear()
        if self._owns_context:
            self._context.term()

    def __enter__(self) -> ZmqTransport:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
