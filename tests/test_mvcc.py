"""The multi-version store (`zraft.state.mvcc`): revisions, versions, ranges at any
revision, compaction boundaries, snapshots and determinism (layer 1: pure units)."""

from __future__ import annotations

import random

import pytest

from zraft.state.mvcc import (
    Compacted,
    FutureRevision,
    KeyValue,
    MVCCStore,
    kv_of,
    prefix_end,
)


def put(store: MVCCStore, key: bytes, value: bytes, lease: int = 0) -> int:
    write = store.write()
    write.put(key, value, lease)
    return write.finish()


def delete(store: MVCCStore, key: bytes, range_end: bytes | None = None) -> int:
    write = store.write()
    write.delete_range(key, range_end)
    return write.finish()


def keys(result: object) -> list[bytes]:
    return [kv.key for kv in result.kvs]  # type: ignore[attr-defined]


def test_revisions_move_by_one_per_changing_write() -> None:
    store = MVCCStore()
    assert store.revision == 1
    assert put(store, b"a", b"1") == 2
    assert put(store, b"a", b"2") == 3
    assert delete(store, b"missing") == 3, "a delete of nothing changes nothing"
    write = store.write()
    write.put(b"b", b"x")
    write.put(b"c", b"y")
    assert write.delete_range(b"a") == [KeyValue(b"a", b"2", 2, 3, 2)]
    assert write.finish() == 4, "one write, one revision for all its changes"
    assert [kv.mod_revision for kv in store.range(b"a", b"\0").kvs] == [4, 4]
    assert store.write().finish() == 4, "an empty write does not move the revision"


def test_versions_and_create_revision_restart_after_a_delete() -> None:
    store = MVCCStore()
    put(store, b"k", b"1")
    put(store, b"k", b"2", lease=7)
    assert store.get(b"k") == KeyValue(b"k", b"2", 2, 3, 2, 7)
    delete(store, b"k")
    assert store.get(b"k") is None and len(store) == 0
    put(store, b"k", b"3")
    assert store.get(b"k") == KeyValue(b"k", b"3", 5, 5, 1, 0)


@pytest.mark.parametrize(
    ("key", "range_end", "want"),
    [
        (b"b", None, [b"b"]),
        (b"x", None, []),
        (b"b", b"d", [b"b", b"ba", b"c"]),
        (b"b", prefix_end(b"b"), [b"b", b"ba"]),
        (b"b", b"\0", [b"b", b"ba", b"c", b"d", b"\xff"]),
        (b"\0", b"\0", [b"a", b"b", b"ba", b"c", b"d", b"\xff"]),
        (b"d", b"b", []),  # range_end before key: empty, not an error
        (b"c", b"c", []),
    ],
)
def test_range_conventions(key: bytes, range_end: bytes | None, want: list[bytes]) -> None:
    store = MVCCStore()
    for name in (b"a", b"b", b"ba", b"c", b"d", b"\xff"):
        put(store, name, b"v-" + name)
    result = store.range(key, range_end)
    assert keys(result) == want and result.count == len(want) and not result.more


def test_prefix_end() -> None:
    assert prefix_end(b"ab") == b"ac"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


def test_limit_more_count_sort_and_projections() -> None:
    store = MVCCStore()
    for i, name in enumerate((b"k3", b"k1", b"k2")):
        put(store, name, bytes([ord("z") - i]))
    put(store, b"k1", b"again")
    result = store.range(b"k", prefix_end(b"k"), limit=2)
    assert (keys(result), result.more, result.count) == ([b"k1", b"k2"], True, 3)
    by_mod = store.range(b"k", prefix_end(b"k"), sort_target="mod", sort_order="descend")
    assert keys(by_mod) == [b"k1", b"k2", b"k3"]
    by_version = store.range(b"k", prefix_end(b"k"), sort_target="version", sort_order="ascend")
    assert [kv.version for kv in by_version.kvs] == [1, 1, 2]
    assert all(kv.value == b"" for kv in store.range(b"k", b"l", keys_only=True).kvs)
    counted = store.range(b"k", b"l", count_only=True)
    assert (counted.kvs, counted.count) == ((), 3)
    with pytest.raises(ValueError):
        store.range(b"k", b"l", sort_target="size")


def test_reads_at_past_revisions() -> None:
    store = MVCCStore()
    put(store, b"a", b"1")  # 2
    put(store, b"b", b"1")  # 3
    put(store, b"a", b"2")  # 4
    delete(store, b"b")  # 5
    assert [kv.value for kv in store.range(b"a", b"c", revision=3).kvs] == [b"1", b"1"]
    assert keys(store.range(b"a", b"c", revision=2)) == [b"a"]
    assert keys(store.range(b"a", b"c", revision=1)) == []
    assert keys(store.range(b"a", b"c")) == [b"a"]
    assert store.range(b"a", revision=4).kvs[0].version == 2
    with pytest.raises(FutureRevision) as future:
        store.range(b"a", revision=6)
    assert future.value.current == 5


