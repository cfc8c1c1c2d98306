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
from collections.abc import Iterable, Iterator
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
        # key -> its records, oldest first: a tuple, or the record itself when it is the
        # only one (most keys: saves a tuple per key). Never mutated in place, so a
        # shallow copy of the dict is a consistent snapshot (`records_view`).
        self._records: dict[bytes, KeyValue | tuple[KeyValue, ...]] = {}
        self._keys: SortedList = SortedList()  # every key of `_records`, in byte order
        self._historied: set[bytes] = set()  # keys with more than a single live record
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
        if records is None:
            return None
        kv = records if type(records) is KeyValue else records[-1]
        return None if kv.is_tombstone else kv

    def history(self, key: bytes) -> tuple[KeyValue, ...]:
        """Every record `key` holds, oldest first (empty if none)."""
        held = self._records.get(key)
        if held is None:
            return ()
        return (held,) if type(held) is KeyValue else held

    def leased(self) -> Iterator[tuple[bytes, int]]:
        """`(key, lease)` of every live key attached to a lease."""
        for key, held in self._records.items():
            kv = held if type(held) is KeyValue else held[-1]
            if kv.lease and not kv.is_tombstone:
                yield key, kv.lease

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
        if type(records) is KeyValue:
            kv = records
            if kv.mod_revision > revision:
                return None
            return None if kv.is_tombstone else kv
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
        key = kv.key
        held = self._records.get(key)
        if held is None:
            self._keys.add(key)
            history: tuple[KeyValue, ...] = ()
        else:
            history = (held,) if type(held) is KeyValue else held
        newest = history[-1] if history else None
        if newest is not None and newest.mod_revision == kv.mod_revision:
            # Written again in the same write: the later record replaces the earlier.
            self._size -= _size(newest)
            history = history[:-1]
        was_live = newest is not None and not newest.is_tombstone
        if history or kv.is_tombstone:
            self._records[key] = (*history, kv)
            self._historied.add(key)
        else:
            self._records[key] = kv
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
        # Only keys with history can lose records: a key's single live record is the one
        # in force at any revision since its creation.
        for key in list(self._historied):
            records = self._records[key]
            assert type(records) is tuple
            keep = bisect.bisect_right(records, revision, key=_mod_revision) - 1
            if keep >= 0 and records[keep].is_tombstone:
                keep += 1  # a delete in force at `revision` hides everything before it
            if keep <= 0:
                continue
            for old in records[:keep]:
                self._size -= _size(old)
            dropped += keep
            rest = records[keep:]
            if not rest:
                del self._records[key]
                self._keys.remove(key)
                self._historied.discard(key)
            elif len(rest) == 1 and not rest[0].is_tombstone:
                self._records[key] = rest[0]
                self._historied.discard(key)
            else:
                self._records[key] = rest
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
                        for r in self.history(key)
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
        try:
            return cls.from_records(state["revision"], state["compact_revision"], state["keys"])
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not an mvcc export: {exc!r}") from exc

    def records_view(self) -> dict[bytes, KeyValue | tuple[KeyValue, ...]]:
        """A consistent copy of every key's records for a snapshot (one shallow dict copy:
        records are immutable; `history` tells what a value stands for)."""
        return dict(self._records)

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
        held: dict[bytes, KeyValue | tuple[KeyValue, ...]] = {}
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
                    history.append(KeyValue(key, value, create, mod, version, lease))
                    last_mod = mod
                    store._size += len(key) + len(value) + RECORD_OVERHEAD
                newest = history[-1]
                if len(history) == 1 and not newest.is_tombstone:
                    held[key] = newest
                else:
                    held[key] = tuple(history)
                    store._historied.add(key)
                store._live += not newest.is_tombstone
        except (TypeError, ValueError) as exc:
            raise ValueError(f"not an mvcc state: {exc}") from exc
        store._records = held
        store._keys = SortedList(held)  # one sort, not a million inserts
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
            earlier = self._store.history(key)
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
