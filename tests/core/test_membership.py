"""Membership changes (thesis §4.1-4.2): single-server changes, learners, removal.

Scenario tests run on the simulator, which checks election safety (at most one leader per
term, across every configuration), log matching, leader completeness and state machine
safety after every step.
"""

from __future__ import annotations

import pytest

from tests.core.helpers import append_resp, elect, make_raft
from tests.sim import SimCluster
from zraft.core import (
    AppendRequest,
    ChangeKind,
    ChangeRefused,
    Entry,
    EntryKind,
    Membership,
    MembershipChange,
    Role,
    TimeoutNow,
)
from zraft.core.membership import apply_change, decode_config, encode_config

ADD = ChangeKind.ADD_LEARNER
PROMOTE = ChangeKind.PROMOTE
REMOVE = ChangeKind.REMOVE
THREE = Membership(frozenset({"n1", "n2", "n3"}))


# --- the data ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "membership",
    [
        THREE,
        Membership(frozenset({"a"}), frozenset({"b.c", "d-e_f"})),
        Membership(frozenset({"a"}), frozenset({"b", "c"}), frozenset({"c"})),
    ],
)
def test_config_entries_round_trip(membership: Membership) -> None:
    data = encode_config(membership, b"\x00ctx\n")
    assert decode_config(data) == (membership, b"\x00ctx\n")


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"zraft-config/1 n1",
        b"zraft-config/1 n1 n2 n3\n",
        b"zraft-config/1 n1,n1 -\n",
        b"zraft-config/1 n1 n1\n",
        b"zraft-config/1 - -\n",
        b"zraft-config/1 n\xff -\n",
        b"zraft-config/2 n1 -\n",
        b"zraft-config/1 n1 n2++\n",
        b"zraft-config/1 n1+ -\n",
        b"zraft-config/1 n1 +\n",
    ],
)
def test_malformed_config_entries_are_refused(data: bytes) -> None:
    with pytest.raises(ValueError):
        decode_config(data)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (MembershipChange(ADD, "n2"), "already a voter"),
        (MembershipChange(ADD, "n 4"), "invalid node id"),
        (MembershipChange(PROMOTE, "n9"), "not a member"),
        (MembershipChange(PROMOTE, "n1"), "already a voter"),
        (MembershipChange(REMOVE, "n9"), "not a member"),
    ],
)
def test_invalid_changes_say_why(change: MembershipChange, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        apply_change(THREE, change)


def test_the_last_voter_cannot_be_removed() -> None:
    with pytest.raises(ValueError, match="last voter"):
        apply_change(
            Membership(frozenset({"n1"}), frozenset({"n2"})), MembershipChange(REMOVE, "n1")
        )


def test_changes_move_one_server() -> None:
    with_learner = apply_change(THREE, MembershipChange(ADD, "n4"))
    assert with_learner == Membership(THREE.voters, frozenset({"n4"}))
    to_vote = apply_change(THREE, MembershipChange(ADD, "n4", promote_when_caught_up=True))
    assert to_vote.promotable == {"n4"}
    assert not apply_change(to_vote, MembershipChange(PROMOTE, "n4")).promotable
    assert not apply_change(to_vote, MembershipChange(REMOVE, "n4")).promotable
    promoted = apply_change(with_learner, MembershipChange(PROMOTE, "n4"))
    assert promoted.voters == THREE.voters | {"n4"} and not promoted.learners
    assert apply_change(promoted, MembershipChange(REMOVE, "n1")).voters == {"n2", "n3", "n4"}


# --- rules on one leader ----------------------------------------------------------------------
def test_a_change_waits_for_the_leaders_first_commit_in_its_term() -> None:
    """The fix to single-server changes: no change before an entry of the term commits."""
    r = make_raft("n1", log_terms=(1, 1), commit=2)
    elect(r)  # its no-op at index 3 is not committed yet
    with pytest.raises(ChangeRefused, match="not committed an entry of its term") as info:
        r.propose_membership(MembershipChange(ADD, "n4"))
    assert info.value.retryable


def test_one_change_at_a_time() -> None:
    sim = SimCluster(["n1", "n2", "n3", "n4", "n5"], 1, voters=["n1", "n2", "n3"])
    sim.campaign("n1")
    sim.stabilize()
    sim.partition({"n1", "n4", "n5"})  # the change cannot commit without n2 or n3
    assert sim.change_membership(MembershipChange(ADD, "n4")) is not None
    with pytest.raises(ChangeRefused, match="not committed yet") as info:
        sim.raft("n1").propose_membership(MembershipChange(ADD, "n5"))
    assert info.value.retryable


def test_a_config_takes_effect_when_appended_and_a_truncated_one_is_forgotten() -> None:
    sim = SimCluster(
        ["n1", "n2", "n3", "n4"], 2, voters=["n1", "n2", "n3"], pre_vote=False, check_quorum=False
    )
    sim.campaign("n1")
    sim.stabilize()
    sim.isolate("n1")
    sim.change_membership(MembershipChange(ADD, "n4"))  # only n1 ever holds it
    assert "n4" in sim.raft("n1").membership.learners, "in force once appended"
    sim.campaign("n2")
    sim.stabilize()
    assert sim.leader() == "n2"
    sim.propose("n2", b"overwrites")
    sim.stabilize()
    sim.heal()
    sim.run_until(
        lambda: sim.raft("n1").last_index == sim.raft("n2").last_index
        and sim.raft("n1").role is Role.FOLLOWER,
        200,
        "n1 follows n2",
    )
    assert sim.events_named("log_truncated", "n1")
    assert sim.raft("n1").membership == THREE, "the truncated config no longer rules"


def test_a_learner_replicates_but_never_votes_or_counts_for_commit() -> None:
    sim = SimCluster(["n1", "n2", "n3", "n4"], 3, voters=["n1", "n2", "n3"])
    sim.campaign("n1")
    sim.stabilize()
    sim.change_membership(MembershipChange(ADD, "n4"))
    sim.stabilize()
    for i in range(5):
        sim.propose("n1", b"x%d" % i)
        sim.stabilize()
    n4 = sim.raft("n4")
    assert n4.applied_index == sim.raft("n1").applied_index
    assert "n4" in n4.membership.learners
    # Cut both other voters: the learner's copy must not make anything commit.
    sim.partition({"n1", "n4"}, {"n2"}, {"n3"})
    commit = sim.raft("n1").commit_index
    sim.propose("n1", b"lonely")
    sim.tick(5)
    assert sim.raft("n1").commit_index == commit
    # And a learner never campaigns, however long it hears nothing.
    sim.isolate("n4")
    sim.tick(100)
    assert not sim.events_named("election_started", "n4")


def test_promotion_waits_until_the_learner_is_close_to_the_leader() -> None:
    sim = SimCluster(["n1", "n2", "n3", "n4"], 4, voters=["n1", "n2", "n3"])
    sim.campaign("n1")
    sim.stabilize()
    sim.isolate("n4")
    sim.change_membership(MembershipChange(ADD, "n4"))
    sim.stabilize()
    for i in range(20):
        sim.propose("n1", b"x%d" % i)
    sim.stabilize()
    with pytest.raises(ChangeRefused, match="entries behind") as info:
        sim.raft("n1").propose_membership(MembershipChange(PROMOTE, "n4"))
    assert info.value.retryable
    sim.heal()
    sim.run_until(
        lambda: sim.raft("n4").last_index == sim.raft("n1").last_index, 100, "n4 catches up"
    )
    assert sim.change_membership(MembershipChange(PROMOTE, "n4")) is not None
    sim.stabilize()
    assert sim.raft("n1").membership.voters == {"n1", "n2", "n3", "n4"}


def test_a_learner_added_to_vote_is_promoted_by_the_leader_once_caught_up() -> None:
    sim = SimCluster(["n1", "n2", "n3", "n4"], 5, voters=["n1", "n2", "n3"])
    sim.campaign("n1")
    sim.stabilize()
    for i in range(20):
        sim.propose("n1", b"x%d" % i)
    sim.stabilize()
    sim.change_membership(MembershipChange(ADD, "n4", promote_when_caught_up=True))
    sim.run_until(lambda: "n4" in sim.raft("n1").membership.voters, 100, "n4 promoted")
    sim.run_until(lambda: "n4" in sim.raft("n4").membership.voters, 100, "n4 knows it")


def test_a_learner_added_to_vote_is_promoted_by_a_later_leader() -> None:
    """The intent to promote is part of the membership: when the leader that accepted
    the learner dies before the learner caught up, the next leader promotes it."""
    sim = SimCluster(["n1", "n2", "n3", "n4"], 8, voters=["n1", "n2", "n3"])
    sim.campaign("n1")
    sim.stabilize()
    for i in range(150):  # more than max_promotion_lag (100) for n4 to catch up on
        sim.propose("n1", b"x%d" % i)
    sim.stabilize()
    sim.isolate("n4")  # it cannot catch up while n1 leads
    sim.change_membership(MembershipChange(ADD, "n4", promote_when_caught_up=True))
    sim.stabilize()
    assert sim.raft("n2").membership.learners == sim.raft("n2").membership.promotable == {"n4"}
    sim.crash("n1")
    sim.heal()
    sim.run_until(lambda: sim.leader() in ("n2", "n3"), 500, "a new leader")
    leader = sim.leader()
    assert leader is not None
    sim.run_until(lambda: "n4" in sim.raft(leader).membership.voters, 500, "n4 promoted")
    assert not sim.raft(leader).membership.promotable


def test_a_removed_follower_learns_it_and_stops_campaigning() -> None:
    sim = SimCluster(["n1", "n2", "n3"], 6)
    sim.campaign("n1")
    sim.stabilize()
    sim.change_membership(MembershipChange(REMOVE, "n3"))
    sim.stabilize()
    sim.tick(5)
    assert sim.raft("n3").membership.members == {"n1", "n2"}
    assert "n3" not in sim.raft("n1").status().match_indexes, "no replication to n3 any more"
    before = len(sim.events_named("election_started", "n3"))
    sim.tick(200)
    assert len(sim.events_named("election_started", "n3")) == before
    # The two remaining voters still commit.
    assert sim.propose("n1", b"after") is not None
    sim.stabilize()
    assert sim.raft("n2").applied_index == sim.raft("n1").applied_index


def test_a_leader_that_removes_itself_hands_over_and_steps_down() -> None:
    sim = SimCluster(["n1", "n2", "n3"], 7)
    sim.campaign("n1")
    sim.stabilize()
    sent: list[TimeoutNow] = []
    sim.add_filter(lambda m: isinstance(m, TimeoutNow) and bool(sent.append(m)))
    sim.change_membership(MembershipChange(REMOVE, "n1"))
    sim.stabilize()
    assert sent and sent[0].src == "n1", "the leader handed over to an up-to-date voter"
    sim.clear_filters()
    assert sim.raft("n1").role is Role.FOLLOWER
    sim.run_until(lambda: sim.leader() in ("n2", "n3"), 100, "a new leader among the voters")
    leader = sim.leader()
    assert leader is not None
    assert sim.raft(leader).membership.voters == {"n2", "n3"}
    sim.tick(200)
    assert sim.leader() == leader, "the removed leader does not come back"


def test_a_restarted_node_rebuilds_its_membership_from_the_log() -> None:
    sim = SimCluster(["n1", "n2", "n3", "n4"], 8, voters=["n1", "n2", "n3"])
    sim.campaign("n1")
    sim.stabilize()
    sim.change_membership(MembershipChange(ADD, "n4"))
    sim.stabilize()
    sim.change_membership(MembershipChange(PROMOTE, "n4"))
    sim.stabilize()
    sim.crash("n2")
    sim.restart("n2")
    assert sim.raft("n2").membership.voters == {"n1", "n2", "n3", "n4"}
    # ... and from a snapshot that covers the change.
    sim.take_snapshot("n3")
    sim.crash("n3")
    sim.restart("n3")
    assert sim.raft("n3").membership.voters == {"n1", "n2", "n3", "n4"}


def test_entries_carry_the_context_for_the_driver() -> None:
    r = make_raft("n1", peers=("n2",), log_terms=(1,), commit=1)
    elect(r)
    r.step(append_resp("n2", "n1", r.term, index=r.last_index))  # the no-op commits
    r.advance(r.ready())
    _, index = r.propose_membership(MembershipChange(ADD, "n3"), b"endpoints")
    entry: Entry = r.log.entry(index)
    assert entry.kind is EntryKind.CONFIG
    assert decode_config(entry.data) == (
        Membership(frozenset({"n1", "n2"}), frozenset({"n3"})),
        b"endpoints",
    )


def test_two_uncommitted_removals_cannot_let_a_lone_leader_commit() -> None:
    """One change at a time: otherwise a cut-off leader could shrink the voters to itself.

    n1 leads {n1, n2, n3} and is cut off. It removes n2 ({n1, n3}: not committable
    alone). If it could also remove n3, {n1} would be a majority of itself and n1 would
    commit on its own while n2 and n3 elect a leader and commit something else. The
    scenario runs either way; the simulator's state machine safety check decides.
    """
    sim = SimCluster(["n1", "n2", "n3"], 9, pre_vote=False, check_quorum=False)
    sim.campaign("n1")
    sim.stabilize()
    sim.isolate("n1")
    assert sim.change_membership(MembershipChange(REMOVE, "n2")) is not None
    try:
        sim.raft("n1").propose_membership(MembershipChange(REMOVE, "n3"))
        sim._process("n1")
    except ChangeRefused as exc:
        assert exc.code == "in_progress"
    sim.propose("n1", b"lone-write")
    sim.tick(5)
    sim.campaign("n2")
    sim.stabilize()
    sim.propose("n2", b"majority-write")
    sim.stabilize()
    for node in ("n1", "n2", "n3"):
        assert sim.raft(node).commit_index >= 0
    assert all(e.data != b"lone-write" for e in sim.committed), "n1 committed alone"


def test_a_change_before_the_leaders_first_commit_cannot_lose_a_committed_entry() -> None:
    """The single-server bug (raft-dev, 2015) as a script; the fix is the term-commit rule.

    Voters {n1..n4}, learner n5. n1 (term 1) promotes n5, reaching only n5. n2 wins term
    2 with n3, n4. If n2 could remove n4 before its own no-op commits, it would commit
    that change with n3 alone, n4 would hold no term-2 entry, and n1 (back, in term 3)
    could win with n4 and n5 under ITS membership {n1..n5} and overwrite n2's committed
    entries. With the rule, n2 must first commit its no-op on a majority of {n1..n4},
    which includes n4, so n4 refuses n1's vote. The simulator checks safety throughout.
    """
    sim = SimCluster(
        ["n1", "n2", "n3", "n4", "n5"],
        10,
        voters=["n1", "n2", "n3", "n4"],
        pre_vote=False,
        check_quorum=False,
    )
    sim.campaign("n1")
    sim.stabilize()
    sim.change_membership(MembershipChange(ADD, "n5"))
    sim.stabilize()
    sim.partition({"n1", "n5"}, {"n2", "n3", "n4"})
    sim.change_membership(MembershipChange(PROMOTE, "n5"))  # n1 and n5 only
    sim.stabilize()
    assert "n5" in sim.raft("n1").membership.voters
    sim.crash("n1")
    sim.partition({"n1", "n5"}, {"n2", "n3", "n4"})
    # n4 votes for n2 but never gets an append of term 2.
    sim.add_filter(lambda m: m.src == "n2" and m.dst == "n4" and isinstance(m, AppendRequest))
    sim.campaign("n2")  # votes from n3 and n4 (the vote requests are not filtered)
    sim.stabilize()
    assert sim.leader() == "n2" and sim.raft("n2").term == 2
    removed = None
    try:
        removed = sim.raft("n2").propose_membership(MembershipChange(REMOVE, "n4"))
        sim._process("n2")
    except ChangeRefused as exc:
        assert exc.code == "not_ready"
    sim.stabilize()
    if removed is None:
        # The rule held: let n4 take the no-op, then the change may go ahead.
        sim.clear_filters()
        n2 = sim.raft("n2")
        sim.run_until(lambda: n2.log.term_at(n2.commit_index) == 2, 50, "n2's no-op commits")
        assert sim.raft("n4").log.last_term == 2
        assert sim.change_membership(MembershipChange(REMOVE, "n4")) is not None
        sim.partition({"n1", "n5"}, {"n2", "n3"}, {"n4"})
        sim.stabilize()
    # n1 comes back with n4 and n5 and tries to win term 3 under its own membership.
    sim.clear_filters()
    sim.restart("n1")
    sim.partition({"n1", "n4", "n5"}, {"n2", "n3"})
    sim.campaign("n1")  # term 2: n4 already voted for n2
    sim.stabilize()
    sim.campaign("n1")  # term 3
    sim.stabilize()
    for i in range(3):
        sim.propose("n1", b"n1-%d" % i)
        sim.propose("n2", b"n2-%d" % i)
        sim.stabilize()
    sim.heal()
    sim.tick(100)  # every node applies what it can; the simulator checks as they do
    assert sim.raft("n1").role is not Role.LEADER or sim.raft("n1").term < 3
