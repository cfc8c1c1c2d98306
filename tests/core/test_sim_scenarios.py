"""Scripted simulator scenarios for interleavings random schedules rarely reach."""

from __future__ import annotations

from tests.sim import SimCluster
from zraft.core import AppendRequest, Role


def test_figure_8_an_old_term_entry_is_not_committed_by_counting() -> None:
    """§5.4.2, Figure 8: a leader must not commit an earlier term's entry by counting replicas.

    n1 (term 1) leaves entry 2 on n2 only. n5 wins term 2 and appends its no-op at index 2
    without replicating it. n1 wins term 3 and copies entry 2 to a majority, but not its
    own term-3 no-op. If n1 committed entry 2 now, n5 could still win term 4 (its last term
    2 beats everyone's 1) and overwrite it: the simulator's state machine safety check
    would see two different entries applied at index 2.
    """
    sim = SimCluster(
        ["n1", "n2", "n3", "n4", "n5"],
        seed=8,
        pre_vote=False,
        check_quorum=False,
        max_batch_entries=1,
    )
    sim.campaign("n1")
    sim.stabilize()
    assert sim.leader() == "n1"
    sim.partition({"n1", "n2"})
    sim.propose("n1", b"a")  # index 2, term 1: reaches n2 only
    sim.stabilize()

    sim.partition({"n1", "n2"}, {"n3", "n4", "n5"})
    sim.add_filter(lambda m: isinstance(m, AppendRequest) and m.src == "n5")
    sim.campaign("n5")  # wins term 2, keeps its no-op at index 2 to itself
    sim.stabilize()
    assert sim.raft("n5").role is Role.LEADER and sim.raft("n5").last_index == 2
    sim.clear_filters()

    sim.partition({"n1", "n2", "n3", "n4"}, {"n5"})
    # n1's own term-3 no-op at index 3 never lands anywhere: appends carrying it are
    # dropped whenever the receiver holds entry 2 and so would accept them.
    sim.add_filter(
        lambda m: (
            isinstance(m, AppendRequest)
            and m.src == "n1"
            and any(e.index == 3 for e in m.entries)
            and sim.raft(m.dst).log.term_at(2) == 1
        )
    )
    sim.crash("n1")
    sim.restart("n1")
    sim.campaign("n1")  # term 2: n3 and n4 already voted for n5 in term 2; no result
    sim.stabilize()
    sim.campaign("n1")  # term 3: n1's log (last term 1, index 2) is up to date for all
    sim.stabilize()
    n1 = sim.raft("n1")
    assert n1.role is Role.LEADER and n1.term == 3
    assert sim.raft("n3").log.term_at(2) == 1, "entry 2 reached a majority (n1, n2, n3)"
    assert n1.commit_index == 1, "entry 2 must not be committed by counting replicas"

    sim.crash("n1")
    sim.clear_filters()
    sim.heal()
    sim.crash("n5")  # n5 still leads term 2 in its own view; restart it as a follower
    sim.restart("n5")
    sim.campaign("n5")  # term 3: everyone else already voted for n1 in term 3
    sim.stabilize()
    sim.campaign("n5")  # term 4: n5's last term (2) beats n2..n4 (1), so it wins
    sim.stabilize()
    assert sim.leader() == "n5"
    assert all(sim.raft(i).log.term_at(2) == 2 for i in ("n2", "n3", "n4"))
    sim.tick(3)  # heartbeats carry the commit index; safety checks run on every apply
    assert [e.term for e in sim.committed[:2]] == [1, 2]
