"""The space quota under load on real processes (issue 13): writers fill the store past a
small `quota_bytes`; the `nospace` alarm rises on every member, writes are answered
`no_space`, reads and deletes keep working, compaction plus `alarm_disarm` restore
writes, no node's memory grows past a bound, and nothing acknowledged is lost."""

from __future__ import annotations

import threading
from pathlib import Path

from tests.procs import ClusterFactory
from zraft.client import Client
from zraft.testing.cluster import wait_for

QUOTA = 256 << 10
VALUE = b"v" * 1024
WRITERS = 3
RSS_BOUND_BYTES = 200 << 20  # a node idles at ~40-60 MiB; the store is 256 KiB


def rss_bytes(pid: int) -> int:
    """The resident set size of process `pid`."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for pid {pid}")


def test_a_full_store_raises_the_alarm_everywhere_and_recovers(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, quota_bytes=QUOTA)
    cluster.start_all()
    leader = cluster.wait_leader()
    acknowledged: dict[int, list[str]] = {}
    refusals: dict[int, str] = {}

    def writer(number: int) -> None:
        done = acknowledged.setdefault(number, [])
        with Client.from_config(cluster.config_path, timeout=10) as client:
            for count in range(2 * QUOTA // len(VALUE)):
                key = f"fill/{number}/{count:05d}"
                reply = client.put(key, VALUE)
                if not reply.ok:
                    refusals[number] = reply.error_code or "?"
                    return
                done.append(key)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(WRITERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(t.is_alive() for t in threads)
    assert refusals == {n: "no_space" for n in range(WRITERS)}, refusals
    written = sorted(key for keys in acknowledged.values() for key in keys)
    assert len(written) * len(VALUE) < QUOTA

    def alarmed() -> bool:
        return all(cluster.status(i).get("alarms") == ["nospace"] for i in cluster.ids)

    wait_for(alarmed, timeout=10, what="the nospace alarm on every member")
    for node_id in cluster.ids:
        assert rss_bytes(cluster.pid(node_id)) < RSS_BOUND_BYTES, node_id
        refused = cluster.request(node_id, "put", key="one-more", value="x")
        assert refused["error"]["code"] == "no_space", refused
        listed = cluster.request(node_id, "range", key="fill/", prefix=True, keys_only=True)
        assert [kv["key"].decode() for kv in listed["kvs"]] == written  # nothing lost

    deleted = cluster.request(leader, "delete_range", key="fill/", prefix=True)
    assert deleted["deleted"] == len(written), deleted
    revision = deleted["header"]["revision"]
    assert cluster.request(leader, "compact", revision=revision)["ok"]
    assert cluster.request(leader, "alarm_disarm")["alarms"] == []
    wait_for(
        lambda: all(cluster.status(i).get("alarms") == [] for i in cluster.ids),
        timeout=10,
        what="the alarm lowered on every member",
    )
    assert cluster.request(leader, "put", key="after", value="space")["ok"]
