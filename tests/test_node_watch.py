"""Watches through real nodes (issue 15), over the in-memory transport on one fake clock:
events at once or held until a change, whole revisions, filters, progress replies,
`compacted`, a lagging node that never answers past a gap, `require_leader`, lease
revocations as delete events, a snapshot install under a held watch, and many held
watches of which a change wakes only its own."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.procs import write_cluster_config
from tests.test_node_inmem import InmemCluster
from zraft import config
from zraft.node.watches import MAX_WATCHES


def make(tmp_path: Path, **options: int | str) -> contextlib.AbstractContextManager[InmemCluster]:
    """A three-node in-memory cluster with `[cluster]` options."""
    path = write_cluster_config(
        tmp_path, 3, request_timeout_ms=2000, security_mode="none", **options
    )

    @contextlib.contextmanager
    def running() -> Iterator[InmemCluster]:
        with contextlib.ExitStack() as stack:
            cluster = InmemCluster(config.load(path), tmp_path / "logs", stack)
            cluster.leader()
            # Watches need the data model (before its entry they answer `unavailable`).
            cluster.run_until(
                lambda: all(n.machine.model == "mvcc" for n in cluster.nodes.values()),
                "the data model on every node",
            )
            yield cluster

    return running()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InmemCluster]:
    with make(tmp_path) as running:
        yield running


def revision(cluster: InmemCluster, node: str) -> int:
    return cluster.nodes[node].machine.store.revision


def shape(reply: dict[str, Any]) -> list[tuple[str, bytes, int]]:
    """(type, key, revision) of every event of a watch reply."""
    assert reply["ok"], reply
    return [(e["type"], e["kv"]["key"], e["kv"]["mod_revision"]) for e in reply["events"]]


def pending(cluster: InmemCluster, client: bytes, rounds: int = 20) -> bool:
    """Whether `client` is still without a reply after `rounds` more rounds."""
    for _ in range(rounds):
        cluster.round()
        if cluster.network.replies[client]:
            return False
    return True


def test_past_changes_come_at_once_in_whole_revisions(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    first = cluster.ask(leader, "put", key="svc/a", value="1")["header"]["revision"]
    cluster.ask(
        leader,
        "txn",
        success=[
            {"op": "put", "key": "svc/b", "value": "2"},
            {"op": "put", "key": "svc/a", "value": "3"},
            {"op": "put", "key": "other", "value": "x"},
        ],
    )
    cluster.ask(leader, "delete", key="svc/b")
    reply = cluster.ask(leader, "watch", key="svc/", prefix=True, start_revision=first)
    assert shape(reply) == [
        ("put", b"svc/a", first),
        ("put", b"svc/a", first + 1),  # one transaction: its events together, by key
        ("put", b"svc/b", first + 1),
        ("delete", b"svc/b", first + 2),
    ]
    assert reply["next_revision"] == first + 3 == reply["header"]["revision"] + 1
    assert reply["header"]["member"] == leader
    # max_events stops only between revisions: the transaction's two events stay together.
    cut = cluster.ask(leader, "watch", key="svc/", prefix=True, start_revision=first, max_events=2)
    assert [e[2] for e in shape(cut)] == [first, first + 1, first + 1]
    assert cut["next_revision"] == first + 2
    # A single key, an interval, and prev_kv.
    one = cluster.ask(leader, "watch", key="svc/a", start_revision=first + 1, prev_kv=True)
    assert shape(one) == [("put", b"svc/a", first + 1)]
    assert one["events"][0]["prev_kv"]["value"] == b"1"
    span = cluster.ask(leader, "watch", key="o", range_end="p", start_revision=first)
    assert shape(span) == [("put", b"other", first + 1)]


def test_a_watch_is_held_until_a_change_in_its_range(cluster: InmemCluster) -> None:
    follower = cluster.follower()
    leader = cluster.leader()
    cluster.ask(leader, "put", key="cfg/x", value="0")
    cluster.run_until(lambda: revision(cluster, follower) == revision(cluster, leader), "caught up")
    waiting = cluster.send(follower, "watch", key="cfg/", prefix=True, wait_ms=30_000)
    assert pending(cluster, waiting)
    cluster.ask(leader, "put", key="elsewhere", value="1")  # outside the range: still held
    assert pending(cluster, waiting)
    written = cluster.ask(leader, "put", key="cfg/y", value="2")["header"]["revision"]
    reply = cluster.reply(waiting)
    assert shape(reply) == [("put", b"cfg/y", written)]
    assert reply["header"]["member"] == follower  # served where it was sent


def test_progress_reply_when_the_wait_ends(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    cluster.ask(leader, "put", key="a", value="1")
    now = revision(cluster, leader)
    reply = cluster.ask(leader, "watch", key="b", wait_ms=100)
    assert reply["ok"] and reply["events"] == [] and reply["next_revision"] == now + 1
    # A change to another key moves the progress on: nothing in the range below it.
    cluster.ask(leader, "put", key="a", value="2")
    later = cluster.ask(leader, "watch", key="b", start_revision=now + 1, wait_ms=50)
    assert later["events"] == [] and later["next_revision"] == now + 2
    # A start in the future: held, then answered without moving back.
    future = cluster.ask(leader, "watch", key="b", start_revision=now + 100, wait_ms=50)
    assert future["events"] == [] and future["next_revision"] == now + 100


def test_filters(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    start = cluster.ask(leader, "put", key="k", value="1")["header"]["revision"]
    cluster.ask(leader, "delete", key="k")
    cluster.ask(leader, "put", key="k", value="2")
    puts = cluster.ask(leader, "watch", key="k", start_revision=start, filters=["nodelete"])
    deletes = cluster.ask(leader, "watch", key="k", start_revision=start, filters=["noput"])
    assert [e[0] for e in shape(puts)] == ["put", "put"]
    assert shape(deletes) == [("delete", b"k", start + 1)]
    assert puts["next_revision"] == deletes["next_revision"] == start + 3


def test_compacted_start_is_refused_with_the_compact_revision(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    for n in range(5):
        cluster.ask(leader, "put", key="k", value=str(n))
    now = revision(cluster, leader)
    assert cluster.ask(leader, "compact", revision=now - 1)["ok"]
    refused = cluster.ask(leader, "watch", key="k", start_revision=now - 1)
    assert (refused["ok"], refused["error"]["code"]) == (False, "compacted")
    assert refused["compact_revision"] == now - 1
    allowed = cluster.ask(leader, "watch", key="k", start_revision=now)
    assert shape(allowed) == [("put", b"k", now)]


def test_a_lagging_node_holds_the_watch_instead_of_answering_past_a_gap(
    cluster: InmemCluster,
) -> None:
    leader = cluster.leader()
    lagging = cluster.follower()
    cluster.network.cut(leader, lagging)
    written = [cluster.ask(leader, "put", key=f"g/{n}", value="v") for n in range(3)]
    revisions = [reply["header"]["revision"] for reply in written]
    # Asked for the last write only: the lagging node has not applied the ones before.
    waiting = cluster.send(lagging, "watch", key="g/", prefix=True, start_revision=revisions[2])
    assert pending(cluster, waiting, rounds=10)
    cluster.network.heal()
    reply = cluster.reply(waiting)
    assert shape(reply) == [("put", b"g/2", revisions[2])]


def test_require_leader(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    alone = cluster.follower()
    held = cluster.send(alone, "watch", key="k", require_leader=True, wait_ms=60_000)
    plain = cluster.send(alone, "watch", key="k", wait_ms=60_000)
    assert pending(cluster, held, rounds=5)
    for other in cluster.nodes:
        if other != alone:
            cluster.network.cut(alone, other)
    # Cut off, the node loses its leader (an election timeout): the watch that requires
    # one is answered `unavailable`; the other keeps waiting.
    reply = cluster.reply(held)
    assert (reply["ok"], reply["error"]["code"]) == (False, "unavailable")
    assert cluster.nodes[alone].raft.leader_id is None
    assert not cluster.network.replies[plain]
    refused = cluster.ask(alone, "watch", key="k", require_leader=True)
    assert refused["error"]["code"] == "unavailable"
    cluster.network.heal()
    assert leader in cluster.nodes


def test_a_lease_revocation_is_one_revision_of_delete_events(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    lease = cluster.ask(leader, "lease_grant", ttl=60)["lease"]
    for name in ("svc/b", "svc/a", "svc/c"):
        cluster.ask(leader, "put", key=name, value="up", lease=lease)
    start = revision(cluster, leader) + 1
    waiting = cluster.send(
        cluster.follower(), "watch", key="svc/", prefix=True, start_revision=start
    )
    cluster.ask(leader, "lease_revoke", lease=lease)
    reply = cluster.reply(waiting)
    assert shape(reply) == [
        ("delete", b"svc/a", start),
        ("delete", b"svc/b", start),
        ("delete", b"svc/c", start),
    ]


def test_a_change_wakes_only_the_watches_that_cover_it(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    node = cluster.nodes[leader]
    keys = [cluster.send(leader, "watch", key=f"w/{n}", wait_ms=60_000) for n in range(300)]
    prefixes = [
        cluster.send(leader, "watch", key=f"p{n}/", prefix=True, wait_ms=60_000) for n in range(30)
    ]
    spans = [
        cluster.send(leader, "watch", key=f"s{n}", range_end=f"s{n}~", wait_ms=60_000)
        for n in range(5)
    ]
    everything = cluster.send(leader, "watch", key="\0", range_end="\0", wait_ms=60_000)
    cluster.run_until(lambda: node.machine.status() and len(node._watches) == 336, "all held")
    cluster.ask(leader, "put", key="w/7", value="x")
    cluster.ask(leader, "put", key="p3/deep/key", value="x")
    cluster.ask(leader, "put", key="s2-x", value="x")
    for _ in range(5):
        cluster.round()
    answered = [c for c in keys + prefixes + spans + [everything] if cluster.network.replies[c]]
    assert answered == [keys[7], prefixes[3], spans[2], everything]
    assert len(node._watches) == 332
    status = cluster.ask(leader, "status")["status"]
    assert status["watches"] == 332


def test_a_snapshot_install_under_a_held_watch(tmp_path: Path) -> None:
    with make(tmp_path, snapshot_entries=20, snapshot_trailing=5) as cluster:
        leader = cluster.leader()
        lagging = cluster.follower()
        start = revision(cluster, lagging) + 1
        waiting = cluster.send(lagging, "watch", key="\0", range_end="\0", wait_ms=60_000)
        cluster.network.cut(leader, lagging)
        for n in range(60):  # enough for the leader to compact its log past the follower
            cluster.ask(leader, "put", key=f"k{n % 7}", value=str(n))
        cluster.network.heal()
        reply = cluster.reply(waiting)
        # The first answer comes from the installed snapshot (or the entries after it):
        # whatever it holds starts at the watch's start and skips nothing in between.
        got = shape(reply)
        assert got and got[0][2] == start
        assert [r for _, _, r in got] == sorted(r for _, _, r in got)
        assert reply["next_revision"] > got[-1][2]


def test_the_watch_limit_per_node(cluster: InmemCluster, monkeypatch: pytest.MonkeyPatch) -> None:
    leader = cluster.leader()
    monkeypatch.setattr("zraft.node.watches.MAX_WATCHES", 3)
    held = [cluster.send(leader, "watch", key="k", wait_ms=60_000) for _ in range(3)]
    refused = cluster.ask(leader, "watch", key="k")
    assert refused["error"]["code"] == "unavailable"
    assert "3 watches" in refused["error"]["message"]
    assert MAX_WATCHES > 3 and all(pending(cluster, c, rounds=1) for c in held)


def test_identical_watches_woken_together_share_one_reply(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    cluster.ask(leader, "put", key="s/1", value="zero")
    start = revision(cluster, leader) + 1
    same = [
        cluster.send(leader, "watch", key="s/", prefix=True, start_revision=start, wait_ms=60_000)
        for _ in range(3)
    ]
    other = cluster.send(leader, "watch", key="s/", prefix=True, prev_kv=True, wait_ms=60_000)
    cluster.ask(leader, "put", key="s/1", value="one")
    cluster.ask(leader, "put", key="s/1", value="two")
    bodies = [cluster.network.replies[c][0] for c in same]
    assert bodies[0] == bodies[1] == bodies[2]
    assert shape(cluster.reply(same[0])) == [("put", b"s/1", start)]
    assert "prev_kv" not in cluster.reply(same[1])["events"][0]
    # Asked otherwise (prev_kv): a reply of its own.
    assert cluster.reply(other)["events"][0]["prev_kv"]["value"] == b"zero"


def test_a_quiet_held_watch_is_not_answered_compacted(cluster: InmemCluster) -> None:
    """A held watch whose range saw no change while others wrote and compacted is still
    past every change of its range: it gets its next event (or a progress reply), not
    `compacted` (the review of issue 15 found the false `compacted`)."""
    leader = cluster.leader()
    cluster.ask(leader, "put", key="a", value="0")
    held = cluster.send(leader, "watch", key="a", wait_ms=60_000)
    quiet = cluster.send(leader, "watch", key="q", wait_ms=500)
    for n in range(5):
        cluster.ask(leader, "put", key="b", value=str(n))
    assert cluster.ask(leader, "compact", revision=revision(cluster, leader))["ok"]
    written = cluster.ask(leader, "put", key="a", value="1")["header"]["revision"]
    assert shape(cluster.reply(held)) == [("put", b"a", written)]
    progress = cluster.reply(quiet)
    assert progress["ok"], progress
    assert progress["events"] == [] and progress["next_revision"] == revision(cluster, leader) + 1
