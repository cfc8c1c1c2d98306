"""The data model through real nodes (issue 13), over the in-memory transport: headers,
ranges, transactions and compaction as clients see them, the model upgrade a leader
writes (at once in a new cluster; only once every member runs this release otherwise),
and automatic compaction."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.procs import write_cluster_config
from tests.test_node_inmem import InmemCluster
from zraft import config
from zraft.node.upkeep import Upkeep
from zraft.wire.peer import Hello

may_upgrade = Upkeep._may_upgrade


def make(tmp_path: Path, **options: int | str) -> contextlib.AbstractContextManager[InmemCluster]:
    """A three-node in-memory cluster with `[cluster]` options."""
    path = write_cluster_config(
        tmp_path, 3, request_timeout_ms=2000, security_mode="none", **options
    )

    @contextlib.contextmanager
    def running() -> Iterator[InmemCluster]:
        with contextlib.ExitStack() as stack:
            yield InmemCluster(config.load(path), tmp_path / "logs", stack)

    return running()


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InmemCluster]:
    with make(tmp_path) as running:
        yield running


def test_a_new_cluster_serves_the_data_model_from_its_first_write(cluster: InmemCluster) -> None:
    early = cluster.send("n2", "put", key="first", value="1")  # parked: no leader yet
    first = cluster.reply(early)
    leader = cluster.leader()
    assert first["ok"] and first["header"]["revision"] == 2, first
    assert first["header"]["member"] == leader
    assert first["header"]["raft_term"] == cluster.nodes[leader].raft.term
    cluster.run_until(
        lambda: all(node.machine.model == "mvcc" for node in cluster.nodes.values()),
        "every replica on the new model",
    )

    follower = cluster.follower()
    cluster.ask(follower, "put", key="svc/a", value="10.0.0.1")
    txn = cluster.ask(
        follower,
        "txn",
        compare=[{"key": "svc/b", "target": "version", "result": "equal", "operand": 0}],
        success=[
            {"op": "put", "key": "svc/b", "value": "10.0.0.2"},
            {"op": "range", "key": "svc/", "prefix": True},
        ],
        client="c",
        seq=1,
    )
    assert txn["ok"] and txn["succeeded"] and txn["header"]["revision"] == 4, txn
    assert [kv["key"] for kv in txn["responses"][1]["kvs"]] == [b"svc/a", b"svc/b"]
    listed = cluster.ask(follower, "range", key="svc/", prefix=True, revision=3)
    assert [kv["value"] for kv in listed["kvs"]] == [b"10.0.0.1"], listed
    assert listed["header"]["member"] == follower and listed["header"]["revision"] == 4
    local = cluster.ask(follower, "range", key="svc/", prefix=True, serializable=True)
    assert local["count"] == 2

    assert cluster.ask(leader, "compact", revision=4)["compact_revision"] == 4
    old = cluster.ask(follower, "range", key="svc/", prefix=True, revision=3)
    assert (old["ok"], old["error"]["code"], old["compact_revision"]) == (False, "compacted", 4)
    refused = cluster.ask(follower, "txn", success=[{"op": "put", "key": "k", "value": "1"}] * 2)
    assert refused["error"]["code"] == "bad_request", refused


def test_a_legacy_store_waits_for_every_member_then_converts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store with data in the previous release's model (as after a rolling restart)
    is upgraded only when every member has said hello; meanwhile new ops are refused
    `unavailable` and the old ones keep working."""
    heard = Upkeep.heard
    silent = {"n1", "n2", "n3"}  # whose hellos get lost: at first everyone's

    def deaf(self: Upkeep, hello: Hello) -> None:
        if hello.src not in silent:
            heard(self, hello)

    monkeypatch.setattr(Upkeep, "heard", deaf)
    monkeypatch.setattr(Upkeep, "_may_upgrade", lambda self: False)
    with make(tmp_path) as cluster:
        leader = cluster.leader()
        assert cluster.ask(leader, "put", key="old", value="1")["ok"]
        assert "header" not in cluster.ask(leader, "get", key="old")
        # Now the real rule; but one follower runs "the previous release".
        monkeypatch.setattr(Upkeep, "_may_upgrade", may_upgrade)
        silent.clear()
        silent.add(next(i for i in cluster.nodes if i != leader))
        for _ in range(300):  # three seconds of hellos
            cluster.round()
        assert cluster.nodes[leader].machine.model == "legacy"
        refused = cluster.ask(leader, "range", key="old")
        assert (
            refused["error"]["code"] == "unavailable" and "upgraded" in refused["error"]["message"]
        )
        assert cluster.ask(leader, "put", key="old", value="2")["ok"]

        silent.clear()  # that follower is upgraded too
        cluster.run_until(
            lambda: all(n.machine.model == "mvcc" for n in cluster.nodes.values()),
            "every replica converted",
        )
        kvs = cluster.ask(leader, "range", key="old")["kvs"]
        assert [(kv["value"], kv["mod_revision"], kv["version"]) for kv in kvs] == [(b"2", 2, 1)]


