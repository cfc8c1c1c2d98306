"""Request serving without sockets: three real `Node`s over `zraft.net.inmem` (layer 5).

Every node reads one fake clock and talks through an `InmemNetwork`, so forwarding,
parking, read indexes, expiry and leadership-transfer waits run deterministically: each
round advances time by one tick and turns every node's loop once. A "client" is a frame
handed to a node's client queue; its replies come back through the network.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest

from tests.fakeclock import FakeClock
from tests.nodecluster import NodeCluster
from tests.procs import write_cluster_config
from zraft import config, wire
from zraft.config import ClusterConfig
from zraft.core.membership import decode_config
from zraft.core.types import EntryKind
from zraft.net.inmem import InmemNetwork
from zraft.node import Node
from zraft.node.admin import learn_snapshot_endpoints
from zraft.node.members import RETIRED_MARKS, Endpoints, decode_endpoints
from zraft.state.machine import MODEL
from zraft.storage import MemoryStorage, snapfile
from zraft.wire import ops
from zraft.wire.peer import Hello


class InmemCluster(NodeCluster):
    """Nodes on one in-memory network (and memory storage), driven round-robin."""

    def __init__(self, cluster: ClusterConfig, log_dir: Path, stack: contextlib.ExitStack) -> None:
        self.network = InmemNetwork()
        super().__init__(
            cluster,
            log_dir,
            stack,
            node_options=lambda node_id: {
                "storage": MemoryStorage(),
                "transport": self.network.transport,
            },
        )

    def leader(self) -> str:
        """Wait for a leader that every node agrees on; return its id."""

        def agreed() -> str | None:
            leaders = {node.raft.leader_id for node in self.nodes.values()}
            leader = leaders.pop() if len(leaders) == 1 else None
            if leader is None or not self.nodes[leader].is_leader():
                return None
            return leader if self.nodes[leader].raft.commit_index >= 1 else None

        result: str = self.run_until(agreed, "one agreed leader")
        return result

    def follower(self) -> str:
        """Some node that is not the leader."""
        leader = self.leader()
        return next(i for i in self.nodes if i != leader)

    def send(self, node_id: str, op: str, *, role: str | None = None, **fields: Any) -> bytes:
        """A client sends one request to `node_id`; returns the client's id."""
        return self.network.request(node_id, wire.encode_request(op, **fields), role=role)

    def reply(self, client: bytes, what: str = "a reply") -> dict[str, Any]:
        """Run until `client` has a reply; return it decoded."""
        body: bytes = self.run_until(lambda: self.network.take_reply(client), what)
        return wire.decode_reply(body)

    def ask(self, node_id: str, op: str, **fields: Any) -> dict[str, Any]:
        """Send one request and wait for its reply."""
        return self.reply(self.send(node_id, op, **fields), f"{op} at {node_id}")


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InmemCluster]:
    """Three in-memory nodes (security off: there are no sockets to secure)."""
    path = write_cluster_config(tmp_path, 3, request_timeout_ms=2000, security_mode="none")
    with contextlib.ExitStack() as stack:
        yield InmemCluster(config.load(path), tmp_path / "logs", stack)


def test_a_follower_forwards_writes_and_reads_at_the_leaders_index(cluster: InmemCluster) -> None:
    follower = cluster.follower()
    put = cluster.ask(follower, "put", key="k", value="v", client="c", seq=1)
    assert put["ok"] and put["leader"] == cluster.leader() and put["index"] > 1
    got = cluster.ask(follower, "get", key="k")
    assert (got["ok"], got["found"], got["value"]) == (True, True, b"v")
    again = cluster.ask(follower, "put", key="k", value="other", client="c", seq=1)
    assert again["index"] == put["index"], "a retried session write is answered, not re-applied"
    assert cluster.ask(follower, "get", key="k")["value"] == b"v"
    assert cluster.ask(follower, "delete", key="k")["deleted"] == 1
    assert cluster.ask(follower, "delete", key="k")["deleted"] == 0, "a delete of nothing"


def test_a_request_without_a_leader_is_parked_then_served(cluster: InmemCluster) -> None:
    """Sent before any election: parked, then answered once a leader is known."""
    client = cluster.send("n1", "put", key="early", value="x")
    reply = cluster.reply(client, "the parked put")
    assert reply["ok"], reply
    assert cluster.ask("n2", "get", key="early")["value"] == b"x"


