"""Lease clocks through real nodes on one fake clock (issue 14): keepalives, expiry, and
the guarantee across leader changes and a paused leader, stated as assertions.

The guarantee (README "Leases"; `zraft.node.leases`): a lease is never revoked earlier
than its TTL after the last keepalive the cluster acknowledged; with a stable leader it
is revoked within the TTL plus `MARGIN_S` after that keepalive; after a leader change,
within the TTL plus an election timeout plus `MARGIN_S`; a leader paused past its
deadlines that wakes up deposed revokes nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.test_node_inmem import InmemCluster
from tests.test_node_store import make
from zraft.node.leases import EXPIRY_BATCH
from zraft.state.machine import KVMachine

TTL = 2
MARGIN_S = 0.2  # two ticks to notice, a commit round, and the apply: far below this here
ELECTION_S = 0.6  # the test cluster's largest election timeout


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[InmemCluster]:
    with make(tmp_path) as running:
        yield running


def expired_events(cluster: InmemCluster, lease: int) -> list[dict[str, Any]]:
    return [e for e in cluster.events() if e["event"] == "lease_expired" and e["lease"] == lease]


def run_for(cluster: InmemCluster, seconds: float) -> None:
    for _ in range(round(seconds / 0.01)):
        cluster.round()


def keep_alive(cluster: InmemCluster, node: str, lease: int) -> float:
    """One acknowledged keepalive through `node`; returns the fake time it was answered."""
    reply = cluster.ask(node, "lease_keepalive", lease=lease)
    assert reply["ok"] and reply["remaining"] == TTL, reply
    return cluster.clock()


def test_keepalives_keep_a_lease_and_its_keys_until_they_stop(cluster: InmemCluster) -> None:
    follower = cluster.follower()
    lease = cluster.ask(follower, "lease_grant", ttl=TTL)["lease"]
    assert cluster.ask(follower, "put", key="svc/a", value="up", lease=lease)["ok"]
    last = cluster.clock()
    while cluster.clock() - last < 3 * TTL:  # keepalives for three TTLs
        run_for(cluster, TTL / 3)
        last_ack = keep_alive(cluster, follower, lease)
    last = last_ack
    ttl = cluster.ask(follower, "lease_timetolive", lease=lease, keys=True)
    assert (ttl["ttl"], ttl["keys"]) == (TTL, [b"svc/a"]) and 0 < ttl["remaining"] <= TTL
    assert cluster.ask(follower, "lease_leases")["leases"] == [lease]

    def gone() -> bool:
        return all(lease not in node.machine.leases for node in cluster.nodes.values())

    cluster.run_until(gone, "the lease expired on every node")
    expired_at = cluster.clock()
    assert TTL <= expired_at - last <= TTL + MARGIN_S, expired_at - last
    for node in cluster.nodes.values():
        assert node.machine.value(b"svc/a") is None
    assert {e["node"] for e in expired_events(cluster, lease)} == set(cluster.nodes)
    assert expired_events(cluster, lease)[0]["keys"] == 1
    refused = cluster.ask(follower, "lease_keepalive", lease=lease)
    assert refused["error"]["code"] == "lease_not_found"


def test_a_leader_paused_past_the_ttl_revokes_nothing_when_it_wakes(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    follower = cluster.follower()
    lease = cluster.ask(follower, "lease_grant", ttl=TTL)["lease"]
    cluster.ask(follower, "put", key="owned", value="yes", lease=lease)
    keep_alive(cluster, follower, lease)
    cluster.paused.add(leader)  # SIGSTOP: its clock runs on, it does not
    for other in cluster.nodes:  # and nothing reaches it meanwhile
        if other != leader:
            cluster.network.cut(leader, other)
    deadline = cluster.clock() + 4 * TTL
    while cluster.clock() < deadline:  # the owner keeps going through the new leader
        run_for(cluster, TTL / 3)
        keep_alive(cluster, follower, lease)
    assert cluster.nodes[follower].raft.leader_id not in (None, leader)
    # SIGCONT while still cut off: it wakes believing it leads, with every deadline it
    # knew long past, and nothing from the others to tell it otherwise yet.
    cluster.paused.clear()
    run_for(cluster, 0.1)
    assert cluster.nodes[leader].is_leader()  # deposed but unaware: the hard case
    keep_alive(cluster, follower, lease)
    run_for(cluster, 0.5)  # until check-quorum makes it step down
    keep_alive(cluster, follower, lease)
    cluster.network.heal()
    run_for(cluster, 0.5)
    keep_alive(cluster, follower, lease)
    for node in cluster.nodes.values():
        assert lease in node.machine.leases and node.machine.value(b"owned") == b"yes"
    assert expired_events(cluster, lease) == []


def test_after_a_leader_change_a_lease_expires_within_its_bound(cluster: InmemCluster) -> None:
    leader = cluster.leader()
    follower = cluster.follower()
    lease = cluster.ask(follower, "lease_grant", ttl=TTL)["lease"]
    last = keep_alive(cluster, follower, lease)  # the owner's last keepalive
    run_for(cluster, TTL / 2)
    cluster.paused.add(leader)  # the leader dies half way through the TTL

    def gone() -> bool:
        return lease not in cluster.nodes[follower].machine.leases

    cluster.run_until(gone, "the lease expired under the new leader")
    lifetime = cluster.clock() - last
    assert TTL <= lifetime <= TTL + ELECTION_S + MARGIN_S, lifetime


def test_keepalives_across_a_leader_change_never_expire_the_lease(cluster: InmemCluster) -> None:
    """Never early: keepalives every TTL/3 (some failing while no leader is known, as a
    client would retry them) while the leader changes twice."""
    follower = cluster.follower()
    lease = cluster.ask(follower, "lease_grant", ttl=TTL)["lease"]
    for _ in range(2):
        leader = next(i for i, n in cluster.nodes.items() if n.is_leader())
        cluster.paused.add(leader)
        asker = next(i for i in cluster.nodes if i not in cluster.paused)
        end = cluster.clock() + 2 * TTL
        while cluster.clock() < end:
            run_for(cluster, TTL / 3)
            keep_alive(cluster, asker, lease)
        cluster.paused.clear()
        run_for(cluster, 0.5)
    assert expired_events(cluster, lease) == []
    assert all(lease in n.machine.leases for n in cluster.nodes.values())


def test_a_mass_expiry_is_spread_over_ticks(
    cluster: InmemCluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    """600 leases that expire at once are revoked in entries of at most `EXPIRY_BATCH`
    leases, at most one entry a tick, so no turn of the leader's loop proposes (and no
    replica applies) them all at once. (`test_leases.py` does it with 3,000 on real
    processes; this is the part of it that does not depend on the machine's speed.)"""
    leader = cluster.leader()
    proposed: list[tuple[float, int]] = []  # (fake time, leases named)
    original = KVMachine.expiry_command

    def recorded(leases: list[tuple[int, int]]) -> bytes:
        proposed.append((cluster.clock(), len(leases)))
        return original(leases)

    monkeypatch.setattr(KVMachine, "expiry_command", staticmethod(recorded))
    clients = [cluster.send(leader, "lease_grant", ttl=TTL) for _ in range(600)]
    assert all(cluster.reply(client)["ok"] for client in clients)
    # Past every deadline in one step (each loop takes it as one late tick), so all 600
    # are due at once and only the batching can spread them.
    cluster.clock.advance(TTL + 0.1)
    cluster.run_until(
        lambda: not any(node.machine.leases for node in cluster.nodes.values()),
        "every lease expired on every node",
    )
    assert sum(count for _, count in proposed) == 600, proposed
    assert max(count for _, count in proposed) <= EXPIRY_BATCH and len(proposed) >= 3
    times = [at for at, _ in proposed]
    assert len(set(times)) == len(times), proposed  # one entry a tick at most
    assert len([e for e in cluster.events() if e["event"] == "lease_expired"]) == 3 * 600
