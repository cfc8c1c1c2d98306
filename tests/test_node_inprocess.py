"""Three `zraft.node.Node`s in ONE thread over real 127.0.0.1 sockets (layer 5, STYLE.md B7).

The test owns time: every node reads one injected fake clock, and each round advances it
by one tick and turns every node's loop once with `run_once(0)`. Elections therefore
follow the seeded election timeouts rather than the machine's load. Real sockets still
take real time to connect and deliver, so each round also gives the I/O threads a
millisecond; a message is thus at most a round or two late, far below an election
timeout of 30-60 rounds. Nodes log to files in `tmp_path`, which the test counts.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from tests import logscan
from tests.nodecluster import NodeCluster
from tests.procs import client_curve_for, write_cluster_config
from zraft import config, wire
from zraft.config import ClusterConfig


class InProcessCluster(NodeCluster):
    """Nodes over real 127.0.0.1 sockets, with a millisecond a round for the I/O threads."""

    def __init__(self, cluster: ClusterConfig, log_dir: Path, stack: contextlib.ExitStack) -> None:
        super().__init__(cluster, log_dir, stack, io_pause_s=0.001)


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InProcessCluster]:
    """Three in-process nodes with data and logs in `tmp_path`; all closed at teardown."""
    path = write_cluster_config(tmp_path, 3, request_timeout_ms=2000)
    with contextlib.ExitStack() as stack:
        yield InProcessCluster(config.load(path), tmp_path / "logs", stack)


@pytest.fixture
def req_socket(cluster: InProcessCluster) -> Iterator[Callable[[str], zmq.Socket[bytes]]]:
    """Make REQ sockets connected to an endpoint with the cluster's admin client key; all
    closed (linger 0) at teardown."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    curve = client_curve_for(cluster.cluster)

    def make(endpoint: str) -> zmq.Socket[bytes]:
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        if curve is not None:
            curve.apply(sock, endpoint)
        sock.connect(endpoint)
        return sock

    yield make
    context.destroy(linger=0)


def test_leader_emerges_and_put_get_work(
    cluster: InProcessCluster, req_socket: Callable[[str], zmq.Socket[bytes]]
) -> None:
    """With time in the test's hands, three nodes elect exactly one leader and serve clients.

    Exactly one `leader_elected` is logged, and still exactly one after 100 more idle
    rounds (several election timeouts of fake time). A put sent to a follower's client
    endpoint is forwarded, committed and answered while the loops keep turning; a get
    through the other follower returns the value, and `status` everywhere names the leader.
    """
    leader = cluster.run_until(
        lambda: next((i for i, n in cluster.nodes.items() if n.is_leader()), None),
        "a leader",
    )
    for _ in range(100):
        cluster.round()
    elected = logscan.select(cluster.events(), "leader_elected")
    assert [e["node"] for e in elected] == [leader], logscan.tail(cluster.events())
    assert sum(node.is_leader() for node in cluster.nodes.values()) == 1

    writer, reader = (i for i in cluster.nodes if i != leader)
    endpoints = {node.id: node.client for node in cluster.cluster.nodes}

    def ask(node_id: str, op: str, **fields: Any) -> dict[str, Any]:
        sock = req_socket(endpoints[node_id])
        sock.send(wire.encode_request(op, **fields))
        cluster.run_until(lambda: sock.poll(0, zmq.POLLIN), f"a reply to {op} from {node_id}")
        return wire.decode_reply(sock.recv())

    put = ask(writer, "put", key="greeting", value="hello")
    assert put["ok"] and put["leader"] == leader, put
    got = ask(reader, "get", key="greeting")
    assert got["ok"] and got["found"] and got["value"] == b"hello", got
    missing = ask(leader, "get", key="nobody")
    assert missing["ok"] and not missing["found"], missing
    for node_id in cluster.nodes:
        status = ask(node_id, "status")["status"]
        assert status["leader"] == leader and status["id"] == node_id, status
    assert cluster.nodes[reader].machine.value(b"greeting") == b"hello"
    assert logscan.count(cluster.events(), "leader_elected") == 1


def test_a_refused_add_member_leaves_no_endpoints_behind(cluster: InProcessCluster) -> None:
    """An `add_member` refused with `conflict` (another change is still uncommitted)
    must not keep the endpoints and key it brought: otherwise the leader's directory
    would carry them in its next CONFIG entry and every node would admit that key."""
    leader = cluster.run_until(
        lambda: next((i for i, n in cluster.nodes.items() if n.is_leader()), None),
        "a leader",
    )
    cluster.run_until(lambda: cluster.nodes[leader].raft.commit_index >= 1, "the leader's no-op")
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    curve = client_curve_for(cluster.cluster)
    endpoint = next(n.client for n in cluster.cluster.nodes if n.id == leader)
    if curve is not None:
        curve.apply(sock, endpoint)
    sock.connect(endpoint)
    try:
        for member, port in (("n7", 1), ("n8", 3)):
            # Both arrive in one loop turn: the second finds the first uncommitted.
            public, _ = zmq.curve_keypair()
            sock.send_multipart(
                [
                    b"",
                    wire.encode_request(
                        "add_member",
                        id=member,
                        peer=f"tcp://127.0.0.1:{port}",
                        client_endpoint=f"tcp://127.0.0.1:{port + 1}",
                        public_key=public.decode(),
                        learner=True,
                    ),
                ]
            )
        replies = []
        for _ in range(2):
            cluster.run_until(lambda: sock.poll(0, zmq.POLLIN), "a reply to add_member")
            replies.append(wire.decode_reply(sock.recv_multipart()[-1]))
    finally:
        context.destroy(linger=0)
    codes = sorted(str(r["error"]["code"]) if r["error"] else "ok" for r in replies)
    assert codes == ["conflict", "ok"], replies
    # Internals: the directory is not visible on the wire except inside CONFIG entries.
    for node_id, node in cluster.nodes.items():
        cluster.run_until(lambda n=node: "n7" in n.raft.membership.members, "n7 appended")
        assert "n8" not in node._admin.endpoints, f"{node_id} kept the refused member's endpoints"
