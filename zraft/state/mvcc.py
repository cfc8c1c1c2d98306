"""A multi-version key-value store with etcd v3's data model (issue 13's foundation).

Pure (floor L0 like `kv`): no I/O, no clock, no randomness, so every replica that applies
the same writes in the same order holds the same state. It is not yet behind the node's
`StateMachine` (the op table, the command codec and the snapshot format come next); it
is the model those build on.

The model
---------
- One **revision** for the whole store. It starts at 1 and grows by exactly one for each
  write (`Write`) that changed something: every put and delete of one write shares its
  revision. A write that changed nothing (a delete of nothing) does not move it.
- Every key carries a `KeyValue`: `create_revision` (when its current life began),
  `mod_revision` (its last change), `version` (1 at creation, +1 per put; a deleted and
  re-created key starts again at 1) and `lease` (0 for none).
- **History**: each key keeps its records (`KeyValue`s, and a tombstone, version 0, where
  it was deleted) in revision order, so `range(revision=R)` reads the store as it was at
  R. `compact(R)` forgets what no read at or after R can see: per key, every record
  older than the one in force at R, and that one too if it is a tombstone. A read below
  the compact revision is refused (`Compacted`), one above the current revision too
  (`FutureRevision`).
- **Ranges** follow etcd's convention: `range_end` None is the single key `key`;
  `b"\\0"` is every key >= `key` (and with `key == b"\\0"`, every key); otherwise the
  half-open `[key, range_end)`, empty when `range_end <= key`. `prefix_end(p)` gives the
  end of the keys starting with `p`.

Sizes are accounted (`size_bytes`: keys, values and a fixed per-record overhead over the
whole history) so a quota can be enforced by whoever applies writes.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import Any

from sortedcontainers import SortedList

RECORD_OVERHEAD = 64
"""Bytes accounted per record beyond its key and value (the objects that hold it)."""

SORT_TARGETS = ("key", "version", "create", "mod", "value")
"""What `range` may sort by (etcd's `sort_target`)."""

SORT_ORDERS = ("none", "ascend", "descend")
"""How `range` may sort (`none`: by key, ascending, as etcd does)."""


class Compacted(ValueError):
    """A read (or compaction) at a revision that compaction already removed."""

    def __init__(self, revision: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {revision} is compacted (the compact revision is {compact_revision})"
        )
        self.compact_revision = compact_revision


class FutureRevision(ValueError):
    """A read (or compaction) at a revision the store has not reached."""

    def __init__(self, revision: int, current: int) -> None:
        super().__init__(f"revision {revision} is in the future (the current is {current})")
        self.current = current


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One record of a key: a version of it, or (version 0) the tombstone of a delete."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    @property
    def is_tombstone(self) -> bool:
        """Whether this record marks a delete."""
        return self.version == 0


@dataclass(frozen=True, slots=True)
class RangeResult:
    """What `range` found: `kvs` (at most `limit`), whether `more` matched, and `count`,
    how many keys matched in all, at `revision`."""

    kvs: tuple[KeyValue, ...]
    more: bool
    count: int
    revision: int


def prefix_end(prefix: bytes) -> bytes:
    """The `range_end` of every key that starts with `prefix` (`b"\\0"`: to the end)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])


class MVCCStore:
    """The store (see the module doc). Writes go through `write()`; reads through `range`."""

    def __init__(self) -> None:
        self._revision = 1
        self._compact_revision = 0
        self._records: dict[bytes, list[KeyValue]] = {}  # key -> records, oldest first
        self._keys: SortedList = SortedList()  # every key of `_records`, in byte order
        self._live = 0  # keys whose newest record is not a tombstone
        self._size = 0

    # --- what it holds --------------------------------------------------------------------

    @property
    def revision(self) -> int:
        """The current revision (1 for an empty store)."""
        return self._revision

    @property
    def compact_revision(self) -> int:
        """The revision of the last compaction (0: never compacted)."""
        return self._compact_revision

    @property
    def size_bytes(self) -> int:
        """Accounted size of everything held, history included."""
        return self._size

    def __len__(self) -> int:
        """How many keys exist now."""
        return self._live

    def get(self, key: bytes) -> KeyValue | None:
        """The current `KeyValue` of `key`, or None."""
        records = self._records.get(key)
        if records is None or records[-1].is_tombstone:
            return None
        return records[-1]

    # --- reading --------------------------------------------------------------------------

    def range(
        self,
        key: bytes,
        range_end: bytes | None = None,
        *,
        revision: int = 0,
        limit: int = 0,
        sort_target: str = "key",
        sort_order: str = "none",
        keys_only: bool = False,
        count_only: bool = False,
    ) -> RangeResult:
        """The keys in the range as they were at `revision` (0: now).

        Args:
            limit: at most this many `kvs` (0: no limit); `more` says whether more matched.
            sort_target, sort_order: see `SORT_TARGETS`, `SORT_ORDERS`.
            keys_only: `kvs` without their values. count_only: no `kvs` at all.

        Raises:
            Compacted: `revision` is below the compact revision.
            FutureRevision: `revision` is above the current one.
            ValueError: a bad limit, sort target or order.
        """
        at = self._check_revision(revision or self._revision)
        if limit < 0 or sort_target not in SORT_TARGETS or sort_order not in SORT_ORDERS:
            raise ValueError("limit must be >= 0; sort_target and sort_order known names")
        found = [kv for kv in (self._at(k, at) for k in self._keys_in(key, range_end)) if kv]
        count = len(found)
        if count_only:
            return RangeResult((), False, count, at)
        if sort_order != "none" or sort_target != "key":
            attribute = _SORT_ATTRIBUTES[sort_target]
            found.sort(key=lambda kv: getattr(kv, attribute), reverse=sort_order == "descend")
        more = bool(limit) and count > limit
        if limit:
            found = found[:limit]
        if keys_only:
            found = [replace(kv, value=b"") for kv in found]
        return RangeResult(tuple(found), more, count, at)

    def _check_revision(self, revision: int) -> int:
        if revision < self._compact_revision:
            raise Compacted(revision, self._compact_revision)
        if revision > self._revision:
            raise FutureRevision(revision, self._revision)
        return revision

    def _keys_in(self, key: bytes, range_end: bytes | None) -> Iterator[bytes]:
        if range_end is None or range_end == b"":
            if key in self._records:
                yield key
            return
        if range_end == b"\0":
            yield from self._keys.irange(minimum=None if key == b"\0" else key)
        elif range_end > key:
            yield from self._keys.irange(key, range_end, inclusive=(True, False))

    def _at(self, key: bytes, revision: int) -> KeyValue | None:
        """The record of `key` in force at `revision`, unless that is a delete."""
        records = self._records[key]
        kv = records[-1]
        if kv.mod_revision > revision:  # an old read: search the history
            position = bisect.bisect_right(records, revision, key=_mod_revision)
            if position == 0:
                return None
            kv = records[position - 1]
        return None if kv.is_tombstone else kv

    # --- writing --------------------------------------------------------------------------

    def write(self) -> Write:
        """Start a write: its puts and deletes share one revision (see `Write`)."""
        return Write(self)

    def _append(self, kv: KeyValue) -> None:
        records = self._records.get(kv.key)
        if records is None:
            records = self._records[kv.key] = []
            self._keys.add(kv.key)
        newest = records[-1] if records else None
        if newest is not None and newest.mod_revision == kv.mod_revision:
            # Written again in the same write: the later record replaces the earlier.
            self._size -= _size(records.pop())
        was_live = newest is not None and not newest.is_tombstone
        records.append(kv)
        self._live += (not kv.is_tombstone) - was_live
        self._size += _size(kv)

    # --- compaction -----------------------------------------------------------------------

    def compact(self, revision: int) -> int:
        """Forget the history no read at `revision` or later can see; returns how many
        records were dropped.

        Raises:
            Compacted: `revision` is at or below the compact revision already.
            FutureRevision: `revision` is above the current one.
        """
        if revision <= self._compact_revision:
            raise Compacted(revision, self._compact_revision)
        self._check_revision(revision)
        dropped = 0
        for key in list(self._keys):
            records = self._records[key]
            keep = bisect.bisect_right(records, revision, key=_mod_revision) - 1
            if keep >= 0 and records[keep].is_tombstone:
                keep += 1  # a delete in force at `revision` hides everything before it
            if keep <= 0:
                continue
            for old in records[:keep]:
                self._size -= _size(old)
            dropped += keep
            del records[:keep]
            if not records:
                del self._records[key]
                self._keys.remove(key)
        self._compact_revision = revision
        return dropped

    # --- snapshots ------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """The whole state, history included, as plain values (equal states, equal values):
        ``{"revision", "compact_revision", "keys": [[key, [[value, create, mod, version,
        lease], ...]], ...]}`` sorted by key, records oldest first."""
        return {
            "revision": self._revision,
            "compact_revision": self._compact_revision,
            "keys": [
                [
                    key,
                    [
                        [r.value, r.create_revision, r.mod_revision, r.version, r.lease]
                        for r in self._records[key]
                    ],
                ]
                for key in self._keys
            ],
        }

    @classmethod
    def restore(cls, state: dict[str, Any]) -> MVCCStore:
        """A store holding what `export` produced.

        Raises:
            ValueError: `state` is not a valid export.
        """
        store = cls()
        try:
            store._revision = _positive(state["revision"])
            store._compact_revision = _positive(state["compact_revision"], zero=True)
            for key, records in state["keys"]:
                if type(key) is not bytes or not records:
                    raise ValueError("a key must be bytes with at least one record")
                for value, create, mod, version, lease in records:
                    if type(value) is not bytes or not 0 < mod <= store._revision:
                        raise ValueError(f"bad record of {key!r}")
                    if store._records.get(key) and store._records[key][-1].mod_revision >= mod:
                        raise ValueError(f"records of {key!r} out of order")
                    store._append(KeyValue(key, value, create, mod, version, lease))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an mvcc export: {exc!r}") from exc
        return store


class Write:
    """One write of an `MVCCStore`: every change it makes gets the same revision, the
    store's next, and the store moves to it at `finish` only if something changed. Reads
    inside the write (`range`) see its own changes, as etcd's transactions do."""

    def __init__(self, store: MVCCStore) -> None:
        self._store = store
        self.revision = store.revision + 1  # the revision its changes carry
        self._changed = False

    def put(self, key: bytes, value: bytes, lease: int = 0) -> KeyValue | None:
        """Set `key`; returns the previous `KeyValue` (None if it did not exist)."""
        previous = self._store.get(key)
        if previous is not None and previous.mod_revision == self.revision:
            # Written before in this very write: etcd refuses that in a transaction; here
            # the later put wins and counts as the same version step.
            earlier = self._store._records[key]
            previous = earlier[-2] if len(earlier) > 1 and not earlier[-2].is_tombstone else None
        if previous is None:
            kv = KeyValue(key, value, self.revision, self.revision, 1, lease)
        else:
            kv = KeyValue(
                key, value, previous.create_revision, self.revision, previous.version + 1, lease
            )
        self._store._append(kv)
        self._changed = True
        return previous

    def delete_range(self, key: bytes, range_end: bytes | None = None) -> list[KeyValue]:
        """Delete the keys in the range; returns what they held, in key order."""
        store = self._store
        deleted = [kv for kv in (store.get(k) for k in list(store._keys_in(key, range_end))) if kv]
        for kv in deleted:
            store._append(KeyValue(kv.key, b"", 0, self.revision, 0, 0))
        self._changed = self._changed or bool(deleted)
        return deleted

    def range(self, key: bytes, range_end: bytes | None = None, **options: Any) -> RangeResult:
        """A read that sees this write's changes (see `MVCCStore.range`)."""
        store = self._store
        if not self._changed:
            return store.range(key, range_end, **options)
        store._revision, saved = self.revision, store._revision
        try:
            return store.range(key, range_end, **options)
        finally:
            store._revision = saved

    def finish(self) -> int:
        """End the write; returns the store's revision (moved on if anything changed)."""
        if self._changed:
            self._store._revision = self.revision
        return self._store.revision


_SORT_ATTRIBUTES = {
    "key": "key",
    "version": "version",
    "create": "create_revision",
    "mod": "mod_revision",
    "value": "value",
}


def _mod_revision(kv: KeyValue) -> int:
    return kv.mod_revision


def _size(kv: KeyValue) -> int:
    return len(kv.key) + len(kv.value) + RECORD_OVERHEAD


def _positive(value: Any, *, zero: bool = False) -> int:
    if type(value) is not int or value < (0 if zero else 1):
        raise ValueError(f"expected an int >= {0 if zero else 1}, got {value!r}")
    return value
