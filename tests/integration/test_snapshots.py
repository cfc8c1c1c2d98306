"""Snapshots and log compaction on real node processes (issue 5).

- Many writes trigger several snapshots; the data directory stays bounded (about the live
  data times the snapshots kept, plus a bounded log tail), where without compaction it
  would grow with every write.
- A follower whose data directory is wiped comes back through InstallSnapshot (the
  leader's log no longer reaches back to index 1) and serves the same data.
- kill -9 while a snapshot is being written: on restart nothing acknowledged is lost and
  the unfinished file is thrown away.
- A damaged newest snapshot is refused at start with its reason; the node rebuilds from
  the older one and the log.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from tests import logscan
from tests.procs import ROOT, ClusterFactory, ProcessCluster
from zraft import wire

VALUE = b"v" * 256
SMALL_SNAPSHOTS = {
    "snapshot_entries": 300,
    "snapshot_trailing": 50,
    "wal_segment_bytes": 32 << 10,
    "auto_compaction_retention": 300,  # snapshots carry the history not yet compacted
}


def put_many(
    cluster: ProcessCluster,
    node_id: str,
    keys: list[bytes],
    *,
    value: bytes = VALUE,
    window: int = 64,
    timeout: float = 30.0,
) -> None:
    """Put every key (pipelined, `window` in flight) and require every put to succeed."""
    context: zmq.Context[Any] = zmq.Context()
    sock = context.socket(zmq.DEALER)
    sock.setsockopt(zmq.LINGER, 0)
    if cluster.curve is not None:
        cluster.curve.apply(sock, cluster.client_endpoints[node_id])
    sock.connect(cluster.client_endpoints[node_id])
    deadline = time.monotonic() + timeout
    try:
        sent = acked = 0
        while acked < len(keys):
            while sent < len(keys) and sent - acked < window:
                sock.send_multipart([b"", wire.encode_request("put", key=keys[sent], value=value)])
                sent += 1
            remaining_ms = int((deadline - time.monotonic()) * 1000)
            assert remaining_ms > 0 and sock.poll(remaining_ms), (
                f"only {acked}/{len(keys)} puts answered\n{cluster.describe()}"
            )
            reply = wire.decode_reply(sock.recv_multipart()[-1])
            assert reply["ok"], reply
            acked += 1
    finally:
        sock.close(linger=0)
        context.destroy(linger=0)


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def keys(count: int, distinct: int) -> list[bytes]:
    return [b"key-%05d" % (i % distinct) for i in range(count)]


def test_many_writes_take_snapshots_and_keep_the_data_dir_bounded(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, **SMALL_SNAPSHOTS)
    cluster.start_all()
    leader = cluster.wait_leader()
    distinct = 100
    live_bytes = distinct * (len(VALUE) + 9)
    written = 0
    sizes = []
    for _ in range(4):
        put_many(cluster, leader, keys(1200, distinct))
        written += 1200
        logscan.wait_for(
            lambda: all(
                cluster.status(n)["applied_index"] >= cluster.status(leader)["commit_index"]
                for n in cluster.ids
            ),
            timeout=10,
            describe=cluster.describe,
        )
        sizes.append(max(dir_bytes(cluster.directory / "data" / n) for n in cluster.ids))
    for node_id in cluster.ids:
        saved = [e for e in cluster.node_events(node_id) if e["event"] == "snapshot_saved"]
        assert len(saved) >= written // 300 - 2, f"{node_id}: only {len(saved)} snapshots"
        compacted = [e for e in cluster.node_events(node_id) if e["event"] == "log_compacted"]
        assert compacted, f"{node_id} never compacted its log"
        status = cluster.status(node_id)
        assert status["snapshot_index"] > written - 2 * 300
        assert status["first_index"] > 1
    # The bound: two snapshots of the live data and of the history automatic compaction
    # keeps (300 revisions, compacted in steps of 30, one step late at most), the log
    # since the older one (at most two snapshot intervals of ~300-byte entries), one spare
    # WAL segment, and slack for the segment being written. Without compaction 4800
    # writes would take > 1.4 MB.
    entry_bytes = len(VALUE) + 64
    history = 2 * (300 + 2 * 30) * entry_bytes
    bound = 2 * live_bytes + history + 3 * 300 * entry_bytes + 2 * (32 << 10) + (64 << 10)
    assert sizes[-1] <= bound, f"data dir grew to {sizes[-1]} bytes (bound {bound}): {sizes}"
    assert sizes[-1] < written * entry_bytes // 2, sizes
    # And every key still reads back.
    for i in range(distinct):
        reply = cluster.request_until_ok(leader, "get", key=b"key-%05d" % i)
        assert reply["value"] == VALUE


def test_a_wiped_follower_catches_up_through_install_snapshot(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, **SMALL_SNAPSHOTS)
    cluster.start_all()
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.ids if n != leader)
    put_many(cluster, leader, keys(1000, 400))
    cluster.kill(follower)
    data_dir = cluster.directory / "data" / follower
    for path in sorted(data_dir.rglob("*"), reverse=True):
        if path.is_file():
            path.unlink()
        else:
            path.rmdir()
    put_many(cluster, leader, [b"after-%03d" % i for i in range(700)], value=b"w" * 100)
    assert cluster.status(leader)["first_index"] > 1, "the leader must have compacted"
    cluster.start(follower)
    logscan.wait_for(
        lambda: any(e["event"] == "snapshot_installed" for e in cluster.node_events(follower)),
        timeout=20,
        describe=cluster.describe,
    )
    logscan.wait_for(
        lambda: cluster.status(follower)["applied_index"] >= cluster.status(leader)["commit_index"],
        timeout=20,
        describe=cluster.describe,
    )
    sent = [e for e in cluster.node_events(leader) if e["event"] == "snapshot_sent"]
    assert sent and sent[-1]["delivered"] and sent[-1]["peer"] == follower
    # The leader kept its heartbeats going while it streamed the snapshot: no election,
    # no term change anywhere (a follower's kill and restart must not cost leadership).
    assert len(cluster.leader_elected()) == 1, cluster.describe()
    terms = {e["new_term"] for e in logscan.select(cluster.events(), "term_changed")}
    assert terms == {cluster.status(leader)["term"]}, cluster.describe()
    expected = {b"key-%05d" % i: VALUE for i in range(400)}
    expected |= {b"after-%03d" % i: b"w" * 100 for i in range(700)}
    wrong = [
        key
        for key, value in expected.items()
        if cluster.request(follower, "get", key=key, consistency="serializable").get("value")
        != value
    ]
    assert not wrong, f"{len(wrong)} keys differ on the installed follower, e.g. {wrong[:3]}"
    # It keeps replicating normally afterwards.
    assert cluster.request_until_ok(leader, "put", key="later", value="x")["ok"]
    logscan.wait_for(
        lambda: (
            cluster.request(follower, "get", key="later", consistency="serializable").get("value")
            == b"x"
        ),
        timeout=10,
        describe=cluster.describe,
    )


def test_kill_during_a_snapshot_write_loses_nothing_acknowledged(
    make_cluster: ClusterFactory,
) -> None:
    """kill -9 a follower while its snapshot's temp file exists, then kill the whole
    cluster and bring back only that follower and the third node (the old leader stays
    dead): every acknowledged write must be served, so whatever only the old leader and
    the victim held must have survived in the victim's own files."""
    cluster = make_cluster(3, snapshot_entries=4000, wal_segment_bytes=1 << 20)
    cluster.start_all()
    leader = cluster.wait_leader()
    victim, third = (n for n in cluster.ids if n != leader)
    snap_dir = cluster.directory / "data" / victim / "snapshots"
    big = b"b" * 1024
    acked: dict[bytes, bytes] = {}
    unfinished: list[str] = []
    for attempt in range(3):
        # ~4000 distinct keys of 1 KiB: each snapshot (every 4000 entries) is ~4 MB,
        # written over several ticks; a busy machine may let one finish unseen, so a
        # round that missed its temp file writes another 4000 entries and tries again.
        batch = [b"big-%d-%05d" % (attempt, i) for i in range(4000)]
        saved = logscan.count(cluster.node_events(victim), "snapshot_saved")
        put_many(cluster, leader, batch, value=big)
        acked.update(dict.fromkeys(batch, big))
        logscan.wait_for(
            lambda s=saved: (
                bool(list(snap_dir.glob("*.tmp")))
                or logscan.count(cluster.node_events(victim), "snapshot_saved") > s
            ),
            timeout=20,
            interval=0.001,
            describe=cluster.describe,
        )
        cluster.kill(victim)
        unfinished = [str(p) for p in snap_dir.glob("*.tmp")]
        if unfinished:
            break
        cluster.start(victim)
        cluster.wait_leader()
    assert unfinished, "no kill landed in the middle of a snapshot write in 3 rounds"
    cluster.kill(leader)
    cluster.kill(third)
    cluster.start(victim)
    cluster.start(third)
    new_leader = cluster.wait_leader()
    assert new_leader in (victim, third)
    # (It may start a new snapshot at once; the old temp file must be gone and reported.)
    refused = [e for e in cluster.node_events(victim) if e["event"] == "snapshot_refused"]
    assert {e["path"] for e in refused if e["reason"] == "unfinished"} == set(unfinished)
    missing = [
        key
        for key, value in acked.items()
        if cluster.request_until_ok(new_leader, "get", key=key).get("value") != value
    ]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:3]}"


