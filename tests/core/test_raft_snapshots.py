"""Snapshots in the core: compaction, the SNAPSHOT progress state and InstallSnapshot (§7).

Scenario tests run on the simulator (which checks every safety property after each step);
the rule tests drive one core directly.
"""

from __future__ import annotations

import pytest

from tests.core.helpers import elect, log_entries, make_raft
from tests.sim import SimCluster
from zraft.core import (
    AppendRequest,
    AppendResponse,
    HardState,
    InvariantViolation,
    Membership,
    Raft,
    RaftConfig,
    Ready,
    RestoredState,
    Role,
    SnapshotMeta,
    SnapshotRequest,
    SnapshotResponse,
)
from zraft.core.progress import ProgressState

MEMBERS = Membership(frozenset({"n1", "n2", "n3"}))


def elected_cluster(seed: int = 1) -> SimCluster:
    sim = SimCluster(["n1", "n2", "n3"], seed)
    sim.campaign("n1")
    sim.stabilize()
    assert sim.leader() == "n1"
    return sim


def propose_many(sim: SimCluster, count: int, prefix: bytes = b"v") -> None:
    for i in range(count):
        assert sim.propose("n1", prefix + b"%d" % i) is not None
        sim.stabilize()


def installs(sim: SimCluster) -> list[str]:
    return [line for line in sim.trace if "installed snapshot" in line]


def test_a_follower_partitioned_while_the_leader_compacts_is_brought_back_by_a_snapshot() -> None:
    """§7: the entries n3 lacks are gone from the leader's log, so only a snapshot helps."""
    sim = elected_cluster()
    sim.isolate("n3")
    propose_many(sim, 30)
    meta = sim.take_snapshot("n1")
    n1 = sim.raft("n1")
    assert n1.log.first_index == meta.index + 1, "the leader's log starts after its snapshot"
    requests: list[SnapshotRequest] = []
    sim.add_filter(lambda m: isinstance(m, SnapshotRequest) and bool(requests.append(m)))
    sim.heal()
    sim.run_until(lambda: bool(requests), 50, "a snapshot sent to n3")
    assert requests[0].dst == "n3" and requests[0].meta == meta
    sim.clear_filters()
    sim.run_until(
        lambda: sim.raft("n3").applied_index == n1.applied_index, 200, "n3 caught up"
    )
    n3 = sim.raft("n3")
    assert n3.log.snapshot_index == meta.index
    assert sim.nodes["n3"].durable.snapshot == meta, "the installed snapshot is durable"
    assert sim.nodes["n3"].applied == sim.nodes["n1"].applied
    # And it keeps replicating normally afterwards.
    propose_many(sim, 3, b"after")
    assert sim.raft("n3").applied_index == n1.applied_index


def test_a_lost_snapshot_is_sent_again_after_the_driver_reports_the_failure() -> None:
    """The leader stays in SNAPSHOT (no appends) until the transfer's outcome is known."""
    sim = elected_cluster()
    sim.isolate("n3")
    propose_many(sim, 10)
    sim.take_snapshot("n1")
    sim.heal()
    sim.add_filter(lambda m: isinstance(m, SnapshotRequest))  # every transfer fails
    sim.tick(10)
    assert sim.raft("n1")._progress["n3"].state is ProgressState.SNAPSHOT
    sim.clear_filters()
    sim.run_until(
        lambda: sim.raft("n3").applied_index == sim.raft("n1").applied_index,
        200,
        "n3 caught up after the retry",
    )


def test_a_restarted_node_rebuilds_from_its_snapshot_and_the_log_after_it() -> None:
    sim = elected_cluster()
    propose_many(sim, 12)
    meta = sim.take_snapshot("n2")
    propose_many(sim, 4, b"w")
    sim.crash("n2")
    sim.restart("n2")
    n2 = sim.raft("n2")
    assert n2.log.snapshot_index == meta.index and n2.log.first_index == meta.index + 1
    sim.tick(5)
    assert sim.nodes["n2"].applied == sim.nodes["n1"].applied


def test_trailing_entries_let_a_slightly_lagging_follower_catch_up_without_a_snapshot() -> None:
    sim = elected_cluster()
    sim.enable_snapshots(every=100, trailing=20)
    sim.isolate("n3")
    propose_many(sim, 5)
    sim.take_snapshot("n1")
    assert sim.raft("n1").log.first_index <= sim.raft("n3").last_index + 1
    sim.heal()
    sim.run_until(
        lambda: sim.raft("n3").applied_index == sim.raft("n1").applied_index, 100, "catch up"
    )
    assert not installs(sim), "appends sufficed"


# --- rules on one core --------------------------------------------------------------------
def follower(entries_terms: tuple[int, ...] = (), commit: int = 0) -> Raft:
    restored = RestoredState(
        hard_state=HardState(term=2, voted_for=None, commit=commit),
        entries=log_entries(*entries_terms),
        membership=MEMBERS,
    )
    return Raft(RaftConfig("n2"), restored, lambda low, high: low)


def step_and_ready(r: Raft, msg: SnapshotRequest) -> Ready:
    r.step(msg)
    rd = r.ready()
    r.advance(rd)
    return rd


