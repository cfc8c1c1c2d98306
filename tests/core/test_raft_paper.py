"""Layer 2: one test per rule of the Raft paper (Figure 2 and §5), plus the Ready contract.

Each test drives one or two `Raft`s with hand-built messages and `tick()`: init, act, then
check what `ready()` hands out (messages, events, hard state). The section of the paper
(or of Ongaro's thesis) each rule comes from is in the test's docstring.
"""

from __future__ import annotations

import pytest

from tests.core.helpers import (
    ScriptedRand,
    append_req,
    append_resp,
    drain,
    drain_all,
    elect,
    event_names,
    events_of,
    log_entries,
    make_raft,
    messages_of,
    outgoing,
    vote_req,
    vote_resp,
)
from zraft.core import (
    AppendRequest,
    AppendResponse,
    EntryKind,
    HardState,
    InvariantViolation,
    Message,
    Raft,
    Role,
    VoteRequest,
    VoteResponse,
)


def put_in_role(r: Raft, role: Role) -> None:
    """Drive a fresh follower `r` into `role` (leader via granted votes) and drain it."""
    if role is Role.LEADER:
        elect(r)
        return
    if role is not Role.FOLLOWER:
        r.campaign()
    assert r.role is role
    drain_all(r)


def appends_to(msgs: list[Message], dst: str) -> list[AppendRequest]:
    """The AppendRequests addressed to `dst`, in order."""
    return [m for m in msgs if isinstance(m, AppendRequest) and m.dst == dst]


# === §5.1: terms =============================================================================
@pytest.mark.parametrize(
    ("role", "pre_vote"),
    [
        (Role.FOLLOWER, True),
        (Role.PRE_CANDIDATE, True),
        (Role.CANDIDATE, False),
        (Role.LEADER, True),
    ],
)
def test_server_seeing_a_higher_term_adopts_it_and_becomes_follower(
    role: Role, pre_vote: bool
) -> None:
    """§5.1: if a server's term is smaller than another's, it updates its term to the
    larger value; a candidate or leader that learns its term is stale reverts to follower.
    """
    r = make_raft("n1", ("n2", "n3"), term=1, pre_vote=pre_vote)
    put_in_role(r, role)
    old_term = r.term
    r.step(append_req("n2", "n1", old_term + 5, commit=0))
    rd = drain(r)
    assert (r.role, r.term, r.leader_id) == (Role.FOLLOWER, old_term + 5, "n2")
    assert rd.hard_state == HardState(term=old_term + 5, voted_for=None, commit=0)
    changes = [e.fields for e in rd.events if e.name == "term_changed"]
    assert changes == [{"old_term": old_term, "new_term": old_term + 5, "reason": "message"}]
    roles = [
        (e.fields["old_role"], e.fields["new_role"]) for e in rd.events if e.name == "role_changed"
    ]
    assert roles == ([] if role is Role.FOLLOWER else [(str(role), "follower")])


@pytest.mark.parametrize("role", [Role.CANDIDATE, Role.LEADER])
def test_higher_term_in_a_response_also_demotes(role: Role) -> None:
    """§5.1: the term rule applies to responses too; a leader learns it is stale from a
    rejected append, a candidate from a refused vote, and both fall back to follower.
    """
    r = make_raft("n1", ("n2", "n3"), term=1, pre_vote=False)
    put_in_role(r, role)
    if role is Role.LEADER:
        r.step(append_resp("n2", "n1", 7, success=False, index=1))
    else:
        r.step(vote_resp("n2", "n1", 7, granted=False))
    drain(r)
    assert (r.role, r.term, r.leader_id) == (Role.FOLLOWER, 7, None)


def test_stale_term_append_is_rejected_with_the_current_term() -> None:
    """§5.1, Fig. 2 AppendEntries rule 1: reply false if term < currentTerm; the reply
    carries our term so the stale leader steps down. Nothing else changes.
    """
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 1), term=3)
    r.step(append_req("n2", "n1", 3, prev_index=2, prev_term=1))
    drain(r)
    r.step(append_req("n3", "n1", 2, prev_index=2, prev_term=1, entries=log_entries(2, start=3)))
    rd = drain(r)
    (reply,) = rd.messages
    assert isinstance(reply, AppendResponse)
    assert (reply.dst, reply.term, reply.success) == ("n3", 3, False)
    assert rd.entries == () and r.last_index == 2
    assert (r.term, r.leader_id) == (3, "n2")
    assert rd.hard_state is None


