"""The first release's store inside this one: serving it until the upgrade, converting it.

`zraft.state.machine` keeps a store restored from the previous release (a `KVStore`: a
dictionary with sessions) until the model entry is applied. This module holds what that
needs: the request-to-command mapping and reply shape of the first release, and
`convert`, which every replica applies to the same dictionary at the same log index
(see the machine's module doc for the rules). Pure: no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zraft.state.kv import Cas, Command, Delete, KVStore, Op, Put, Result
from zraft.state.mvcc import MVCCStore
from zraft.state.sessions import SessionTable
from zraft.wire.client import Request

LEGACY_OPS = frozenset({"put", "delete", "cas", "get"})
"""What a store still in the legacy model serves (the first release's ops)."""

UPGRADE_REVISION = 2
"""The revision every key of a converted legacy store carries."""


def result_fields(result: Result) -> Mapping[str, Any]:
    """The reply fields of a legacy write's `Result`."""
    return {
        "ok": result.ok,
        "value": result.value,
        "error": result.error,
        "message": result.message,
        "index": result.index,
    }


def write_reply_fields(command: Command, result: Result) -> Mapping[str, Any]:
    """The reply fields of applying a legacy `command`: a delete also says how many keys
    it deleted (`deleted`: 0 or 1), so a client can tell a delete of nothing."""
    fields = result_fields(result)
    if result.ok and isinstance(command.op, Delete):
        return {**fields, "extra": {"deleted": 1 if result.found else 0}}
    return fields


def op_of(request: Request) -> Op:
    """The legacy operation of a put, delete or cas `request`.

    Raises:
        ValueError: `request` is not one of them (a node bug).
    """
    fields = request.fields
    key = fields.get("key")
    if key is None:
        raise ValueError(f"op {request.op!r} without a key is not a kv write")
    if request.op == "put":
        return Put(key, fields["value"])
    if request.op == "delete":
        return Delete(key)
    if request.op == "cas":
        return Cas(key, fields["expected"], fields["value"])
    raise ValueError(f"op {request.op!r} is not a kv write")


def convert(legacy: KVStore, max_sessions: int) -> tuple[MVCCStore, SessionTable, int]:
    """The multi-version store, sessions and applied index a legacy store becomes: every
    key at `UPGRADE_REVISION` (version 1), compacted there; an empty store at revision 1."""
    view = legacy.snapshot_view()
    store = MVCCStore()
    if view.data:
        change = store.write()
        for key in sorted(view.data):
            change.put(key, view.data[key])
        store.compact(change.finish())
    sessions = SessionTable(max_sessions)
    for client, seq, (ok, index, value, found, error, message) in view.sessions:
        reply = {"ok": ok, "index": index, "value": value, "error": error, "message": message}
        sessions.remember(client, seq, reply if found is None else {**reply, "found": found})
    return store, sessions, view.applied_index
