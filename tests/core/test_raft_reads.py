"""Layer 2/3: linearizable reads (ReadIndex, thesis §6.4) and leadership transfer (§3.10).

Reads are checked message by message on `Net` (directly driven cores), so each test can
hold the heartbeat round and show that nothing is released before a quorum answers it.
"""

from __future__ import annotations

import pytest

from tests.core.helpers import (
    Net,
    append_req,
    append_resp,
    drain,
    elect,
    make_net,
    make_raft,
    outgoing,
)
from zraft.core import (
    AppendRequest,
    NotLeader,
    ProposalDropped,
    ReadIndexRequest,
    ReadState,
    Role,
    TimeoutNow,
)


def tick_only(net: Net, node_id: str, n: int = 1) -> None:
    """Tick one node `n` times, delivering what it causes after each tick."""
    for _ in range(n):
        net.rafts[node_id].tick()
        net.run()


# === ReadIndex ===============================================================================
def test_read_is_released_only_after_a_quorum_acknowledges_a_new_round() -> None:
    """Thesis §6.4 steps 2-3: the leader records its commit index, then confirms it is
    still leader by a heartbeat round; the read is released only when a majority has
    acknowledged a round sent after the read arrived (older acks do not count).
    """
    net = make_net()
    leader = net.rafts["n1"]
    leader.propose(b"a")
    leader.propose(b"b")
    net.run()
    assert leader.commit_index == 3

    leader.read_index(7)
    beats = net.process("n1")
    assert net.read_states["n1"] == []
    assert sorted(m.dst for m in beats) == ["n2", "n3"]
    assert all(isinstance(m, AppendRequest) and m.seq == 1 for m in beats)

    leader.step(append_resp("n2", "n1", 1, index=3, seq=0))  # an ack of an older round
    net.process("n1")
    assert net.read_states["n1"] == []

    net.deliver([m for m in beats if m.dst == "n2"])  # n2 answers the new round
    assert net.read_states["n1"] == [ReadState(context=7, index=3)]


def test_one_round_serves_every_read_asked_before_it_leaves() -> None:
    """Thesis §6.4 (batching): reads arriving before the heartbeat round goes out share it."""
    net = make_net()
    leader = net.rafts["n1"]
    leader.read_index(1)
    leader.read_index(2)
    beats = net.process("n1")
    assert len(beats) == 2 and {m.seq for m in beats} == {1}
    net.deliver(beats)
    assert net.read_states["n1"] == [ReadState(1, 1), ReadState(2, 1)]


def test_new_leader_holds_reads_until_it_commits_an_entry_of_its_term() -> None:
    """Thesis §6.4 step 1: a new leader's commit index may be stale until an entry of its
    own term commits; reads wait for that, then go through a round as usual.
    """
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 1), term=1)
    elect(r)
    assert (r.term, r.commit_index) == (2, 0)
    r.read_index(5)
    rd = drain(r)
    assert rd.read_states == () and outgoing(rd) == ()

    r.step(append_resp("n2", "n1", 2, index=3))  # the no-op commits
    rd = drain(r)
    assert r.commit_index == 3 and rd.read_states == ()
    rounds = {m.seq for m in outgoing(rd) if isinstance(m, AppendRequest)}
    assert rounds == {1}

    r.step(append_resp("n2", "n1", 2, index=3, seq=1))
    assert drain(r).read_states == (ReadState(context=5, index=3),)


def test_follower_read_is_forwarded_and_released_with_the_leader_index() -> None:
    """Thesis §6.4: a follower asks the leader for a read index; the leader confirms its
    leadership as for its own reads and answers with its commit index.
    """
    net = make_net()
    leader = net.rafts["n1"]
    for data in (b"a", b"b", b"c"):
        leader.propose(data)
    net.run()
    follower = net.rafts["n2"]
    follower.read_index(9)
    (request,) = net.process("n2")
    assert isinstance(request, ReadIndexRequest)
    assert (request.dst, request.context, request.term) == ("n1", 9, 1)
    assert net.read_states["n2"] == []
    net.deliver([request])
    assert net.read_states["n2"] == [ReadState(context=9, index=4)]
    assert net.read_states["n1"] == []


def test_forwarded_read_fails_when_the_follower_loses_its_leader() -> None:
    """Thesis §6.4: a read forwarded to a leader the follower no longer follows will never
    be answered; it fails (index None) so the client can retry.
    """
    net = make_net()
    net.blocked.add(("n2", "n1"))
    follower = net.rafts["n2"]
    follower.read_index(4)
    net.deliver(net.process("n2"))
    assert net.read_states["n2"] == []
    follower.step(append_req("n3", "n2", 2))  # n3 now leads term 2
    net.process("n2")
    assert net.read_states["n2"] == [ReadState(context=4, index=None)]


def test_partitioned_leader_never_releases_a_read() -> None:
    """Thesis §6.4 + §6.2: a leader cut off from the majority cannot confirm itself, so it
    never releases the read; when check-quorum makes it step down, the read fails.
    """
    net = make_net()
    net.isolate("n1")
    old = net.rafts["n1"]
    old.read_index(3)
    for _ in range(2 * 10):
        tick_only(net, "n1")
        if old.role is not Role.LEADER:
            break
        assert net.read_states["n1"] == []
    assert old.role is Role.FOLLOWER
    assert net.read_states["n1"] == [ReadState(context=3, index=None)]


