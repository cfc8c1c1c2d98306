"""What each client op does to the multi-version store, and the reply it gives.

Takes an op name and its validated fields (`zraft.wire.fields`: plain values) and runs it
on an `MVCCStore`, returning the reply fields (`zraft.state.machine.ReplyFields`) with
the store `revision` the reply reflects (the node turns it into the reply's `header`).
Deterministic: the same store and fields give the same state and the same reply on
every replica, so a session can hand the reply back to a retry unchanged. Pure: no I/O.

The semantics are etcd v3's (see the README's "Data model"): a put, a delete that removed
something, or a transaction whose branch wrote something moves the revision by one;
anything that changes nothing leaves it alone. `cas` is a transaction with one compare
(value equal, or key absent). Key-values travel as maps: `key`, `value`,
`create_revision`, `mod_revision`, `version`, `lease`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from zraft.state.leases import LeaseTable
from zraft.state.mvcc import (
    Compacted,
    FutureRevision,
    KeyValue,
    MVCCStore,
    RangeResult,
    kv_of,
    prefix_end,
)
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

Fields = Mapping[str, Any]
Reply = dict[str, Any]

NO_OP_LIMIT = 1 << 30
"""Branch length checked when applying: the op limit was the proposing node's to enforce
(a replica's own config must not change what a logged transaction does)."""


def kv_map(kv: KeyValue, keys_only: bool = False) -> dict[str, Any]:
    """A key-value as the wire carries it."""
    return {
        "key": kv.key,
        "value": b"" if keys_only else kv.value,
        "create_revision": kv.create_revision,
        "mod_revision": kv.mod_revision,
        "version": kv.version,
        "lease": kv.lease,
    }


def range_bounds(fields: Fields) -> tuple[bytes, bytes | None]:
    """`key` and the `range_end` the fields mean (`prefix`, an empty end: `key` alone)."""
    key = fields["key"]
    if fields.get("prefix"):
        return key, prefix_end(key)
    end = fields.get("range_end")
    return key, end or None


def _error(code: str, message: str, revision: int, **extra: Any) -> Reply:
    reply: Reply = {"ok": False, "error": code, "message": message, "revision": revision}
    if extra:
        reply["extra"] = extra
    return reply


def _range_reply(result: RangeResult, keys_only: bool) -> dict[str, Any]:
    return {
        "kvs": [kv_map(kv, keys_only) for kv in result.kvs],
        "more": result.more,
        "count": result.count,
    }


def read_range(store: MVCCStore, fields: Fields) -> Reply:
    """Serve `range`."""
    key, end = range_bounds(fields)
    keys_only = bool(fields.get("keys_only"))
    try:
        result = store.range(
            key,
            end,
            revision=fields.get("revision", 0),
            limit=fields.get("limit", 0),
            sort_order=fields.get("sort_order", "none"),
            sort_target=fields.get("sort_target", "key"),
            keys_only=keys_only,
            count_only=bool(fields.get("count_only")),
        )
    except Compacted as exc:
        return _error("compacted", str(exc), store.revision, compact_revision=exc.compact_revision)
    except FutureRevision as exc:
        return _error("future_revision", str(exc), store.revision)
    return {"ok": True, "revision": store.revision, "extra": _range_reply(result, keys_only)}


def read_get(store: MVCCStore, fields: Fields) -> Reply:
    """Serve `get`: the value of one key."""
    kv = store.get(fields["key"])
    return {
        "ok": True,
        "value": None if kv is None else kv.value,
        "found": kv is not None,
        "revision": store.revision,
    }


def write(store: MVCCStore, leases: LeaseTable, op: str, fields: Fields, index: int) -> Reply:
    """Apply write `op` (a `Route.LOG` op other than none) and return its reply; keys
    that gain or lose a lease are attached or detached in `leases`.

    Raises:
        ValueError: `op` is not a write this module knows (a node bug).
    """
    runner = _WRITES.get(op)
    if runner is None:
        raise ValueError(f"op {op!r} is not a store write")
    reply = runner(store, leases, fields)
    reply["index"] = index
    return reply


def missing_lease(leases: LeaseTable, puts: Iterable[Fields]) -> int:
    """A lease one of `puts` (put fields, or ops of a branch) names that does not exist
    (0: none is missing)."""
    for put in puts:
        lease = put.get("lease", 0)
        if lease and lease not in leases and put.get("op", "put") == "put":
            return int(lease)
    return 0


def lease_not_found(lease: int, revision: int) -> Reply:
    """The reply to a write that names lease `lease`, which does not exist."""
    return _error(
        "lease_not_found", f"lease {lease} does not exist (expired or revoked?)", revision
    )


def _attach(leases: LeaseTable, key: bytes, previous: KeyValue | None, lease: int) -> None:
    leases.attach(key, 0 if previous is None else previous.lease, lease)


def _detach(leases: LeaseTable, deleted: list[KeyValue]) -> None:
    for kv in deleted:
        leases.attach(kv.key, kv.lease, 0)


def _put(store: MVCCStore, leases: LeaseTable, fields: Fields) -> Reply:
    lease = fields.get("lease", 0)
    if lease and lease not in leases:
        return lease_not_found(lease, store.revision)
    key = fields["key"]
    previous = store.put(key, fields["value"], lease)
    old_lease = 0 if previous is None else previous[4]
    if old_lease or lease:
        leases.attach(key, old_lease, lease)
    reply: Reply = {"ok": True, "revision": store.revision}
    if fields.get("prev_kv"):
        reply["extra"] = {"prev_kv": None if previous is None else kv_map(kv_of(key, previous))}
    return reply


def _delete(store: MVCCStore, leases: LeaseTable, fields: Fields) -> Reply:
    change = store.write()
    deleted = change.delete_range(*range_bounds(fields))
    _detach(leases, deleted)
    revision = change.finish()
    extra: dict[str, Any] = {"deleted": len(deleted)}
    if fields.get("prev_kv"):
        extra["prev_kvs"] = [kv_map(kv) for kv in deleted]
    return {"ok": True, "revision": revision, "extra": extra}


def _cas(store: MVCCStore, leases: LeaseTable, fields: Fields) -> Reply:
    key, expected = fields["key"], fields["expected"]
    current = store.get(key)
    if (None if current is None else current.value) != expected:
        return {
            "ok": False,
            "error": "cas_failed",
            "message": "key is present" if expected is None else "current value differs",
            "value": None if current is None else current.value,
            "revision": store.revision,
        }
    change = store.write()
    _attach(leases, key, change.put(key, fields["value"]), 0)  # a put without a lease
    return {"ok": True, "revision": change.finish()}


def txn_of(fields: Fields) -> Txn:
    """The `Txn` that `txn` fields describe."""
    compares = tuple(
        Compare(
            c["key"],
            c["target"],
            c["result"],
            c["operand"],
            range_bounds(c)[1],
        )
        for c in fields.get("compare", ())
    )
    return Txn(
        compares,
        tuple(_txn_op(op) for op in fields.get("success", ())),
        tuple(_txn_op(op) for op in fields.get("failure", ())),
    )


def _txn_op(op: Fields) -> RangeOp | PutOp | DeleteRangeOp:
    name = op["op"]
    if name == "put":
        return PutOp(op["key"], op["value"], op.get("lease", 0))
    key, end = range_bounds(op)
    if name == "delete_range":
        return DeleteRangeOp(key, end)
    return RangeOp(
        key, end, op.get("limit", 0), bool(op.get("keys_only")), bool(op.get("count_only"))
    )


def puts_in(op: str, fields: Fields) -> int:
    """How many puts write `op` may make (0: it cannot grow the store, so it is served
    while space is short)."""
    if op in ("put", "cas"):
        return 1
    if op == "txn":
        branches = (*fields.get("success", ()), *fields.get("failure", ()))
        return sum(item["op"] == "put" for item in branches)
    return 0


def check(op: str, fields: Fields, max_ops: int) -> None:
    """Refuse, before proposing, what applying would refuse anyway.

    Raises:
        TxnRefused: the reply's error code and message.
    """
    if op == "txn":
        check_txn(txn_of(fields), max_ops)


def _txn(store: MVCCStore, leases: LeaseTable, fields: Fields) -> Reply:
    txn = txn_of(fields)
    try:
        check_txn(txn, NO_OP_LIMIT)
    except TxnRefused as exc:
        return _error(exc.code, str(exc), store.revision)
    chosen = "success" if evaluate(store, txn.compare) else "failure"
    missing = missing_lease(leases, fields.get(chosen, ()))
    if missing:
        return lease_not_found(missing, store.revision)
    result = apply_txn(store, txn)
    branch = txn.success if result.succeeded else txn.failure
    for op, response in zip(branch, result.responses, strict=True):
        if isinstance(op, PutOp):
            _attach(leases, op.key, response, op.lease)  # type: ignore[arg-type]
        elif isinstance(op, DeleteRangeOp):
            _detach(leases, response)  # type: ignore[arg-type]
    ops = fields.get("success" if result.succeeded else "failure", ())
    responses = []
    for raw, op, response in zip(ops, branch, result.responses, strict=True):
        if isinstance(op, PutOp):
            item: dict[str, Any] = {"op": "put"}
            if raw.get("prev_kv"):
                item["prev_kv"] = None if response is None else kv_map(response)  # type: ignore[arg-type]
        elif isinstance(op, DeleteRangeOp):
            assert isinstance(response, list)
            item = {"op": "delete_range", "deleted": len(response)}
            if raw.get("prev_kv"):
                item["prev_kvs"] = [kv_map(kv) for kv in response]
        else:
            assert isinstance(response, RangeResult)
            item = {"op": "range", **_range_reply(response, op.keys_only)}
        responses.append(item)
    return {
        "ok": True,
        "revision": result.revision,
        "extra": {"succeeded": result.succeeded, "responses": responses},
    }


def _compact(store: MVCCStore, leases: LeaseTable, fields: Fields) -> Reply:
    try:
        store.compact(fields["revision"])
    except Compacted as exc:
        return _error("compacted", str(exc), store.revision, compact_revision=exc.compact_revision)
    except FutureRevision as exc:
        return _error("future_revision", str(exc), store.revision)
    return {
        "ok": True,
        "revision": store.revision,
        "extra": {"compact_revision": store.compact_revision},
    }


_WRITES = {
    "put": _put,
    "delete": _delete,
    "delete_range": _delete,
    "cas": _cas,
    "txn": _txn,
    "compact": _compact,
}
