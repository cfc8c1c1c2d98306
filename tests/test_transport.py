"""ZmqTransport over real 127.0.0.1 sockets: delivery, drops, restarts, hostile input.

Every wait is a bounded poll loop against a deadline; nothing sleeps and then asserts.
Ports come from the OS. Every transport and raw socket is closed with linger 0.
"""

from __future__ import annotations

import errno
import random
import socket
import time
from collections.abc import Callable, Iterator

import pytest
import zmq

from zraft.net.transport import BadInputReason, TransportError, ZmqTransport

WAIT_S = 3.0  # upper bound for anything that should happen within milliseconds


def free_port() -> int:
    """Ask the OS for a free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def endpoint() -> str:
    """A fresh tcp endpoint on 127.0.0.1."""
    return f"tcp://127.0.0.1:{free_port()}"


class Cluster:
    """Endpoints for n nodes `n1..nN`, and transports built from them (closed at teardown)."""

    def __init__(self, n: int) -> None:
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.peer_ep = {nid: endpoint() for nid in self.ids}
        self.client_ep = {nid: endpoint() for nid in self.ids}
        self.made: list[ZmqTransport] = []

    def start(self, node_id: str, **kwargs: object) -> ZmqTransport:
        """Build the transport of `node_id`, connected to every other node's endpoint."""
        peers = {nid: ep for nid, ep in self.peer_ep.items() if nid != node_id}
        transport = ZmqTransport(
            node_id, self.peer_ep[node_id], self.client_ep[node_id], peers, **kwargs
        )
        self.made.append(transport)
        return transport

    def close(self) -> None:
        for transport in self.made:
            transport.close()


@pytest.fixture
def cluster() -> Iterator[Callable[[int], Cluster]]:
    made: list[Cluster] = []

    def make(n: int) -> Cluster:
        made.append(Cluster(n))
        return made[-1]

    yield make
    for c in made:
        c.close()


@pytest.fixture
def ctx() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A context for raw test sockets; destroy() closes them all with linger 0."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def raw_socket(
    context: zmq.Context[zmq.Socket[bytes]], kind: int, ep: str, rid: bytes | None = None
) -> zmq.Socket[bytes]:
    sock = context.socket(kind)
    sock.linger = 0
    if rid is not None:
        sock.routing_id = rid
    sock.connect(ep)
    return sock


def wait_peer_frames(t: ZmqTransport, count: int) -> list[tuple[bytes, bytes]]:
    """Poll `t` until `count` peer frames arrived (fails after WAIT_S)."""
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < count and time.monotonic() < deadline:
        if t.peer_socket.poll(20, zmq.POLLIN):
            got += t.recv_peers()
    assert len(got) >= count, f"only {got} of {count} frames arrived"
    return got


def wait_client_requests(t: ZmqTransport, count: int) -> list[tuple[list[bytes], bytes]]:
    """Poll `t` until `count` client requests arrived (fails after WAIT_S)."""
    got: list[tuple[list[bytes], bytes]] = []
    deadline = time.monotonic() + WAIT_S
    while len(got) < count and time.monotonic() < deadline:
        if t.client_socket.poll(20, zmq.POLLIN):
            got += t.recv_clients()
    assert len(got) >= count, f"only {len(got)} of {count} requests arrived"
    return got


def recv_within(sock: zmq.Socket[bytes]) -> list[bytes]:
    assert sock.poll(int(WAIT_S * 1000), zmq.POLLIN), "no reply"
    return sock.recv_multipart(zmq.NOBLOCK)


def send_until_received(
    src: ZmqTransport, dst_id: str, dst: ZmqTransport, frame: bytes
) -> list[tuple[bytes, bytes]]:
    """Resend `frame` until `dst` gets it (IMMEDIATE drops it until connected).

    Returns everything `dst` received meanwhile, so callers can check nothing else came.
    """
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        src.send(dst_id, frame)
        if dst.peer_socket.poll(20, zmq.POLLIN):
            got += dst.recv_peers()
            if any(f == frame for _, f in got):
                return got
    raise AssertionError(f"{frame!r} never reached {dst_id}; got {got[:5]}")


def wait_for_eof(sock: socket.socket) -> bool:
    """Wait until the server closes a raw TCP connection; False if it never did."""
    sock.settimeout(WAIT_S)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        return False
    return True


