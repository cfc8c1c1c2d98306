"""Layer 3: elections on the simulator (and on directly driven cores) with exact counts.

The schedules here are deterministic, so event counts are exact: an extra election or an
extra `role_changed` is a defect, not noise. Pre-vote and check-quorum (thesis §9.6, §6.2)
are on unless a test says otherwise.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from tests.core.helpers import (
    ScriptedRand,
    append_req,
    drain,
    event_names,
    make_raft,
    vote_req,
    vote_resp,
)
from tests.sim import SimCluster
from zraft.core import REQUIRED_FIELDS, Event, Role
from zraft.core.events import TERM_CHANGE_REASONS, VOTE_DENIAL_REASONS

IDS = ["n1", "n2", "n3"]


def count(sim: SimCluster, name: str, node_id: str | None = None, **fields: Any) -> int:
    """How many events called `name` (of `node_id`, matching `fields`) the cluster emitted."""
    return sum(
        1
        for e in sim.events_named(name, node_id)
        if all(e.fields.get(k) == v for k, v in fields.items())
    )


def started_cluster(seed: int = 1, **kwargs: Any) -> SimCluster:
    """A 3-node cluster where n1 has campaigned and won, with the network quiet."""
    sim = SimCluster(IDS, seed=seed, **kwargs)
    sim.campaign("n1")
    sim.stabilize()
    assert sim.leader() == "n1"
    return sim


def test_campaign_elects_exactly_one_leader_with_exact_events() -> None:
    """§5.2 with pre-vote (thesis §9.6): one campaign on a fresh cluster is one pre-vote
    round, one real round and exactly one leader; an idle healthy cluster then stays put.
    """
    sim = started_cluster()
    assert count(sim, "leader_elected") == 1
    assert count(sim, "leader_elected", "n1", term=1, votes=2, voters=3) == 1
    assert count(sim, "election_started", "n1", prevote=True, term=1) == 1
    assert count(sim, "election_started", "n1", prevote=False, term=1) == 1
    assert count(sim, "election_started") == 2
    roles = [(e.fields["old_role"], e.fields["new_role"]) for e in sim.events_named("role_changed")]
    assert roles == [
        ("follower", "pre_candidate"),
        ("pre_candidate", "candidate"),
        ("candidate", "leader"),
    ]
    assert count(sim, "term_changed", "n1", reason="election") == 1
    for peer in ("n2", "n3"):
        assert count(sim, "term_changed", peer, old_term=0, new_term=1, reason="message") == 1
        assert count(sim, "vote_granted", peer, prevote=True) == 1
        assert count(sim, "vote_granted", peer, prevote=False) == 1
        assert count(sim, "leader_changed", peer, leader="n1") == 1
    assert count(sim, "vote_denied") == 0

    sim.tick(300)
    assert count(sim, "leader_elected") == 1
    assert count(sim, "election_started") == 2
    assert {sim.raft(i).term for i in IDS} == {1}


@pytest.mark.parametrize("k", [1, 3, 6])
def test_isolated_nodes_prevote_every_timeout_without_changing_term(k: int) -> None:
    """Thesis §9.6: a node cut off from a majority keeps running pre-vote rounds (exactly
    one per election timeout) but never increments its term, so it cannot disrupt the
    cluster when it returns.
    """
    sim = SimCluster(IDS, seed=3, election_ticks=(10, 10))
    sim.partition({"n1"}, {"n2"}, {"n3"})
    sim.tick(10 * k - 1)
    assert count(sim, "election_started", "n1") == k - 1
    sim.tick(1)
    assert count(sim, "election_started", "n1") == k
    assert count(sim, "election_started", "n1", prevote=True, term=1) == k
    assert count(sim, "term_changed") == 0
    assert count(sim, "role_changed", "n1") == 1  # follower -> pre_candidate, once
    assert all(sim.raft(i).term == 0 for i in IDS)
    assert all(sim.raft(i).role is Role.PRE_CANDIDATE for i in IDS)


def test_isolated_node_prevotes_at_each_drawn_timeout() -> None:
    """§5.2 + thesis §9.6: each new round waits a freshly drawn timeout (11, 17, 13, 20
    here), and no round touches the durable term or vote.
    """
    r = make_raft("n1", ("n2", "n3"), rand=ScriptedRand(11, 17, 13, 20))
    started_at = []
    for t in range(1, 62):
        r.tick()
        rd = drain(r)
        assert rd.hard_state is None
        if "election_started" in event_names(rd):
            started_at.append(t)
    assert started_at == [11, 28, 41, 61]
    assert r.term == 0 and r.voted_for is None


def test_without_pre_vote_an_isolated_node_inflates_its_term() -> None:
    """The contrast case (§5.2 without thesis §9.6): each timeout is a real election and
    costs a term, which is why pre-vote is on by default.
    """
    sim = SimCluster(IDS, seed=3, election_ticks=(10, 10), pre_vote=False)
    sim.partition({"n1"}, {"n2"}, {"n3"})
    sim.tick(40)
    assert count(sim, "election_started", "n1", prevote=False) == 4
    assert sim.raft("n1").term == 4
    assert count(sim, "term_changed", "n1", reason="election") == 4


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_check_quorum_isolated_leader_steps_down_and_majority_elects(seed: int) -> None:
    """Thesis §6.2 (check-quorum): a leader that has not heard from a majority within an
    election timeout steps down (at most 2 x election_ticks_min after the cut); the
    majority elects a leader in a higher term; after healing the old leader rejoins as a
    follower without causing another election.
    """
    sim = started_cluster(seed)
    sim.tick(5)
    sim.isolate("n1")
    taken = sim.run_until(lambda: sim.raft("n1").role is not Role.LEADER, max_ticks=20)
    assert taken <= 2 * 10
    step_downs = [
        e.fields for e in sim.events_named("role_changed", "n1") if e.fields["old_role"] == "leader"
    ]
    assert step_downs == [{"term": 1, "old_role": "leader", "new_role": "follower", "leader": None}]
    assert sim.raft("n1").term == 1

    sim.run_until(lambda: any(sim.raft(i).role is Role.LEADER for i in ("n2", "n3")), max_ticks=200)
    new_leader = sim.leader()
    assert new_leader in ("n2", "n3")
    new_term = sim.raft(new_leader).term
    assert new_term > 1
    assert count(sim, "leader_elected") == 2

    sim.heal()
    sim.tick(200)
    assert count(sim, "leader_elected") == 2
    assert sim.leader() == new_leader and sim.raft(new_leader).term == new_term
    old = sim.raft("n1")
    assert (old.role, old.term, old.leader_id) == (Role.FOLLOWER, new_term, new_leader)
    assert old.commit_index == sim.raft(new_leader).commit_index


def test_check_quorum_keeps_a_leader_that_hears_from_a_majority() -> None:
    """Thesis §6.2: losing one follower of three leaves a majority, so the leader stays."""
    sim = started_cluster(4)
    sim.isolate("n3")
    sim.tick(200)
    assert sim.leader() == "n1"
    assert count(sim, "role_changed", "n1") == 3
    assert count(sim, "leader_elected") == 1


def test_rejoining_follower_cannot_depose_a_live_leader() -> None:
    """Thesis §9.6: servers in contact with a leader ignore (pre-)vote requests, so a
    follower that was partitioned away and comes back does not disrupt the cluster.
    """
    sim = started_cluster(5)
    sim.isolate("n3")
    sim.tick(100)
    assert count(sim, "election_started", "n3", prevote=True) >= 4
    assert sim.raft("n3").term == 1
    sim.heal()
    sim.campaign("n3")  # a pre-vote round right after healing, before any heartbeat
    denied = [
        (e.fields["candidate"], e.fields["prevote"], e.fields["reason"])
        for e in sim.events_named("vote_denied")
    ]
    assert denied.count(("n3", True, "leader_alive")) == 2
    sim.tick(100)
    assert count(sim, "leader_elected") == 1
    assert sim.leader() == "n1"
    assert {sim.raft(i).term for i in IDS} == {1}
    assert sim.raft("n3").role is Role.FOLLOWER and sim.raft("n3").leader_id == "n1"


def test_follower_in_contact_with_leader_ignores_pre_votes() -> None:
    """Thesis §9.6: within the minimum election timeout of hearing from its leader, a
    follower refuses (pre-)votes for a higher term silently: no answer, no term change.
    """
    r = make_raft("n1", ("n2", "n3"), term=1)
    r.step(append_req("n2", "n1", 1))
    drain(r)
    for prevote in (True, False):
        r.step(vote_req("n3", "n1", 2, prevote=prevote))
        rd = drain(r)
        assert rd.messages == () and rd.hard_state is None
        denied = [(e.fields["reason"], e.fields["prevote"]) for e in rd.events]
        assert denied == [("leader_alive", prevote)]
    assert (r.term, r.leader_id) == (1, "n2")


def test_leader_lease_expires_after_the_minimum_election_timeout() -> None:
    """Thesis §9.6: the lease lasts election_ticks_min ticks; after that a pre-vote for a
    higher term is granted (the leader may be gone).
    """
    r = make_raft("n1", ("n2", "n3"), term=1, rand=ScriptedRand(20))
    r.step(append_req("n2", "n1", 1))
    drain(r)
    for _ in range(9):
        r.tick()
    r.step(vote_req("n3", "n1", 2, prevote=True))
    assert drain(r).messages == ()
    r.tick()
    r.step(vote_req("n3", "n1", 2, prevote=True))
    rd = drain(r)
    assert [(m.term, m.granted, m.prevote) for m in rd.messages] == [(2, True, True)]
    assert r.term == 1 and r.voted_for is None


def test_a_broken_link_to_the_leader_ends_the_lease_and_the_fixed_wait() -> None:
    """The driver saw the link to the leader break (its process died): the follower
    grants pre-votes at once and campaigns when the random part of its timeout has passed
    (20 drawn, 10 the fixed minimum: 10 ticks, not 20). A broken link to another peer,
    or to the leader while we are not a follower, changes nothing."""
    r = make_raft("n1", ("n2", "n3"), term=1, rand=ScriptedRand(20))
    r.step(append_req("n2", "n1", 1))
    drain(r)
    r.leader_unreachable("n3")  # not the leader: the lease holds
    r.step(vote_req("n3", "n1", 2, prevote=True))
    assert drain(r).messages == ()
    r.leader_unreachable("n2")
    r.step(vote_req("n3", "n1", 2, prevote=True))
    rd = drain(r)
    assert [(m.term, m.granted, m.prevote) for m in rd.messages] == [(2, True, True)]
    for _ in range(9):
        r.tick()
    assert "election_started" not in event_names(drain(r))
    r.tick()
    rd = drain(r)
    assert "election_started" in event_names(rd) and r.role is Role.PRE_CANDIDATE
    r.leader_unreachable("n2")  # no longer a follower: ignored
    assert r.role is Role.PRE_CANDIDATE and drain(r).messages == ()


def test_a_broken_link_is_ignored_by_a_leader_and_without_a_leader() -> None:
    """A leader told its link to a follower broke keeps leading (check-quorum decides
    that); a follower that knows no leader keeps its whole timeout."""
    sim = started_cluster()
    sim.raft("n1").leader_unreachable("n2")
    sim.tick(100)
    assert count(sim, "leader_elected") == 1 and sim.leader() == "n1"
    orphan = make_raft("n1", ("n2", "n3"), term=1, rand=ScriptedRand(20))
    orphan.leader_unreachable("n2")
    for _ in range(19):
        orphan.tick()
    assert "election_started" not in event_names(drain(orphan))
    orphan.tick()
    assert "election_started" in event_names(drain(orphan))


def test_transfer_vote_request_overrides_the_lease() -> None:
    """Thesis §3.10: a vote request started by TimeoutNow is granted even while the
    follower still hears from the old leader.
    """
    r = make_raft("n1", ("n2", "n3"), term=1)
    r.step(append_req("n2", "n1", 1))
    drain(r)
    r.step(vote_req("n3", "n1", 2, transfer=True))
    rd = drain(r)
    assert [(m.term, m.granted) for m in rd.messages] == [(2, True)]
    assert (r.term, r.voted_for) == (2, "n3")


def check_event_contract(events: list[tuple[int, str, Event]], sim: SimCluster) -> None:
    """Every event has exactly its fields, and role/term/leader events are exact.

    Replaying each node's role_changed, term_changed and leader_changed events must
    reproduce its final role, term and leader: no event is missing, none is spurious.
    """
    role = dict.fromkeys(sim.ids, "follower")
    term = dict.fromkeys(sim.ids, 0)
    leader: dict[str, str | None] = dict.fromkeys(sim.ids)
    for _, node_id, e in events:
        assert set(e.fields) == REQUIRED_FIELDS[e.name], e
        f = e.fields
        if e.name == "role_changed":
            assert f["old_role"] != f["new_role"], e
            assert f["old_role"] == role[node_id], e
            assert f["new_role"] in set(Role), e
            assert f["term"] == term[node_id], e
            role[node_id] = f["new_role"]
        elif e.name == "term_changed":
            assert f["new_term"] > f["old_term"] == term[node_id], e
            assert f["reason"] in TERM_CHANGE_REASONS, e
            term[node_id] = f["new_term"]
        elif e.name == "leader_changed":
            assert f["leader"] != leader[node_id], e
            assert f["term"] == term[node_id], e
            leader[node_id] = f["leader"]
        elif e.name == "vote_denied":
            assert f["reason"] in VOTE_DENIAL_REASONS, e
        elif e.name == "leader_elected":
            assert role[node_id] == "leader" and f["term"] == term[node_id], e
    for i in sim.ids:
        r = sim.raft(i)
        assert (str(r.role), r.term, r.leader_id) == (role[i], term[i], leader[i]), i


@pytest.mark.parametrize("seed", range(6))
def test_role_term_and_leader_events_are_exact_under_faults(seed: int) -> None:
    """DESIGN §3: role_changed once per real role change (never old == new), term_changed
    only when the term increases, leader_changed only when the view changes, and every
    event carries exactly its REQUIRED_FIELDS; checked through partitions and drops.
    """
    sim = SimCluster(["n1", "n2", "n3", "n4", "n5"], seed=seed)
    sim.run_until(lambda: sim.leader() is not None, max_ticks=300)
    for round_number in range(4):
        leader = sim.leader()
        if leader is not None:
            sim.propose(leader, b"put k %d" % round_number)
        victims = sim.rng.sample(sim.ids, 2)
        sim.partition(victims)
        sim.set_drop_rate(0.1)
        sim.tick(60)
        sim.heal()
        sim.set_drop_rate(0.0)
        sim.tick(60)
    check_event_contract(sim.events, sim)
    kinds = Counter(str(e.name) for _, _, e in sim.events)
    assert kinds["role_changed"] >= 3 and kinds["leader_elected"] >= 1
    per_term = Counter(e.fields["term"] for e in sim.events_named("leader_elected"))
    assert max(per_term.values()) == 1


def test_granting_a_pre_vote_leaves_the_voter_untouched() -> None:
    """Thesis §9.6: a pre-vote changes nothing on the voter: no term, no vote, and its own
    election timer keeps running (unlike a real vote, Fig. 2).
    """
    r = make_raft("n1", ("n2", "n3"), rand=ScriptedRand(10))
    for _ in range(8):
        r.tick()
    r.step(vote_req("n2", "n1", 1, prevote=True))
    rd = drain(r)
    assert [(m.granted, m.prevote, m.term) for m in rd.messages] == [(True, True, 1)]
    assert rd.hard_state is None and (r.term, r.voted_for) == (0, None)
    r.tick()
    r.tick()
    assert r.role is Role.PRE_CANDIDATE


def test_learner_never_campaigns_and_its_votes_do_not_count() -> None:
    """Only voters elect: a learner's timer never starts an election, and a candidate does
    not ask learners for votes nor count their answers.
    """
    learner = make_raft("n4", ("n1", "n2", "n3"), learners=("n4",))
    for _ in range(100):
        learner.tick()
    learner.campaign()
    assert learner.role is Role.FOLLOWER
    assert "election_started" not in event_names(drain(learner))

    cand = make_raft("n1", ("n2", "n3", "n4"), learners=("n4",), pre_vote=False)
    cand.campaign()
    rd = drain(cand)
    assert sorted(m.dst for m in rd.messages) == ["n2", "n3"]
    cand.step(vote_resp("n4", "n1", 1))
    assert cand.role is Role.CANDIDATE
    cand.step(vote_resp("n2", "n1", 1))
    assert cand.role is Role.LEADER
    elected = [e.fields for e in drain(cand).events if e.name == "leader_elected"]
    assert elected == [{"term": 1, "votes": 2, "voters": 3}]


def test_pre_vote_for_our_own_term_is_not_denied_as_leader_alive() -> None:
    """DESIGN §3: vote_denied reasons are exact. A pre-vote asking for the term we are
    already in (with no leader known and no vote cast) is stale, not refused because a
    leader is alive.
    """
    r = make_raft("n1", ("n2", "n3"), term=2)
    r.step(vote_req("n2", "n1", 2, prevote=True))
    rd = drain(r)
    assert [(m.granted, m.term) for m in rd.messages] == [(False, 2)]
    (denied,) = [e.fields for e in rd.events if e.name == "vote_denied"]
    assert r.leader_id is None
    assert denied["reason"] != "leader_alive"
