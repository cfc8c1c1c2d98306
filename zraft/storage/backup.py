"""Backup files: one node's snapshot file, wrapped with what it is and a SHA-256.

A backup is made by `zraft-client backup` from a snapshot file a node streams to it, and
read by `zraft-client backup-status` and `zraft-node restore`. Format (integers
little-endian)::

    preamble   8s "ZRAFTBAK", u16 version (1)
    snapshot   the snapshot file's bytes, exactly as the node wrote it (`snapfile`: its
               own magic, header, records and CRC-32 footer)
    trailer    msgpack map {"version", "cluster", "node", "index", "term", "revision",
               "keys", "snapshot_bytes", "sha256", "created"}, u32 its length, 8s "ZRAFTBKE"

The trailer comes last so the file is written in one pass (the digest is known only at
the end) and a truncated file is recognised before anything is parsed: its last bytes are
not the end magic. `BackupWriter` writes `<name>.partial`, fsyncs it, renames it to its
final name and fsyncs the directory, so a file under the final name is complete and
durable; a failed or interrupted backup leaves no file that looks complete.
`read_backup` checks, in order: the size, the magics, the version, the trailer, the length
and SHA-256 of the snapshot bytes, then the snapshot itself (`snapfile.parse_snapshot`:
its CRC and structure). Every failure is a `BackupError` naming the file and the problem.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgpack

from zraft.storage.base import CorruptSnapshotError
from zraft.storage.fsio import sync_dir
from zraft.storage.snapfile import LoadedSnapshot, parse_snapshot

MAGIC = b"ZRAFTBAK"
END_MAGIC = b"ZRAFTBKE"
VERSION = 1
_PREAMBLE = struct.Struct("<8sH")
_TRAILER_END = struct.Struct("<I8s")
MAX_TRAILER_BYTES = 64 << 10
TRAILER_KEYS = (
    "version",
    "cluster",
    "node",
    "index",
    "term",
    "revision",
    "keys",
    "snapshot_bytes",
    "sha256",
    "created",
)


class BackupError(Exception):
    """A backup file is unreadable, incomplete, damaged or of an unknown version."""

    def __init__(self, path: Path | str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = Path(path)
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Backup:
    """A verified backup: its trailer and the snapshot it holds."""

    path: Path
    info: dict[str, Any]
    snapshot: LoadedSnapshot


class BackupWriter:
    """Writes a backup to `<path>.partial`, then (`finish`) durably to `path`.

    Raises:
        BackupError: `path` exists already, or the partial file cannot be created.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.partial = path.with_name(path.name + ".partial")
        if path.exists():
            raise BackupError(path, "exists already: give a new file name")
        try:
            self._file = self.partial.open("wb")
        except OSError as exc:
            raise BackupError(self.partial, f"cannot create: {exc.strerror or exc}") from exc
        self._digest = hashlib.sha256()
        self.snapshot_bytes = 0
        self._file.write(_PREAMBLE.pack(MAGIC, VERSION))

    def write(self, chunk: bytes) -> None:
        """Append the next bytes of the snapshot file."""
        self._file.write(chunk)
        self._digest.update(chunk)
        self.snapshot_bytes += len(chunk)

    def restart(self) -> None:
        """Forget the snapshot bytes written so far (the node's file went away)."""
        self._file.seek(_PREAMBLE.size)
        self._file.truncate()
        self._digest = hashlib.sha256()
        self.snapshot_bytes = 0

    def read_back(self) -> bytes:
        """The snapshot bytes written so far, as the file holds them (to verify them)."""
        self._file.flush()
        with self.partial.open("rb") as file:
            file.seek(_PREAMBLE.size)
            return file.read(self.snapshot_bytes)

    @property
    def sha256(self) -> str:
        """The hex digest of the snapshot bytes written so far."""
        return self._digest.hexdigest()

    def finish(self, info: dict[str, Any]) -> None:
        """Write the trailer (`info`: every `TRAILER_KEYS` entry but `version`,
        `snapshot_bytes` and `sha256`, which are filled in), sync, and rename into place."""
        trailer = msgpack.packb(
            {
                **info,
                "version": VERSION,
                "snapshot_bytes": self.snapshot_bytes,
                "sha256": self.sha256,
            }
        )
        self._file.write(trailer)
        self._file.write(_TRAILER_END.pack(len(trailer), END_MAGIC))
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        sync_dir(self.path.parent)

    def abort(self) -> None:
        """Close and delete the partial file (nothing under the final name)."""
        with contextlib.suppress(OSError):
            self._file.close()
        with contextlib.suppress(FileNotFoundError):
            self.partial.unlink()


def read_backup(path: Path) -> Backup:
    """Read and verify a backup file in full.

    Raises:
        BackupError: the file cannot be read, is truncated or damaged, or its version is
            not one this release reads.
    """
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise BackupError(path, f"cannot read: {exc.strerror or exc}") from exc
    minimum = _PREAMBLE.size + _TRAILER_END.size
    if len(data) < minimum:
        raise BackupError(path, f"truncated: {len(data)} bytes, not a backup")
    magic, version = _PREAMBLE.unpack_from(data)
    if magic != MAGIC:
        raise BackupError(path, "not a zraft backup (no ZRAFTBAK at its start)")
    if version != VERSION:
        raise BackupError(path, f"unsupported backup version {version} (this release reads 1)")
    trailer_len, end = _TRAILER_END.unpack_from(data, len(data) - _TRAILER_END.size)
    if end != END_MAGIC or trailer_len > min(MAX_TRAILER_BYTES, len(data) - minimum):
        raise BackupError(path, "truncated or damaged: its end is not a backup trailer")
    trailer_at = len(data) - _TRAILER_END.size - trailer_len
    try:
        info = msgpack.unpackb(data[trailer_at : len(data) - _TRAILER_END.size])
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BackupError(path, f"damaged trailer: {exc}") from None
    if not isinstance(info, dict) or not all(key in info for key in TRAILER_KEYS):
        raise BackupError(path, f"damaged trailer: expected the keys {', '.join(TRAILER_KEYS)}")
    snapshot = data[_PREAMBLE.size : trailer_at]
    if len(snapshot) != info["snapshot_bytes"]:
        said = info["snapshot_bytes"]
        raise BackupError(path, f"damaged: {len(snapshot)} snapshot bytes, the trailer says {said}")
    if hashlib.sha256(snapshot).hexdigest() != info["sha256"]:
        raise BackupError(path, "checksum mismatch: the snapshot bytes are not what was backed up")
    try:
        loaded = parse_snapshot(path, snapshot)
    except CorruptSnapshotError as exc:
        raise BackupError(path, f"the snapshot inside is damaged: {exc.reason}") from None
    return Backup(path, info, loaded)
