"""Unit tests of the pure kv state machine: operations, sessions, snapshots, ordering."""

from __future__ import annotations

import pytest

from zraft.state.kv import (
    BAD_REQUEST,
    CAS_FAILED,
    Cas,
    Command,
    Delete,
    KVStore,
    Op,
    Put,
    Result,
)


def apply_all(store: KVStore, ops: list[Op | Command], start: int = 1) -> list[Result]:
    """Apply `ops` at consecutive indexes from `start`; bare ops get no session."""
    results = []
    for offset, item in enumerate(ops):
        command = item if isinstance(item, Command) else Command(item)
        results.append(store.apply(start + offset, command))
    return results


# --- operations -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("setup", "op", "want", "final"),
    [
        # put
        ([], Put(b"k", b"v"), Result(ok=True, index=1, found=False), b"v"),
        ([Put(b"k", b"a")], Put(b"k", b"b"), Result(ok=True, index=2, found=True), b"b"),
        # delete, present and absent (idempotent)
        ([Put(b"k", b"a")], Delete(b"k"), Result(ok=True, index=2, found=True), None),
        ([], Delete(b"k"), Result(ok=True, index=1, found=False), None),
        # cas with expected None: create only if absent
        ([], Cas(b"k", None, b"v"), Result(ok=True, index=1, found=False), b"v"),
        (
            [Put(b"k", b"a")],
            Cas(b"k", None, b"v"),
            Result(
                ok=False,
                index=2,
                value=b"a",
                found=True,
                error=CAS_FAILED,
                message="key is present",
            ),
            b"a",
        ),
        # cas with a value: swap only on a match
        ([Put(b"k", b"a")], Cas(b"k", b"a", b"b"), Result(ok=True, index=2, found=True), b"b"),
        (
            [Put(b"k", b"a")],
            Cas(b"k", b"x", b"b"),
            Result(
                ok=False,
                index=2,
                value=b"a",
                found=True,
                error=CAS_FAILED,
                message="current value differs",
            ),
            b"a",
        ),
        (
            [],
            Cas(b"k", b"a", b"b"),
            Result(
                ok=False,
                index=1,
                value=None,
                found=False,
                error=CAS_FAILED,
                message="current value differs",
            ),
            None,
        ),
        # an empty value is a value, not absence
        ([Put(b"k", b"")], Cas(b"k", None, b"v"), None, b""),
        ([Put(b"k", b"")], Cas(b"k", b"", b"v"), Result(ok=True, index=2, found=True), b"v"),
    ],
)
def test_operations(setup: list[Op], op: Op, want: Result | None, final: bytes | None) -> None:
    store = KVStore()
    apply_all(store, setup)
    result = store.apply(len(setup) + 1, Command(op))
    if want is not None:
        assert result == want
    assert store.get(b"k") == final
    assert store.applied_index == len(setup) + 1


def test_len_counts_keys() -> None:
    store = KVStore()
    apply_all(store, [Put(b"a", b"1"), Put(b"b", b"2"), Put(b"a", b"3"), Delete(b"b")])
    assert len(store) == 1
    assert store.get(b"a") == b"3"


def test_apply_is_deterministic() -> None:
    ops: list[Op | Command] = [
        Put(b"a", b"1"),
        Command(Cas(b"a", b"1", b"2"), "c1", 1),
        Command(Put(b"b", b"x"), "c2", 5),
        Command(Cas(b"a", b"1", b"3"), "c1", 1),  # duplicate
        Delete(b"b"),
        Command(Put(b"b", b"y"), "c2", 4),  # stale
    ]
    one, two = KVStore(max_sessions=1), KVStore(max_sessions=1)
    assert apply_all(one, ops) == apply_all(two, ops)
    assert one.snapshot_items() == two.snapshot_items()


# --- ordering ---------------------------------------------------------------------------


@pytest.mark.parametrize("index", [0, 5, 4, -1])
def test_apply_with_non_increasing_index_raises(index: int) -> None:
    store = KVStore()
    store.apply(5, Command(Put(b"k", b"v")))
    with pytest.raises(ValueError, match="out of order"):
        store.apply(index, Command(Put(b"k", b"w")))
    assert store.get(b"k") == b"v"
    assert store.applied_index == 5


