"""Partitions on real processes, through the in-node fault hook (`--test-fault-file`).

The hook drops traffic to and from named peers inside each node while TCP stays up, like a
firewall rule; it works without root or network namespaces.
"""

from __future__ import annotations

from pathlib import Path

from tests import logscan
from tests.integration.conftest import ClusterFactory
from tests.procs import NoReply


def test_isolated_leader_is_replaced_and_never_acknowledges(make_cluster: ClusterFactory) -> None:
    """§5.2 / thesis §6.2: cut off, the old leader steps down and acknowledges nothing;
    the majority elects a higher-term leader; after healing, the old leader follows it and
    serves the majority's writes (no stale read)."""
    cluster = make_cluster(3)
    cluster.start_all()
    old = cluster.wait_leader()
    old_term = cluster.status(old)["term"]
    cluster.request_until_ok(old, "put", key="k", value="before")

    cluster.partition({old})
    others = [n for n in cluster.ids if n != old]
    new = cluster.wait_leader(among=others, min_term=old_term, timeout=15)
    cluster.request_until_ok(new, "put", key="k", value="during")

    def stepped_down() -> bool:
        return cluster.status(old)["role"] != "leader"

    logscan.wait_for(stepped_down, timeout=10, describe=cluster.describe)
    try:
        reply = cluster.request(old, "put", timeout=8, key="k", value="minority")
        assert not reply["ok"], f"the isolated ex-leader acknowledged a write: {reply}"
    except NoReply:
        pass  # no answer is not an acknowledgement either

    cluster.heal()

    def follows_new_leader() -> bool:
        return cluster.status(old)["leader"] == new

    logscan.wait_for(follows_new_leader, timeout=15, describe=cluster.describe)
    reply = cluster.request_until_ok(old, "get", key="k")
    assert reply["value"] == b"during"
    cluster.assert_safety()


def test_fault_file_ignores_garbage_and_unknown_peers(
    make_cluster: ClusterFactory, tmp_path: Path
) -> None:
    """A malformed control file or an unknown peer id is reported, never fatal."""
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    cluster.fault_path(leader).write_text("{not json")
    follower = next(n for n in cluster.ids if n != leader)
    cluster.fault_path(follower).write_text('{"block": ["nobody"]}')

    def reported() -> bool:
        bad = logscan.select(cluster.events(), "bad_frame", source="test")
        return {e["node"] for e in bad} >= {leader, follower}

    logscan.wait_for(reported, timeout=10, describe=cluster.describe)
    cluster.request_until_ok(leader, "put", key="k", value="v")
    assert all(cluster.is_running(n) for n in cluster.ids)
    assert len(cluster.leader_elected()) == 1