def test_stale_term_vote_request_is_denied() -> None:
    """§5.1, Fig. 2 RequestVote rule 1: reply false if term < currentTerm."""
    r = make_raft("n1", ("n2", "n3"), term=3)
    r.step(vote_req("n2", "n1", 2, last_log_index=9, last_log_term=2))
    rd = drain(r)
    assert [(type(m), m.term, m.granted) for m in rd.messages] == [(VoteResponse, 3, False)]
    denied = [e.fields for e in rd.events if e.name == "vote_denied"]
    assert [d["reason"] for d in denied] == ["stale_term"]
    assert r.voted_for is None and r.term == 3


def test_stale_term_responses_are_ignored() -> None:
    """§5.1: a response from an older term is stale; votes and acks from it never count."""
    cand = make_raft("n1", ("n2", "n3"), term=4, pre_vote=False)
    cand.campaign()
    drain(cand)
    for peer in ("n2", "n3"):
        cand.step(vote_resp(peer, "n1", 4, granted=True))
    assert cand.role is Role.CANDIDATE and cand.term == 5

    leader = make_raft("n1", ("n2", "n3"), term=4)
    elect(leader)
    leader.step(append_resp("n2", "n1", 4, index=1))
    leader.step(append_resp("n3", "n1", 4, index=1))
    drain(leader)
    assert leader.status().match_indexes == {"n2": 0, "n3": 0}
    assert leader.commit_index == 0


# === §5.2: leader election ===================================================================
def test_follower_starts_election_after_election_timeout() -> None:
    """§5.2, Fig. 2 Followers: if the election timeout elapses without hearing from a
    leader or granting a vote, convert to candidate.
    """
    r = make_raft("n1", ("n2", "n3"), pre_vote=False, rand=ScriptedRand(12))
    for _ in range(11):
        r.tick()
    rd = drain(r)
    assert r.role is Role.FOLLOWER and rd.messages == ()
    r.tick()
    rd = drain(r)
    assert (r.role, r.term) == (Role.CANDIDATE, 1)
    assert event_names(rd).count("election_started") == 1


def test_follower_hearing_from_the_leader_never_starts_an_election() -> None:
    """§5.2: a server remains a follower as long as it receives valid RPCs from a leader."""
    r = make_raft("n1", ("n2", "n3"), term=1, rand=ScriptedRand(10))
    for _ in range(10):
        for _ in range(9):
            r.tick()
        r.step(append_req("n2", "n1", 1))
        drain(r)
    assert (r.role, r.term, r.leader_id) == (Role.FOLLOWER, 1, "n2")
    r.tick()
    assert "election_started" not in event_names(drain(r))


def test_granting_a_vote_restarts_the_election_timer() -> None:
    """Fig. 2 Followers: the timeout runs from the last AppendEntries *or granted vote*."""
    r = make_raft("n1", ("n2", "n3"), pre_vote=False, rand=ScriptedRand(10))
    for _ in range(8):
        r.tick()
    r.step(vote_req("n2", "n1", 1))
    assert [m.granted for m in messages_of(drain(r))] == [True]
    for _ in range(9):
        r.tick()
    assert r.role is Role.FOLLOWER
    r.tick()
    assert r.role is Role.CANDIDATE and r.term == 2


def test_candidate_increments_term_votes_for_itself_and_requests_votes_from_all() -> None:
    """§5.2: to begin an election a follower increments its term, votes for itself and
    issues RequestVote to every other server, with its last log index and term (§5.4.1).
    """
    peers = ("n2", "n3", "n4", "n5")
    r = make_raft("n1", peers, log_terms=(1, 1, 2), term=2, pre_vote=False)
    r.campaign()
    rd = drain(r)
    assert (r.role, r.term, r.voted_for) == (Role.CANDIDATE, 3, "n1")
    assert rd.hard_state == HardState(term=3, voted_for="n1", commit=0)
    assert rd.must_sync
    assert list(rd.messages) == [
        vote_req("n1", p, 3, last_log_index=3, last_log_term=2, prevote=False) for p in peers
    ]
    assert event_names(rd) == ["term_changed", "role_changed", "election_started"]


