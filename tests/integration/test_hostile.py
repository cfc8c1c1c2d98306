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
from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
import zmq

from tests import logscan
from tests.procs import ClusterFactory, ProcessCluster
from zraft import wire
from zraft.core.messages import AppendRequest, VoteRequest, VoteResponse
from zraft.security import Keypair

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
    ]
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
        lambda: logscan.count(cluster.node_events(leader), "auth_denied", source="peer")
        > denied,
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
        lambda: logscan.count(cluster.node_events(leader), "auth_denied", source="peer")
        > denied,
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
