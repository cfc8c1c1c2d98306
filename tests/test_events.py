"""The events of a watch, from the store's history: `zraft.state.events` and the change log.

A seeded random history of puts, deletes, range deletes, multi-key writes and compactions
is replayed while the test keeps its own list of what each revision changed; every lookup
(random ranges, start revisions, limits and filters; through the change log and through
the key scan) must give exactly that list's changes, in order, revisions never split.
"""

from __future__ import annotations

import random

import pytest

from zraft.state import events
from zraft.state.changelog import ChangeLog
from zraft.state.events import find_events, in_range
from zraft.state.mvcc import MVCCStore, prefix_end

KEYS = [f"k{i}".encode() for i in range(12)] + [b"a", b"b/1", b"b/2", b"b/3"]


def _history(seed: int, writes: int = 400) -> tuple[MVCCStore, dict[int, dict[bytes, str]]]:
    """A store after `writes` random writes, and what each revision changed (key -> kind)."""
    rng = random.Random(seed)
    store = MVCCStore()
    changed: dict[int, dict[bytes, str]] = {}
    for n in range(writes):
        write = store.write()
        kinds: dict[bytes, str] = {}
        for _ in range(rng.choice((1, 1, 1, 2, 3))):
            key = rng.choice(KEYS)
            roll = rng.random()
            if roll < 0.6:
                write.put(key, f"v{n}".encode())
                kinds[key] = "put"
            elif roll < 0.85:
                for kv in write.delete_range(key):
                    kinds[kv.key] = "delete"
            else:
                for kv in write.delete_range(b"b/", prefix_end(b"b/")):
                    kinds[kv.key] = "delete"
        before = store.revision
        if write.finish() > before:
            changed[store.revision] = kinds
        if rng.random() < 0.02 and store.revision > 2:
            store.compact(rng.randrange(store.compact_revision + 1, store.revision + 1))
    return store, changed


def _expected(
    changed: dict[int, dict[bytes, str]], key: bytes, end: bytes | None, start: int
) -> list[tuple[int, bytes, str]]:
    return [
        (revision, k, kinds[k])
        for revision, kinds in sorted(changed.items())
        if revision >= start
        for k in sorted(kinds)
        if in_range(k, key, end)
    ]


RANGES = [
    (b"k3", None),
    (b"b/", prefix_end(b"b/")),
    (b"k1", b"k5"),
    (b"k5", b"\0"),
    (b"\0", b"\0"),
    (b"zzz", None),
]


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_every_lookup_finds_exactly_the_changes_in_order(seed: int) -> None:
    store, changed = _history(seed)
    rng = random.Random(seed)
    floor = store.compact_revision + 1
    for key, end in RANGES:
        for start in sorted(
            {floor, floor + 1, store.revision, store.revision + 1}
            | {rng.randrange(floor, store.revision + 2) for _ in range(8)}
        ):
            want = _expected(changed, key, end, start)
            found = find_events(store, key, end, start, max_events=10_000)
            got = [(c.revision, c.key, c.kind) for c in found.changes]
            assert got == want, (key, end, start)
            assert found.next_revision == max(start, store.revision + 1)
            # Both ways of looking agree (the log covers every start above the compaction).
            by_log = [
                c
                for _, g in events._by_revision(store, store.changes.since(start), key, end)
                for c in g
            ]
            by_key = [c for _, g in events._by_key(store, key, end, start) for c in g]
            assert by_log == by_key == list(found.changes)


def test_max_events_cuts_only_between_revisions() -> None:
    store, changed = _history(4, writes=300)
    start = store.compact_revision + 1
    everything = _expected(changed, b"\0", b"\0", start)
    for limit in (1, 2, 3, 5, 17):
        delivered: list[tuple[int, bytes, str]] = []
        at = start
        while at <= store.revision:
            found = find_events(store, b"\0", b"\0", at, max_events=limit)
            batch = [(c.revision, c.key, c.kind) for c in found.changes]
            assert batch, "a look from a revision below the current one finds something"
            revisions = [r for r, _, _ in batch]
            # Whole revisions: the next look starts right after the last one delivered.
            assert found.next_revision in (revisions[-1] + 1, store.revision + 1)
            if len(set(revisions)) > 1:
                assert len([r for r in revisions if r != revisions[-1]]) < limit
            delivered += batch
            at = found.next_revision
        assert delivered == everything


