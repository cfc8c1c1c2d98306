"""Backups seen from the node's side: what a snapshot holds (its keys and revision, by
restoring it into a state machine), and a new cluster's data directories built from a
backup (`zraft-node restore`).

A restore writes, into each data directory of the new config, the backup's state as a
snapshot at the backup's index and term, with the NEW cluster's membership (every node of
the file a voter) and member directory (its endpoints and keys), and a log that starts
right after it; and a new cluster identity (`zraft.node.identity`), so that nodes of the
old cluster, which know another identity, cannot join the new one by mistake. The nodes
then start as after any snapshot: they elect a leader among themselves and serve the
state as it was at the backup's index, nothing after it.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zraft.config import ClusterConfig
from zraft.core import HardState, Membership, SnapshotMeta
from zraft.net import security
from zraft.node import identity
from zraft.node.members import Endpoints
from zraft.node.snapshots import view_of
from zraft.state.machine import KVMachine
from zraft.storage import FileStorage
from zraft.storage.backup import Backup, BackupError, read_backup
from zraft.storage.snapfile import LoadedSnapshot, parse_snapshot
from zraft.storage.snapstore import SnapshotStore

WRITE_SLICE_BYTES = 4 << 20


def snapshot_contents(path: Path, data: bytes) -> dict[str, Any]:
    """What the snapshot file `data` holds: `{"index", "term", "revision", "keys",
    "model"}`, after verifying it and restoring it into a state machine.

    Raises:
        CorruptSnapshotError: the bytes are not a sound snapshot file.
        ValueError: its state does not restore.
    """
    return _contents(parse_snapshot(path, data))


def _contents(loaded: LoadedSnapshot) -> dict[str, Any]:
    machine = KVMachine()
    machine.restore(view_of(loaded))
    status = machine.status()
    return {
        "index": loaded.meta.index,
        "term": loaded.meta.term,
        "revision": status.get("revision", 0),
        "keys": status["keys"],
        "model": status["model"],
    }


def describe_backup(path: Path) -> dict[str, Any]:
    """A verified backup's trailer, checked against its state restored.

    Raises:
        BackupError: the file is unreadable, truncated, damaged, of another version, or
            its state does not restore.
    """
    backup = read_backup(path)
    try:
        contents = _contents(backup.snapshot)
    except ValueError as exc:
        raise BackupError(path, f"its state does not restore: {exc}") from None
    return {**backup.info, **contents, "file_bytes": path.stat().st_size}


@dataclass(frozen=True, slots=True)
class Restored:
    """What `restore_cluster` built."""

    index: int
    term: int
    cluster_id: str
    data_dirs: tuple[Path, ...]


def restore_cluster(backup_path: Path, cluster: ClusterConfig) -> Restored:
    """Build the data directories of `cluster`'s nodes from a backup (see the module doc).

    Raises:
        BackupError: the backup is unusable (nothing is written).
        ValueError: a node's data directory exists and is not empty (nothing is written).
        SecurityError: a node's public key cannot be read (CURVE on).
        StorageError: writing failed (the data directories written so far are left for
            the operator to remove: the message names them).
    """
    backup = read_backup(backup_path)
    try:
        _contents(backup.snapshot)
    except ValueError as exc:
        raise BackupError(backup_path, f"its state does not restore: {exc}") from None
    for node in cluster.nodes:
        if node.data_dir.exists() and any(node.data_dir.iterdir()):
            raise ValueError(
                f"{node.data_dir} (node {node.id}) is not empty: a restore builds new data "
                "directories; move the old one away first"
            )
    meta, header = _new_cluster_snapshot(backup, cluster)
    cluster_id = secrets.token_hex(8)
    written = []
    for node in cluster.nodes:
        _write_data_dir(node.data_dir, meta, header, backup.snapshot.pairs)
        identity.write(node.data_dir, cluster_id)
        written.append(node.data_dir)
    return Restored(meta.index, meta.term, cluster_id, tuple(written))


def _new_cluster_snapshot(
    backup: Backup, cluster: ClusterConfig
) -> tuple[SnapshotMeta, dict[Any, Any]]:
    """The backup's snapshot with the new cluster's membership and member directory."""
    old = backup.snapshot.meta
    meta = SnapshotMeta(old.index, old.term, Membership(voters=frozenset(cluster.node_ids)))
    secured = cluster.security == "curve"
    directory = Endpoints(
        (n.id, n.peer, n.client, security.public_key_text(n) if secured else "")
        for n in cluster.nodes
    )
    header = dict(backup.snapshot.header)
    header["endpoints"] = {i: list(e) for i, e in directory.as_dict().items()}
    header["retired"] = []  # a new cluster: the old one's retired ids mean nothing here
    return meta, header


def _write_data_dir(
    data_dir: Path, meta: SnapshotMeta, header: dict[Any, Any], pairs: dict[bytes, bytes]
) -> None:
    """One node's data directory: the snapshot file, then a log reset to it."""
    data_dir.mkdir(parents=True, exist_ok=True)
    storage = FileStorage(data_dir)
    try:
        store = SnapshotStore(data_dir / "snapshots")
        writer = store.begin(meta, header, pairs.items(), len(pairs))
        while not writer.step(WRITE_SLICE_BYTES):
            pass
        writer.finish()
        # As a follower installing a leader's snapshot: the file first, then the reset.
        storage.save(HardState(term=meta.term), (), snapshot=meta)
    finally:
        storage.close()
