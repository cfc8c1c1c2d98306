"""Backup and restore on real clusters: a backup taken while clients write, every data
directory destroyed, the backup restored onto a new cluster that then serves exactly the
writes acknowledged up to the backup's revision; damaged backups refused; and a node of
the old cluster refused by the restored one, even with the same keys and node ids."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from zraft.client import Client
from zraft.node.backup import describe_backup
from zraft.testing.cluster import ProcessCluster, free_ports, wait_for

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def zraft(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run `bin/zraft-client` or `bin/zraft-node` with `args`."""
    command = [sys.executable, str(ROOT / "bin" / tool), *args]
    return subprocess.run(command, capture_output=True, text=True, timeout=120)


def with_ports(text: str, ports: dict[int, int]) -> str:
    """`text` with each 127.0.0.1 port replaced as `ports` says, in one pass (a port given
    out anew may be one that another replacement would then change again)."""
    return re.sub(r"127\.0\.0\.1:(\d+)", lambda m: f"127.0.0.1:{ports.get(int(m[1]), m[1])}", text)


def test_backup_under_load_then_restore_onto_a_new_cluster(tmp_path: Path) -> None:
    old = ProcessCluster(tmp_path / "old", 3)
    acked: dict[str, int] = {}  # key -> the revision its put was acknowledged at
    stop = threading.Event()

    def write() -> None:
        with Client(list(old.client_endpoints.values()), curve=old.curve) as client:
            n = 0
            while not stop.is_set():
                reply = client.put(f"w/{n:06d}", str(n))
                if reply.ok:
                    acked[f"w/{n:06d}"] = reply.header.revision
                n += 1

    backup = tmp_path / "cluster.zbk"
    writer = threading.Thread(target=write)
    try:
        old.start_all()
        old.wait_leader()
        writer.start()
        wait_for(lambda: len(acked) >= 300, 30, what="300 writes acknowledged")
        made = zraft("zraft-client", "--config", str(old.config_path), "backup", str(backup))
        assert made.returncode == 0, made.stderr
        at_backup = len(acked)
        wait_for(lambda: len(acked) >= at_backup + 200, 30, what="writes after the backup")
    finally:
        stop.set()
        writer.join(30)
        old.close()
    info = describe_backup(backup)
    assert not backup.with_name(backup.name + ".partial").exists()
    for node in old.config.nodes:  # the disaster: every data directory is gone
        shutil.rmtree(node.data_dir)

    new = ProcessCluster(tmp_path / "new", 3)  # other hosts: new ports, new keys
    try:
        restored = zraft(
            "zraft-node", "restore", "--from", str(backup), "--config", str(new.config_path)
        )
        assert restored.returncode == 0, restored.stderr
        assert f"index {info['index']}" in restored.stdout
        new.start_all()
        new.wait_leader()
        with Client(list(new.client_endpoints.values()), curve=new.curve) as client:
            held = {kv.key.decode() for kv in client.get_prefix("w/").kvs}
            before = {key for key, revision in acked.items() if revision <= info["revision"]}
            after = {key for key, revision in acked.items() if revision > info["revision"]}
            assert before and after, "the backup must fall between acknowledged writes"
            assert before <= held, f"lost: {sorted(before - held)[:5]}"
            assert not after & held, f"from after the backup: {sorted(after & held)[:5]}"
            assert client.get("w/000000").value == b"0"
            assert client.put("after-restore", "yes").ok
            assert client.get("after-restore").value == b"yes"
    finally:
        new.close()


