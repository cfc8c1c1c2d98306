"""Durable storage for one Raft node: the write-ahead log, the hard state, snapshots.

`FileStorage` is the real store (a segmented, CRC-framed WAL; its module docstring gives
the crash-safety argument, `wal.py` the on-disk format). `MemoryStorage` is its twin for
tests. Both satisfy `LogStorage`, which is what the node types against. Every I/O failure
raises `StorageError` and fails the store for good; the node then stops (fail-stop).

Snapshots live in their own directory: `SnapshotStore` (`snapstore.py`) writes them
incrementally, receives them from a leader, verifies, lists, loads and prunes them; the
file format is in `snapfile.py`. Damaged snapshot bytes raise `CorruptSnapshotError`.
"""

from zraft.storage.base import (
    CorruptLogError,
    CorruptSnapshotError,
    DataDirLockedError,
    LogGapError,
    LogStorage,
    StorageError,
    TailRepair,
)
from zraft.storage.file import DEFAULT_SEGMENT_BYTES, FileStorage
from zraft.storage.memory import MemoryStorage
from zraft.storage.snapfile import (
    LoadedSnapshot,
    SnapshotInfo,
    SnapshotWriter,
    load_snapshot,
    read_meta,
)
from zraft.storage.snapstore import SnapshotFile, SnapshotReceiver, SnapshotStore

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "CorruptLogError",
    "CorruptSnapshotError",
    "DataDirLockedError",
    "FileStorage",
    "LoadedSnapshot",
    "LogGapError",
    "LogStorage",
    "MemoryStorage",
    "SnapshotFile",
    "SnapshotInfo",
    "SnapshotReceiver",
    "SnapshotStore",
    "SnapshotWriter",
    "StorageError",
    "TailRepair",
    "load_snapshot",
    "read_meta",
]
