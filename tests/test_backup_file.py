"""Backup files (`zraft.storage.backup`) and cluster identities (`zraft.node.identity`):
what is written is what is read back, and every kind of damage is refused by name."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from zraft.core import Entry, EntryKind, Membership, SnapshotMeta
from zraft.node import identity
from zraft.node.backup import describe_backup, snapshot_contents
from zraft.node.snapshots import READ_CHUNK_BYTES, read_chunk
from zraft.state.machine import KVMachine
from zraft.storage import StorageError
from zraft.storage.backup import BackupError, BackupWriter, read_backup
from zraft.storage.snapstore import SnapshotStore
from zraft.wire.client import Request


def snapshot_file(tmp_path: Path, keys: int = 20) -> bytes:
    """The bytes of a real snapshot file of a store holding `keys` keys."""
    machine = KVMachine(model="mvcc")
    for n in range(keys):
        data = machine.command(Request.of("put", key=f"k{n}".encode(), value=b"v" * n))
        machine.apply(Entry(1, machine.applied_index + 1, EntryKind.NORMAL, data))
    view = machine.snapshot_view()
    meta = SnapshotMeta(view.applied_index, 1, Membership(voters=frozenset({"n1"})))
    header = {**view.header, "applied_index": view.applied_index, "sessions": view.sessions}
    writer = SnapshotStore(tmp_path / "snaps").begin(
        meta, header, view.data.items(), len(view.data)
    )
    while not writer.step(1 << 20):
        pass
    return writer.finish().path.read_bytes()


def write_backup(path: Path, snapshot: bytes, chunk: int = 100) -> None:
    writer = BackupWriter(path)
    for offset in range(0, len(snapshot), chunk):
        writer.write(snapshot[offset : offset + chunk])
    contents = snapshot_contents(path, writer.read_back())
    info = {"cluster": "t", "node": "n1", "created": time.time()}
    writer.finish({**info, **{k: contents[k] for k in ("index", "term", "revision", "keys")}})


def test_a_backup_reads_back_what_was_written(tmp_path: Path) -> None:
    snapshot = snapshot_file(tmp_path)
    path = tmp_path / "b.zbk"
    write_backup(path, snapshot)
    assert not path.with_name("b.zbk.partial").exists()
    backup = read_backup(path)
    assert backup.info["keys"] == 20 and backup.info["revision"] == 21
    assert backup.snapshot.pairs and backup.info["snapshot_bytes"] == len(snapshot)
    described = describe_backup(path)
    assert described["keys"] == 20 and described["model"] == "mvcc"
    with pytest.raises(BackupError, match="exists already"):
        BackupWriter(path)


def test_an_aborted_or_restarted_backup_leaves_nothing_that_looks_complete(tmp_path: Path) -> None:
    path = tmp_path / "b.zbk"
    writer = BackupWriter(path)
    writer.write(b"half of something")
    writer.abort()
    assert not path.exists() and not writer.partial.exists()
    snapshot = snapshot_file(tmp_path)
    writer = BackupWriter(path)
    writer.write(b"a snapshot that went away")
    writer.restart()
    writer.write(snapshot)
    assert writer.read_back() == snapshot
    writer.finish(
        {"cluster": "", "node": "n1", "index": 1, "term": 1, "revision": 1, "keys": 0, "created": 0}
    )
    assert read_backup(path).info["snapshot_bytes"] == len(snapshot)


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda d: d[: len(d) - 1], "truncated or damaged"),
        (lambda d: d[:30], "truncated or damaged"),
        (lambda d: b"", "truncated: 0 bytes"),
        (lambda d: b"NOTABACKUP" + d[10:], "not a zraft backup"),
        (lambda d: d[:8] + b"\x02\x00" + d[10:], "unsupported backup version 2"),
        (lambda d: d[:200] + bytes([d[200] ^ 0x40]) + d[201:], "checksum mismatch"),
        (lambda d: d[:10] + d[11:], "truncated or damaged|damaged"),
    ],
    ids=["one-byte-short", "head-only", "empty", "magic", "version", "flipped", "a-byte-gone"],
)
def test_damage_is_refused_by_name(tmp_path: Path, damage, reason: str) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "b.zbk"
    write_backup(path, snapshot_file(tmp_path))
    damaged = tmp_path / "d.zbk"
    damaged.write_bytes(damage(path.read_bytes()))
    with pytest.raises(BackupError, match=reason) as refused:
        read_backup(damaged)
    assert str(damaged) in str(refused.value)


def test_cluster_identity_is_derived_kept_and_learned(tmp_path: Path) -> None:
    assert identity.derived("local") == identity.derived("local") != identity.derived("other")
    assert identity.establish(tmp_path / "a", "local", joining=False) == identity.derived("local")
    assert identity.read(tmp_path / "a") == identity.derived("local")
    identity.write(tmp_path / "b", "0123456789abcdef")
    assert identity.establish(tmp_path / "b", "local", joining=False) == "0123456789abcdef"
    assert identity.establish(tmp_path / "c", "local", joining=True) == ""
    assert identity.read(tmp_path / "c") is None  # a joiner learns it from a member
    (tmp_path / "b" / "cluster_id").write_text("not hex\n")
    with pytest.raises(StorageError, match="expected 16 hex digits"):
        identity.establish(tmp_path / "b", "local", joining=False)
    with pytest.raises(ValueError, match="16 hex digits"):
        identity.write(tmp_path / "d", "short")


def test_snapshot_read_serves_chunks_and_says_when_a_snapshot_is_gone(tmp_path: Path) -> None:
    empty = read_chunk(SnapshotStore(tmp_path / "none"), 0, 0)
    assert empty["error"] == "conflict" and "no snapshot yet" in empty["message"]
    content = snapshot_file(tmp_path)
    store = SnapshotStore(tmp_path / "snaps")
    (index,) = [f.index for f in store.list()]
    newest = read_chunk(store, 0, 0)
    assert newest["ok"] and newest["extra"]["data"] == content[:READ_CHUNK_BYTES]
    described = newest["extra"]["snapshot"]
    assert described == {"index": index, "term": 1, "size_bytes": len(content), "offset": 0}
    tail = read_chunk(store, index, len(content) - 5)
    assert tail["extra"]["data"] == content[-5:]
    assert read_chunk(store, index, 10**12)["extra"]["data"] == b""
    gone = read_chunk(store, index + 1, 0)
    assert gone["error"] == "conflict" and "start again" in gone["message"]