def test_damaged_or_truncated_backups_are_refused_and_nothing_is_written(tmp_path: Path) -> None:
    cluster = ProcessCluster(tmp_path / "c", 3)
    backup = tmp_path / "good.zbk"
    try:
        cluster.start_all()
        cluster.wait_leader()
        with Client(list(cluster.client_endpoints.values()), curve=cluster.curve) as client:
            for n in range(50):
                assert client.put(f"k{n}", "v" * 200).ok
        made = zraft("zraft-client", "--config", str(cluster.config_path), "backup", str(backup))
        assert made.returncode == 0, made.stderr
        again = zraft("zraft-client", "--config", str(cluster.config_path), "backup", str(backup))
        assert again.returncode == 2 and "exists already" in again.stderr
        as_json = zraft(
            "zraft-client",
            "--config",
            str(cluster.config_path),
            "backup",
            str(backup) + "2",
            "-w",
            "json",
        )
        shape = json.loads(as_json.stdout)
        assert shape["ok"] and shape["keys"] == 50 and len(shape["sha256"]) == 64, as_json.stdout
    finally:
        cluster.close()
    data = backup.read_bytes()
    damaged = {
        "truncated.zbk": (data[: len(data) // 2], "truncated or damaged"),
        "flipped.zbk": (data[:4000] + bytes([data[4000] ^ 1]) + data[4001:], "checksum mismatch"),
        "version.zbk": (data[:8] + b"\x07\x00" + data[10:], "unsupported backup version 7"),
        "empty.zbk": (b"", "truncated: 0 bytes"),
    }
    target = ProcessCluster(tmp_path / "t", 3)
    try:
        for name, (content, reason) in damaged.items():
            path = tmp_path / name
            path.write_bytes(content)
            status = zraft("zraft-client", "backup-status", str(path))
            assert status.returncode == 1 and reason in status.stderr, (name, status.stderr)
            assert str(path) in status.stderr
            refused = zraft(
                "zraft-node", "restore", "--from", str(path), "--config", str(target.config_path)
            )
            assert refused.returncode == 1 and reason in refused.stderr, (name, refused.stderr)
            assert not any(node.data_dir.exists() for node in target.config.nodes), name
        shown = zraft("zraft-client", "backup-status", str(backup))
        assert shown.returncode == 0, shown.stderr
        assert re.search(r"^keys: +50$", shown.stdout, re.MULTILINE), shown.stdout
    finally:
        target.close()


def test_a_node_of_the_old_cluster_is_refused_by_the_restored_one(tmp_path: Path) -> None:
    """Restored in place: the same node ids and keys, new hosts (ports). The old n3 comes
    back and dials n1 and n2 at their new addresses with its old data directory: their
    links admit its key, but it names the old cluster's identity, so every frame it
    sends is refused (`bad_frame`, `other_cluster`) and the new cluster never hears it."""
    old = ProcessCluster(tmp_path / "old", 3)
    backup = tmp_path / "b.zbk"
    try:
        old.start_all()
        old.wait_leader()
        # From n1: n3's own data dir then holds no snapshot, whose member directory
        # (the old addresses) would win over its config's.
        made = zraft("zraft-client", "--config", str(old.config_path), "backup", str(backup), "n1")
        assert made.returncode == 0, made.stderr
    finally:
        old.close()
    old_text = old.config_path.read_text()
    ports = [int(p) for p in re.findall(r"127\.0\.0\.1:(\d+)", old_text)]
    fresh_ports = free_ports(len(ports) + 2)  # the new hosts, and the old n3's own two
    moved = dict(zip(ports, fresh_ports, strict=False))
    new_text = old_text.replace(str(tmp_path / "old" / "data"), str(tmp_path / "new" / "data"))
    new_text = new_text.replace(str(tmp_path / "old" / "logs"), str(tmp_path / "new" / "logs"))
    new = ProcessCluster(tmp_path / "new", 3, config_text=with_ports(new_text, moved))
    # The old n3's view: n1 and n2 moved to the new hosts; its data dir is the old one,
    # and its own ports are ones nobody else was given (the OS may hand out its old ones).
    n3 = old.config.node("n3")
    own = [int(e.rsplit(":", 1)[1]) for e in (n3.peer, n3.client)]
    stale_ports = {p: f for p, f in moved.items() if p not in own}
    stale_ports.update(zip(own, fresh_ports[-2:], strict=True))
    stale_config = tmp_path / "stale.toml"
    stale_config.write_text(with_ports(old_text, stale_ports))
    stale = None
    try:
        restored = zraft(
            "zraft-node", "restore", "--from", str(backup), "--config", str(new.config_path)
        )
        assert restored.returncode == 0, restored.stderr
        new.start_all(["n1", "n2"])
        leader = new.wait_leader(["n1", "n2"])
        term = new.status(leader)["term"]
        stale = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bin" / "zraft-node"),
                "--config",
                str(stale_config),
                "--id",
                "n3",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

        def refused() -> bool:
            events = new.node_events("n1") + new.node_events("n2")
            return any(
                e["event"] == "bad_frame" and e.get("reason") == "other_cluster" for e in events
            )

        wait_for(refused, 20, what="the old n3's frames refused as another cluster's")
        assert new.status(leader)["term"] == term  # its elections reached nobody
        assert new.status(leader)["leader"] == leader
        with Client([new.client_endpoints[leader]], curve=new.curve) as client:
            assert client.put("still", "serving").ok
    finally:
        if stale is not None:
            stale.kill()
            stale.wait(10)
        new.close()