def test_skip_advances_applied_index_only() -> None:
    store = KVStore()
    store.skip(1)
    store.apply(2, Command(Put(b"k", b"v")))
    store.skip(3)
    assert store.applied_index == 3
    assert len(store) == 1
    with pytest.raises(ValueError):
        store.skip(3)


# --- sessions ---------------------------------------------------------------------------


def test_duplicate_put_returns_first_result_and_does_not_reapply() -> None:
    store = KVStore()
    first = store.apply(1, Command(Put(b"k", b"a"), "c1", 1))
    store.apply(2, Command(Put(b"k", b"b"), "c2", 1))  # another client writes in between
    again = store.apply(3, Command(Put(b"k", b"a"), "c1", 1))  # c1 retries
    assert again == first
    assert again.index == 1
    assert store.get(b"k") == b"b"  # the retry did not overwrite the later write
    assert store.applied_index == 3


def test_duplicate_cas_returns_first_success_even_though_it_would_now_fail() -> None:
    store = KVStore()
    store.apply(1, Command(Put(b"k", b"a")))
    first = store.apply(2, Command(Cas(b"k", b"a", b"b"), "c1", 7))
    assert first.ok
    # Re-applied, this cas would fail (k is b"b" now); the session answers the first result.
    assert store.apply(3, Command(Cas(b"k", b"a", b"b"), "c1", 7)) == first
    assert store.get(b"k") == b"b"


def test_duplicate_failed_cas_returns_the_value_of_the_first_attempt() -> None:
    store = KVStore()
    store.apply(1, Command(Put(b"k", b"a")))
    first = store.apply(2, Command(Cas(b"k", b"x", b"b"), "c1", 1))
    store.apply(3, Command(Put(b"k", b"z")))
    assert store.apply(4, Command(Cas(b"k", b"x", b"b"), "c1", 1)) == first
    assert first.value == b"a"


def test_stale_seq_is_rejected_without_applying() -> None:
    store = KVStore()
    store.apply(1, Command(Put(b"k", b"a"), "c1", 5))
    result = store.apply(2, Command(Put(b"k", b"b"), "c1", 4))
    assert not result.ok
    assert result.error == BAD_REQUEST
    assert result.message is not None and "stale" in result.message
    assert result.index == 2
    assert store.get(b"k") == b"a"


def test_higher_seq_is_applied_and_seq_gaps_are_fine() -> None:
    store = KVStore()
    store.apply(1, Command(Put(b"k", b"a"), "c1", 1))
    result = store.apply(2, Command(Put(b"k", b"b"), "c1", 10))
    assert result == Result(ok=True, index=2, found=True)
    assert store.get(b"k") == b"b"


def test_writes_without_session_are_always_applied() -> None:
    store = KVStore()
    apply_all(store, [Put(b"k", b"a"), Put(b"k", b"a")])
    assert store.session_count == 0


def test_sessions_are_per_client() -> None:
    store = KVStore()
    store.apply(1, Command(Put(b"a", b"1"), "c1", 1))
    result = store.apply(2, Command(Put(b"b", b"1"), "c2", 1))  # same seq, other client
    assert result.index == 2
    assert store.get(b"b") == b"1"


def test_eviction_drops_least_recently_used_deterministically() -> None:
    store = KVStore(max_sessions=2)
    store.apply(1, Command(Put(b"k", b"1"), "c1", 1))
    store.apply(2, Command(Put(b"k", b"2"), "c2", 1))
    store.apply(3, Command(Put(b"k", b"1"), "c1", 1))  # duplicate: refreshes c1
    store.apply(4, Command(Put(b"k", b"3"), "c3", 1))  # evicts c2, the least recent
    assert [store.has_session(c) for c in ("c1", "c2", "c3")] == [True, False, True]
    assert store.session_count == 2
    # An evicted client's retry is applied again: the documented limit of bounded sessions.
    assert store.apply(5, Command(Put(b"k", b"2"), "c2", 1)).index == 5
    assert not store.has_session("c1")


