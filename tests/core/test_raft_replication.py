"""Layer 3: log replication: commit everywhere, batching, pipelining, repair, catch-up.

Tests that count individual messages use `Net` (directly driven cores, see helpers);
end-to-end catch-up after partitions and crashes uses the simulator.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.core.helpers import (
    Net,
    append_resp,
    drain,
    drain_all,
    elect,
    make_net,
    make_raft,
    outgoing,
)
from tests.sim import SimCluster
from zraft.core import (
    AppendRequest,
    AppendResponse,
    EntryKind,
    NotLeader,
    Role,
)

IDS = ["n1", "n2", "n3"]


def appends(
    net: Net, src: str, dst: str, *, since: int = 0, with_entries: bool = True
) -> list[AppendRequest]:
    """AppendRequests `src` sent to `dst` from `net.sent[since:]` (those with entries)."""
    return [
        m
        for m in net.sent[since:]
        if isinstance(m, AppendRequest)
        and (m.src, m.dst) == (src, dst)
        and (m.entries or not with_entries)
    ]


def started_cluster(seed: int = 1, **kwargs: Any) -> SimCluster:
    """A 3-node simulated cluster led by n1, quiet."""
    sim = SimCluster(IDS, seed=seed, **kwargs)
    sim.campaign("n1")
    sim.stabilize()
    assert sim.leader() == "n1"
    return sim


def test_proposals_commit_and_apply_on_every_node() -> None:
    """§5.3: once the leader has replicated an entry on a majority it commits it, and
    every follower learns the commit index and applies the same entries in order.
    """
    sim = started_cluster()
    for i in range(20):
        assert sim.propose("n1", b"put k%d v" % i) == (1, i + 2)
    sim.stabilize()
    sim.tick(2)
    for i in IDS:
        applied = sim.nodes[i].applied
        assert [e.index for e in applied] == list(range(1, 22)), i
        assert applied[0].kind is EntryKind.NOOP
        assert [e.data for e in applied[1:]] == [b"put k%d v" % n for n in range(20)]
        assert sim.raft(i).commit_index == 21


def test_proposals_made_in_one_turn_travel_in_one_append_per_follower() -> None:
    """Batching (group commit): every proposal made before one ready() leaves in a single
    AppendRequest per follower, together with a single batch of entries to persist.
    """
    net = make_net()
    leader = net.rafts["n1"]
    for i in range(10):
        leader.propose(b"cmd%d" % i)
    rd = drain(leader)
    assert [e.index for e in rd.entries] == list(range(2, 12))
    assert [m.dst for m in outgoing(rd)] == ["n2", "n3"]
    for m in outgoing(rd):
        assert isinstance(m, AppendRequest)
        assert (m.prev_index, [e.index for e in m.entries]) == (1, list(range(2, 12)))
    net.deliver(outgoing(rd))
    assert {r.commit_index for r in net.rafts.values()} == {11}


def test_replication_is_pipelined_up_to_max_inflight() -> None:
    """Flow control: in REPLICATE the leader sends new appends without waiting for acks,
    up to max_inflight unacknowledged ones; then it waits, and a heartbeat's ack frees the
    window and the backlog goes out.
    """
    net = make_net(max_inflight=3)
    leader = net.rafts["n1"]
    net.blocked.add(("n2", "n1"))  # n2 receives everything, its acks are lost
    mark = len(net.sent)
    for i in range(5):
        leader.propose(b"cmd%d" % i)
        net.deliver(net.process("n1"))
    to_n2 = appends(net, "n1", "n2", since=mark)
    assert [[e.index for e in m.entries] for m in to_n2] == [[2], [3], [4]]
    assert len(appends(net, "n1", "n3", since=mark)) == 5
    assert net.rafts["n2"].last_index == 4
    assert leader.commit_index == 6  # n3 keeps the majority going

    net.heal()
    net.tick(1)  # heartbeat_ticks is 1: the heartbeat's ack frees the window
    assert [e.index for e in appends(net, "n1", "n2")[-1].entries] == [5, 6]
    assert net.rafts["n2"].last_index == 6 and net.rafts["n2"].commit_index == 6


def test_batches_are_bounded_by_entry_count() -> None:
    """max_batch_entries caps one AppendRequest; the rest follows in further batches."""
    net = make_net(max_batch_entries=4)
    for i in range(10):
        net.rafts["n1"].propose(b"cmd%d" % i)
    net.run()
    sizes = [len(m.entries) for m in appends(net, "n1", "n2")]
    assert sizes[-3:] == [4, 4, 2]
    assert net.rafts["n2"].last_index == 11


def test_batches_are_bounded_by_bytes_but_one_oversize_entry_still_moves() -> None:
    """max_batch_bytes caps one AppendRequest, except that a single entry larger than the
    cap goes alone rather than blocking replication forever.
    """
    net = make_net(max_batch_bytes=100)
    leader = net.rafts["n1"]
    for _ in range(5):
        leader.propose(b"x" * 34)  # 50 bytes each with overhead: two per batch
    leader.propose(b"y" * 500)
    net.run()
    batches = [[e.index for e in m.entries] for m in appends(net, "n1", "n2")]
    assert batches[-4:] == [[2, 3], [4, 5], [6], [7]]
    assert {r.commit_index for r in net.rafts.values()} == {7}


@pytest.mark.parametrize(
    ("leader_tail", "follower_tail", "rejections"),
    [
        ((3,) * 40, (2,) * 60, 1),  # one conflicting term run: one round trip
        ((3,) * 20 + (5,) * 20, (2,) * 25 + (4,) * 25, 2),  # two runs: two round trips
        ((2,) * 10 + (3,) * 30, (2,) * 20, 2),  # too short, then one conflicting run
    ],
)
def test_conflicting_follower_is_repaired_in_few_round_trips(
    leader_tail: tuple[int, ...], follower_tail: tuple[int, ...], rejections: int
) -> None:
    """§5.3 (end of section): with the follower's conflict hint, the leader skips a whole
    conflicting term per rejection instead of one entry, so repairing dozens of
    conflicting entries takes one round trip per conflicting term.
    """
    leader_log = (1, 1, *leader_tail)
    follower_log = (1, 1, *follower_tail)
    net = Net(
        make_raft("n1", ("n2", "n3"), log_terms=leader_log, commit=2),
        make_raft("n2", ("n1", "n3"), log_terms=follower_log, commit=2),
        make_raft("n3", ("n1", "n2"), log_terms=leader_log, commit=2),
    )
    net.rafts["n1"].campaign()
    net.run()
    assert net.rafts["n1"].role is Role.LEADER
    rejected = [
        m for m in net.sent if isinstance(m, AppendResponse) and m.src == "n2" and not m.success
    ]
    assert len(rejected) == rejections
    conflicting = sum(
        1 for i, term in enumerate(follower_log) if i >= len(leader_log) or leader_log[i] != term
    )
    assert rejections * 5 <= conflicting
    leader, follower = net.rafts["n1"], net.rafts["n2"]
    assert follower.log.slice(1, 1000) == leader.log.slice(1, 1000)
    assert leader.commit_index == leader.last_index
    net.tick(1)  # the new commit index reaches n2 with the next heartbeat
    assert follower.commit_index == leader.commit_index
    assert len(net.events_named("log_truncated", "n2")) == 1


def test_lagging_follower_catches_up_after_partition_heals() -> None:
    """§5.3: a follower that missed entries is brought up to date once reachable: the
    leader probes back to where the logs match and streams the rest.
    """
    sim = started_cluster(2)
    sim.isolate("n3")
    for i in range(50):
        sim.propose("n1", b"put %d" % i)
    sim.tick(5)
    assert sim.raft("n1").commit_index == 51
    assert sim.raft("n3").last_index == 1
    sim.heal()
    sim.run_until(lambda: sim.raft("n3").commit_index == 51, max_ticks=50)
    assert sim.nodes["n3"].applied == sim.nodes["n1"].applied
    assert len(sim.events_named("leader_elected")) == 1
    assert sim.leader() == "n1" and sim.raft("n1").term == 1


def test_restarted_follower_catches_up() -> None:
    """§5.3 + Fig. 2 persistent state: a crashed follower restarts from its durable log
    and hard state, re-applies what it had committed and fetches what it missed.
    """
    sim = started_cluster(3)
    for i in range(10):
        sim.propose("n1", b"before %d" % i)
    sim.stabilize()
    sim.tick(2)
    sim.crash("n3")
    for i in range(30):
        sim.propose("n1", b"during %d" % i)
    sim.tick(5)
    sim.restart("n3")
    assert sim.raft("n3").last_index == 11
    sim.run_until(lambda: sim.raft("n3").commit_index == 41, max_ticks=60)
    assert sim.nodes["n3"].applied == sim.nodes["n1"].applied
    assert len(sim.nodes["n3"].applied) == 41
    assert len(sim.events_named("leader_elected")) == 1


def test_proposal_to_a_follower_raises_not_leader_with_the_leader_hint() -> None:
    """§8: clients talk to the leader; a follower refuses and points at the leader it
    knows (None when it knows none).
    """
    lone = make_raft("n2", ("n1", "n3"))
    with pytest.raises(NotLeader) as no_leader:
        lone.propose(b"x")
    assert no_leader.value.leader_hint is None

    net = make_net()
    for follower in ("n2", "n3"):
        with pytest.raises(NotLeader) as caught:
            net.rafts[follower].propose(b"x")
        assert caught.value.leader_hint == "n1"
        assert net.rafts[follower].last_index == 1


@pytest.mark.parametrize(
    ("voters", "acks", "committed_before_advance"),
    [
        (3, 1, False),  # 1 follower + the leader's unsaved copy: not a majority
        (5, 2, False),
        (5, 3, True),  # three followers are a majority of five on their own
    ],
)
def test_leader_counts_its_own_entry_only_after_advance(
    voters: int, acks: int, committed_before_advance: bool
) -> None:
    """The leader's own entries count towards the commit quorum only once they are
    stable (advance() acknowledged the Ready that carried them).
    """
    peers = [f"n{i}" for i in range(2, voters + 1)]
    r = make_raft("n1", peers)
    elect(r)
    for peer in peers:
        r.step(append_resp(peer, "n1", 1, index=1))
    drain_all(r)
    _, index = r.propose(b"x")
    for peer in peers[:acks]:
        r.step(append_resp(peer, "n1", 1, index=index))
    rd = r.ready()
    assert (r.commit_index == index) is committed_before_advance
    r.advance(rd)
    assert r.commit_index == index


def test_single_node_cluster_elects_itself_and_commits() -> None:
    """A cluster of one is its own majority: it elects itself on its first timeout and
    commits each proposal as soon as it is durable.
    """
    sim = SimCluster(["n1"], seed=1)
    sim.run_until(lambda: sim.leader() == "n1", max_ticks=21)
    assert len(sim.events_named("leader_elected")) == 1
    assert sim.propose("n1", b"a") == (1, 2)
    assert sim.propose("n1", b"b") == (1, 3)
    assert [e.data for e in sim.nodes["n1"].applied] == [b"", b"a", b"b"]

    r = make_raft("n1", ())
    r.campaign()
    assert r.role is Role.LEADER
    readies = drain_all(r)
    assert [e.index for rd in readies for e in rd.committed] == [1]
    r.propose(b"c")
    rd = r.ready()
    assert rd.committed == ()  # not durable yet
    r.advance(rd)
    assert [e.data for e in drain(r).committed] == [b"c"]


def test_learner_receives_the_log_but_never_counts_toward_commit() -> None:
    """Non-voting members (learners) are replicated to like followers, but only voters
    form the majority that commits an entry.
    """
    ids = ("n1", "n2", "n3", "n4")
    net = Net(*(make_raft(i, [p for p in ids if p != i], learners=("n4",)) for i in ids))
    net.rafts["n1"].campaign()
    net.run()
    leader = net.rafts["n1"]
    assert leader.role is Role.LEADER and leader.commit_index == 1
    net.blocked |= {("n2", "n1"), ("n3", "n1")}
    leader.propose(b"x")
    net.run()
    assert net.rafts["n4"].last_index == 2
    assert leader.status().match_indexes["n4"] == 2
    assert leader.commit_index == 1
    net.heal()
    net.tick(1)
    assert leader.commit_index == 2
    assert net.rafts["n4"].commit_index == 2


def test_impossible_rejection_never_crashes_the_leader() -> None:
    """STYLE rule 9: garbage from a peer never crashes the node. A well-typed rejection of
    an index the leader never sent (the success path already drops such claims) must be
    dropped or clamped, and replication to that follower must carry on.
    """
    net = make_net()
    leader = net.rafts["n1"]
    leader.step(append_resp("n2", "n1", 1, success=False, index=100, hint=100))
    net.run()
    net.tick(1)
    assert leader.role is Role.LEADER
    assert all(m.prev_index <= leader.last_index for m in appends(net, "n1", "n2"))
    leader.propose(b"x")
    net.run()
    net.tick(1)
    assert net.rafts["n2"].commit_index == leader.commit_index == 2