def test_pre_vote_phase_does_not_change_the_term() -> None:
    """Thesis §9.6: a pre-candidate asks whether it could win in term + 1 without adopting
    that term or voting; only after a majority of pre-votes does it campaign for real.
    """
    peers = ("n2", "n3", "n4", "n5")
    r = make_raft("n1", peers, log_terms=(1, 1, 2), term=2)
    r.campaign()
    rd = drain(r)
    assert (r.role, r.term, r.voted_for) == (Role.PRE_CANDIDATE, 2, None)
    assert rd.hard_state is None and not rd.must_sync
    assert list(rd.messages) == [
        vote_req("n1", p, 3, last_log_index=3, last_log_term=2, prevote=True) for p in peers
    ]
    started = [e.fields for e in rd.events if e.name == "election_started"]
    assert started == [{"term": 3, "prevote": True, "last_log_index": 3, "last_log_term": 2}]

    r.step(vote_resp("n2", "n1", 3, prevote=True))
    assert r.role is Role.PRE_CANDIDATE and r.term == 2
    r.step(vote_resp("n3", "n1", 3, prevote=True))
    rd = drain(r)
    assert (r.role, r.term, r.voted_for) == (Role.CANDIDATE, 3, "n1")
    assert all(isinstance(m, VoteRequest) and not m.prevote for m in rd.messages)
    assert len(rd.messages) == 4


@pytest.mark.parametrize(
    ("voters", "grants", "role"),
    [
        (3, 0, Role.CANDIDATE),
        (3, 1, Role.LEADER),
        (5, 1, Role.CANDIDATE),
        (5, 2, Role.LEADER),
        (5, 4, Role.LEADER),
    ],
)
def test_candidate_wins_with_votes_from_a_majority(voters: int, grants: int, role: Role) -> None:
    """§5.2: a candidate wins once it has votes from a majority of the servers (its own
    included), and announces it with exactly one leader_elected.
    """
    peers = [f"n{i}" for i in range(2, voters + 1)]
    r = make_raft("n1", peers, pre_vote=False)
    r.campaign()
    drain(r)
    for peer in peers[:grants]:
        r.step(vote_resp(peer, "n1", 1))
    rd = drain(r)
    assert r.role is role
    elected = [e.fields for e in rd.events if e.name == "leader_elected"]
    if role is Role.LEADER:
        need = voters // 2 + 1
        assert elected == [{"term": 1, "votes": need, "voters": voters}]
    else:
        assert elected == []


def test_candidate_becomes_follower_on_append_from_leader_of_its_term() -> None:
    """§5.2: a candidate receiving AppendEntries from a leader whose term is at least its
    own recognizes that leader and returns to follower (and answers the append).
    """
    r = make_raft("n1", ("n2", "n3"), pre_vote=False)
    r.campaign()
    drain(r)
    r.step(append_req("n2", "n1", 1, entries=log_entries(1)))
    rd = drain(r)
    assert (r.role, r.term, r.leader_id, r.voted_for) == (Role.FOLLOWER, 1, "n2", "n1")
    assert [(m.dst, m.success, m.index) for m in rd.messages] == [("n2", True, 1)]


def test_candidate_starts_a_new_election_after_a_split_vote() -> None:
    """§5.2: if no candidate wins, each times out and starts a new election by
    incrementing its term; it stays candidate (no role change is reported).
    """
    r = make_raft("n1", ("n2", "n3", "n4"), pre_vote=False, rand=ScriptedRand(10))
    r.campaign()
    drain(r)
    r.step(vote_resp("n2", "n1", 1))  # 2 of 4: not a majority
    r.step(vote_resp("n3", "n1", 1, granted=False))
    for _ in range(9):
        r.tick()
    assert (r.role, r.term) == (Role.CANDIDATE, 1)
    r.tick()
    rd = drain(r)
    assert (r.role, r.term, r.voted_for) == (Role.CANDIDATE, 2, "n1")
    assert event_names(rd) == ["term_changed", "election_started"]
    assert [(m.dst, m.term) for m in rd.messages] == [("n2", 2), ("n3", 2), ("n4", 2)]


