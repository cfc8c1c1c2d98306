"""Removing a member revokes its key: once the removal is applied, every remaining member
refuses the removed node's handshake and drops its frames, so a process holding that key
can neither vote, nor append, nor read; adding it back (an operator's explicit act,
carrying its key) admits it again."""

from __future__ import annotations

from pathlib import Path

import pytest

from zraft.client import Client
from zraft.net import security
from zraft.testing.cluster import ProcessCluster, wait_for

pytestmark = pytest.mark.integration


def test_a_removed_members_key_is_refused_until_it_is_added_back(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path, 3)
    try:
        cluster.start_all()
        leader = cluster.wait_leader()
        victim = next(n for n in cluster.ids if n != leader)
        others = [n for n in cluster.ids if n != victim]
        endpoints = [cluster.client_endpoints[n] for n in others]
        with Client(endpoints, curve=cluster.curve) as client:
            assert client.remove(victim).ok
            for node in others:
                wait_for(
                    lambda node=node: any(
                        e["event"] == "member_removed" and e["member"] == victim
                        for e in cluster.node_events(node)
                    ),
                    10,
                    what=f"{node} applied the removal",
                )
            term = cluster.status(leader)["term"]
            # The removed host, still holding its key, comes back and dials the members.
            cluster.kill(victim)
            cluster.start(victim)

            def refused_everywhere() -> bool:
                return all(
                    any(
                        e["event"] == "auth_denied" and "removed from the cluster" in e["reason"]
                        for e in cluster.node_events(node)
                    )
                    for node in others
                )

            wait_for(refused_everywhere, 15, what="every member refusing the removed key")
            assert cluster.status(leader)["term"] == term  # it reached no vote
            assert cluster.status(leader)["leader"] == leader
            assert cluster.status(victim)["leader"] is None  # and heard from nobody
            assert client.put("after-removal", "ok").ok
            # Added back by an operator, with its key: admitted again, a voter again.
            node = cluster.config.node(victim)
            key = security.public_key_text(node)
            assert client.add_member(victim, node.peer, node.client, public_key=key).ok

            def voter_again() -> bool:
                rows = client.request("members").raw.get("members") or []
                return any(row["id"] == victim and row["role"] == "voter" for row in rows)

            wait_for(voter_again, 20, what=f"{victim} a voter again")
            wait_for(
                lambda: cluster.status(victim)["leader"] is not None, 10, what="it hears a leader"
            )
            assert client.put("after-readd", "ok").ok
    finally:
        cluster.close()
