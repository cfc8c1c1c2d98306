"""`MemoryStorage`: the in-memory twin of `FileStorage`. For tests only.

It keeps what a real store would have made durable, so the simulator can model a crash by
building a new `Raft` from `load()` of the same object: durable state survives, volatile
state doesn't (hashicorp's `InmemStore` carries the same "tests only" warning).
"""

from __future__ import annotations

from collections.abc import Sequence

from zraft.core.types import Entry, HardState, RestoredState, SnapshotMeta
from zraft.storage.base import LogGapError, StorageError, TailRepair, check_append


class MemoryStorage:
    """A `LogStorage` with no I/O. For tests only: nothing survives the process.

    It validates and fails exactly like `FileStorage`: misuse raises `ValueError`, and after
    `inject_failure` (or `close`) every call raises `StorageError`.
    """

    def __init__(self) -> None:
        self._entries: list[Entry] = []
        # Invariant: self._entries[i].index == self._first + i.
        self._first = 1
        self._hard_state = HardState()
        self._pending_failure: OSError | None = None
        self._failure: str | None = None

    @property
    def tail_repair(self) -> TailRepair | None:
        """Always None: memory is never torn."""
        return None

    def first_index(self) -> int:
        """Index of the first stored entry (last_index() + 1 when empty)."""
        self._check_usable()
        return self._first

    def last_index(self) -> int:
        """Index of the last stored entry, or first_index() - 1 when empty."""
        self._check_usable()
        return self._first + len(self._entries) - 1

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Entries with lo <= index < hi.

        Raises:
            IndexError: the range is empty-reversed or reaches outside the stored entries.
        """
        self._check_usable()
        if not self._first <= lo <= hi <= self.last_index() + 1:
            raise IndexError(
                f"entries [{lo}, {hi}) outside the stored [{self._first}, {self.last_index()}]"
            )
        return self._entries[lo - self._first : hi - self._first]

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Truncate from entries[0].index, append `entries`, then set `hard_state` if given.

        With `snapshot`, drop every entry first: the log continues at snapshot.index + 1,
        where `entries` must start (as `FileStorage.save`).

        Raises:
            ValueError: the entries would leave a gap or are not contiguous.
            StorageError: a failure was injected, or the store already failed or is closed.
        """
        self._check_usable()
        if snapshot is None:
            check_append(entries, self._first, self.last_index())
        else:
            if snapshot.index < 0 or snapshot.term < 0:
                raise ValueError(f"snapshot index and term must be >= 0: {snapshot}")
            check_append(entries, snapshot.index + 1, snapshot.index)
        if self._pending_failure is not None:
            exc, self._pending_failure = self._pending_failure, None
            self._failure = f"save failed: {exc}"
            raise StorageError(self._failure) from exc
        if snapshot is not None:
            self._entries = []
            self._first = snapshot.index + 1
        if entries:
            del self._entries[entries[0].index - self._first :]
            self._entries.extend(entries)
        if hard_state is not None:
            self._hard_state = hard_state

    def load(self, after: int = 0) -> RestoredState:
        """The saved hard state and the entries with index > `after` (callable repeatedly).

        Raises:
            ValueError: `after` < 0.
            LogGapError: the log starts above after + 1 (as `FileStorage.load`).
        """
        self._check_usable()
        if after < 0:
            raise ValueError(f"after must be >= 0, got {after}")
        if self._first > after + 1:
            raise LogGapError("memory", after, self._first)
        skip = max(0, after + 1 - self._first)
        return RestoredState(hard_state=self._hard_state, entries=tuple(self._entries[skip:]))

    def compact(self, index: int) -> None:
        """Discard the entries with index <= `index` (bounded by the last index)."""
        self._check_usable()
        drop = max(0, min(index, self.last_index()) - self._first + 1)
        del self._entries[:drop]
        self._first += drop

    def close(self) -> None:
        """Mark the store closed; later calls raise `StorageError`. Idempotent."""
        if self._failure is None:
            self._failure = "storage is closed"

    def inject_failure(self, error: OSError) -> None:
        """Make the next `save` fail with `error` wrapped in `StorageError` (fault tests)."""
        self._pending_failure = error

    def _check_usable(self) -> None:
        if self._failure is not None:
            raise StorageError(f"storage unusable: {self._failure}")
