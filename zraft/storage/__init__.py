"""Durable storage for one Raft node: the write-ahead log and the hard state.

`FileStorage` is the real store (a segmented, CRC-framed WAL; its module docstring gives
the crash-safety argument, `wal.py` the on-disk format). `MemoryStorage` is its twin for
tests. Both satisfy `LogStorage`, which is what the node types against. Every I/O failure
raises `StorageError` and fails the store for good; the node then stops (fail-stop).
"""

from zraft.storage.base import (
    CorruptLogError,
    DataDirLockedError,
    LogStorage,
    StorageError,
    TailRepair,
)
from zraft.storage.file import DEFAULT_SEGMENT_BYTES, FileStorage
from zraft.storage.memory import MemoryStorage

__all__ = [
    "DEFAULT_SEGMENT_BYTES",
    "CorruptLogError",
    "DataDirLockedError",
    "FileStorage",
    "LogStorage",
    "MemoryStorage",
    "StorageError",
    "TailRepair",
]