def test_a_snapshot_that_is_news_replaces_the_log_and_is_handed_to_the_driver() -> None:
    r = follower((1, 1, 2), commit=1)
    meta = SnapshotMeta(10, 2, MEMBERS)
    rd = step_and_ready(r, SnapshotRequest("n1", "n2", 2, meta))
    assert rd.snapshot == meta and rd.must_sync
    assert rd.hard_state is not None and rd.hard_state.commit == 10
    assert rd.committed == (), "the snapshot is the state; nothing below it is applied again"
    assert rd.messages == (SnapshotResponse("n2", "n1", 2, 10),)
    assert (r.log.first_index, r.last_index, r.commit_index, r.applied_index) == (11, 10, 10, 10)
    assert r.leader_id == "n1"


def test_a_snapshot_whose_last_entry_we_hold_keeps_the_log_after_it() -> None:
    """§7 rule 6: only the commit index moves; the entries after it stay."""
    r = follower((1, 1, 2, 2), commit=1)
    rd = step_and_ready(r, SnapshotRequest("n1", "n2", 2, SnapshotMeta(3, 2, MEMBERS)))
    assert rd.snapshot is None
    assert r.last_index == 4 and r.commit_index == 3
    assert [e.index for e in rd.committed] == [1, 2, 3]
    assert rd.messages == (SnapshotResponse("n2", "n1", 2, 3),)


def test_a_snapshot_we_already_cover_is_answered_with_our_commit_index() -> None:
    r = follower((1, 1, 2, 2), commit=4)
    rd = step_and_ready(r, SnapshotRequest("n1", "n2", 2, SnapshotMeta(2, 1, MEMBERS)))
    assert rd.snapshot is None and r.last_index == 4
    assert rd.messages == (SnapshotResponse("n2", "n1", 2, 4),)


def test_compact_refuses_unapplied_entries_and_compaction_beyond_the_snapshot() -> None:
    r = follower((1, 1, 2), commit=0)
    with pytest.raises(ValueError):
        r.snapshot_meta(2)  # nothing applied yet
    with pytest.raises(ValueError):
        r.compact(SnapshotMeta(2, 1, MEMBERS), 2)
    r2 = follower((1, 1, 2), commit=3)
    rd = r2.ready()
    r2.advance(rd)  # applies 1..3
    meta = r2.snapshot_meta(2)
    assert meta == SnapshotMeta(2, 1, MEMBERS)
    with pytest.raises(ValueError):
        r2.compact(meta, 3)
    r2.compact(meta, 1)
    assert r2.log.first_index == 2 and r2.status().snapshot_index == 2
    r2.compact(meta, 2)
    assert r2.log.first_index == 3


def test_restoring_below_the_commit_index_is_a_bug() -> None:
    from zraft.core.log import RaftLog

    log = RaftLog(commit_index=0)
    with pytest.raises(InvariantViolation):
        log.restore(0, 0)


def leader_with_compacted_log() -> tuple[Raft, SnapshotMeta]:
    """n1 leads term 2; entries 1..5 (term 1) are applied and compacted into a snapshot."""
    r = make_raft("n1", log_terms=(1, 1, 1, 1, 1), commit=5)
    elect(r)
    assert r.role is Role.LEADER and r.applied_index == 5
    meta = r.snapshot_meta(5)
    r.compact(meta, 5)
    return r, meta


def test_a_follower_behind_the_compaction_point_is_sent_the_snapshot_not_appends() -> None:
    r, meta = leader_with_compacted_log()
    # n2 rejects the no-op append: its log ends at 2.
    r.step(AppendResponse("n2", "n1", 2, False, 5, 2))
    rd = r.ready()
    r.advance(rd)
    to_n2 = [m for m in rd.messages + rd.early_messages if m.dst == "n2"]
    assert to_n2 == [SnapshotRequest("n1", "n2", 2, meta)]
    # While it is sent: heartbeats only, from the snapshot point, never an append.
    for _ in range(3):
        r.tick()
        rd = r.ready()
        r.advance(rd)
        for m in rd.messages + rd.early_messages:
            if m.dst == "n2":
                assert isinstance(m, AppendRequest) and not m.entries and m.prev_index == 5
    # The follower installed it: appends resume after it.
    r.step(SnapshotResponse("n2", "n1", 2, meta.index))
    rd = r.ready()
    r.advance(rd)
    to_n2 = [m for m in rd.messages + rd.early_messages if m.dst == "n2"]
    assert to_n2 and all(isinstance(m, AppendRequest) and m.prev_index == 5 for m in to_n2)
    assert r.status().match_indexes["n2"] == 5


def test_snapshot_failed_returns_the_follower_to_probing() -> None:
    r, _ = leader_with_compacted_log()
    r.step(AppendResponse("n2", "n1", 2, False, 5, 2))
    r.advance(r.ready())
    r.snapshot_failed("n2")
    r.tick()
    rd = r.ready()
    r.advance(rd)
    assert any(
        isinstance(m, SnapshotRequest) and m.dst == "n2" for m in rd.messages + rd.early_messages
    ), "the next heartbeat round probes and finds the snapshot is still needed"


def test_a_forged_snapshot_response_beyond_the_log_is_ignored() -> None:
    r, _ = leader_with_compacted_log()
    r.step(SnapshotResponse("n2", "n1", 2, 10_000))
    assert r.status().match_indexes["n2"] == 0
