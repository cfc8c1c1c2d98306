"""A multi-version key-value store with etcd v3's data model (issue 13's foundation).

Pure (floor L0 like `kv`): no I/O, no clock, no randomness, so every replica that applies
the same writes in the same order holds the same state (`zraft.state.machine` serves it).

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
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import replace
from typing import Any

from sortedcontainers import SortedList

from zraft.state.changelog import ChangeLog

# The store's values live in their own module; callers import them from here too.
from zraft.state.kvtypes import (
    SORT_ORDERS,
    SORT_TARGETS,
    Compacted,
    FutureRevision,
    KeyValue,
    RangeResult,
    prefix_end,
)

RECORD_OVERHEAD = 64
"""Bytes accounted per record beyond its key and value (the objects that hold it)."""

__all__ = [
    "SORT_ORDERS",
    "SORT_TARGETS",
    "Compacted",
    "FutureRevision",
    "KeyValue",
    "MVCCStore",
    "RangeResult",
    "prefix_end",
]

Record = tuple[bytes, int, int, int, int]
"""One stored record: `(value, create_revision, mod_revision, version, lease)`; version 0
is the tombstone of a delete. Plain tuples of bytes and ints, so CPython's collector
untracks them: a million keys cost the garbage collector nothing (objects of a class
would make every full collection walk all of them: a loop pause that grows with the
store)."""

_VALUE, _CREATE, _MOD, _VERSION, _LEASE = range(5)


class MVCCStore:
    """The store (see the module doc). Writes go through `write()`; reads through `range`."""

    def __init__(self) -> None:
        self._revision = 1
        self._compact_revision = 0
        # key -> its records, oldest first: a list of `Record`s (appended in place: a hot
        # key's put costs O(1) whatever its history), or the record itself when it is the
        # only one (most keys). `records_view` copies the lists for a snapshot.
        self._records: dict[bytes, Record | list[Record]] = {}
        self._keys: SortedList = SortedList()  # every key of `_records`, in byte order
        self._historied: set[bytes] = set()  # keys with more than a single live record
        # (revision, key) for every record that superseded another, in revision order:
        # what compaction may trim, so a step touches only the keys that need it.
        self._superseded: deque[tuple[int, bytes]] = deque()
        self._live = 0  # keys whose newest record is not a tombstone
        self._size = 0
        self.changes = ChangeLog(floor=1)
        """The index of recent history by revision (watches read it)."""

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
        held = self._records.get(key)
        if held is None:
            return None
        record = held if type(held[0]) is bytes else held[-1]
        return None if record[_VERSION] == 0 else _kv(key, record)  # type: ignore[arg-type]

    def history(self, key: bytes) -> tuple[KeyValue, ...]:
        """Every record `key` holds, oldest first (empty if none)."""
        return tuple(_kv(key, r) for r in _history(self._records.get(key)))

    def records(self, key: bytes) -> Sequence[Record]:
        """The records `key` holds as stored, oldest first (empty if none): no copy."""
        return _history(self._records.get(key))

    def keys_between(self, key: bytes, range_end: bytes | None) -> Iterator[bytes]:
        """Every key holding records (tombstones too) in the range, in byte order."""
        return self._keys_in(key, range_end)

    def count_between(self, key: bytes, range_end: bytes | None) -> int:
        """How many keys `keys_between` would give, in O(log n)."""
        if range_end is None or range_end == b"":
            return int(key in self._records)
        keys = self._keys
        low = 0 if range_end == b"\0" and key == b"\0" else keys.bisect_left(key)
        high = len(keys) if range_end == b"\0" else keys.bisect_left(range_end)
        return max(0, high - low)

    def leased(self) -> Iterator[tuple[bytes, int]]:
        """`(key, lease)` of every live key attached to a lease."""
        for key, held in self._records.items():
            record = held if type(held[0]) is bytes else held[-1]
            if record[_LEASE] and record[_VERSION]:  # type: ignore[index]
                yield key, record[_LEASE]  # type: ignore[misc]

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
        held = self._records[key]
        if type(held[0]) is bytes:
            record: Record = held  # type: ignore[assignment]
            if record[_MOD] > revision or not record[_VERSION]:
                return None
            return _kv(key, record)
        record = held[-1]  # type: ignore[assignment]
        if record[_MOD] > revision:  # an old read: search the history
            position = bisect.bisect_right(held, revision, key=_mod_of)  # type: ignore[arg-type]
            if position == 0:
                return None
            record = held[position - 1]  # type: ignore[assignment]
        return _kv(key, record) if record[_VERSION] else None

    # --- writing --------------------------------------------------------------------------

    def write(self) -> Write:
        """Start a write: its puts and deletes share one revision (see `Write`)."""
        return Write(self)

    def put(self, key: bytes, value: bytes, lease: int = 0) -> Record | None:
        """A write of one put (the hot path: no `Write`); returns the previous record as
        stored, or None (`kv_of` makes a `KeyValue` of it)."""
        revision = self._revision + 1
        held = self._records.get(key)
        if held is None:
            self._keys.add(key)
            self._live += 1
            self._size += len(key) + len(value) + RECORD_OVERHEAD
            self._records[key] = (value, revision, revision, 1, lease)
            self._revision = revision
            self.changes.add(revision, key)
            return None
        previous: Record = held if type(held[0]) is bytes else held[-1]  # type: ignore[assignment]
        if previous[_VERSION]:
            self._append(key, (value, previous[_CREATE], revision, previous[_VERSION] + 1, lease))
        else:
            self._append(key, (value, revision, revision, 1, lease))
            previous = None  # type: ignore[assignment]
        self._revision = revision
        return previous

    def _append(self, key: bytes, record: Record) -> None:
        held = self._records.get(key)
        if held is None:
            self._keys.add(key)
            self._live += record[_VERSION] != 0
            self._size += len(key) + len(record[_VALUE]) + RECORD_OVERHEAD
            self.changes.add(record[_MOD], key)
            if record[_VERSION]:
                self._records[key] = record
            else:
                self._records[key] = [record]
                self._historied.add(key)
            return
        single = type(held) is not list
        newest: Record = held if single else held[-1]  # type: ignore[assignment]
        self._live += (record[_VERSION] != 0) - (newest[_VERSION] != 0)
        self._size += len(key) + len(record[_VALUE]) + RECORD_OVERHEAD
        if newest[_MOD] == record[_MOD]:
            # Written again in the same write: the later record replaces the earlier.
            self._size -= len(key) + len(newest[_VALUE]) + RECORD_OVERHEAD
            if single:
                self._records[key] = record if record[_VERSION] else [record]
                if not record[_VERSION]:
                    self._historied.add(key)
            else:
                held[-1] = record  # type: ignore[index]
            return
        if single:
            self._records[key] = [newest, record]
            self._historied.add(key)
        else:
            held.append(record)  # type: ignore[union-attr]
        self._superseded.append((record[_MOD], key))
        self.changes.add(record[_MOD], key)

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
        superseded = self._superseded
        while superseded and superseded[0][0] <= revision:
            dropped += self._trim(superseded.popleft()[1], revision)
        self._compact_revision = revision
        self.changes.forget_through(revision)
        return dropped

    def _trim(self, key: bytes, revision: int) -> int:
        """Drop the records of `key` no read at `revision` or later can see."""
        records = self._records.get(key)
        if type(records) is not list:
            return 0  # trimmed already (a key is queued once per superseding record)
        # A scan, not a bisect: a step drops a record or two of a short history, and a
        # loop without key-function calls is several times cheaper here.
        keep, count = 0, len(records)
        while keep < count and records[keep][_MOD] <= revision:
            keep += 1
        keep -= 1  # the record in force at `revision`
        if keep >= 0 and not records[keep][_VERSION]:
            keep += 1  # a delete in force at `revision` hides everything before it
        if keep <= 0:
            return 0
        for old in records[:keep]:
            self._size -= len(key) + len(old[_VALUE]) + RECORD_OVERHEAD
        del records[:keep]
        if not records:
            del self._records[key]
            self._keys.remove(key)
            self._historied.discard(key)
        elif len(records) == 1 and records[0][_VERSION]:
            self._records[key] = records[0]
            self._historied.discard(key)
        return keep

    # --- snapshots ------------------------------------------------------------------------

    def export(self) -> dict[str, Any]:
        """The whole state, history included, as plain values (equal states, equal values):
        ``{"revision", "compact_revision", "keys": [[key, [[value, create, mod, version,
        lease], ...]], ...]}`` sorted by key, records oldest first."""
        return {
            "revision": self._revision,
            "compact_revision": self._compact_revision,
            "keys": [[key, [list(r) for r in _history(self._records[key])]] for key in self._keys],
        }

    @classmethod
    def restore(cls, state: dict[str, Any]) -> MVCCStore:
        """A store holding what `export` produced.

        Raises:
            ValueError: `state` is not a valid export.
        """
        try:
            return cls.from_records(state["revision"], state["compact_revision"], state["keys"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an mvcc export: {exc!r}") from exc

    def records_view(self) -> dict[bytes, Record | tuple[Record, ...]]:
        """A consistent copy of every key's records for a snapshot: one shallow dict copy
        (records are immutable tuples) and a tuple of each history (bounded by automatic
        compaction); `records_of` turns a value into the key's records."""
        view: dict[bytes, Any] = dict(self._records)
        for key in self._historied:
            view[key] = tuple(view[key])
        return view

    @classmethod
    def from_records(
        cls, revision: Any, compact_revision: Any, keys: Iterable[tuple[Any, Any]]
    ) -> MVCCStore:
        """A store from its revisions and ``(key, [[value, create, mod, version, lease],
        ...])`` pairs, records oldest first (`export`'s "keys", or a snapshot's).

        Raises:
            ValueError: anything is not a valid state.
        """
        store = cls()
        held: dict[bytes, Record | list[Record]] = {}
        superseded: list[tuple[int, bytes]] = []
        size = live = 0
        try:
            store._revision = top = _positive(revision)
            store._compact_revision = _positive(compact_revision, zero=True)
            for key, records in keys:
                if type(key) is not bytes or not records or key in held:
                    raise ValueError("a key must be bytes, once, with at least one record")
                history = []
                last_mod = 0
                for value, create, mod, version, lease in records:
                    if (
                        type(value) is not bytes
                        or type(mod) is not int
                        or not last_mod < mod <= top
                    ):
                        raise ValueError(f"bad or out-of-order record of {key!r}")
                    if not all(type(n) is int and n >= 0 for n in (create, version, lease)):
                        raise ValueError(f"bad record of {key!r}")
                    history.append((value, create, mod, version, lease))
                    last_mod = mod
                    size += len(key) + len(value) + RECORD_OVERHEAD
                newest = history[-1]
                if len(history) == 1 and newest[_VERSION]:
                    held[key] = newest
                else:
                    held[key] = history
                    store._historied.add(key)
                    superseded.extend((r[_MOD], key) for r in history[1:])
                    if not history[0][_VERSION]:
                        superseded.append((history[0][_MOD], key))
                live += newest[_VERSION] != 0
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not an mvcc state: {exc}") from exc
        store._records, store._size, store._live = held, size, live
        store._keys = SortedList(held)  # one sort, not a million inserts
        store._superseded = deque(sorted(superseded))
        store.changes = ChangeLog(floor=top)  # older history: in the records, unindexed
        return store


