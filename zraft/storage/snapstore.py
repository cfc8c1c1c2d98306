"""`SnapshotStore`: the directory of one node's snapshot files, written or received.

What it owns: one directory (put it inside the data dir, e.g. ``<data_dir>/snapshots``, so
the WAL's lock covers it; this store takes no lock of its own)::

    snap-<index:016x>-<term:016x>.snap          complete, durable snapshots (`snapfile.py`)
    snap-<index:016x>-<term:016x>.snap.<n>.tmp  being written or received

Rules it keeps, and why they make a crash harmless:

- *A final name means a complete file.* Temp files are fdatasync'ed, then renamed, then
  the directory is fsync'ed. A crash leaves either no file or the whole one under its
  final name, plus maybe a temp file, which the next start removes (`removed_temps`).
- *Nothing is trusted without verification.* `load_newest` reads and verifies the newest
  snapshot and falls back to older ones, reporting each refusal with its reason; a
  received snapshot is verified (`SnapshotReceiver.finish`) before the Raft core even
  decides whether to install it.
- *Older snapshots are kept until a newer one is durable* (`prune` runs after `finish` or
  `install`), and `oldest_retained_index` tells the node how far it may compact the WAL so
  that falling back to the oldest kept snapshot still finds the log after it.

Every OSError becomes `StorageError` (the node stops). Bytes that are not a valid snapshot
become `CorruptSnapshotError`, which the node handles per snapshot.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from zraft.core.types import SnapshotMeta
from zraft.storage.base import CorruptSnapshotError, StorageError
from zraft.storage.fsio import make_dir, sync_data, sync_dir, write_all
from zraft.storage.naming import pair_name, parse_pair_name
from zraft.storage.snapfile import (
    LoadedSnapshot,
    SnapshotInfo,
    SnapshotWriter,
    discard_temp,
    load_snapshot,
)

_PREFIX = "snap-"
_SUFFIX = ".snap"
_TEMP_SUFFIX = ".tmp"
DEFAULT_RECEIVE_SYNC_BYTES = 4 << 20


def snapshot_name(index: int, term: int) -> str:
    """File name of the snapshot at `index`/`term`; sorting names sorts by index."""
    return pair_name(_PREFIX, index, term, _SUFFIX)


def parse_snapshot_name(name: str) -> tuple[int, int] | None:
    """(index, term) from a final snapshot file name, or None if it is not one."""
    return parse_pair_name(name, _PREFIX, _SUFFIX)


@dataclass(frozen=True, slots=True)
class SnapshotFile:
    """A snapshot file as its name describes it; not yet read or verified.

    Args:
        index: the snapshot's last included index.
        term: the term of that entry.
        path: the file.
        size_bytes: its size.
    """

    index: int
    term: int
    path: Path
    size_bytes: int


class SnapshotReceiver:
    """Receives one snapshot file streamed by the leader, in order, into a temp file.

    Made by `SnapshotStore.begin_receive`. Feed it `write_chunk` calls, then `finish()`
    (which verifies the whole file), then either `SnapshotStore.install(receiver)` or
    `abort()`. On any error the temp file is removed.

    Args:
        meta: what the leader announced; the file must hold exactly this.
        path: the final file name.
        temp_path: where bytes are written until `install` (same directory; must not exist).
        sync_bytes: fdatasync after this many unsynced bytes, so `finish` syncs little.
        max_bytes: refuse a transfer larger than this (None: no limit).

    Raises:
        StorageError: creating the temp file failed.
    """

    def __init__(
        self,
        meta: SnapshotMeta,
        path: Path,
        temp_path: Path,
        *,
        sync_bytes: int = DEFAULT_RECEIVE_SYNC_BYTES,
        max_bytes: int | None = None,
    ) -> None:
        self._meta = meta
        self._path = path
        self._temp_path = temp_path
        self._sync_bytes = sync_bytes
        self._max_bytes = max_bytes
        self._size = 0
        self._unsynced = 0
        self._state = "receiving"  # -> "verified" -> "installed"; any -> "aborted"
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._fd = os.open(temp_path, flags, 0o644)
        except OSError as exc:
            self._state = "aborted"
            raise StorageError(f"cannot create snapshot file {temp_path}: {exc}") from exc

    @property
    def meta(self) -> SnapshotMeta:
        """The snapshot being received."""
        return self._meta

    @property
    def path(self) -> Path:
        """The final file name `install` gives it."""
        return self._path

    @property
    def temp_path(self) -> Path:
        """The temp file being written."""
        return self._temp_path

    @property
    def next_offset(self) -> int:
        """The offset the next chunk must start at (= bytes received so far)."""
        return self._size

    def write_chunk(self, offset: int, data: bytes) -> bool:
        """Append `data` if it starts exactly at `next_offset`.

        Returns:
            True if written. False, with nothing written, for any other offset (a
            duplicate, a gap, or a restarted transfer): answer with `next_offset`, or abort
            and begin again when the leader restarts at 0.

        Raises:
            CorruptSnapshotError: the transfer grew beyond `max_bytes` (aborted).
            StorageError: a write or sync failed (aborted), or the receiver is not
                receiving any more.
        """
        self._check_state("receiving")
        if offset != self._size:
            return False
        if self._max_bytes is not None and self._size + len(data) > self._max_bytes:
            self.abort()
            raise CorruptSnapshotError(
                str(self._temp_path), f"transfer exceeds the limit of {self._max_bytes} bytes"
            )
        try:
            write_all(self._fd, data)
            self._size += len(data)
            self._unsynced += len(data)
            if self._unsynced >= self._sync_bytes:
                sync_data(self._fd)
                self._unsynced = 0
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot write snapshot file {self._temp_path}: {exc}") from exc
        return True

    def finish(self) -> LoadedSnapshot:
        """Sync the temp file, then read it back and verify all of it.

        Returns:
            The verified snapshot (its `path` is the temp file until `install`).

        Raises:
            CorruptSnapshotError: the bytes are damaged or incomplete, or hold another
                snapshot than `meta` (the temp file is removed).
            StorageError: a sync or read failed (the temp file is removed).
        """
        self._check_state("receiving")
        try:
            sync_data(self._fd)
            os.close(self._fd)
            self._fd = -1
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot sync snapshot file {self._temp_path}: {exc}") from exc
        try:
            loaded = load_snapshot(self._temp_path)
        except StorageError:  # CorruptSnapshotError included
            self.abort()
            raise
        if loaded.meta != self._meta:
            self.abort()
            raise CorruptSnapshotError(
                str(self._temp_path), f"holds {loaded.meta}, but {self._meta} was announced"
            )
        self._state = "verified"
        return loaded

    def abort(self) -> None:
        """Close and remove the temp file. Idempotent; does nothing after `install`."""
        if self._state in ("installed", "aborted"):
            return
        self._state = "aborted"
        fd, self._fd = self._fd, -1
        discard_temp(fd, self._temp_path)

    def _install(self) -> SnapshotInfo:
        """Rename the verified temp file to its final name and fsync the directory."""
        self._check_state("verified")
        try:
            os.replace(self._temp_path, self._path)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot install snapshot file {self._path}: {exc}") from exc
        self._state = "installed"
        try:
            sync_dir(self._path.parent)
        except OSError as exc:
            raise StorageError(f"cannot install snapshot file {self._path}: {exc}") from exc
        return SnapshotInfo(meta=self._meta, path=self._path, size_bytes=self._size)

    def _check_state(self, expected: str) -> None:
        if self._state != expected:
            raise StorageError(
                f"snapshot receiver for {self._path} is {self._state}, not {expected}"
            )


class SnapshotStore:
    """One node's snapshot directory: write, receive, list, load, prune.

    Construction creates the directory (durably) and removes leftover temp files from a
    crash; their paths are in `removed_temps`, for the node to log. Not thread-safe.

    Args:
        snap_dir: the directory (created if missing).
        retain: how many snapshots `prune` keeps (>= 1; 2 lets a damaged newest snapshot
            fall back to the one before).

    Raises:
        ValueError: retain < 1.
        StorageError: an OSError creating or cleaning the directory.
    """

    def __init__(self, snap_dir: str | os.PathLike[str], *, retain: int = 2) -> None:
        if retain < 1:
            raise ValueError("retain must be >= 1")
        self._dir = Path(snap_dir)
        self._retain = retain
        self._temp_seq = 0  # makes temp names unique within this process
        removed: list[Path] = []
        try:
            make_dir(self._dir)
            for path in sorted(self._dir.glob(f"{_PREFIX}*{_TEMP_SUFFIX}")):
                path.unlink()
                removed.append(path)
            if removed:
                sync_dir(self._dir)
        except OSError as exc:
            raise StorageError(f"cannot open the snapshot dir {self._dir}: {exc}") from exc
        self._removed_temps = tuple(removed)

    @property
    def snap_dir(self) -> Path:
        """The directory this store owns."""
        return self._dir

    @property
    def retain(self) -> int:
        """How many snapshots `prune` keeps."""
        return self._retain

    @property
    def removed_temps(self) -> tuple[Path, ...]:
        """Temp files (interrupted writes or transfers) removed when the store was opened."""
        return self._removed_temps

    def path_of(self, meta: SnapshotMeta) -> Path:
        """Where the snapshot `meta` lives once complete."""
        return self._dir / snapshot_name(meta.index, meta.term)

    def list(self) -> list[SnapshotFile]:
        """The complete snapshot files by name, ascending by (index, term). Unverified.

        Raises:
            StorageError: listing the directory failed.
        """
        files: list[SnapshotFile] = []
        try:
            for entry in os.scandir(self._dir):
                parsed = parse_snapshot_name(entry.name)
                if parsed is not None and entry.is_file():
                    size = entry.stat().st_size
                    files.append(SnapshotFile(parsed[0], parsed[1], Path(entry.path), size))
        except OSError as exc:
            raise StorageError(f"cannot list the snapshot dir {self._dir}: {exc}") from exc
        files.sort(key=lambda f: (f.index, f.term))
        return files

    def load_newest(self) -> tuple[LoadedSnapshot | None, list[tuple[Path, str]]]:
        """The newest snapshot that verifies, and every newer one refused, with why.

        Returns:
            (snapshot or None if none verifies, [(path, reason), ...] newest first).

        Raises:
            StorageError: a file could not be read (not damage: an I/O failure).
        """
        refused: list[tuple[Path, str]] = []
        for file in reversed(self.list()):
            try:
                loaded = load_snapshot(file.path)
            except CorruptSnapshotError as exc:
                refused.append((file.path, exc.reason))
                continue
            if (loaded.meta.index, loaded.meta.term) != (file.index, file.term):
                refused.append(
                    (
                        file.path,
                        f"the name says index {file.index} term {file.term}, the header "
                        f"says index {loaded.meta.index} term {loaded.meta.term}",
                    )
                )
                continue
            return loaded, refused
        return None, refused

    def oldest_retained_index(self) -> int:
        """Index of the oldest snapshot `prune` keeps (0 if none): compact the WAL to it."""
        files = self.list()
        return files[-self._retain :][0].index if files else 0

    def prune(self) -> list[Path]:
        """Delete all but the newest `retain` snapshot files (then fsync the directory).

        Call it after a new snapshot is durable. It goes by names only: it neither reads
        the files nor touches temp files.

        Returns:
            The deleted files, oldest first.

        Raises:
            StorageError: a deletion or the directory sync failed.
        """
        doomed = [file.path for file in self.list()[: -self._retain]]
        try:
            for path in doomed:
                path.unlink()
            if doomed:
                sync_dir(self._dir)
        except OSError as exc:
            raise StorageError(f"cannot prune snapshots in {self._dir}: {exc}") from exc
        return doomed

    def begin(
        self,
        meta: SnapshotMeta,
        header: Mapping[Any, Any],
        pairs: Iterable[tuple[bytes, bytes]],
        pair_count: int,
    ) -> SnapshotWriter:
        """Start writing the snapshot `meta` (see `SnapshotWriter` for the protocol).

        Raises:
            ValueError: `header` is not msgpack-able, or a number is out of range.
            StorageError: creating the temp file failed.
        """
        return SnapshotWriter(
            self.path_of(meta), self._temp_path(meta), meta, header, pairs, pair_count
        )

    def begin_receive(
        self,
        meta: SnapshotMeta,
        *,
        sync_bytes: int = DEFAULT_RECEIVE_SYNC_BYTES,
        max_bytes: int | None = None,
    ) -> SnapshotReceiver:
        """Start receiving the snapshot `meta` from the leader (see `SnapshotReceiver`).

        Raises:
            StorageError: creating the temp file failed.
        """
        return SnapshotReceiver(
            meta,
            self.path_of(meta),
            self._temp_path(meta),
            sync_bytes=sync_bytes,
            max_bytes=max_bytes,
        )

    def install(self, receiver: SnapshotReceiver) -> SnapshotInfo:
        """Move a verified received snapshot to its final name, durably.

        Do this before saving the matching RESET to the WAL (`FileStorage` docstring).

        Raises:
            ValueError: the receiver belongs to another directory.
            StorageError: the receiver is not verified, or the rename or sync failed.
        """
        if receiver.path.parent != self._dir:
            raise ValueError(f"{receiver.path} is not in {self._dir}")
        return receiver._install()  # private to this module's pair of classes

    def _temp_path(self, meta: SnapshotMeta) -> Path:
        self._temp_seq += 1
        name = f"{snapshot_name(meta.index, meta.term)}.{self._temp_seq}{_TEMP_SUFFIX}"
        return self._dir / name