def test_election_timeout_is_drawn_from_the_injected_rng() -> None:
    """§5.2: election timeouts are chosen randomly from a fixed interval, afresh for each
    election; the draw comes from the injected rng over [election_ticks_min, _max].
    """
    rand = ScriptedRand(17, 12)
    r = make_raft("n1", ("n2", "n3"), pre_vote=False, rand=rand)
    elections_at = []
    for t in range(1, 40):
        r.tick()
        if "election_started" in event_names(drain(r)):
            elections_at.append(t)
    assert elections_at == [17, 29]
    assert rand.calls and set(rand.calls) == {(10, 20)}


def test_leader_sends_heartbeats_every_heartbeat_interval() -> None:
    """§5.2: a leader sends periodic heartbeats (empty AppendEntries) to all followers
    to maintain its authority; here every `heartbeat_ticks` = 3 ticks.
    """
    r = make_raft("n1", ("n2", "n3"), heartbeat_ticks=3)
    elect(r)
    for peer in ("n2", "n3"):
        r.step(append_resp(peer, "n1", 1, index=1))
    drain_all(r)
    beats_at = []
    for t in range(1, 10):
        r.tick()
        sent = messages_of(drain(r))
        if sent:
            assert sorted(m.dst for m in sent) == ["n2", "n3"]
            assert all(isinstance(m, AppendRequest) and m.entries == () for m in sent)
            assert all(m.commit == 1 and m.prev_index == 1 for m in sent)
            beats_at.append(t)
    assert beats_at == [3, 6, 9]


def test_vote_is_granted_at_most_once_per_term() -> None:
    """§5.2: each server votes for at most one candidate in a given term, first come
    first served; repeating the request of the candidate it chose is answered again.
    """
    r = make_raft("n1", ("n2", "n3"))
    r.step(vote_req("n2", "n1", 1))
    r.step(vote_req("n3", "n1", 1))
    r.step(vote_req("n2", "n1", 1))
    rd = drain(r)
    assert [(m.dst, m.granted) for m in rd.messages] == [("n2", True), ("n3", False), ("n2", True)]
    denied = [e.fields["reason"] for e in rd.events if e.name == "vote_denied"]
    assert denied == ["already_voted"]
    assert r.voted_for == "n2"


def test_vote_survives_a_restart() -> None:
    """Fig. 2 persistent state: votedFor is on stable storage, so a server restarted in
    the same term still refuses every candidate but the one it voted for.
    """
    r = make_raft("n1", ("n2", "n3"), term=1, voted_for="n2")
    r.step(vote_req("n3", "n1", 1))
    r.step(vote_req("n2", "n1", 1))
    rd = drain(r)
    assert [(m.dst, m.granted) for m in rd.messages] == [("n3", False), ("n2", True)]
    assert rd.hard_state is None


@pytest.mark.parametrize(
    ("last_log_index", "last_log_term", "granted"),
    [
        (3, 2, True),  # identical logs
        (4, 2, True),  # same last term, longer
        (1, 3, True),  # higher last term, shorter
        (2, 2, False),  # same last term, shorter
        (9, 1, False),  # lower last term, longer
        (0, 0, False),  # empty
    ],
)
def test_vote_is_denied_to_a_less_up_to_date_candidate(
    last_log_index: int, last_log_term: int, granted: bool
) -> None:
    """§5.4.1: the voter denies its vote if its own log is more up-to-date: compare the
    last terms, and with equal last terms the longer log wins.
    """
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 1, 2), term=2)
    r.step(vote_req("n2", "n1", 3, last_log_index=last_log_index, last_log_term=last_log_term))
    rd = drain(r)
    assert [(m.term, m.granted) for m in rd.messages] == [(3, granted)]
    assert r.term == 3
    assert r.voted_for == ("n2" if granted else None)
    if not granted:
        assert [e.fields["reason"] for e in events_of(rd) if e.name == "vote_denied"] == [
            "log_behind"
        ]


# === §5.3: log replication ===================================================================
@pytest.mark.parametrize(
    ("prev_index", "prev_term", "hint"),
    [
        (5, 3, 2),  # our entry 5 is term 2: skip the whole term-2 run
        (4, 1, 2),
        (8, 3, 5),  # our log is too short: probe from our end
        (2, 2, 0),  # the term-1 run reaches the start of the log
    ],
)
def test_append_consistency_check_rejects_mismatch_with_a_hint(
    prev_index: int, prev_term: int, hint: int
) -> None:
    """§5.3, Fig. 2 AppendEntries rule 2: reply false if the log has no entry at prevLogIndex
    whose term matches prevLogTerm; the reply carries a hint to skip the conflict.
    """
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 1, 2, 2, 2), term=3)
    new = log_entries(3, start=prev_index + 1)
    r.step(append_req("n2", "n1", 3, prev_index=prev_index, prev_term=prev_term, entries=new))
    rd = drain(r)
    assert list(rd.messages) == [
        append_resp("n1", "n2", 3, success=False, index=prev_index, hint=hint)
    ]
    assert rd.entries == () and r.last_index == 5
    assert "log_truncated" not in event_names(rd)


