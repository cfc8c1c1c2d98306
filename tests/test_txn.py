"""Transactions on the multi-version store (`zraft.state.txn`), against etcd's rules."""

from __future__ import annotations

import pytest

from zraft.state.mvcc import KeyValue, MVCCStore, RangeResult, prefix_end
from zraft.state.txn import (
    Compare,
    DeleteRangeOp,
    PutOp,
    RangeOp,
    Txn,
    TxnRefused,
    apply_txn,
    check_txn,
    evaluate,
)


@pytest.fixture
def store() -> MVCCStore:
    """a=1 (rev 2), b=1 (rev 3), a=2 (rev 4, version 2, lease 5)."""
    s = MVCCStore()
    for key, value, lease in ((b"a", b"1", 0), (b"b", b"1", 0), (b"a", b"2", 5)):
        write = s.write()
        write.put(key, value, lease)
        write.finish()
    return s


@pytest.mark.parametrize(
    ("compare", "holds"),
    [
        (Compare(b"a", "value", "equal", b"2"), True),
        (Compare(b"a", "value", "not_equal", b"2"), False),
        (Compare(b"a", "version", "equal", 2), True),
        (Compare(b"a", "create", "equal", 2), True),
        (Compare(b"a", "mod", "greater", 3), True),
        (Compare(b"a", "mod", "less", 4), False),
        (Compare(b"a", "lease", "equal", 5), True),
        (Compare(b"zz", "version", "equal", 0), True),  # missing: version 0
        (Compare(b"zz", "create", "less", 1), True),
        (Compare(b"zz", "value", "equal", b""), False),  # missing: value compares fail
        (Compare(b"zz", "value", "not_equal", b"x"), False),
        (Compare(b"a", "version", "greater", 0, range_end=b"c"), True),  # every key
        (Compare(b"a", "mod", "equal", 4, range_end=b"c"), False),  # b's mod is 3
        (Compare(b"x", "version", "equal", 0, range_end=b"z"), True),  # empty range
    ],
)
def test_compares(store: MVCCStore, compare: Compare, holds: bool) -> None:
    check_txn(Txn(compare=(compare,)))
    assert evaluate(store, (compare,)) is holds


def test_the_chosen_branch_runs_in_one_revision(store: MVCCStore) -> None:
    txn = Txn(
        compare=(Compare(b"a", "mod", "equal", 4),),
        success=(PutOp(b"a", b"3"), PutOp(b"c", b"1"), RangeOp(b"a", b"d"), DeleteRangeOp(b"b")),
        failure=(PutOp(b"never", b"x"),),
    )
    check_txn(txn)
    result = apply_txn(store, txn)
    assert result.succeeded and result.revision == 5
    previous_a, new_c, ranged, deleted = result.responses
    assert previous_a == KeyValue(b"a", b"2", 2, 4, 2, 5)
    assert new_c is None
    assert isinstance(ranged, RangeResult)
    assert [(kv.key, kv.value) for kv in ranged.kvs] == [(b"a", b"3"), (b"b", b"1"), (b"c", b"1")]
    assert deleted == [KeyValue(b"b", b"1", 3, 3, 1)]
    assert {kv.mod_revision for kv in store.range(b"a", b"d").kvs} == {5}
    assert store.get(b"never") is None


def test_a_failed_compare_runs_the_failure_branch(store: MVCCStore) -> None:
    txn = Txn(compare=(Compare(b"a", "value", "equal", b"old"),), failure=(RangeOp(b"a"),))
    result = apply_txn(store, txn)
    assert not result.succeeded
    assert result.revision == 4, "a branch that changes nothing moves no revision"
    (ranged,) = result.responses
    assert isinstance(ranged, RangeResult) and ranged.kvs[0].value == b"2"


def test_cas_as_a_transaction(store: MVCCStore) -> None:
    """Issue 13: `cas` becomes a transaction with one compare."""

    def cas(key: bytes, expected: bytes | None, value: bytes) -> bool:
        compare = (
            Compare(key, "version", "equal", 0)
            if expected is None
            else Compare(key, "value", "equal", expected)
        )
        return apply_txn(store, Txn(compare=(compare,), success=(PutOp(key, value),))).succeeded

    assert cas(b"a", b"2", b"3") and store.get(b"a").value == b"3"  # type: ignore[union-attr]
    assert not cas(b"a", b"2", b"4")
    assert cas(b"new", None, b"1") and not cas(b"new", None, b"2")


@pytest.mark.parametrize(
    ("txn", "code"),
    [
        (Txn(success=tuple(PutOp(b"k%d" % i, b"") for i in range(129))), "too_many_ops"),
        (Txn(failure=(PutOp(b"k", b"1"), PutOp(b"k", b"2"))), "bad_request"),
        (Txn(success=(DeleteRangeOp(b"a", prefix_end(b"a")), PutOp(b"ab", b"1"))), "bad_request"),
        (Txn(success=(DeleteRangeOp(b"\0", b"\0"), PutOp(b"x", b"1"))), "bad_request"),
        (Txn(compare=(Compare(b"a", "size", "equal", 1),)), "bad_request"),
        (Txn(compare=(Compare(b"a", "value", "equal", 1),)), "bad_request"),
        (Txn(compare=(Compare(b"a", "version", "equal", b"1"),)), "bad_request"),
        (Txn(compare=(Compare(b"a", "version", "equal", True),)), "bad_request"),
    ],
)
def test_refused_before_anything_runs(txn: Txn, code: str) -> None:
    with pytest.raises(TxnRefused) as refused:
        check_txn(txn)
    assert refused.value.code == code


def test_a_branch_may_put_and_delete_different_keys() -> None:
    check_txn(Txn(success=(DeleteRangeOp(b"a", b"b"), PutOp(b"b", b"1"), PutOp(b"c", b"1"))))
    check_txn(Txn(success=(PutOp(b"k", b"1"),), failure=(PutOp(b"k", b"2"),)))
