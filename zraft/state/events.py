"""The events a watch delivers: every change of a key range at or after a revision.

An *event* is one key's change at one revision: a `put` (the key's new record) or a
`delete` (its tombstone), with the record it replaced (`prev_kv`) when asked. Events
come oldest first; within one revision (one write: a transaction, a lease's revocation,
a delete of a range), in key order. A reply never splits a revision: `max_events` is
reached only at a revision boundary, so one revision's events may exceed it.

`find_events` reads them from the store's history: through the change log
(`zraft.state.changelog`) when it covers the start and is the shorter way, else by
scanning the keys of the range. Both read the same records, so they find the same
events. Pure (floor L0): no I/O, no clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from zraft.state.execute import kv_map
from zraft.state.mvcc import MVCCStore, Record, kv_of

_MOD, _VERSION = 2, 3  # positions in a `Record`

PUT, DELETE = "put", "delete"


@dataclass(frozen=True, slots=True)
class Change:
    """One key's change at one revision: its record there, and the one before (if any)."""

    revision: int
    key: bytes
    record: Record
    previous: Record | None

    @property
    def kind(self) -> str:
        """`put` or `delete`."""
        return PUT if self.record[_VERSION] else DELETE


@dataclass(frozen=True, slots=True)
class Found:
    """What `find_events` found: the `changes`, and `next_revision`, where the next look
    starts (every change in the range below it has been delivered or filtered out)."""

    changes: tuple[Change, ...]
    next_revision: int


def in_range(key: bytes, start: bytes, end: bytes | None) -> bool:
    """Whether `key` is in the range (the store's convention: None one key, `\\0` to the
    end, and with `start == \\0` every key)."""
    if end is None or end == b"":
        return key == start
    if end == b"\0":
        return start == b"\0" or key >= start
    return start <= key < end


def find_events(
    store: MVCCStore,
    key: bytes,
    range_end: bytes | None,
    start: int,
    *,
    max_events: int,
    no_put: bool = False,
    no_delete: bool = False,
) -> Found:
    """The changes in the range at revisions >= `start` (> the compact revision: the
    caller checks), oldest first, cut after `max_events` at a revision boundary."""
    current = store.revision
    if start > current:
        return Found((), start)
    log = store.changes
    if log.covers(start) and log.count_since(start) <= store.count_between(key, range_end):
        found = _by_revision(store, log.since(start), key, range_end)
    else:
        found = _by_key(store, key, range_end, start)
    changes: list[Change] = []
    for revision, group in found:
        if len(changes) >= max_events:
            return Found(tuple(changes), revision)
        changes.extend(
            change for change in group if not (no_put if change.record[_VERSION] else no_delete)
        )
    return Found(tuple(changes), current + 1)


def _by_revision(
    store: MVCCStore, logged: Iterator[tuple[int, bytes]], key: bytes, range_end: bytes | None
) -> Iterator[tuple[int, list[Change]]]:
    """Each revision's changes in the range, from the change log."""
    group: list[Change] = []
    at = 0
    for revision, changed in logged:
        if revision != at and group:
            group.sort(key=_key_of)
            yield at, group
            group = []
        at = revision
        if in_range(changed, key, range_end):
            group.append(_change_at(store, changed, revision))
    if group:
        group.sort(key=_key_of)
        yield at, group


def _by_key(
    store: MVCCStore, key: bytes, range_end: bytes | None, start: int
) -> Iterator[tuple[int, list[Change]]]:
    """Each revision's changes in the range, from the records of every key in it."""
    changes = []
    for held in store.keys_between(key, range_end):
        records = store.records(held)
        position = len(records) - 1
        while position >= 0 and records[position][_MOD] >= start:
            previous = records[position - 1] if position else None
            record = records[position]
            changes.append(Change(record[_MOD], held, record, previous))
            position -= 1
    changes.sort(key=_order)
    group: list[Change] = []
    for change in changes:
        if group and group[0].revision != change.revision:
            yield group[0].revision, group
            group = []
        group.append(change)
    if group:
        yield group[0].revision, group


def _change_at(store: MVCCStore, key: bytes, revision: int) -> Change:
    records = store.records(key)
    position = len(records) - 1
    while position >= 0 and records[position][_MOD] != revision:  # recent: near the end
        position -= 1
    if position < 0:  # our own bug: the log and the records disagree
        raise RuntimeError(f"the change log names revision {revision} of {key!r}, not held")
    previous = records[position - 1] if position else None
    return Change(revision, key, records[position], previous)


def _key_of(change: Change) -> bytes:
    return change.key


def _order(change: Change) -> tuple[int, bytes]:
    return change.revision, change.key


def event_map(change: Change, prev_kv: bool) -> dict[str, Any]:
    """An event as the wire carries it: `{type, kv[, prev_kv]}`. A delete's `kv` is the
    tombstone: the key, `mod_revision` the delete's revision, the rest 0 or empty."""
    event: dict[str, Any] = {"type": change.kind, "kv": kv_map(kv_of(change.key, change.record))}
    previous = change.previous
    if prev_kv and previous is not None and previous[_VERSION]:
        event["prev_kv"] = kv_map(kv_of(change.key, previous))
    return event
