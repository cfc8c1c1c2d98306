"""An in-memory twin of `ZmqTransport` (hashicorp's `InmemTransport`): nodes in one
process exchange frames through an `InmemNetwork` instead of sockets.

It keeps the contract the node relies on (opaque frames, non-blocking calls, sends to
unknown or cut-off peers dropped, client replies routed by envelope) and nothing of
ZeroMQ, so request serving, forwarding, parking and leadership transfers can be tested
deterministically with a fake clock: `poll` never waits. Tests only; a node never uses it
unless handed one. Like every transport, it must not know any message format.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping, Sequence

from zraft.net.base import BadInput, ClientRequest, Readiness


class InmemNetwork:
    """The wires between in-memory transports, and the clients' side of them.

    Attributes:
        replies: client id -> the replies it received, oldest first.
    """

    def __init__(self) -> None:
        self._nodes: dict[str, InmemTransport] = {}
        self._cut: set[frozenset[str]] = set()
        self._next_client = 0
        self.replies: dict[bytes, deque[bytes]] = {}

    def transport(self, node_id: str, peers: Mapping[str, str]) -> InmemTransport:
        """A transport for `node_id`, attached to this network (the node's factory)."""
        transport = InmemTransport(self, node_id, peers)
        self._nodes[node_id] = transport
        return transport

    def cut(self, a: str, b: str) -> None:
        """Drop every frame between `a` and `b` (both ways) until `heal`."""
        self._cut.add(frozenset((a, b)))

    def heal(self) -> None:
        """Undo every `cut`."""
        self._cut.clear()

    def request(self, node_id: str, body: bytes, *, role: str | None = None) -> bytes:
        """A client sends `body` to `node_id`'s client endpoint; returns the client's id,
        under which its replies arrive (`replies`, `take_reply`)."""
        self._next_client += 1
        client = b"client-%d" % self._next_client
        self.replies[client] = deque()
        self._nodes[node_id].client_inbox.append(ClientRequest([client, b""], body, role))
        return client

    def take_reply(self, client: bytes) -> bytes | None:
        """The oldest reply `client` has not taken yet, or None."""
        queue = self.replies.get(client)
        return queue.popleft() if queue else None

    def deliver(self, src: str, dst: str, frame: bytes) -> bool:
        """Put a frame in `dst`'s peer inbox; False when there is no wire to it."""
        node = self._nodes.get(dst)
        if node is None or node.closed or frozenset((src, dst)) in self._cut:
            return False
        if src in node.blocked:
            return True  # dropped at the receiver, like a firewall rule there
        node.peer_inbox.append((src.encode(), frame))
        return True


class InmemTransport:
    """One node's end of an `InmemNetwork` (see the module doc).

    Attributes:
        peer_inbox: frames received from peers and not read yet.
        client_inbox: client requests not read yet.
    """

    zap_socket = None

    def __init__(self, network: InmemNetwork, node_id: str, peers: Mapping[str, str]) -> None:
        self.node_id = node_id
        self._network = network
        self._peers = dict(peers)
        self._accepted = set(peers)
        self.blocked: frozenset[str] = frozenset()
        self.peer_inbox: deque[tuple[bytes, bytes]] = deque()
        self.client_inbox: deque[ClientRequest] = deque()
        self.closed = False

    def poll(self, timeout_ms: int) -> Readiness:
        """Never waits: the caller owns time."""
        return Readiness(peers=bool(self.peer_inbox), clients=bool(self.client_inbox))

    def recv_peers(self, budget: int) -> list[tuple[bytes, bytes]]:
        """Up to `budget` frames from accepted peers (others are dropped)."""
        out = []
        while self.peer_inbox and len(out) < budget:
            sender, frame = self.peer_inbox.popleft()
            if sender.decode() in self._accepted:
                out.append((sender, frame))
        return out

    def recv_client_requests(self, budget: int) -> list[ClientRequest]:
        """Up to `budget` client requests."""
        out = []
        while self.client_inbox and len(out) < budget:
            out.append(self.client_inbox.popleft())
        return out

    def take_bad_inputs(self) -> list[BadInput]:
        """Nothing malformed can arrive here."""
        return []

    def send(self, peer_id: str, frame: bytes) -> bool:
        """Hand a frame to the network; False for an unknown, blocked or cut-off peer."""
        if peer_id not in self._peers or peer_id in self.blocked:
            return False
        return self._network.deliver(self.node_id, peer_id, frame)

    send_message = send

    def has_peer(self, peer_id: str) -> bool:
        """Whether `peer_id` is connected."""
        return peer_id in self._peers

    def reply(self, envelope: Sequence[bytes], body: bytes) -> bool:
        """Route a reply to the client named by the envelope."""
        queue = self._network.replies.get(envelope[0])
        if queue is None:
            return True  # the client went away: discarded, as libzmq does
        queue.append(body)
        return True

    def accept_from(self, peer_ids: Iterable[str]) -> None:
        """Also take frames from these peers."""
        self._accepted.update(peer_ids)

    def update_peers(
        self, peers: Mapping[str, str], server_keys: Mapping[str, bytes] | None = None
    ) -> None:
        """Connect to these peers too."""
        for peer, endpoint in peers.items():
            self._peers[peer] = endpoint
            self._accepted.add(peer)

    def set_blocked_peers(self, peer_ids: Iterable[str]) -> None:
        """Drop frames to and from these peers."""
        self.blocked = frozenset(peer_ids)

    learned_cluster_id = ""  # in-memory links name no cluster identity

    def set_cluster_id(self, cluster_id: str) -> None:
        """Nothing to name: in-memory links carry no metadata."""

    def on_tick(self, now: float) -> list[str]:
        """No upkeep; links never break."""
        return []

    def close(self) -> None:
        """Detach: nothing is delivered to this node any more."""
        self.closed = True