def test_stale_request_does_not_refresh_session() -> None:
    store = KVStore(max_sessions=2)
    store.apply(1, Command(Put(b"k", b"1"), "c1", 5))
    store.apply(2, Command(Put(b"k", b"2"), "c2", 1))
    store.apply(3, Command(Put(b"k", b"x"), "c1", 1))  # stale: c1 stays least recent
    store.apply(4, Command(Put(b"k", b"3"), "c3", 1))
    assert [store.has_session(c) for c in ("c1", "c2", "c3")] == [False, True, True]


@pytest.mark.parametrize(
    ("client", "seq"),
    [("c", None), (None, 1), ("", 1), ("c", -1)],
)
def test_command_rejects_half_or_bad_sessions(client: str | None, seq: int | None) -> None:
    with pytest.raises(ValueError):
        Command(Put(b"k", b"v"), client, seq)


@pytest.mark.parametrize("max_sessions", [0, -1])
def test_store_needs_a_positive_session_bound(max_sessions: int) -> None:
    with pytest.raises(ValueError):
        KVStore(max_sessions=max_sessions)


# --- snapshots --------------------------------------------------------------------------


def build_store() -> KVStore:
    store = KVStore(max_sessions=3)
    apply_all(
        store,
        [
            Put(b"z", b"last"),
            Command(Put(b"a", b"1"), "c1", 1),
            Command(Cas(b"a", b"9", b"2"), "c2", 3),  # fails: remembers value b"1"
            Command(Delete(b"gone"), "c3", 1),
            Put(b"m", b""),
        ],
    )
    store.skip(6)
    return store


def test_snapshot_restore_round_trip() -> None:
    original = build_store()
    items = original.snapshot_items()
    copy = KVStore(max_sessions=3)
    copy.apply(1, Command(Put(b"old", b"state")))
    copy.restore(items)
    assert copy.snapshot_items() == items
    assert copy.applied_index == 6
    assert [copy.get(k) for k in (b"a", b"m", b"z", b"old")] == [b"1", b"", b"last", None]
    # Sessions came along: a retry answers the first result, a stale seq is refused.
    retry = copy.apply(7, Command(Cas(b"a", b"9", b"2"), "c2", 3))
    assert retry == Result(
        ok=False, index=3, value=b"1", found=True, error=CAS_FAILED, message="current value differs"
    )
    assert copy.apply(8, Command(Put(b"a", b"x"), "c1", 0)).error == BAD_REQUEST
    # The same future on both copies gives the same state.
    original.apply(7, Command(Cas(b"a", b"9", b"2"), "c2", 3))
    original.apply(8, Command(Put(b"a", b"x"), "c1", 0))
    assert copy.snapshot_items() == original.snapshot_items()


def test_snapshot_items_are_plain_values_sorted_by_key() -> None:
    items = build_store().snapshot_items()
    assert [key for key, _ in items["data"]] == [b"a", b"m", b"z"]
    assert [client for client, _, _ in items["sessions"]] == ["c1", "c2", "c3"]


def test_restore_into_smaller_table_keeps_most_recent_sessions() -> None:
    copy = KVStore(max_sessions=2)
    copy.restore(build_store().snapshot_items())
    assert [copy.has_session(c) for c in ("c1", "c2", "c3")] == [False, True, True]


@pytest.mark.parametrize(
    "items",
    [
        {},
        {"applied_index": -1, "data": [], "sessions": []},
        {"applied_index": True, "data": [], "sessions": []},
        {"applied_index": 1, "data": [["k", b"v"]], "sessions": []},
        {"applied_index": 1, "data": [[b"k"]], "sessions": []},
        {"applied_index": 1, "data": [], "sessions": [["c", 1, [True, 1]]]},
        {"applied_index": 1, "data": [], "sessions": [[1, 1, [True, 1, None, None, None, None]]]},
    ],
)
def test_restore_rejects_bad_items_and_keeps_state(items: dict[str, object]) -> None:
    store = build_store()
    before = store.snapshot_items()
    with pytest.raises(ValueError):
        store.restore(items)
    assert store.snapshot_items() == before