def test_a_parked_request_expires_unavailable(cluster: InmemCluster) -> None:
    """A node cut off from everyone never learns of a leader: its request gets
    `unavailable` at the request timeout, not before and not never."""
    leader = cluster.leader()
    lonely = next(i for i in cluster.nodes if i != leader)
    for other in cluster.nodes:
        if other != lonely:
            cluster.network.cut(lonely, other)
    # Wait until the lonely node no longer believes in a leader (its election timeout).
    cluster.run_until(lambda: cluster.nodes[lonely].raft.leader_id is None, "leader forgotten")
    sent_at = cluster.clock()
    reply = cluster.reply(cluster.send(lonely, "get", key="k"), "the expiry")
    waited = cluster.clock() - sent_at
    assert reply["error"]["code"] == "unavailable", reply
    assert 2.0 <= waited <= 2.2, f"answered after {waited:.2f} s of a 2 s request timeout"
    cluster.network.heal()


def test_forbidden_for_a_weaker_role(cluster: InmemCluster) -> None:
    """The key's role (from the connection, here the network) is checked against the op's."""
    leader = cluster.leader()
    reply = cluster.reply(cluster.send(leader, "put", role="read", key="k", value="v"))
    assert reply["error"]["code"] == "forbidden"
    assert "needs a 'write' key" in reply["error"]["message"]
    assert cluster.reply(cluster.send(leader, "get", role="read", key="k"))["ok"]
    assert cluster.reply(cluster.send(leader, "status", role="read"))["ok"]


