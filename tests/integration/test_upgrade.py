"""A data directory of the previous release starts under this one, with all its data
(issue 13: "Upgrades").

`tests/fixtures/release1/` holds the data directories a three-node cluster of the release
before the data model left behind (`tests/fixtures/make_release1.py` says how they were
made): snapshots in the first file format, sessions in the first shape, and WAL entries
after the newest snapshot. Today's nodes must restore them, serve every key, convert the
store to the new model (one model entry: every key at revision 2) and answer an old
session's retry with its first answer instead of applying it again.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from tests.procs import ClusterFactory
from zraft.testing.cluster import wait_for

FIXTURE = Path(__file__).resolve().parent.parent / "fixtures" / "release1"


def test_a_previous_release_data_directory_starts_and_upgrades(
    make_cluster: ClusterFactory,
) -> None:
    expected = json.loads((FIXTURE / "expected.json").read_text())
    cluster = make_cluster(3, security="none")
    # The log and snapshots remember where the members were: run them there again.
    text = cluster.config_path.read_text()
    for node_id, where in expected["endpoints"].items():
        text = text.replace(cluster.peer_endpoints[node_id], where["peer"])
        text = text.replace(cluster.client_endpoints[node_id], where["client"])
        cluster.peer_endpoints[node_id] = where["peer"]
        cluster.client_endpoints[node_id] = where["client"]
    cluster.config_path.write_text(text)
    for node_id in cluster.ids:
        target = cluster.directory / "data" / node_id
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(FIXTURE / node_id, target)
    cluster.start_all()
    leader = cluster.wait_leader()

    def upgraded() -> dict[str, object] | None:
        reply = cluster.request(leader, "range", key="\0", range_end="\0")
        return reply if reply["ok"] else None

    listed = wait_for(upgraded, timeout=10, what="the store converted to the new model")
    kvs = {kv["key"].decode(): kv for kv in listed["kvs"]}  # type: ignore[attr-defined]
    assert {k: kv["value"] for k, kv in kvs.items() if k != "bin"} == {
        k: v.encode() for k, v in expected["keys"].items()
    }
    assert kvs["bin"]["value"] == b"\x00\xff\x80"
    assert {(kv["create_revision"], kv["mod_revision"], kv["version"]) for kv in kvs.values()} == {
        (2, 2, 1)
    }
    assert listed["header"]["revision"] == 2  # type: ignore[index]

    retry = cluster.request(leader, "put", key="session", value="again", client="fixture", seq=5)
    assert retry["ok"] and retry["index"] == expected["session_index"], retry
    put = cluster.request(leader, "put", key="new", value="model")
    assert put["header"]["revision"] == 3, put
    for node_id in cluster.ids:  # every replica converted the same way
        reply = cluster.request(node_id, "range", key="\0", range_end="\0", serializable=True)
        wait_for(
            lambda node_id=node_id: (
                cluster.request(node_id, "range", key="\0", range_end="\0", serializable=True)[
                    "header"
                ]["revision"]
                == 3
            ),
            timeout=5,
            what=f"{node_id} applied the new write",
        )
        reply = cluster.request(node_id, "range", key="\0", range_end="\0", serializable=True)
        assert reply["count"] == len(expected["keys"]) + 2, reply
        assert (
            cluster.request(node_id, "get", key="session", consistency="serializable")["value"]
            == b"once"
        )

    # A restart replays the converted store from its own log (or a new snapshot).
    follower = next(i for i in cluster.ids if i != leader)
    cluster.kill(follower)
    cluster.start(follower)
    again = wait_for(
        lambda: cluster.request(follower, "range", key="new", serializable=True).get("kvs"),
        timeout=10,
        what="the restarted follower serving the new key",
    )
    assert again[0]["mod_revision"] == 3
