"""What every storage backend shares: the `LogStorage` protocol, the errors, `TailRepair`.

Rules every implementation keeps (the node relies on them):

- `save` is all-or-nothing per call and durable when it returns.
- Any I/O failure raises `StorageError` and leaves the store *failed*: every later call
  raises `StorageError` too. The node logs `fatal_error` and exits (fail-stop, STYLE.md B4);
  it must never keep voting after losing a write.
- Local misuse (entries that would leave a gap, out-of-range values) raises `ValueError`
  before anything is written, and does not fail the store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from zraft.core.types import Entry, HardState, RestoredState, SnapshotMeta


class StorageError(Exception):
    """A storage operation failed (ENOSPC, EIO, ...). The store refuses every later call."""


class CorruptLogError(StorageError):
    """The write-ahead log is damaged somewhere other than a torn tail: refuse to start.

    Attributes:
        path: the damaged file.
        offset: the byte offset in `path` where the damage was found.
        reason: what was wrong there.
    """

    def __init__(self, path: str, offset: int, reason: str) -> None:
        super().__init__(f"{path}: corrupt write-ahead log at byte offset {offset}: {reason}")
        self.path = path
        self.offset = offset
        self.reason = reason


class LogGapError(StorageError):
    """The log does not reach back to the entry after the snapshot the node loaded.

    Raised by `load(after)` when `first_index() > after + 1`: entries after + 1 ..
    first_index() - 1 are in neither the snapshot nor the log, so the node cannot start
    from that snapshot. It does not fail the store.

    Attributes:
        where: the data dir (or "memory").
        after: the snapshot's index.
        first_index: the first index the log holds.
    """

    def __init__(self, where: str, after: int, first_index: int) -> None:
        super().__init__(
            f"{where}: the log starts at index {first_index} but the snapshot ends at "
            f"index {after}: entries {after + 1}..{first_index - 1} are missing"
        )
        self.where = where
        self.after = after
        self.first_index = first_index


class CorruptSnapshotError(StorageError):
    """A snapshot file is damaged, truncated or not a snapshot at all.

    It names the file and says what is wrong. It does not fail any store: the node refuses
    that one snapshot (an older one, or a fresh transfer from the leader, may do).

    Attributes:
        path: the damaged file.
        reason: what was wrong with it.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: corrupt snapshot: {reason}")
        self.path = path
        self.reason = reason


class DataDirLockedError(StorageError):
    """Another process (or another open store in this process) holds the data dir's lock."""


@dataclass(frozen=True, slots=True)
class TailRepair:
    """A torn record cut off the end of the log on open; log it as `log_tail_repaired`.

    Args:
        file: the segment that was cut (or removed, when even its header was torn).
        offset: where the cut was made; the file now ends there.
        dropped_bytes: how many bytes were dropped.
        last_index: the log's last index after the repair.
    """

    file: str
    offset: int
    dropped_bytes: int
    last_index: int


class LogStorage(Protocol):
    """Durable log and hard state of one Raft node, as the node loop uses it.

    Call order: construct (which recovers), `load(after=<snapshot index>)` once at
    start-up, then one `save()` per loop turn, `compact()` after a snapshot is durable,
    `close()` on exit.
    """

    @property
    def tail_repair(self) -> TailRepair | None:
        """The repair made when the store was opened, or None."""
        ...

    def first_index(self) -> int:
        """Index of the first stored entry (last_index() + 1 when the log is empty).

        After a save with `snapshot=meta` and no entries it is meta.index + 1.
        """
        ...

    def last_index(self) -> int:
        """Index of the last stored entry (0 for an empty, never compacted log).

        After a save with `snapshot=meta` and no entries it is meta.index.
        """
        ...

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi, which must lie within the stored range."""
        ...

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Store one Ready's worth atomically; durable on return.

        Without `snapshot`: truncate from entries[0].index, append, set the hard state.
        With `snapshot` (a follower installed a snapshot from its leader): discard the
        whole log, which then continues at snapshot.index + 1; `entries` must start there.
        """
        ...

    def load(self, after: int = 0) -> RestoredState:
        """The hard state and the stored entries with index > `after`, for building `Raft`.

        `after` is the index of the snapshot the node loaded (0 for none).

        Raises:
            LogGapError: first_index() > after + 1.
        """
        ...

    def compact(self, index: int) -> None:
        """Allow entries up to `index` to be discarded (a snapshot covers them).

        The node passes the index of the oldest snapshot it retains, so that falling back
        to that snapshot at start-up still finds the log after it.
        """
        ...

    def close(self) -> None:
        """Release files and locks. Idempotent."""
        ...


def check_append(entries: Sequence[Entry], first_index: int, last_index: int) -> None:
    """Check that `entries` can be saved onto a log holding [first_index, last_index].

    The first entry may overwrite a stored one (its index is where truncation starts) or
    come right after the last one; the rest must follow one by one.

    Raises:
        ValueError: the entries would leave a gap, rewrite a compacted entry, or are not
            contiguous.
    """
    if not entries:
        return
    start = entries[0].index
    if not first_index <= start <= last_index + 1:
        raise ValueError(
            f"entries start at index {start}, outside [{first_index}, {last_index + 1}]"
        )
    for offset, entry in enumerate(entries):
        if entry.index != start + offset:
            raise ValueError(
                f"entries are not contiguous: index {entry.index} at position {offset}"
            )