def test_compaction_boundaries() -> None:
    store = MVCCStore()
    put(store, b"a", b"1")  # 2
    put(store, b"a", b"2")  # 3
    put(store, b"b", b"1")  # 4
    delete(store, b"b")  # 5
    put(store, b"a", b"3")  # 6
    size_before = store.size_bytes
    assert store.compact(5) == 3  # a@2 (a@3 is in force at 5), b@4 and its tombstone
    assert store.size_bytes < size_before
    assert store.compact_revision == 5
    assert [kv.value for kv in store.range(b"a", revision=5).kvs] == [b"2"], "at the compact rev"
    assert keys(store.range(b"b", revision=5)) == []
    with pytest.raises(Compacted) as compacted:
        store.range(b"a", revision=4)
    assert compacted.value.compact_revision == 5
    with pytest.raises(Compacted):
        store.compact(5)
    with pytest.raises(FutureRevision):
        store.compact(7)
    assert store.export()["keys"] == [[b"a", [[b"2", 2, 3, 2, 0], [b"3", 2, 6, 3, 0]]]]


def test_reads_inside_a_write_see_its_changes() -> None:
    store = MVCCStore()
    put(store, b"a", b"1")
    write = store.write()
    assert keys(write.range(b"a", b"z")) == [b"a"]
    write.put(b"b", b"2")
    assert keys(write.range(b"a", b"z")) == [b"a", b"b"]
    assert store.revision == 2, "the store moves only at finish"
    assert write.finish() == 3


def test_a_key_put_twice_in_one_write_is_one_version_step() -> None:
    store = MVCCStore()
    put(store, b"k", b"1")
    write = store.write()
    assert write.put(b"k", b"2") == KeyValue(b"k", b"1", 2, 2, 1)
    assert write.put(b"k", b"3") == KeyValue(b"k", b"1", 2, 2, 1), "prev is before the write"
    write.finish()
    assert store.get(b"k") == KeyValue(b"k", b"3", 2, 3, 2)
    assert len(store.export()["keys"][0][1]) == 2


def test_snapshot_round_trip_and_refusals() -> None:
    store = MVCCStore()
    put(store, b"a", b"1")
    put(store, b"b", b"2", lease=3)
    delete(store, b"a")
    copy = MVCCStore.restore(store.export())
    assert copy.export() == store.export()
    assert (copy.revision, len(copy), copy.size_bytes) == (4, 1, store.size_bytes)
    for broken in (
        {},
        {"revision": 0, "compact_revision": 0, "keys": []},
        {"revision": 2, "compact_revision": 0, "keys": [["a", [[b"v", 2, 2, 1, 0]]]]},
        {"revision": 2, "compact_revision": 0, "keys": [[b"a", [[b"v", 2, 3, 1, 0]]]]},
        {"revision": 3, "compact_revision": 0, "keys": [[b"a", [[b"v", 2, 3, 1, 0]] * 2]]},
    ):
        with pytest.raises(ValueError):
            MVCCStore.restore(broken)


def test_same_writes_same_state() -> None:
    """Determinism: two stores fed the same random writes export the same state, and a
    read at every revision equals a replay of the writes up to it."""
    rng = random.Random(7)
    writes = []
    for _ in range(300):
        key = b"k%d" % rng.randrange(12)
        writes.append((key, b"v%d" % rng.randrange(1000) if rng.random() < 0.6 else None))
    stores = (MVCCStore(), MVCCStore())
    truth: dict[int, dict[bytes, bytes]] = {1: {}}
    model: dict[bytes, bytes] = {}
    for key, value in writes:
        for store in stores:
            write = store.write()
            if value is not None:
                write.put(key, value)
            else:
                write.delete_range(key, prefix_end(b"k1"))
            revision = write.finish()
        if value is not None:
            model[key] = value
        else:
            end = prefix_end(b"k1")
            model = {k: v for k, v in model.items() if not key <= k < end}
        truth[revision] = dict(model)
    assert stores[0].export() == stores[1].export()
    for revision, expected in truth.items():
        seen = {kv.key: kv.value for kv in stores[0].range(b"\0", b"\0", revision=revision).kvs}
        assert seen == expected, revision


def test_the_fast_put_is_a_one_put_write() -> None:
    """`MVCCStore.put` (the hot path) leaves exactly the state a `Write` of one put does."""
    import random

    rng = random.Random(7)
    fast, slow = MVCCStore(), MVCCStore()
    for _ in range(500):
        key, roll = b"k%d" % rng.randrange(20), rng.random()
        if roll < 0.7:
            value, lease = rng.randbytes(3), rng.choice([0, 5])
            previous = fast.put(key, value, lease)
            change = slow.write()
            expected = change.put(key, value, lease)
            change.finish()
            assert (None if previous is None else kv_of(key, previous)) == expected
        elif roll < 0.9:
            for store in (fast, slow):
                change = store.write()
                change.delete_range(key)
                change.finish()
        elif fast.compact_revision < fast.revision:
            target = max(fast.compact_revision + 1, fast.revision - rng.randrange(5))
            for store in (fast, slow):
                store.compact(target)
        assert fast.export() == slow.export() and fast.size_bytes == slow.size_bytes