def test_read_without_a_known_leader_raises_not_leader() -> None:
    """Thesis §6.4: with no leader to ask, the read is refused at once (hint None)."""
    for campaign in (False, True):
        r = make_raft("n1", ("n2", "n3"))
        if campaign:
            r.campaign()
            assert r.role is Role.PRE_CANDIDATE
        with pytest.raises(NotLeader) as caught:
            r.read_index(1)
        assert caught.value.leader_hint is None


def test_single_voter_confirms_reads_by_itself() -> None:
    """Thesis §6.4: a cluster of one is its own quorum; the read is released at once."""
    r = make_raft("n1", ())
    r.campaign()
    drain(r)
    drain(r)
    assert r.commit_index == 1
    r.read_index(11)
    assert drain(r).read_states == (ReadState(context=11, index=1),)


# === leadership transfer =====================================================================
def test_transfer_catches_the_target_up_then_sends_timeout_now() -> None:
    """Thesis §3.10: the leader brings the target's log up to date, then sends TimeoutNow;
    the target campaigns at once (no pre-vote) and wins in a higher term.
    """
    net = make_net()
    leader = net.rafts["n1"]
    net.blocked.add(("n1", "n3"))
    for data in (b"a", b"b", b"c"):
        leader.propose(data)
    net.run()
    assert net.rafts["n3"].last_index == 1 and leader.last_index == 4
    net.heal()

    mark = len(net.sent)
    leader.transfer_leadership("n3")
    assert leader.transfer_target == "n3"
    net.run()
    # The leader believes its appends to n3 are in flight; the next heartbeat shows they
    # were lost, and the leader probes back and repairs n3's log before TimeoutNow.
    tick_only(net, "n1")
    sent = net.sent[mark:]
    timeouts = [i for i, m in enumerate(sent) if isinstance(m, TimeoutNow)]
    assert len(timeouts) == 1
    caught_up = [
        i
        for i, m in enumerate(sent)
        if isinstance(m, AppendRequest) and m.dst == "n3" and m.entries and m.entries[-1].index == 4
    ]
    assert caught_up and caught_up[-1] < timeouts[0]

    target = net.rafts["n3"]
    assert (target.role, target.term) == (Role.LEADER, 2)
    assert (leader.role, leader.leader_id, leader.transfer_target) == (Role.FOLLOWER, "n3", None)
    started = [e.fields for e in net.events_named("election_started", "n3")]
    assert started == [{"term": 2, "prevote": False, "last_log_index": 4, "last_log_term": 1}]
    assert len(net.events_named("leader_elected")) == 2
    with pytest.raises(NotLeader) as caught:
        leader.propose(b"x")
    assert caught.value.leader_hint == "n3"


def test_transfer_to_an_up_to_date_target_sends_timeout_now_at_once() -> None:
    """Thesis §3.10: if the target already has the whole log, TimeoutNow goes right away."""
    net = make_net()
    leader = net.rafts["n1"]
    leader.transfer_leadership("n2")
    msgs = net.process("n1")
    assert [(type(m), m.dst, m.term) for m in msgs] == [(TimeoutNow, "n2", 1)]


def test_proposals_are_dropped_during_transfer_until_it_is_abandoned() -> None:
    """Thesis §3.10: the leader stops accepting proposals while a transfer is under way and
    abandons the transfer if it has not completed within an election timeout.
    """
    net = make_net()
    leader = net.rafts["n1"]
    net.isolate("n3")
    leader.transfer_leadership("n3")
    net.run()
    with pytest.raises(ProposalDropped):
        leader.propose(b"x")
    tick_only(net, "n1", 9)
    assert leader.transfer_target == "n3"
    with pytest.raises(ProposalDropped):
        leader.propose(b"x")
    tick_only(net, "n1", 1)
    assert leader.role is Role.LEADER and leader.transfer_target is None
    assert leader.propose(b"x") == (1, 2)
    assert len(net.events_named("leader_elected")) == 1


def test_transfer_target_must_be_a_voter() -> None:
    """Thesis §3.10: only a voter can become leader; learners and strangers are refused,
    a follower refuses to transfer at all, and a transfer to oneself is a no-op.
    """
    r = make_raft("n1", ("n2", "n3", "n4"), learners=("n4",))
    with pytest.raises(NotLeader):
        r.transfer_leadership("n2")
    elect(r)
    for target in ("n4", "n9"):
        with pytest.raises(ValueError):
            r.transfer_leadership(target)
    r.transfer_leadership("n1")
    assert r.transfer_target is None
    assert r.propose(b"x") == (1, 2)


def test_timeout_now_from_anyone_but_the_leader_is_ignored() -> None:
    """Thesis §3.10: only the current leader may tell a follower to campaign at once."""
    r = make_raft("n1", ("n2", "n3"), term=1)
    r.step(append_req("n2", "n1", 1))
    drain(r)
    r.step(TimeoutNow(src="n3", dst="n1", term=1))
    rd = drain(r)
    assert r.role is Role.FOLLOWER and rd.messages == ()
    r.step(TimeoutNow(src="n2", dst="n1", term=1))
    rd = drain(r)
    assert (r.role, r.term) == (Role.CANDIDATE, 2)
    assert all(m.transfer and not m.prevote for m in rd.messages)
