"""Hostile input to a live node: it answers or drops it, logs it, and keeps serving.

The target is the leader, the node whose failure would cost an election. After each input
the node still answers requests, and at the end the cluster still has its one leader: the
logs hold exactly one `leader_elected` (an idle cluster with no node fault must not
re-elect). Dropped input that reaches the application is logged as `bad_frame`; the tests
count those events per input, never grep their text.
"""

from __future__ import annotations

import contextlib
import random
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from tests import logscan
from tests.procs import ClusterFactory, ProcessCluster
from zraft import wire
from zraft.client import Client, ClientError
from zraft.core.messages import AppendRequest, VoteRequest, VoteResponse
from zraft.net.security import Keypair

MAX_KEY = 64
MAX_VALUE = 1024
REPLY_TIMEOUT_S = 3.0


@pytest.fixture
def raw_context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A context for the tests' own raw sockets; destroy() closes them all with linger 0."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def host_port(endpoint: str) -> tuple[str, int]:
    """`tcp://HOST:PORT` -> (HOST, PORT)."""
    host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
    return host, int(port)


def send_raw_tcp(endpoint: str, payload: bytes) -> None:
    """Connect with a plain TCP socket, send `payload`, read whatever comes back, close."""
    with socket.create_connection(host_port(endpoint), timeout=2) as sock:
        try:
            sock.sendall(payload)
            sock.recv(4096)  # libzmq's greeting, or nothing once it hangs up on us
        except OSError:
            pass  # reset by the peer: refusing garbage is the expected outcome


def bad_frames(cluster: ProcessCluster, node_id: str, **fields: Any) -> int:
    """How many `bad_frame` events `node_id` logged with the given fields."""
    return logscan.count(cluster.node_events(node_id), "bad_frame", **fields)


def assert_serving(cluster: ProcessCluster, node_id: str, leader: str) -> None:
    """The node answers `status`, still follows `leader`, and serves a write and a read."""
    status = cluster.status(node_id)
    assert status["leader"] == leader, status
    key = f"alive-{random.random()}"
    put = cluster.request(node_id, "put", key=key, value="yes")
    assert put["ok"], put
    got = cluster.request(node_id, "get", key=key)
    assert got["ok"] and got["value"] == b"yes", got


def error_code(cluster: ProcessCluster, node_id: str, frames: list[bytes]) -> str:
    """Send raw frames from a REQ socket; return the error code of the (required) reply."""
    reply = cluster.request_raw(node_id, frames, timeout=REPLY_TIMEOUT_S)
    assert reply is not None, f"no reply to {frames!r:.80}\n{cluster.describe()}"
    assert len(reply) == 1, reply
    decoded = wire.decode_reply(reply[0])
    assert not decoded["ok"] and decoded["error"] is not None, decoded
    code: str = decoded["error"]["code"]
    return code


