"""Removing a member retires its id and revokes its key: once the removal is applied, every
remaining member refuses the removed node's handshake and drops its frames, so a process
holding that key can neither vote, nor append, nor read; the id can never be added again
(as etcd's member ids), and a new host joins under a new id with its own key."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.procs import ProcessCluster
from zraft.client import Client
from zraft.net import security
from zraft.testing.cluster import wait_for

pytestmark = pytest.mark.integration


def test_a_removed_member_is_refused_for_good_and_replaced_under_a_new_id(
    tmp_path: Path,
) -> None:
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
            # It serves no reads: it is not a member (it may have heard the leader's last
            # round to departing members, which is how it learns its removal committed).
            assert cluster.request(victim, "get", key="after-removal")["error"]["code"] == (
                "unavailable"
            )
            assert client.put("after-removal", "ok").ok
            # Its id is retired: adding it back is refused, even with its key.
            node = cluster.config.node(victim)
            key = security.public_key_text(node)
            again = client.add_member(victim, node.peer, node.client, public_key=key)
            assert again.error_code == "bad_request", again.raw
            assert "never reused" in (again.error_message or ""), again.raw
            assert client.request("members").retired == [victim]
            # A new host takes its place under a new id, with a new key.
            fields = cluster.add_joiner("n4")
            cluster.start("n4")
            added = client.add_member(
                "n4", fields["peer"], fields["client_endpoint"], public_key=fields["public_key"]
            )
            assert added.ok, added.raw

            def voter() -> bool:
                rows = client.request("members").raw.get("members") or []
                return any(row["id"] == "n4" and row["role"] == "voter" for row in rows)

            wait_for(voter, 20, what="n4 a voter")
            wait_for(
                lambda: cluster.status("n4")["leader"] is not None, 10, what="n4 hears a leader"
            )
            assert client.put("after-replacement", "ok").ok
            assert cluster.status(leader)["term"] == term  # n1 never disturbed an election
    finally:
        cluster.close()