# --- peers ------------------------------------------------------------------------


def test_frames_flow_both_ways_between_three_nodes(cluster: Callable[[int], Cluster]) -> None:
    c = cluster(3)
    t = {nid: c.start(nid) for nid in c.ids}
    for src in c.ids:
        for dst in c.ids:
            if src != dst:
                got = send_until_received(t[src], dst, t[dst], f"{src}->{dst}".encode())
                assert (src.encode(), f"{src}->{dst}".encode()) in got
    counters = t["n1"].counters()
    assert counters.peer_frames_sent >= 2
    assert counters.peer_frames_received >= 2


def test_send_to_absent_peer_drops_without_blocking(cluster: Callable[[int], Cluster]) -> None:
    c = cluster(2)
    t1 = c.start("n1")  # n2 never starts: nothing listens on its port
    start = time.monotonic()
    results = [t1.send("n2", b"x" * 300) for _ in range(100)]
    elapsed = time.monotonic() - start
    assert not any(results)
    assert elapsed < 0.5
    assert t1.send_many([("n2", b"a"), ("n2", b"b")]) == 2
    counters = t1.counters()
    assert counters.peer_send_dropped == 102
    assert counters.send_dropped_by_peer == {"n2": 102}


def test_unknown_peer_raises_key_error(cluster: Callable[[int], Cluster]) -> None:
    t1 = cluster(2).start("n1")
    with pytest.raises(KeyError):
        t1.send("n9", b"x")


def test_restarted_peer_gets_frames_again(cluster: Callable[[int], Cluster]) -> None:
    c = cluster(2)
    t1, t2 = c.start("n1"), c.start("n2")
    send_until_received(t1, "n2", t2, b"before")
    t2.close()
    # IMMEDIATE: once n1 sees the link drop, sends fail at once instead of queueing
    # for the next incarnation (PLATFORM.md §4c).
    deadline = time.monotonic() + WAIT_S
    while t1.send("n2", b"while-down") and time.monotonic() < deadline:
        t1.peer_socket.poll(5)
    assert not t1.send("n2", b"while-down")
    t2 = c.start("n2")  # same ports
    got = send_until_received(t1, "n2", t2, b"after")
    assert all(frame != b"while-down" for _, frame in got)


def test_a_broken_link_is_reported_once_by_on_tick(cluster: Callable[[int], Cluster]) -> None:
    """When a peer's process goes away, its established link breaks and the next ticks
    report it (once), so the node can tell its core (`Raft.leader_unreachable`); a peer
    that never connected, or a link that holds, is not reported."""
    c = cluster(3)
    t1, t2 = c.start("n1"), c.start("n2")  # n3 never runs
    send_until_received(t1, "n2", t2, b"up")
    assert t1.on_tick(time.monotonic()) == []
    t2.close()
    lost: list[str] = []
    deadline = time.monotonic() + WAIT_S
    while not lost and time.monotonic() < deadline:
        t1.peer_socket.poll(5)
        lost = t1.on_tick(time.monotonic())
    assert lost == ["n2"]
    assert t1.on_tick(time.monotonic()) == []