def test_automatic_compaction_keeps_the_last_revisions(tmp_path: Path) -> None:
    with make(tmp_path, auto_compaction_retention=10) as cluster:
        leader = cluster.leader()
        for number in range(40):
            cluster.ask(leader, "put", key="k", value=str(number))
        revision = cluster.nodes[leader].machine.revision
        assert revision == 41
        cluster.run_until(
            lambda: all(n.machine.store.compact_revision == 31 for n in cluster.nodes.values()),
            "every replica compacted to revision - retention",
        )
        assert cluster.ask(leader, "range", key="k", revision=31)["kvs"][0]["value"] == b"29"
        assert cluster.ask(leader, "range", key="k", revision=30)["error"]["code"] == "compacted"


def test_the_quota_alarm_rises_on_every_member_and_is_lowered_by_hand(tmp_path: Path) -> None:
    with make(tmp_path, quota_bytes=4000) as cluster:
        follower = cluster.follower()
        acknowledged = []
        for number in range(100):
            reply = cluster.ask(follower, "put", key=f"k{number:02d}", value="x" * 100)
            if not reply["ok"]:
                break
            acknowledged.append(number)
        assert (
            reply["error"]["code"] == "no_space" and "quota_bytes 4000" in reply["error"]["message"]
        )
        cluster.run_until(
            lambda: all(n.machine.alarms == {"nospace"} for n in cluster.nodes.values()),
            "the alarm raised on every member",
        )
        listed = cluster.ask(follower, "alarm_list")
        assert listed["alarms"] == ["nospace"] and 0 < listed["size_bytes"] <= 4000
        assert cluster.ask(follower, "put", key="more", value="x")["error"]["code"] == "no_space"
        for number in acknowledged:  # nothing acknowledged is lost
            assert cluster.ask(follower, "get", key=f"k{number:02d}")["value"] == b"x" * 100
        deleted = cluster.ask(follower, "delete_range", key="k", prefix=True)
        assert deleted["deleted"] == len(acknowledged)
        revision = deleted["header"]["revision"]
        assert cluster.ask(follower, "compact", revision=revision)["ok"]
        assert cluster.ask(follower, "put", key="more", value="x")["error"]["code"] == "no_space"
        assert cluster.ask(follower, "alarm_disarm")["alarms"] == []
        assert cluster.ask(follower, "put", key="more", value="x")["ok"]
        assert cluster.ask(follower, "status")["status"]["alarms"] == []


def test_periodic_compaction_keeps_the_revisions_of_the_last_seconds(tmp_path: Path) -> None:
    with make(tmp_path, auto_compaction_mode="periodic", auto_compaction_retention=2) as cluster:
        leader = cluster.leader()
        first = cluster.ask(leader, "put", key="k", value="old")["header"]["revision"]
        for _ in range(150):  # 1.5 s of fake time: nothing is 2 s old yet
            cluster.round()
        assert cluster.nodes[leader].machine.store.compact_revision == 0
        cluster.ask(leader, "put", key="k", value="new")
        cluster.run_until(
            lambda: cluster.nodes[leader].machine.store.compact_revision >= first,
            "a compaction to a revision sampled 2 s ago",
        )
        compacted = cluster.nodes[leader].machine.store.compact_revision
        assert compacted < cluster.nodes[leader].machine.revision  # the newest stays readable