def test_filters_drop_a_kind_and_still_advance() -> None:
    store = MVCCStore()
    store.put(b"k", b"1")
    write = store.write()
    write.delete_range(b"k")
    write.finish()
    store.put(b"k", b"2")
    puts = find_events(store, b"k", None, 2, max_events=10, no_delete=True)
    assert [(c.revision, c.kind) for c in puts.changes] == [(2, "put"), (4, "put")]
    deletes = find_events(store, b"k", None, 2, max_events=10, no_put=True)
    assert [(c.revision, c.kind) for c in deletes.changes] == [(3, "delete")]
    assert puts.next_revision == deletes.next_revision == 5


def test_event_maps_carry_the_record_and_what_it_replaced() -> None:
    store = MVCCStore()
    store.put(b"k", b"one", lease=7)
    store.put(b"k", b"two")
    write = store.write()
    write.delete_range(b"k")
    write.finish()
    found = find_events(store, b"k", None, 3, max_events=10)
    put, delete = (events.event_map(c, prev_kv=True) for c in found.changes)
    assert put == {
        "type": "put",
        "kv": {
            "key": b"k",
            "value": b"two",
            "create_revision": 2,
            "mod_revision": 3,
            "version": 2,
            "lease": 0,
        },
        "prev_kv": {
            "key": b"k",
            "value": b"one",
            "create_revision": 2,
            "mod_revision": 2,
            "version": 1,
            "lease": 7,
        },
    }
    assert delete["type"] == "delete"
    assert delete["kv"]["mod_revision"] == 4 and delete["kv"]["version"] == 0
    assert delete["prev_kv"]["value"] == b"two"
    assert "prev_kv" not in events.event_map(found.changes[0], prev_kv=False)
    # A key re-created after a delete has no prev_kv (nothing was there).
    store.put(b"k", b"three")
    again = find_events(store, b"k", None, 5, max_events=10).changes[0]
    assert "prev_kv" not in events.event_map(again, prev_kv=True)


def test_the_change_log_is_bounded_and_drops_whole_revisions() -> None:
    log = ChangeLog(floor=1, limit=5)
    for revision, keys in ((2, [b"a"]), (3, [b"a", b"b", b"c"]), (4, [b"a", b"b"]), (5, [b"d"])):
        for key in keys:
            log.add(revision, key)
    # 7 entries > 5: revision 2, then 3, dropped whole.
    assert log.floor == 3 and not log.covers(3) and log.covers(4)
    assert list(log.since(4)) == [(4, b"a"), (4, b"b"), (5, b"d")]
    log.forget_through(4)
    assert list(log.since(0)) == [(5, b"d")] and len(log) == 1
    # One revision larger than the limit: the log gives it up instead of growing.
    for n in range(20):
        log.add(6, bytes([n]))
    log.add(7, b"x")
    assert len(log) <= 5 and log.floor >= 6 and list(log.since(7)) == [(7, b"x")]


def test_a_small_change_log_falls_back_to_the_key_scan() -> None:
    store, changed = _history(5, writes=300)
    store.changes = ChangeLog(floor=store.revision - 10, limit=50)  # covers only the tail
    start = store.compact_revision + 1
    found = find_events(store, b"\0", b"\0", start, max_events=10_000)
    assert [(c.revision, c.key, c.kind) for c in found.changes] == _expected(
        changed, b"\0", b"\0", start
    )


def test_a_restored_store_finds_the_history_it_was_given() -> None:
    store, _ = _history(6, writes=200)
    restored = MVCCStore.restore(store.export())
    start = store.compact_revision + 1
    assert not restored.changes.covers(start)
    assert find_events(restored, b"\0", b"\0", start, max_events=10_000) == find_events(
        store, b"\0", b"\0", start, max_events=10_000
    )
    restored.put(b"new", b"1")
    tail = find_events(restored, b"\0", b"\0", restored.revision, max_events=10)
    assert [(c.revision, c.key) for c in tail.changes] == [(restored.revision, b"new")]