def test_transfer_leader_waits_until_the_target_leads(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    target = next(i for i in cluster.nodes if i != leader)
    via = next(i for i in cluster.nodes if i not in (leader, target))
    reply = cluster.ask(via, "transfer_leader", id=target)  # forwarded to the leader
    assert (reply["ok"], reply["transferred_to"], reply["leader"]) == (True, target, target)
    assert cluster.nodes[target].is_leader()


def test_transfer_to_an_unreachable_target_times_out(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    target = next(i for i in cluster.nodes if i != leader)
    cluster.network.cut(leader, target)
    reply = cluster.ask(leader, "transfer_leader", id=target)
    assert reply["error"]["code"] == "timeout", reply
    assert target in reply["error"]["message"]


def test_membership_and_status_ops(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    follower = cluster.follower()
    status = cluster.ask(follower, "status")["status"]
    assert (status["id"], status["role"], status["leader"]) == (follower, "follower", leader)
    members = cluster.ask(follower, "members")
    assert sorted(row["id"] for row in members["members"]) == sorted(cluster.nodes)
    removed = cluster.ask(follower, "remove_member", id=follower)
    assert removed["ok"] and follower not in [row["id"] for row in removed["members"]]
    cluster.run_until(
        lambda: follower not in cluster.nodes[follower].raft.membership.members, "removal known"
    )
    refused = cluster.ask(follower, "get", key="k")
    assert (
        refused["error"]["code"] == "unavailable" and "not a member" in refused["error"]["message"]
    )
    assert cluster.ask(follower, "status")["ok"], "status is local: a removed node still answers"


def test_every_declared_op_needs_a_handler(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An op declared without a handler (or a state machine command) stops the node from
    starting, naming the op: the table and the handlers cannot drift apart silently."""
    orphan = ops.OpSpec(
        "frobnicate", "nothing serves this", "read", ops.Route.LOCAL, ops.Retry.ALWAYS
    )
    monkeypatch.setitem(ops.OPS, "frobnicate", orphan)  # type: ignore[index]
    path = write_cluster_config(tmp_path, 1, security_mode="none")
    cluster = config.load(path)
    with pytest.raises(RuntimeError, match="frobnicate"):
        Node(
            cluster,
            "n1",
            log_path=tmp_path / "n1.jsonl",
            clock=FakeClock(),
            storage=MemoryStorage(),
            transport=InmemNetwork().transport,
        )


def test_a_removed_id_is_retired_for_good(cluster: InmemCluster) -> None:
    """Member ids are never reused (etcd's rule): once a removal is applied, `add_member`
    of that id is refused with a clear `bad_request` (its endpoints and key left out of
    the directory), every member lists it as retired, the next snapshot's header records
    it (so a node restarted from that snapshot still refuses it), and a new id joins."""
    leader = cluster.leader()
    gone = cluster.follower()
    assert cluster.ask(leader, "remove_member", id=gone)["ok"]
    stayed = [i for i in cluster.nodes if i != gone]
    for node_id in stayed:
        cluster.run_until(
            lambda n=node_id: cluster.ask(n, "members")["retired"] == [gone], f"{node_id} retired"
        )
    again = cluster.ask(
        leader, "add_member", id=gone, peer="tcp://127.0.0.1:1", client_endpoint="tcp://127.0.0.1:2"
    )
    assert again["error"]["code"] == "bad_request", again
    assert "never reused" in again["error"]["message"], again
    assert cluster.nodes[leader]._admin.endpoints.peer(gone) != "tcp://127.0.0.1:1"
    taken = cluster.ask(leader, "snapshot")
    assert taken["ok"], taken
    path = cluster.cluster.node(leader).data_dir / "snapshots"
    newest = max(path.glob("*.snap"))
    loaded = snapfile.load_snapshot(newest)
    assert loaded.header["retired"] == [gone]
    restarted = Endpoints()  # what a node starting from this snapshot learns
    learn_snapshot_endpoints(restarted, loaded.header, loaded.meta)
    assert restarted.retired == {gone}
    added = cluster.ask(
        leader,
        "add_member",
        id="n9",
        peer="tcp://127.0.0.1:3",
        client_endpoint="tcp://127.0.0.1:4",
        learner=True,
    )
    assert added["ok"] and added["retired"] == [gone], added


def test_removals_an_earlier_release_made_are_retired_as_they_apply(
    cluster: InmemCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The upgrade path: an earlier release's CONFIG entries carry no retired marks. A node
    applying a removal from such an entry (a member missing from the CONFIG entry after
    the one it was in) retires the id all the same."""
    monkeypatch.setattr(
        Endpoints,
        "encode",
        lambda self, marks=True: msgpack.packb(
            {i: list(e) for i, e in sorted(self.as_dict().items())}
        ),
    )
    leader = cluster.leader()
    gone, other = (i for i in cluster.nodes if i != leader)
    learner = {"peer": "tcp://127.0.0.1:1", "client_endpoint": "tcp://127.0.0.1:2"}
    assert cluster.ask(leader, "add_member", id="n9", learner=True, **learner)["ok"]
    assert cluster.ask(leader, "remove_member", id=gone)["ok"]
    config = cluster.nodes[other]._admin
    cluster.run_until(lambda: gone not in config._applied_membership.members, "removal applied")
    assert config.endpoints.retired == {gone}  # no mark came with the entry: derived
    again = cluster.ask(other, "add_member", id=gone, **learner)  # forwarded to the leader
    assert again["error"]["code"] == "bad_request", again


def _last_config_directory(cluster: InmemCluster, node_id: str) -> tuple[set[str], set[str]]:
    """The member ids and the retired ids of the newest CONFIG entry in `node_id`'s log."""
    log = cluster.nodes[node_id].raft.log
    entries = log.slice(log.first_index, log.last_index + 1)
    last = [e for e in entries if e.kind is EntryKind.CONFIG][-1]
    membership, context = decode_config(last.data)
    _, retired = decode_endpoints(context)
    return set(membership.members), set(retired)


def test_no_retired_marks_until_every_member_reads_them(
    cluster: InmemCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Rolling upgrade: a member of an earlier release cannot read a directory with retired
    marks (it would miss every endpoint and key in it). While one member's hellos do not
    name `retired-marks`, the leader writes a removal unmarked, as that release did, and
    every node still retires the id as it applies it; once every member names the feature
    again (and a member that falls silent stops counting), the marks are written."""
    leader = cluster.leader()
    gone, old_release = (i for i in cluster.nodes if i != leader)
    upkeep = cluster.nodes[leader]._upkeep
    heard = upkeep.heard

    def older(hello: Hello) -> None:  # `old_release` says what an earlier release says
        if hello.src == old_release:
            hello = dataclasses.replace(hello, features=(MODEL,))
        heard(hello)

    monkeypatch.setattr(upkeep, "heard", older)
    cluster.run_until(
        lambda: not upkeep.members_read(RETIRED_MARKS, [old_release]), "the old hello heard"
    )
    # The log's first CONFIG entry: a founding node knows the membership before it (the
    # file it started its brand-new log from).
    assert cluster.ask(leader, "remove_member", id=gone)["ok"]
    members, retired = _last_config_directory(cluster, leader)
    assert gone not in members and retired == set()  # written as the earlier release did
    for node_id in (leader, old_release):
        cluster.run_until(
            lambda n=node_id: cluster.ask(n, "members")["retired"] == [gone], f"{node_id} retired"
        )
    monkeypatch.setattr(upkeep, "heard", heard)
    cluster.run_until(lambda: upkeep.members_read(RETIRED_MARKS, [old_release]), "new hello")
    learner = {"peer": "tcp://127.0.0.1:1", "client_endpoint": "tcp://127.0.0.1:2"}
    assert cluster.ask(leader, "add_member", id="n9", learner=True, **learner)["ok"]
    members, retired = _last_config_directory(cluster, leader)
    assert "n9" in members and retired == {gone}  # every member reads marks: written
