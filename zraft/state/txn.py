"""Transactions on the multi-version store, with etcd v3's semantics (issue 13).

A `Txn` holds compares and two branches of operations. `apply_txn` evaluates every
compare against the store's current state; if all hold, the `success` branch runs, else
the `failure` branch, inside ONE `Write`, so all of its changes share one revision (and
a branch that changes nothing moves no revision). Operations run in order and a range
sees the writes before it, as in etcd.

Rules it keeps (`check_txn` refuses a transaction before anything is applied):
- at most `max_ops` operations per branch (`too_many_ops`);
- no key written twice in one branch: two puts of one key, or a put inside a deleted
  range (`bad_request`), as etcd refuses "duplicate key given in txn request".

Compares follow etcd: a compare with `range_end` must hold for every key in the range;
against a missing key, `version`, `create` and `mod` compare as 0 and `lease` as 0, and a
`value` compare always fails (there is no value to compare). Pure: no I/O, no clock.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from zraft.state.mvcc import KeyValue, MVCCStore, RangeResult, Write

TARGETS = ("value", "version", "create", "mod", "lease")
"""What a compare may look at."""

RESULTS = ("equal", "not_equal", "less", "greater")
"""How a compare relates the key's target to its operand."""

DEFAULT_MAX_TXN_OPS = 128
"""Default bound on the operations of one branch (etcd's `max-txn-ops`)."""


class TxnRefused(ValueError):
    """A transaction that must not be applied; `code` is the reply's error code."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass(frozen=True, slots=True)
class Compare:
    """`target` of `key` (every key of `[key, range_end)` if given) `result` `operand`."""

    key: bytes
    target: str
    result: str
    operand: bytes | int
    range_end: bytes | None = None


@dataclass(frozen=True, slots=True)
class RangeOp:
    """A read inside a transaction (see `MVCCStore.range`)."""

    key: bytes
    range_end: bytes | None = None
    limit: int = 0
    keys_only: bool = False
    count_only: bool = False


@dataclass(frozen=True, slots=True)
class PutOp:
    """Set `key` to `value` (with `lease`)."""

    key: bytes
    value: bytes
    lease: int = 0


@dataclass(frozen=True, slots=True)
class DeleteRangeOp:
    """Delete the keys of the range."""

    key: bytes
    range_end: bytes | None = None


Op = RangeOp | PutOp | DeleteRangeOp
"""An operation of a branch."""


@dataclass(frozen=True, slots=True)
class Txn:
    """If every compare holds, `success`; else `failure`."""

    compare: tuple[Compare, ...] = ()
    success: tuple[Op, ...] = ()
    failure: tuple[Op, ...] = ()


@dataclass(frozen=True, slots=True)
class TxnResult:
    """Which branch ran, what each of its operations answered, and the store's revision
    after it: a `RangeResult`, the previous `KeyValue` of a put (None if new), or the
    deleted `KeyValue`s of a delete."""

    succeeded: bool
    responses: tuple[RangeResult | KeyValue | list[KeyValue] | None, ...] = field(default=())
    revision: int = 0


def check_txn(txn: Txn, max_ops: int = DEFAULT_MAX_TXN_OPS) -> None:
    """Refuse what etcd refuses before anything runs.

    Raises:
        TxnRefused: `too_many_ops`, or `bad_request` for a key written twice in a branch
            or a compare with an unknown target or result, or one whose operand does
            not fit its target.
    """
    for compare in txn.compare:
        if compare.target not in TARGETS or compare.result not in RESULTS:
            raise TxnRefused("bad_request", f"bad compare {compare.target} {compare.result}")
        wants_bytes = compare.target == "value"
        if wants_bytes != isinstance(compare.operand, bytes) or isinstance(compare.operand, bool):
            kind = "bytes" if wants_bytes else "an int"
            raise TxnRefused("bad_request", f"compare on {compare.target} needs {kind}")
    for name, branch in (("success", txn.success), ("failure", txn.failure)):
        if len(branch) > max_ops:
            raise TxnRefused(
                "too_many_ops", f"{name} has {len(branch)} operations, the limit is {max_ops}"
            )
        puts = [op.key for op in branch if isinstance(op, PutOp)]
        if len(set(puts)) != len(puts):
            raise TxnRefused("bad_request", f"a key is put twice in the {name} branch")
        for op in branch:
            if isinstance(op, DeleteRangeOp) and any(
                _in(key, op.key, op.range_end) for key in puts
            ):
                raise TxnRefused("bad_request", f"a key is put and deleted in the {name} branch")


def evaluate(store: MVCCStore, compares: tuple[Compare, ...]) -> bool:
    """Whether every compare holds against the store's current state."""
    return all(_holds(store, compare) for compare in compares)


def apply_txn(store: MVCCStore, txn: Txn) -> TxnResult:
    """Evaluate and run `txn` in one write (call `check_txn` first)."""
    succeeded = evaluate(store, txn.compare)
    write = store.write()
    responses = tuple(_run(write, op) for op in (txn.success if succeeded else txn.failure))
    return TxnResult(succeeded, responses, write.finish())


def _run(write: Write, op: Op) -> RangeResult | KeyValue | list[KeyValue] | None:
    if isinstance(op, PutOp):
        return write.put(op.key, op.value, op.lease)
    if isinstance(op, DeleteRangeOp):
        return write.delete_range(op.key, op.range_end)
    return write.range(
        op.key, op.range_end, limit=op.limit, keys_only=op.keys_only, count_only=op.count_only
    )


def _holds(store: MVCCStore, compare: Compare) -> bool:
    if compare.range_end is None:
        kvs: tuple[KeyValue | None, ...] = (store.get(compare.key),)
    else:
        kvs = store.range(compare.key, compare.range_end).kvs
        if not kvs:
            kvs = (None,)  # an empty range compares like one missing key
    return all(_compare_one(kv, compare) for kv in kvs)


def _compare_one(kv: KeyValue | None, compare: Compare) -> bool:
    if kv is None and compare.target == "value":
        return False  # etcd: a value compare on a missing key always fails
    actual: bytes | int
    if compare.target == "value":
        assert kv is not None
        actual = kv.value
    else:
        actual = 0 if kv is None else getattr(kv, _ATTRIBUTES[compare.target])
    operand = compare.operand
    if compare.result == "equal":
        return actual == operand
    if compare.result == "not_equal":
        return actual != operand
    if compare.result == "less":
        return actual < operand  # type: ignore[operator]
    return actual > operand  # type: ignore[operator]


def _in(key: bytes, start: bytes, range_end: bytes | None) -> bool:
    if range_end is None or range_end == b"":
        return key == start
    if range_end == b"\0":
        return start == b"\0" or key >= start
    return start <= key < range_end


_ATTRIBUTES = {
    "version": "version",
    "create": "create_revision",
    "mod": "mod_revision",
    "lease": "lease",
}