def test_follower_deletes_conflicting_entries_and_appends_new_ones() -> None:
    """§5.3, Fig. 2 AppendEntries rules 3 and 4: if an existing entry conflicts with a new
    one, delete it and all that follow, then append the new entries; report it.
    """
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 1, 2, 2), commit=1)
    new = log_entries(3, 3, start=3)
    r.step(append_req("n2", "n1", 3, prev_index=2, prev_term=1, entries=new, commit=1))
    rd = drain(r)
    assert rd.entries == new  # storage rewrites its log from index 3
    assert [(e.index, e.term) for e in r.log.slice(1, 10)] == [(1, 1), (2, 1), (3, 3), (4, 3)]
    truncated = [e.fields for e in rd.events if e.name == "log_truncated"]
    assert truncated == [{"from_index": 3, "term": 3}]
    assert list(rd.messages) == [append_resp("n1", "n2", 3, index=4)]


def test_follower_keeps_entries_when_a_stale_append_arrives_late() -> None:
    """§5.3: only a *conflict* truncates; an old, shorter append that matches (delayed by
    the network) must not delete entries appended after it.
    """
    r = make_raft("n1", ("n2", "n3"), term=1)
    r.step(append_req("n2", "n1", 1, entries=log_entries(1, 1, 1)))
    drain(r)
    r.step(append_req("n2", "n1", 1, entries=log_entries(1)))
    rd = drain(r)
    assert r.last_index == 3
    assert "log_truncated" not in event_names(rd)
    assert list(rd.messages) == [append_resp("n1", "n2", 1, index=1)]


@pytest.mark.parametrize(
    ("prev_index", "new_terms", "leader_commit", "commit"),
    [
        (2, (1,), 2, 2),
        (2, (1,), 3, 3),
        (2, (1,), 5, 3),  # we hold 5 entries, but only 3 are known to match the leader
        (2, (), 9, 2),  # a heartbeat vouches only for prev_index
        (5, (), 9, 5),
        (4, (1, 1), 9, 6),
        (0, (), 1, 0),
    ],
)
def test_follower_commit_is_min_of_leader_commit_and_last_new_entry(
    prev_index: int, new_terms: tuple[int, ...], leader_commit: int, commit: int
) -> None:
    """Fig. 2 AppendEntries rule 5: if leaderCommit > commitIndex, set commitIndex =
    min(leaderCommit, index of last new entry).
    """
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 1, 1, 1, 1))
    entries = log_entries(*new_terms, start=prev_index + 1)
    prev_term = 1 if prev_index else 0
    r.step(
        append_req(
            "n2",
            "n1",
            1,
            prev_index=prev_index,
            prev_term=prev_term,
            entries=entries,
            commit=leader_commit,
        )
    )
    rd = drain(r)
    assert r.commit_index == commit
    assert [e.index for e in rd.committed] == list(range(1, commit + 1))
    advanced = [e.fields["commit_index"] for e in rd.events if e.name == "commit_advanced"]
    assert advanced == ([commit] if commit else [])


def test_committed_entries_are_applied_once_and_in_order() -> None:
    """§5.3, Fig. 2 All Servers: once commitIndex > lastApplied, apply entries in log order;
    each committed entry is handed to the state machine exactly once.
    """
    r = make_raft("n1", ("n2", "n3"), term=1)
    applied = []
    r.step(append_req("n2", "n1", 1, entries=log_entries(1, 1, 1, 1), commit=2))
    applied += drain(r).committed
    r.step(append_req("n2", "n1", 1, prev_index=4, prev_term=1, commit=2))
    applied += drain(r).committed
    r.step(append_req("n2", "n1", 1, prev_index=4, prev_term=1, commit=4))
    applied += drain(r).committed
    assert [e.index for e in applied] == [1, 2, 3, 4]
    assert r.applied_index == 4