def test_handover_newcomer_replaces_stale_connection(
    cluster: Callable[[int], Cluster], ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    c = cluster(2)
    t2 = c.start("n2")
    # A stale connection that still holds routing id n1, like a half-open link of a
    # crashed incarnation of n1.
    stale = raw_socket(ctx, zmq.DEALER, c.peer_ep["n2"], rid=b"n1")
    stale.send(b"stale")
    assert wait_peer_frames(t2, 1) == [(b"n1", b"stale")]
    t1 = c.start("n1")  # the restarted n1 connects with the same routing id
    send_until_received(t1, "n2", t2, b"fresh")


def test_recv_budget_is_respected(cluster: Callable[[int], Cluster]) -> None:
    c = cluster(2)
    t1, t2 = c.start("n1"), c.start("n2")
    send_until_received(t1, "n2", t2, b"warmup")
    sent = 0
    deadline = time.monotonic() + WAIT_S
    while sent < 1000 and time.monotonic() < deadline:
        if t1.send("n2", b"%d" % sent):
            sent += 1
    assert sent == 1000
    sizes = []
    deadline = time.monotonic() + WAIT_S
    while sum(sizes) < 1000 and time.monotonic() < deadline:
        if t2.peer_socket.poll(20, zmq.POLLIN):
            sizes.append(len(t2.recv_peers(256)))
    assert sum(sizes) == 1000
    assert max(sizes) == 256


def test_oversize_frame_is_dropped_with_its_connection(cluster: Callable[[int], Cluster]) -> None:
    c = cluster(3)
    limit = 64 * 1024
    t1, t2, t3 = (c.start(nid, peer_max_message_bytes=limit) for nid in c.ids)
    send_until_received(t1, "n2", t2, b"warmup")
    monitor = t2.peer_socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
    try:
        assert t1.send("n2", b"x" * (limit + 1))
        assert monitor.poll(int(WAIT_S * 1000), zmq.POLLIN), "connection was not dropped"
    finally:
        t2.peer_socket.disable_monitor()
        monitor.close(linger=0)
    # n1 reconnects and is heard again; n3 was never affected; the big frame never shows.
    got = send_until_received(t1, "n2", t2, b"small")
    got += send_until_received(t3, "n2", t2, b"from-n3")
    assert all(len(frame) <= limit for _, frame in got)


def test_malformed_peer_messages_are_counted_not_raised(
    cluster: Callable[[int], Cluster], ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    c = cluster(2)
    t1 = c.start("n1")
    fake_n2 = raw_socket(ctx, zmq.DEALER, c.peer_ep["n1"], rid=b"n2")
    fake_n2.send_multipart([b"two", b"frames"])
    fake_n2.send(b"")
    fake_n2.send(b"good")  # same connection: arrives after the two bad ones
    intruder = raw_socket(ctx, zmq.DEALER, c.peer_ep["n1"], rid=b"intruder")
    intruder.send(b"hi")
    anonymous = raw_socket(ctx, zmq.DEALER, c.peer_ep["n1"])
    anonymous.send(b"anonymous")
    got: list[tuple[bytes, bytes]] = []
    deadline = time.monotonic() + WAIT_S
    while t1.counters().peer_bad_input < 4 and time.monotonic() < deadline:
        if t1.peer_socket.poll(20, zmq.POLLIN):
            got += t1.recv_peers()
    assert got == [(b"n2", b"good")]
    reasons = sorted(bad.reason for bad in t1.take_bad_inputs())
    assert reasons == sorted(
        [
            BadInputReason.FRAME_COUNT,
            BadInputReason.EMPTY_FRAME,
            BadInputReason.UNKNOWN_SENDER,
            BadInputReason.UNKNOWN_SENDER,
        ]
    )
    assert t1.take_bad_inputs() == []


def test_blocked_peers_drop_both_directions(cluster: Callable[[int], Cluster]) -> None:
    c = cluster(2)
    t1, t2 = c.start("n1"), c.start("n2")
    send_until_received(t1, "n2", t2, b"warmup")
    send_until_received(t2, "n1", t1, b"warmup")
    t1.set_blocked_peers({"n2"})
    assert not t1.send("n2", b"out")
    assert t2.send("n1", b"in")  # the link is up; n1 discards what arrives
    deadline = time.monotonic() + WAIT_S
    while t1.counters().peer_blocked_dropped < 2 and time.monotonic() < deadline:
        if t1.peer_socket.poll(20, zmq.POLLIN):
            assert t1.recv_peers() == []
    assert t1.counters().peer_blocked_dropped == 2
    t1.set_blocked_peers(set())
    send_until_received(t1, "n2", t2, b"healed")
    send_until_received(t2, "n1", t1, b"healed")
    with pytest.raises(KeyError):
        t1.set_blocked_peers({"n7"})


# --- clients ----------------------------------------------------------------------


def test_req_client_round_trip(
    cluster: Callable[[int], Cluster], ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    c = cluster(1)
    t1 = c.start("n1")
    req = raw_socket(ctx, zmq.REQ, c.client_ep["n1"])
    req.send(b"ping")
    [(envelope, body)] = wait_client_requests(t1, 1)
    assert body == b"ping"
    assert envelope[-1] == b""
    assert t1.reply(envelope, b"pong")
    assert recv_within(req) == [b"pong"]


def test_many_req_clients_replied_out_of_order(
    cluster: Callable[[int], Cluster], ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    c = cluster(1)
    t1 = c.start("n1")
    clients = [raw_socket(ctx, zmq.REQ, c.client_ep["n1"]) for _ in range(20)]
    for i, req in enumerate(clients):
        req.send(b"req-%d" % i)
    requests = wait_client_requests(t1, 20)
    random.Random(7).shuffle(requests)  # replies deferred and sent in another order
    for envelope, body in requests:
        t1.reply(envelope, b"reply-to-" + body)
    for i, req in enumerate(clients):
        assert recv_within(req) == [b"reply-to-req-%d" % i]


def test_dealer_client_and_malformed_envelopes(
    cluster: Callable[[int], Cluster], ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    c = cluster(1)
    t1 = c.start("n1")
    dealer = raw_socket(ctx, zmq.DEALER, c.client_ep["n1"], rid=b"dealer-1")
    dealer.send_multipart([b"no-delimiter"])
    dealer.send_multipart([b"", b"extra", b"frames"])
    dealer.send_multipart([b""])
    dealer.send_multipart([b"hop", b"", b"routed"])
    dealer.send_multipart([b"", b"good"])
    requests = wait_client_requests(t1, 2)
    assert requests == [
        ([b"dealer-1", b"hop", b""], b"routed"),
        ([b"dealer-1", b""], b"good"),
    ]
    bad = t1.take_bad_inputs()
    assert [(b.source, b.sender, b.reason) for b in bad] == [
        ("client", b"dealer-1", BadInputReason.NO_DELIMITER),
        ("client", b"dealer-1", BadInputReason.FRAME_COUNT),
        ("client", b"dealer-1", BadInputReason.FRAME_COUNT),
    ]
    assert bad[0].envelope is None
    assert bad[1].envelope == (b"dealer-1", b"")
    # A well-formed envelope with a bad body can still be answered.
    t1.reply(list(bad[1].envelope or ()), b"error")
    assert recv_within(dealer) == [b"", b"error"]
    t1.reply(requests[1][0], b"ok")
    assert recv_within(dealer) == [b"", b"ok"]
    assert t1.counters().client_bad_input == 3


def test_reply_to_vanished_client_is_silent(
    cluster: Callable[[int], Cluster], ctx: zmq.Context[zmq.Socket[bytes]]
) -> None:
    c = cluster(1)
    t1 = c.start("n1")
    gone = raw_socket(ctx, zmq.REQ, c.client_ep["n1"])
    gone.send(b"then-leave")
    [(envelope, _)] = wait_client_requests(t1, 1)
    gone.close(linger=0)
    assert t1.reply(envelope, b"late")  # ROUTER_MANDATORY=0: discarded, no error
    assert t1.reply([b"never-seen", b""], b"late")
    req = raw_socket(ctx, zmq.REQ, c.client_ep["n1"])
    req.send(b"still-serving")
    [(envelope, _)] = wait_client_requests(t1, 1)
    t1.reply(envelope, b"yes")
    assert recv_within(req) == [b"yes"]


# --- hostile bytes ----------------------------------------------------------------

ZMTP10_IMPERSONATION = b"\x03\x00n2" + b"\x06\x00hello"  # identity "n2", then "hello"
HTTP_REQUEST = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
CURVE_GREETING = (  # a valid ZMTP 3.0 greeting asking for CURVE from a NULL server
    b"\xff" + b"\x00" * 8 + b"\x7f" + b"\x03\x00" + b"CURVE".ljust(20, b"\x00") + b"\x00" * 32
)
RANDOM_BYTES = random.Random(42).randbytes(4096)


@pytest.mark.parametrize(
    "garbage",
    [ZMTP10_IMPERSONATION, HTTP_REQUEST, CURVE_GREETING, RANDOM_BYTES],
    ids=["zmtp10-impersonation", "http", "wrong-mechanism", "random"],
)
@pytest.mark.parametrize("port_kind", ["peer", "client"])
def test_raw_garbage_delivers_nothing(
    cluster: Callable[[int], Cluster],
    ctx: zmq.Context[zmq.Socket[bytes]],
    garbage: bytes,
    port_kind: str,
) -> None:
    c = cluster(2)
    t1 = c.start("n1")
    target = c.peer_ep["n1"] if port_kind == "peer" else c.client_ep["n1"]
    port = int(target.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as raw:
        raw.sendall(garbage)
        rejected = wait_for_eof(raw)  # once closed, anything it could deliver is queued
    # Legit traffic still works, and it is the only thing the app ever sees.
    if port_kind == "peer":
        t2 = c.start("n2")
        got = send_until_received(t2, "n1", t1, b"legit")
        assert {(sender, frame) for sender, frame in got} == {(b"n2", b"legit")}
    else:
        req = raw_socket(ctx, zmq.REQ, target)
        req.send(b"legit")
        assert [body for _, body in wait_client_requests(t1, 1)] == [b"legit"]
    counters = t1.counters()
    assert counters.peer_bad_input == counters.client_bad_input == 0
    assert rejected, "libzmq kept the garbage connection open"


def test_zmtp10_garbage_reaches_app_without_zap_domain(
    ctx: zmq.Context[zmq.Socket[bytes]],
) -> None:
    """Control for the test above: why the transport sets ZAP_DOMAIN (PLATFORM.md §4b)."""
    router = ctx.socket(zmq.ROUTER)
    router.linger = 0
    port = router.bind_to_random_port("tcp://127.0.0.1")
    with socket.create_connection(("127.0.0.1", port), timeout=WAIT_S) as raw:
        raw.sendall(ZMTP10_IMPERSONATION)
        assert router.poll(int(WAIT_S * 1000), zmq.POLLIN)
        assert router.recv_multipart() == [b"n2", b"hello"]


# --- lifecycle --------------------------------------------------------------------


def test_bind_error_names_the_endpoint(cluster: Callable[[int], Cluster]) -> None:
    c = cluster(2)
    c.start("n1")
    with pytest.raises(TransportError) as info:
        ZmqTransport("n1", c.peer_ep["n1"], endpoint(), {"n2": c.peer_ep["n2"]})
    assert info.value.endpoint == c.peer_ep["n1"]
    assert c.peer_ep["n1"] in str(info.value)
    assert info.value.errno == errno.EADDRINUSE


def test_own_id_in_peers_is_refused() -> None:
    with pytest.raises(ValueError, match="own id"):
        ZmqTransport("n1", endpoint(), endpoint(), {"n1": endpoint()})


def test_close_keeps_a_given_context(ctx: zmq.Context[zmq.Socket[bytes]]) -> None:
    t1 = ZmqTransport("n1", endpoint(), endpoint(), {"n2": endpoint()}, context=ctx)
    t1.close()
    t1.close()  # idempotent
    assert not ctx.closed
    with ZmqTransport("n1", endpoint(), endpoint(), {"n2": endpoint()}) as t2:
        own = t2._context  # private: checking ownership of the context it created
    assert own.closed


# --- cluster identity ---------------------------------------------------------------


def test_frames_naming_another_cluster_are_refused(cluster: Callable[[int], Cluster]) -> None:
    c = cluster(3)
    mine = c.start("n1", cluster_id="aaaaaaaaaaaaaaaa")
    same = c.start("n2", cluster_id="aaaaaaaaaaaaaaaa")
    other = c.start("n3", cluster_id="bbbbbbbbbbbbbbbb")
    assert send_until_received(same, "n1", mine, b"ours")
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline and not mine.counters().peer_bad_input:
        other.send("n1", b"theirs")
        if mine.peer_socket.poll(20, zmq.POLLIN):
            assert all(frame != b"theirs" for _, frame in mine.recv_peers())
    assert mine.counters().peer_bad_input > 0
    refused = mine.take_bad_inputs()
    assert refused and {bad.reason for bad in refused} == {BadInputReason.OTHER_CLUSTER}
    assert {bad.sender for bad in refused} == {b"n3"}


def test_a_link_naming_no_identity_is_accepted_and_teaches_a_joiner(
    cluster: Callable[[int], Cluster],
) -> None:
    c = cluster(2)
    joiner = c.start("n1")  # no identity yet
    member = c.start("n2", cluster_id="cccccccccccccccc")
    send_until_received(member, "n1", joiner, b"hello")
    assert joiner.learned_cluster_id == "cccccccccccccccc"
    joiner.set_cluster_id(joiner.learned_cluster_id)
    older = ZmqTransport("n2", endpoint(), endpoint(), {"n1": c.peer_ep["n1"]})  # no identity
    c.made.append(older)
    assert send_until_received(older, "n1", joiner, b"from an older release")
