"""Which keys each recent revision changed: the store's index of history by revision.

A watch asks "every change in this key range at or after revision S". The store keeps
each key's records in revision order (`zraft.state.mvcc`), so one way to answer is to scan
every key of the range; for a wide range resuming from a recent revision that is wasteful.
`ChangeLog` is the other way: `(revision, key)` of every record the store appended, in
revision order, so the changes since S cost O(log n + changes since S) whatever the size of
the store.

It covers the revisions above `floor` only: a new store's log starts at its first
revision, a store restored from a snapshot at the revision it was restored at (its older
history is still in the key records, just not indexed), compaction moves the floor up to
the compact revision, and the log keeps at most `limit` entries (dropping the oldest
revisions whole). A lookup from a revision the log does not cover scans the keys instead
(`zraft.state.events`). Pure (floor L0): no I/O, no clock.
"""

from __future__ import annotations

import bisect
from array import array
from collections.abc import Iterator

CHANGE_LOG_LIMIT = 100_000
"""Entries kept at most (about 1.6 MB plus the keys): at 2,000 writes/s, the last 50 s."""

_TRIM_AT = 4096
"""Dropped entries are removed from the arrays in batches of at least this many."""


class ChangeLog:
    """`(revision, key)` of every change above `floor`, oldest first (see the module doc).

    Args:
        floor: the log holds no change at or below this revision.
        limit: the most entries kept; the oldest revisions are dropped beyond it.
    """

    def __init__(self, floor: int, limit: int = CHANGE_LOG_LIMIT) -> None:
        if limit < 1:
            raise ValueError("limit must be >= 1")
        self.floor = floor
        self._limit = limit
        self._revisions = array("q")
        self._keys: list[bytes] = []
        self._head = 0  # entries before it are dropped (removed from the arrays in batches)

    def __len__(self) -> int:
        return len(self._keys) - self._head

    def add(self, revision: int, key: bytes) -> None:
        """Record that `key` changed at `revision` (never lower than the last one added)."""
        self._revisions.append(revision)
        self._keys.append(key)
        if len(self._keys) - self._head > self._limit:
            self.forget_through(self._revisions[self._head])

    def covers(self, start: int) -> bool:
        """Whether every change at or after `start` is in the log."""
        return start > self.floor

    def count_since(self, start: int) -> int:
        """How many changes the log holds at or after `start`."""
        return len(self._keys) - self._first_at(start)

    def since(self, start: int) -> Iterator[tuple[int, bytes]]:
        """`(revision, key)` of every change held at or after `start`, oldest first."""
        revisions, keys = self._revisions, self._keys
        for position in range(self._first_at(start), len(keys)):
            yield revisions[position], keys[position]

    def forget_through(self, revision: int) -> None:
        """Drop every change at or below `revision` (compaction, or the size limit)."""
        self._head = self._first_at(revision + 1)  # >= the old head
        self.floor = max(self.floor, revision)
        if self._head >= _TRIM_AT and self._head * 2 >= len(self._keys):
            del self._revisions[: self._head]
            del self._keys[: self._head]
            self._head = 0

    def _first_at(self, start: int) -> int:
        return bisect.bisect_left(self._revisions, start, lo=self._head)