def test_leader_appends_a_noop_when_elected() -> None:
    """§8 (and §5.4.2): a new leader appends a blank no-op entry of its own term and
    replicates it at once, so it can commit entries and learn what is committed.
    """
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 1), term=1)
    readies = elect(r)
    assert (r.role, r.term, r.last_index) == (Role.LEADER, 2, 3)
    noop = r.log.entry(3)
    assert (noop.kind, noop.term, noop.data) == (EntryKind.NOOP, 2, b"")
    assert readies[0].entries == (noop,)
    appends = [m for m in messages_of(readies) if isinstance(m, AppendRequest)]
    assert [(m.dst, m.prev_index, m.prev_term, m.entries) for m in appends] == [
        ("n2", 2, 1, (noop,)),
        ("n3", 2, 1, (noop,)),
    ]


def test_leader_replicates_a_proposal_to_every_follower() -> None:
    """§5.3: the leader appends the command to its log, then issues AppendEntries to each
    follower in parallel; the entry and the appends carrying it come in the same Ready.
    """
    r = make_raft("n1", ("n2", "n3"))
    elect(r)
    for peer in ("n2", "n3"):
        r.step(append_resp(peer, "n1", 1, index=1))
    drain_all(r)
    term, index = r.propose(b"put k v")
    rd = drain(r)
    assert (term, index) == (1, 2)
    assert [(e.index, e.data) for e in rd.entries] == [(2, b"put k v")]
    assert [(m.dst, m.prev_index, [e.index for e in m.entries]) for m in outgoing(rd)] == [
        ("n2", 1, [2]),
        ("n3", 1, [2]),
    ]


def test_leader_backs_off_and_retries_after_a_rejection() -> None:
    """§5.3: after a rejection the leader decrements nextIndex (here straight to the hint)
    and retries AppendEntries until the logs match.
    """
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 1, 1, 1), term=1)
    elect(r)
    r.step(append_resp("n2", "n1", 2, success=False, index=4, hint=1))
    (retry,) = appends_to(messages_of(drain(r)), "n2")
    assert (retry.prev_index, retry.prev_term) == (1, 1)
    assert [e.index for e in retry.entries] == [2, 3, 4, 5]


def test_leader_never_overwrites_or_deletes_its_own_log() -> None:
    """§5.3, Fig. 3 Leader Append-Only: a leader never overwrites or deletes entries in its
    log; appends from a would-be leader of the same term and rejections leave it intact.
    """
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 1), term=1)
    elect(r)
    before = r.log.slice(1, 10)
    r.step(append_req("n2", "n1", 2, prev_index=1, prev_term=1, entries=log_entries(2, 2, 2)))
    r.step(append_resp("n3", "n1", 2, success=False, index=2, hint=0))
    rd = drain(r)
    assert r.role is Role.LEADER
    assert r.log.slice(1, 10) == before
    assert rd.entries == ()
    assert "log_truncated" not in event_names(rd)


# === §5.4: safety ============================================================================
def test_leader_commits_only_current_term_entries_by_counting_replicas() -> None:
    """§5.4.2, Figure 8: a leader never commits an entry from a previous term by counting
    replicas; it stays uncommitted until an entry of the current term, stored on a majority,
    commits it indirectly.

    n1 holds (1:t1, 2:t2) from an earlier term and wins term 3, appending its no-op at 3.
    n2 acknowledges index 2, so entries 1-2 are on a majority, yet nothing may commit:
    a future leader could still overwrite an entry of term 2. Once n2 stores the no-op,
    index 3 (term 3) commits and carries 1-2 with it.
    """
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 2), term=2)
    elect(r)
    assert r.term == 3 and r.log.stable_index == 3
    r.step(append_resp("n2", "n1", 3, index=2))
    rd = drain(r)
    assert r.commit_index == 0
    assert rd.committed == () and "commit_advanced" not in event_names(rd)
    r.step(append_resp("n2", "n1", 3, index=3))
    readies = drain_all(r)
    assert r.commit_index == 3
    assert [e.index for rd in readies for e in rd.committed] == [1, 2, 3]
    advanced = [e.fields for e in events_of(readies) if e.name == "commit_advanced"]
    assert advanced == [{"term": 3, "commit_index": 3}]