def records_of(held: Record | Sequence[Record]) -> Sequence[Record]:
    """A key's records (from the store or a `records_view`), oldest first."""
    return (held,) if type(held[0]) is bytes else held  # type: ignore[return-value]


def _history(held: Record | Sequence[Record] | None) -> Sequence[Record]:
    return () if held is None else records_of(held)


def kv_of(key: bytes, record: Record) -> KeyValue:
    """The `KeyValue` of `key`'s stored `record`."""
    return KeyValue(key, record[0], record[1], record[2], record[3], record[4])


_kv = kv_of


def _mod_of(record: Record) -> int:
    return record[_MOD]


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
        previous = self.put_record(key, value, lease)
        return None if previous is None else _kv(key, previous)

    def put_record(self, key: bytes, value: bytes, lease: int = 0) -> Record | None:
        """`put`, returning the previous record as stored (the hot path of a plain put)."""
        store, revision = self._store, self.revision
        held = store._records.get(key)
        previous: Record | None = None
        if held is not None:
            history = records_of(held)
            previous = history[-1]
            if previous[_MOD] == revision:
                # Written before in this very write: etcd refuses that in a transaction;
                # here the later put wins and counts as the same version step.
                previous = history[-2] if len(history) > 1 else None
            if previous is not None and not previous[_VERSION]:
                previous = None
        if previous is None:
            store._append(key, (value, revision, revision, 1, lease))
        else:
            record = (value, previous[_CREATE], revision, previous[_VERSION] + 1, lease)
            store._append(key, record)
        self._changed = True
        return previous

    def delete_range(self, key: bytes, range_end: bytes | None = None) -> list[KeyValue]:
        """Delete the keys in the range; returns what they held, in key order."""
        store = self._store
        deleted = [kv for kv in (store.get(k) for k in list(store._keys_in(key, range_end))) if kv]
        for kv in deleted:
            store._append(kv.key, (b"", 0, self.revision, 0, 0))
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


def _positive(value: Any, *, zero: bool = False) -> int:
    if type(value) is not int or value < (0 if zero else 1):
        raise ValueError(f"expected an int >= {0 if zero else 1}, got {value!r}")
    return value
