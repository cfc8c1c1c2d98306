"""Taking snapshots of the node's own state machine without stalling its loop.

`SnapshotMaker` owns the policy (when) and the incremental write (how):

- **When**: once the entries applied since the newest snapshot reach `snapshot_entries`,
  or their command bytes reach `snapshot_bytes` (whichever comes first), or when an
  operator asks (`zraft-client snapshot`).
- **How, without a long pause**: `start` takes a *copy* of the state (`KVStore.snapshot_view`:
  one shallow dict copy, a few milliseconds for 100k keys; keys and values are immutable
  bytes) and opens a `SnapshotWriter`. The loop then calls `step` once per tick, which
  writes and fdatasyncs one slice of at most `slice_bytes`, so no turn blocks for long,
  heartbeats keep flowing, and only one turn in several pays for a slice. When the last
  slice is written, `finish` renames the file into place; the caller then compacts the
  log. No threads: the copy is what makes the snapshot consistent while the store keeps
  applying.

It measures what it costs (`SnapshotStats`): the copy's pause, the longest slice, and the
whole duration, so the `snapshot_saved` event and the README can report them.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from zraft.core import SnapshotMeta
from zraft.state.kv import SnapshotView
from zraft.storage.snapfile import SnapshotInfo, SnapshotWriter
from zraft.storage.snapstore import SnapshotStore

DEFAULT_SLICE_BYTES = 1 << 20  # one slice ≈ 1 MiB: a few ms of encoding and fdatasync


@dataclass(frozen=True, slots=True)
class SnapshotStats:
    """What one snapshot cost the loop, in milliseconds, and how big it is."""

    info: SnapshotInfo
    pairs: int
    copy_ms: float  # the pause to copy the state (one loop turn)
    max_slice_ms: float  # the longest single slice (one loop turn)
    total_ms: float  # from start to the renamed file, across many turns
    slices: int


class SnapshotMaker:
    """Decides when to snapshot and writes the snapshot a slice per loop turn.

    Args:
        store: where snapshot files live.
        every_entries, every_bytes: the thresholds (config `snapshot_entries` and
            `snapshot_bytes`).
        slice_bytes: the budget of one `step`.
        clock: a monotonic clock in seconds, to measure pauses (never to decide anything).
    """

    def __init__(
        self,
        store: SnapshotStore,
        *,
        every_entries: int,
        every_bytes: int,
        slice_bytes: int = DEFAULT_SLICE_BYTES,
        clock: Callable[[], float] = time.perf_counter,
    ) -> None:
        self._store = store
        self._every_entries = every_entries
        self._every_bytes = every_bytes
        self._slice_bytes = slice_bytes
        self._clock = clock
        self._writer: SnapshotWriter | None = None
        self._bytes_since = 0  # command bytes applied since the newest snapshot
        self._started = 0.0
        self._copy_ms = 0.0
        self._max_slice_ms = 0.0
        self._slices = 0
        self._pairs = 0

    @property
    def writing(self) -> SnapshotMeta | None:
        """The snapshot being written, if any."""
        return self._writer.meta if self._writer is not None else None

    def note_applied(self, command_bytes: int) -> None:
        """Count the size of an applied entry towards `snapshot_bytes`."""
        self._bytes_since += command_bytes

    def is_due(self, applied_index: int, snapshot_index: int) -> bool:
        """Whether a snapshot should start now (never while one is being written)."""
        if self._writer is not None or applied_index <= snapshot_index:
            return False
        return (
            applied_index - snapshot_index >= self._every_entries
            or self._bytes_since >= self._every_bytes
        )

    def start(
        self, meta: SnapshotMeta, view: SnapshotView, extra_header: dict[str, Any] | None = None
    ) -> None:
        """Begin writing `view` (a copy of the state at `meta.index`); `extra_header` goes
        into the file's header too (the node's member directory).

        Raises:
            ValueError: a snapshot is already being written, or `view` is not at `meta`.
            StorageError: the temp file cannot be created.
        """
        if self._writer is not None:
            raise ValueError(f"snapshot {self._writer.meta.index} is still being written")
        if view.applied_index != meta.index:
            raise ValueError(f"state at {view.applied_index} is not snapshot {meta.index}")
        began = self._clock()
        header = {
            **(extra_header or {}),
            **view.header,
            "applied_index": view.applied_index,
            "sessions": view.sessions,
        }
        self._writer = self._store.begin(meta, header, view.data.items(), len(view.data))
        self._started = began
        self._copy_ms = 0.0
        self._max_slice_ms = 0.0
        self._slices = 0
        self._pairs = len(view.data)
        self._bytes_since = 0

    def note_copy_ms(self, copy_ms: float) -> None:
        """Record how long the caller's state copy took (part of the first pause)."""
        self._copy_ms = copy_ms

    def step(self) -> SnapshotStats | None:
        """Write one slice; when the file is complete, finish it and return its stats.

        Raises:
            StorageError: writing failed (the temp file is gone; the node stops).
        """
        writer = self._writer
        if writer is None:
            return None
        began = self._clock()
        done = writer.step(self._slice_bytes)
        if done:
            info = writer.finish()
            self._writer = None
        self._slices += 1
        now = self._clock()
        self._max_slice_ms = max(self._max_slice_ms, (now - began) * 1000)
        if not done:
            return None
        return SnapshotStats(
            info=info,
            pairs=self._pairs,
            copy_ms=self._copy_ms,
            max_slice_ms=self._max_slice_ms,
            total_ms=(now - self._started) * 1000,
            slices=self._slices,
        )

    def abort(self) -> None:
        """Throw away a snapshot being written (a newer one was installed instead)."""
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def note_installed(self) -> None:
        """A snapshot from the leader replaces ours: drop any in progress, and count
        `snapshot_bytes` afresh from it (its commands are in the installed state)."""
        self.abort()
        self._bytes_since = 0