def test_leader_counts_its_own_entries_only_once_durable() -> None:
    """§5.3 "replicated on a majority" counts the leader's copy only once it is stable:
    a follower's ack plus an unsaved leader entry is not a majority of three.
    """
    r = make_raft("n1", ("n2", "n3"))
    elect(r)
    r.step(append_resp("n2", "n1", 1, index=1))
    drain_all(r)
    assert r.commit_index == 1
    _, index = r.propose(b"x")
    r.step(append_resp("n2", "n1", 1, index=index))  # n2 has it, n1 has not saved it
    rd = r.ready()
    assert r.commit_index == 1 and rd.committed == ()
    r.advance(rd)
    assert r.commit_index == index
    assert [e.index for e in drain(r).committed] == [index]


# === the Ready contract ======================================================================
def test_granted_vote_leaves_with_the_hard_state_that_records_it() -> None:
    """Fig. 2 (persistent state is updated on stable storage before responding to RPCs):
    the Ready carrying a granted vote carries the hard state with voted_for, and must_sync.
    """
    r = make_raft("n1", ("n2", "n3"), term=1)
    r.step(vote_req("n2", "n1", 2))
    rd = r.ready()
    assert [(m.dst, m.granted) for m in rd.messages] == [("n2", True)]
    assert rd.hard_state == HardState(term=2, voted_for="n2", commit=0)
    assert rd.must_sync
    r.advance(rd)
    assert not r.has_ready()


def test_append_ack_leaves_with_the_entries_it_acknowledges() -> None:
    """Fig. 2: a follower persists entries before acknowledging them; the Ready with the
    ack carries those entries, and must_sync.
    """
    r = make_raft("n1", ("n2", "n3"), term=1)
    new = log_entries(1, 1)
    r.step(append_req("n2", "n1", 1, entries=new))
    rd = r.ready()
    assert rd.entries == new
    assert rd.must_sync
    assert list(rd.messages) == [append_resp("n1", "n2", 1, index=2)]


def test_leader_appends_leave_early_only_once_term_and_vote_are_durable() -> None:
    """Thesis §10.2.1: a leader may send appends before its own fsync (early_messages),
    since it counts itself only once durable; but never in the Ready that first records
    its term and vote, because no peer may see a term nobody has persisted.
    """
    r = make_raft("n1", ("n2", "n3"))
    (first, *_) = elect(r)  # campaign, votes and the no-op all in one Ready
    assert first.hard_state is not None and first.hard_state.voted_for == "n1"
    assert first.early_messages == ()
    assert [m.dst for m in first.messages if isinstance(m, AppendRequest)] == ["n2", "n3"]

    for peer in ("n2", "n3"):
        r.step(append_resp(peer, "n1", 1, index=1))
    drain_all(r)
    r.propose(b"x")
    rd = r.ready()
    assert [e.index for e in rd.entries] == [2] and rd.must_sync
    assert [(m.dst, m.entries[-1].index) for m in rd.early_messages] == [("n2", 2), ("n3", 2)]
    assert not any(isinstance(m, AppendRequest) for m in rd.messages)


def test_commit_only_hard_state_needs_no_sync() -> None:
    """Ready.must_sync: a hard state whose only change is commit may skip the fsync."""
    r = make_raft("n1", ("n2", "n3"), log_terms=(1, 1), term=1)
    r.step(append_req("n2", "n1", 1, prev_index=2, prev_term=1, commit=2))
    rd = r.ready()
    assert rd.hard_state == HardState(term=1, voted_for=None, commit=2)
    assert rd.entries == () and not rd.must_sync


def test_ready_is_idempotent_until_advance() -> None:
    """STYLE B3: ready() may be called again before advance() and returns the same work."""
    r = make_raft("n1", ("n2", "n3"), term=1)
    r.step(vote_req("n2", "n1", 2))
    first = r.ready()
    assert r.ready() == first


def test_input_between_ready_and_advance_is_a_usage_error() -> None:
    """STYLE B3: feeding input while a Ready is outstanding is a usage error."""
    r = make_raft("n1", ("n2", "n3"), term=1)
    r.step(vote_req("n2", "n1", 2))
    r.ready()
    try:
        r.tick()
    except InvariantViolation:
        return
    raise AssertionError("tick() between ready() and advance() was accepted")
