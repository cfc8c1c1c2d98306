"""Seeded random schedules: safety under every fault, liveness once the faults heal.

Each seed drives a 3- or 5-node cluster through drops, duplicates, delays (so reordering),
partitions, one-way cuts, crashes and restarts while clients propose and read; odd seeds
also snapshot and compact every few entries, so lagging and restarted followers come back
through InstallSnapshot; every third seed starts 3 voters beside 2 spare nodes and changes
membership (add learners, promote, remove voters, learners and leaders) among the faults. The
simulator checks every safety property after every delivery (see tests/sim.py). Then all
faults heal and the cluster must elect a leader and commit a new proposal on every node
within a bounded number of ticks.

    ZRAFT_SEEDS=5000 pytest tests/core/test_sim_random.py   # more seeds (default 500 + 250)
    ZRAFT_SEED=41 pytest tests/core/test_sim_random.py      # replay one seed
"""

from __future__ import annotations

import os
from collections import Counter

import pytest

from tests.sim import SimCluster
from zraft.core import ChangeKind, MembershipChange

SEED_COUNT = int(os.environ.get("ZRAFT_SEEDS", "500"))
REPLAY = [int(os.environ["ZRAFT_SEED"])] if "ZRAFT_SEED" in os.environ else None
SEEDS = REPLAY or range(SEED_COUNT)
ADVERSARIAL_SEEDS = REPLAY or range(SEED_COUNT // 2)
CHAOS_TICKS = 300
LEADER_BOUND_TICKS = 300
COMMIT_BOUND_TICKS = 300
MEMBERSHIP_RATE = 0.02  # per tick, on top of the fault mix, where spare nodes exist


def inject_fault(sim: SimCluster, accepted: Counter[ChangeKind]) -> None:
    """Pick one fault (or a repair) from the seeded rng."""
    roll = sim.rng.random()
    ids = sim.ids
    if roll < 0.15:
        sim.crash(sim.rng.choice(ids))
    elif roll < 0.35:
        sim.restart(sim.rng.choice(ids))
    elif roll < 0.50:
        cut = sim.rng.sample(ids, sim.rng.randint(1, len(ids) // 2))
        sim.partition(cut)
    elif roll < 0.60:
        src, dst = sim.rng.sample(ids, 2)
        sim.cut(src, dst)
    elif roll < 0.65:
        leader = sim.leader()
        if leader is not None:
            sim.isolate(leader)
    elif roll < 0.80:
        sim.heal()
    elif roll < 0.85:
        change_membership(sim, accepted)
    else:
        sim.set_drop_rate(sim.rng.choice([0.0, 0.02, 0.1, 0.3]))
        sim.set_dup_rate(sim.rng.choice([0.0, 0.02, 0.1]))
        sim.set_delay(sim.rng.choice([0, 0, 1, 3, 8]))


def change_membership(sim: SimCluster, accepted: Counter[ChangeKind]) -> None:
    """One random single-server change at the leader (refusals are expected and fine);
    `accepted` counts the changes the leader took, by kind."""
    if sim.membership.members == set(sim.ids):
        return  # no spares: this seed keeps its membership
    leader = sim.leader()
    if leader is None:
        return
    current = sim.raft(leader).membership
    outsiders = sorted(set(sim.ids) - current.members)
    roll = sim.rng.random()
    if outsiders and roll < 0.4:
        auto = sim.rng.random() < 0.5
        change = MembershipChange(ChangeKind.ADD_LEARNER, sim.rng.choice(outsiders), auto)
    elif current.learners and roll < 0.7:
        change = MembershipChange(ChangeKind.PROMOTE, sim.rng.choice(sorted(current.learners)))
    else:
        change = MembershipChange(ChangeKind.REMOVE, sim.rng.choice(sorted(current.members)))
    if sim.change_membership(change) is not None:
        accepted[change.kind] += 1


def client_step(sim: SimCluster, counter: list[int]) -> None:
    """Propose at the leader (or a random node) and ask a random live node for a read."""
    up = [i for i in sim.ids if sim.is_up(i)]
    if not up:
        return
    target = sim.leader() if sim.rng.random() < 0.7 else sim.rng.choice(up)
    if target is not None:
        counter[0] += 1
        sim.propose(target, b"op-%d" % counter[0])
    if sim.rng.random() < 0.2:
        sim.read(sim.rng.choice(up))


def heal_everything(sim: SimCluster) -> None:
    """Remove every fault and bring every node back."""
    sim.set_crash_before_sync_rate(0.0)
    sim.heal()
    sim.set_drop_rate(0.0)
    sim.set_dup_rate(0.0)
    sim.set_delay(0)
    for node_id in sim.ids:
        sim.restart(node_id)


def assert_live(sim: SimCluster) -> None:
    """After healing: a leader emerges and a fresh proposal is applied on every node."""
    sim.run_until(lambda: sim.leader() is not None, LEADER_BOUND_TICKS, "a leader after heal")
    marker = b"final-%d" % sim.seed
    deadline = sim.now + COMMIT_BOUND_TICKS
    proposed: tuple[int, int] | None = None

    def everywhere() -> bool:
        # Every current member; a removed node may rightly never hear of it.
        return all(any(e.data == marker for e in sim.nodes[i].applied[-50:]) for i in sim.members())

    while sim.now < deadline:
        leader = sim.leader()
        if leader is not None and (proposed is None or sim.raft(leader).term != proposed[0]):
            # (Re-)propose once per leader term: a leader change may drop an uncommitted one.
            proposed = sim.propose(leader, marker)
        if everywhere():
            return
        sim.tick()
    if not everywhere():
        sim.run_until(everywhere, 0, f"'{marker.decode()}' applied on every node")


def maybe_enable_snapshots(sim: SimCluster) -> None:
    """Odd seeds snapshot often, so followers are regularly brought back by a snapshot."""
    if sim.seed % 2:
        sim.enable_snapshots(every=sim.rng.choice([3, 5, 10, 20]), trailing=sim.rng.choice([0, 2]))


def run_schedule(
    sim: SimCluster, *, fault_rate: float, client_rate: float
) -> Counter[ChangeKind]:
    """Chaos, then heal, then check liveness; returns the membership changes accepted."""
    maybe_enable_snapshots(sim)
    counter = [0]
    accepted: Counter[ChangeKind] = Counter()
    has_spares = sim.membership.members != set(sim.ids)
    for _ in range(CHAOS_TICKS):
        if sim.rng.random() < fault_rate:
            inject_fault(sim, accepted)
        if has_spares and sim.rng.random() < MEMBERSHIP_RATE:
            change_membership(sim, accepted)
        if sim.rng.random() < client_rate:
            client_step(sim, counter)
        sim.tick()
    heal_everything(sim)
    assert_live(sim)
    return accepted


@pytest.mark.parametrize("seed", SEEDS)
def test_random_schedule_is_safe_and_live(seed: int) -> None:
    """Safety after every step under faults; liveness within bounded ticks after healing."""
    size = 5 if seed % 4 == 3 or seed % 3 == 2 else 3
    voters = ["n1", "n2", "n3"] if seed % 3 == 2 else None
    sim = SimCluster([f"n{i}" for i in range(1, size + 1)], seed, voters=voters)
    run_schedule(sim, fault_rate=0.08, client_rate=0.3)


@pytest.mark.parametrize("seed", ADVERSARIAL_SEEDS)
def test_adversarial_schedule_is_safe_and_live(seed: int) -> None:
    """Leader churn with one-to-three-entry batches: many small appends in flight, reordered.

    Short election timeouts and frequent faults make terms change while appends are still
    in the network, which is where commit and truncation rules are easiest to get wrong.
    """
    sim = SimCluster(
        ["n1", "n2", "n3", "n4", "n5"],
        seed,
        voters=["n1", "n2", "n3"] if seed % 3 == 2 else None,
        max_batch_entries=1 + seed % 3,
        election_ticks=(6, 12),
        heartbeat_ticks=1,
    )
    sim.set_crash_before_sync_rate(0.01)
    run_schedule(sim, fault_rate=0.15, client_rate=0.5)


def test_the_membership_schedules_really_change_membership() -> None:
    """Not a vacuous pass: over 30 of the membership seeds, leaders accept changes of
    every kind (a core refusing every change would keep every invariant trivially)."""
    accepted: Counter[ChangeKind] = Counter()
    for seed in range(2, 92, 3):
        sim = SimCluster([f"n{i}" for i in range(1, 6)], seed, voters=["n1", "n2", "n3"])
        accepted += run_schedule(sim, fault_rate=0.08, client_rate=0.3)
    # (Most promotions are the leader's own, of learners added to vote, counted as adds.)
    wanted = {ChangeKind.ADD_LEARNER: 10, ChangeKind.REMOVE: 10, ChangeKind.PROMOTE: 1}
    assert all(accepted[kind] >= n for kind, n in wanted.items()), accepted