def pack(obj: Any) -> bytes:
    """msgpack as a client library would pack it (no validation)."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def wrong_shapes() -> list[bytes]:
    """Valid msgpack that is not a valid request."""
    return [
        pack([1, 2, 3]),
        pack(42),
        pack("put"),
        pack(None),
        pack({"op": 7}),
        pack({"key": "k"}),  # no op
        pack({"op": "put", "key": 5, "value": "v"}),
        pack({"op": "put", "key": "k", "value": ["v"]}),
        pack({"op": "put", "key": "k"}),  # missing value
        pack({"op": "put", "key": "", "value": "v"}),  # empty key
        pack({"op": "cas", "key": "k", "value": "v"}),  # cas without expected
        pack({"op": "get", "key": "k", "consistency": "eventual"}),
        pack({"op": "put", "key": "k", "value": "v", "extra": 1}),
        pack({"op": "put", "key": "k", "value": "v", "client": "c"}),  # seq missing
        pack({"op": "put", "key": "k", "value": "v", "client": "c", "seq": -1}),
        pack({1: 2}),
        pack({"op": "get", "key": msgpack.ExtType(5, b"x")}),
        pack(nested(20)),
        # The data model's ops (issue 13): each malformed shape is refused whole.
        pack({"op": "range", "key": "k", "prefix": True, "range_end": "z"}),
        pack({"op": "range", "key": "k", "revision": -1}),
        pack({"op": "range", "key": "k", "sort_target": "color"}),
        pack({"op": "compact"}),
        pack({"op": "txn", "compare": "all"}),
        pack({"op": "txn", "compare": [{"key": "k", "target": "version", "result": "~"}]}),
        pack({"op": "txn", "success": [{"op": "cas", "key": "k"}]}),
        pack({"op": "txn", "success": [nested(30)]}),
        pack({"op": "txn", "success": [{"op": "put", "key": "k", "value": "v", "seq": 1}]}),
        pack({"op": "delete_range", "key": "k", "prefix": "yes"}),
        pack({"op": "alarm_disarm", "alarm": "nospace"}),
        # Watches (issue 15): refused before anything is held.
        pack({"op": "watch", "key": "k", "wait_ms": 3_600_000}),
        pack({"op": "watch", "key": "k", "max_events": 0}),
        pack({"op": "watch", "key": "k", "filters": ["noput", "nodelete", "noput"]}),
        pack({"op": "watch", "key": "k", "start_revision": -5}),
        pack({"op": "watch", "key": "k", "prefix": True, "range_end": "z"}),
        # Backups (issue 17): a read of a snapshot file needs a sound offset.
        pack({"op": "snapshot_read"}),
        pack({"op": "snapshot_read", "offset": -1}),
        pack({"op": "snapshot_read", "offset": "0"}),
        pack({"op": "snapshot_read", "offset": 0, "snapshot_index": True}),
    ]


def nested(depth: int) -> list[Any]:
    """A list nested `depth` levels deep."""
    value: list[Any] = [1]
    for _ in range(depth):
        value = [value]
    return value


def test_client_endpoint_survives_hostile_input(
    make_cluster: ClusterFactory, raw_context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Garbage on the client endpoint is answered `bad_request`/`too_large` or dropped.

    Raw TCP garbage (random bytes, an HTTP request, a ZMTP/1.0-looking frame) is refused
    by libzmq. From REQ sockets: random bytes, truncated msgpack, valid msgpack of the
    wrong shape and an unknown op are each answered `bad_request` and logged as one
    `bad_frame` (source `client`); a value or key over the configured limit is answered
    `too_large`; a two-frame request is answered `bad_request`; a DEALER message without
    the empty delimiter is dropped and logged. The leader keeps serving after each input
    and no election happens.
    """
    cluster = make_cluster(3, max_key_bytes=MAX_KEY, max_value_bytes=MAX_VALUE)
    cluster.start_all()
    leader = cluster.wait_leader()
    target = leader
    endpoint = cluster.client_endpoints[target]
    assert_serving(cluster, target, leader)
    rng = random.Random(20261125)

    for payload in (
        rng.randbytes(4096),
        b"GET / HTTP/1.1\r\nHost: zraft\r\n\r\n",
        b"\x01\x00\x06\x00hello\x06\x00world",  # ZMTP/1.0 framing of two messages
    ):
        send_raw_tcp(endpoint, payload)
        assert_serving(cluster, target, leader)

    logged_before = bad_frames(cluster, target, source="client")
    decodable_invalid = 0

    random_frames = [rng.randbytes(rng.randint(1, 200)) for _ in range(5)]
    good = wire.encode_request("put", key="key", value="a value long enough to cut")
    truncated = [good[:cut] for cut in (1, len(good) // 2, len(good) - 1)]
    unknown_ops = [pack({"op": "explode"}), pack({"op": "PUT", "key": "k", "value": "v"})]
    for frame in random_frames + truncated + wrong_shapes() + unknown_ops:
        assert error_code(cluster, target, [frame]) == "bad_request", frame
        decodable_invalid += 1
    assert cluster.status(target)["leader"] == leader

    too_large = [
        pack({"op": "put", "key": "k", "value": b"v" * (MAX_VALUE + 1)}),
        pack({"op": "put", "key": "k" * (MAX_KEY + 1), "value": "v"}),
        pack({"op": "get", "key": b"k" * (MAX_KEY + 1)}),
        pack({"op": "cas", "key": "k", "expected": b"e" * (MAX_VALUE + 1), "value": "v"}),
        pack({"op": "range", "key": "k", "range_end": b"z" * (MAX_KEY + 1)}),
        pack(
            {"op": "txn", "success": [{"op": "put", "key": "k", "value": b"v" * (MAX_VALUE + 1)}]}
        ),
        pack(
            {
                "op": "txn",
                "compare": [
                    {
                        "key": "k",
                        "target": "value",
                        "result": "=",
                        "operand": b"o" * (MAX_VALUE + 1),
                    }
                ],
            }
        ),
    ]
    # Well-formed but refused by the leader (not logged as a bad frame): a key put twice.
    twice = pack({"op": "txn", "success": [{"op": "put", "key": "k", "value": "v"}] * 2})
    assert error_code(cluster, target, [twice]) == "bad_request"
    too_many = pack({"op": "txn", "failure": [{"op": "range", "key": "k"}] * 129})
    assert error_code(cluster, target, [too_many]) == "too_many_ops"
    for frame in too_large:
        assert error_code(cluster, target, [frame]) == "too_large"

    two_frames = [wire.encode_request("status"), wire.encode_request("status")]
    assert error_code(cluster, target, two_frames) == "bad_request"
    decodable_invalid += 1

    dealer = raw_context.socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    if cluster.curve is not None:
        cluster.curve.apply(dealer, endpoint)  # an admitted client sending a bad envelope
    dealer.connect(endpoint)
    dealer.send(wire.encode_request("status"))  # no empty delimiter: not a REQ envelope
    decodable_invalid += 1

    expected = logged_before + decodable_invalid
    logscan.wait_for(
        lambda: bad_frames(cluster, target, source="client") >= expected,
        timeout=5,
        describe=cluster.describe,
    )
    assert_serving(cluster, target, leader)
    # None of the writes the garbage resembled was applied.
    for key in ("k", "key"):
        got = cluster.request(target, "get", key=key)
        assert got["ok"] and not got["found"], got
    assert len(cluster.leader_elected()) == 1, cluster.describe()


def test_peer_endpoint_survives_hostile_input(
    make_cluster: ClusterFactory, raw_context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Garbage and forgeries on the leader's peer endpoint are dropped and logged.

    Raw TCP garbage, including ZMTP/1.0 framing that names a peer, never reaches the
    node. A DEALER holding follower A's key (and so authenticated as A, whatever
    routing id it presents) sends random bytes, msgpack of the wrong shape, an unknown
    tag, a wrong wire version, two-frame and empty messages, and well-formed messages
    whose `src` claims to be follower B: a higher-term AppendRequest and VoteRequest
    (which would depose the leader if trusted) and a forwarded put. A message from A
    addressed to B is dropped too. Each input that reaches the application is one
    `bad_frame` (source `peer`, sender A: the key decides). A DEALER with an unknown key
    is refused at the handshake (`auth_denied`) and reaches nothing. The leader keeps
    its term and leadership, and the forged put is not applied.
    """
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    follower_a, follower_b = (n for n in cluster.ids if n != leader)
    endpoint = cluster.peer_endpoints[leader]
    term = cluster.status(leader)["term"]
    assert_serving(cluster, leader, leader)
    rng = random.Random(7)

    for payload in (
        rng.randbytes(4096),
        b"\x03\x00" + follower_a.encode() + b"\x06\x00hello",  # ZMTP/1.0 with an identity
        b"GET / HTTP/1.1\r\n\r\n",
    ):
        send_raw_tcp(endpoint, payload)
    assert_serving(cluster, leader, leader)

    def send_as(key_owner: str, frames: list[bytes], logged: int) -> None:
        """Send one message from a fresh DEALER holding `key_owner`'s key and presenting
        follower B's routing id; wait until the leader logged `logged` bad frames from
        `key_owner` (the authenticated sender, never the routing id)."""
        dealer = cluster.peer_dealer(raw_context, leader, key_owner, routing_id=follower_b)
        dealer.send_multipart(frames)
        try:
            logscan.wait_for(
                lambda: bad_frames(cluster, leader, source="peer", sender=key_owner) >= logged,
                timeout=5,
                describe=cluster.describe,
            )
        finally:
            dealer.close(linger=0)

    forged_put = wire.Request(op="put", key=b"forged", value=b"x")
    inputs: list[tuple[str, list[bytes]]] = [
        *((follower_a, [rng.randbytes(rng.randint(1, 300))]) for _ in range(3)),
        (follower_a, [pack({"op": "put"})]),
        (follower_a, [pack([wire.WIRE_VERSION, 99, follower_a])]),
        (follower_a, [pack([wire.WIRE_VERSION + 1, 0])]),
        (follower_a, [b"one", b"two"]),
        (follower_a, [b""]),
        (
            follower_a,
            [wire.encode_message(AppendRequest(follower_b, leader, term + 5, 0, 0, (), 0, 0))],
        ),
        (
            follower_a,
            [
                wire.encode_message(
                    VoteRequest(follower_b, leader, term + 5, 99, term, False, False)
                )
            ],
        ),
        (follower_a, [wire.encode_forward(follower_b, 1, forged_put)]),
        (
            follower_a,
            [wire.encode_message(VoteResponse(follower_a, follower_b, 0, True, False))],
        ),
    ]
    logged = bad_frames(cluster, leader, source="peer", sender=follower_a)
    for key_owner, frames in inputs:
        logged += 1
        send_as(key_owner, frames, logged)
        status = cluster.status(leader)
        assert status["role"] == "leader" and status["term"] == term, status

    # An unknown key, however it names itself, is refused before anything is delivered.
    denied = logscan.count(cluster.node_events(leader), "auth_denied", source="peer")
    rogue = cluster.peer_dealer(raw_context, leader, Keypair(*zmq.curve_keypair()), "mallory")
    with contextlib.suppress(zmq.Again):  # refused at once: no pipe left to send on
        forged = VoteResponse(follower_a, leader, 0, True, False)
        rogue.send(wire.encode_message(forged), zmq.NOBLOCK)
    logscan.wait_for(
        lambda: logscan.count(cluster.node_events(leader), "auth_denied", source="peer") > denied,
        timeout=5,
        describe=cluster.describe,
    )
    rogue.close(linger=0)
    assert bad_frames(cluster, leader, source="peer") == logged, cluster.describe()

    assert_serving(cluster, leader, leader)
    got = cluster.request(leader, "get", key="forged")
    assert got["ok"] and not got["found"], got
    assert len(cluster.leader_elected()) == 1, cluster.describe()
    cluster.assert_safety()


def test_impersonating_a_peer_does_not_cut_its_link(
    make_cluster: ClusterFactory, raw_context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """A connection presenting follower A's routing id must not cut A's own link.

    (Before CURVE, `ROUTER_HANDOVER` handed A's routing id to any such connection and
    A was not heard until its heartbeat timed out.) Now a DEALER with an unknown key
    and A's routing id is refused at the handshake (`auth_denied`); one holding member
    B's key and presenting A's routing id is heard as B: its garbage is a `bad_frame`
    from B. Follower B is then killed, so every commit needs A's acknowledgements over
    A's real connection. A write through the leader must commit, the leader must keep
    leading, and there must be no second election.
    """
    cluster = make_cluster(3, request_timeout_ms=1500)
    cluster.start_all()
    leader = cluster.wait_leader()
    follower_a, follower_b = (n for n in cluster.ids if n != leader)
    assert_serving(cluster, leader, leader)

    denied = logscan.count(cluster.node_events(leader), "auth_denied", source="peer")
    rogue = cluster.peer_dealer(raw_context, leader, Keypair(*zmq.curve_keypair()), follower_a)
    with contextlib.suppress(zmq.Again):  # refused at once: no pipe left to send on
        rogue.send(b"\xc1 garbage", zmq.NOBLOCK)
    logscan.wait_for(
        lambda: logscan.count(cluster.node_events(leader), "auth_denied", source="peer") > denied,
        timeout=5,
        describe=cluster.describe,
    )
    rogue.close(linger=0)

    logged = bad_frames(cluster, leader, source="peer", sender=follower_b) + 1
    dealer = cluster.peer_dealer(raw_context, leader, follower_b, routing_id=follower_a)
    dealer.send(b"\xc1 garbage")
    logscan.wait_for(
        lambda: bad_frames(cluster, leader, source="peer", sender=follower_b) >= logged,
        timeout=5,
        describe=cluster.describe,
    )
    dealer.close(linger=0)
    assert bad_frames(cluster, leader, source="peer", sender=follower_a) == 0

    cluster.kill(follower_b)
    put = cluster.request(leader, "put", key="after", value="with A only")
    assert put["ok"], f"{put}\n{cluster.describe()}"
    status = cluster.status(leader)
    assert status["role"] == "leader", f"{status}\n{cluster.describe()}"
    assert len(cluster.leader_elected()) == 1, cluster.describe()


GARBAGE_FRAMES = 30_000  # sent in all, over the six endpoints; the leader dies in the middle
FLOOD_BATCH = 25  # frames per socket between two 10 ms polls: ~2,500 a second per socket


class Flood(threading.Thread):
    """Garbage into one node's client or peer endpoint until stopped: random bytes,
    truncated and wrong-shaped msgpack, from a DEALER holding a key the node admits (an
    admitted client's, or another member's), so all of it reaches the node's decoder."""

    def __init__(self, sock: zmq.Socket[bytes], client: bool, seed: int) -> None:
        super().__init__(daemon=True)
        self._sock = sock
        self._client = client
        self._rng = random.Random(seed)
        self._halt = threading.Event()
        self._wrong_shapes = wrong_shapes()
        self.sent = 0

    def _frame(self) -> bytes:
        roll = self._rng.random()
        if roll < 0.5:
            return self._rng.randbytes(self._rng.randint(1, 300))
        if roll < 0.8:
            good = wire.encode_request("put", key="k", value="v" * self._rng.randint(1, 50))
            return good[: self._rng.randint(1, len(good) - 1)]
        return self._rng.choice(self._wrong_shapes)

    def run(self) -> None:
        while not self._halt.is_set():
            for _ in range(FLOOD_BATCH):
                frames = [b"", self._frame()] if self._client else [self._frame()]
                try:
                    self._sock.send_multipart(frames, zmq.NOBLOCK)
                    self.sent += 1
                except zmq.Again:
                    break  # the node is down (killed): nothing to send to
            while self._sock.poll(10, zmq.POLLIN):  # answers to the client garbage
                self._sock.recv_multipart()

    def stop(self) -> None:
        self._halt.set()
        self.join(timeout=10)
        assert not self.is_alive(), "the flood did not stop"


def test_a_garbage_flood_during_writes_and_a_leader_kill(
    make_cluster: ClusterFactory, raw_context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Every node's client and peer endpoints take up to ~2,500 garbage frames a second
    each (30,000 in all) while a client writes; in the middle the leader is killed
    (-9) and restarted. The cluster elects a new leader and keeps acknowledging writes
    throughout, every acknowledged write is readable afterwards, no node exits, and
    `bad_frame` stays within its rate limit, counting what it held back in `suppressed`."""
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    old_term = cluster.status(leader)["term"]
    floods = []
    for seed, node_id in enumerate(cluster.ids):
        client_sock = raw_context.socket(zmq.DEALER)
        client_sock.setsockopt(zmq.LINGER, 0)
        if cluster.curve is not None:
            cluster.curve.apply(client_sock, cluster.client_endpoints[node_id])
        client_sock.connect(cluster.client_endpoints[node_id])
        member = next(n for n in cluster.ids if n != node_id)
        peer_sock = cluster.peer_dealer(raw_context, node_id, member)
        floods += [Flood(client_sock, True, 2 * seed), Flood(peer_sock, False, 2 * seed + 1)]
    acked: dict[str, tuple[float, str]] = {}
    halt = threading.Event()

    def write() -> None:
        endpoints = [cluster.client_endpoints[n] for n in cluster.ids]
        with Client(endpoints, timeout=20.0, curve=cluster.curve) as client:
            i = 0
            while not halt.is_set():
                key, value = f"w-{i}", f"value-{i}"
                with contextlib.suppress(ClientError):  # an unknown outcome: not acked
                    if client.put(key, value).ok:
                        acked[key] = (time.monotonic(), value)
                i += 1

    writer = threading.Thread(target=write, daemon=True)
    started = time.monotonic()
    for thread in (*floods, writer):
        thread.start()

    def sent() -> int:
        return sum(flood.sent for flood in floods)

    try:
        # The kill comes once the flood and the writes are both well under way ...
        logscan.wait_for(
            lambda: sent() >= GARBAGE_FRAMES // 3 and len(acked) >= 50,
            timeout=30,
            describe=cluster.describe,
        )
        killed_at = time.monotonic()
        cluster.kill(leader)
        new_leader = cluster.wait_leader(min_term=old_term, timeout=20)
        cluster.start(leader)
        # ... and the flood goes on until writes were acknowledged again, and all of it sent.
        logscan.wait_for(
            lambda: (
                sum(1 for at, _ in acked.values() if at > killed_at) >= 50
                and sent() >= GARBAGE_FRAMES
            ),
            timeout=60,
            describe=cluster.describe,
        )
    finally:
        halt.set()
        for flood in floods:
            flood.stop()
        writer.join(timeout=30)
    elapsed = time.monotonic() - started
    assert all(cluster.is_running(n) for n in cluster.ids), cluster.describe()
    assert cluster.status(new_leader)["term"] > old_term
    for key, (_, value) in acked.items():
        reply = cluster.request_until_ok(cluster.wait_leader(), "get", key=key)
        assert reply["value"] == value.encode(), (key, reply)
    for node_id in cluster.ids:
        for source in ("client", "peer"):
            events = logscan.select(cluster.node_events(node_id), "bad_frame", source=source)
            assert 0 < len(events) <= 50 * (elapsed + 2), (node_id, source, len(events))
            if node_id != leader:  # (a count held back when the kill came is lost with it)
                assert sum(e["suppressed"] for e in events) > 0, (node_id, source)
    cluster.assert_safety()
    print(f"flood: {sent()} garbage frames in {elapsed:.1f} s, {len(acked)} writes acked")