def test_a_damaged_newest_snapshot_is_refused_and_an_older_one_used(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3, **SMALL_SNAPSHOTS)
    cluster.start_all()
    leader = cluster.wait_leader()
    victim = next(n for n in cluster.ids if n != leader)
    put_many(cluster, leader, keys(1000, 150))
    snap_dir = cluster.directory / "data" / victim / "snapshots"
    logscan.wait_for(
        lambda: len(list(snap_dir.glob("*.snap"))) >= 2, timeout=10, describe=cluster.describe
    )
    cluster.kill(victim)
    newest = sorted(snap_dir.glob("*.snap"))[-1]
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    cluster.start(victim)
    refused = [e for e in cluster.node_events(victim) if e["event"] == "snapshot_refused"]
    assert refused and refused[-1]["path"] == str(newest), refused
    loaded = [e for e in cluster.node_events(victim) if e["event"] == "snapshot_loaded"]
    assert loaded and loaded[-1]["index"] < int(newest.name.split("-")[1], 16)
    reply = cluster.request(victim, "get", key=b"key-00149", consistency="serializable")
    assert reply["value"] == VALUE


def test_operator_snapshot_command_and_status_columns(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    put_many(cluster, leader, keys(50, 50))
    node_id = cluster.ids[0]
    logscan.wait_for(
        lambda: cluster.status(node_id)["applied_index"] >= 50,
        timeout=10,
        describe=cluster.describe,
    )
    reply = cluster.request(node_id, "snapshot", timeout=10)
    assert reply["ok"] and reply["snapshot"]["index"] >= 50 and reply["snapshot"]["size_bytes"]
    status = cluster.status(node_id)
    assert status["snapshot_index"] == reply["snapshot"]["index"]
    assert status["log_bytes"] > 0
    again = cluster.request(node_id, "snapshot", timeout=10)
    assert again["snapshot"]["index"] >= reply["snapshot"]["index"]

    # The same through zraft-client: `snapshot NODE` goes to that node, `status` shows it.
    put_many(cluster, leader, [b"cli-%02d" % i for i in range(10)])
    target = cluster.ids[1]
    logscan.wait_for(
        lambda: cluster.status(target)["applied_index"] >= cluster.status(leader)["commit_index"],
        timeout=10,
        describe=cluster.describe,
    )
    taken = run_client(cluster, "snapshot", target)
    assert taken.returncode == 0 and taken.stdout.startswith("snapshot at index "), taken
    index = int(taken.stdout.split()[3])
    assert cluster.status(target)["snapshot_index"] == index
    rows = {
        line.split()[0]: line.split() for line in run_client(cluster, "status").stdout.splitlines()
    }
    assert rows["node"][8:10] == ["snapshot", "log"]
    assert rows[target][8] == str(index) and rows[target][9][-1] in "BKMG"


def run_client(cluster: ProcessCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`bin/zraft-client --config CLUSTER ARGS`, bounded by a timeout."""
    command = [sys.executable, str(ROOT / "bin" / "zraft-client"), "--config"]
    command += [str(cluster.config_path), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
