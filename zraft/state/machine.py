"""The state machine as the node sees it: a narrow protocol, and the key-value machine.

The node moves bytes: it asks the machine to turn a write request into the data of a log
entry (`command`), hands it every committed entry (`apply`), asks it to serve reads
(`read`), and moves its state in and out of snapshots (`snapshot_view`, `restore`). What a
command *means*, and how it is encoded in the log, is the machine's alone (hashicorp's
FSM): the node never encodes or decodes a command itself.

Rules it keeps: `apply` is deterministic (same entries, same state and replies on every
replica: `zraft.state.kv` holds the rules); entries arrive in index order, every one of
them (a NOOP or CONFIG entry only advances the applied index). Replies come back as the
fields of a client reply (`zraft.wire.client.encode_reply`'s keywords), so the node adds
only what it knows (the leader). This module must not do I/O or know about sockets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from zraft.core.types import Entry, EntryKind
from zraft.state.kv import Cas, Command, Delete, KVStore, Op, Put, Result, SnapshotView
from zraft.wire.client import Request
from zraft.wire.entries import decode_command, encode_command

ReplyFields = Mapping[str, Any]
"""Keyword arguments of `encode_reply` (`ok`, `value`, `found`, `error`, `message`,
`index`, `extra`) without `leader`, which the node adds."""


class StateMachine(Protocol):
    """What the node needs from a replicated state machine."""

    commands: frozenset[str]
    """The ops (`Route.LOG`) whose requests `command` encodes."""
    reads: frozenset[str]
    """The ops (`Route.READ`) that `read` serves."""

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (0 before any)."""
        ...

    def command(self, request: Request) -> bytes:
        """The log entry data that carries write `request` (its session included)."""
        ...

    def apply(self, entry: Entry) -> ReplyFields | None:
        """Apply the committed `entry`; the reply to its proposer, None if it has none."""
        ...

    def read(self, request: Request) -> ReplyFields:
        """Serve read `request` from the applied state."""
        ...

    def snapshot_view(self) -> SnapshotView:
        """A copy of the state to write a snapshot from while the machine moves on."""
        ...

    def restore(self, view: SnapshotView) -> None:
        """Replace the whole state with a snapshot's."""
        ...


def result_fields(result: Result) -> ReplyFields:
    """The reply fields of a kv write's `Result`."""
    return {
        "ok": result.ok,
        "value": result.value,
        "error": result.error,
        "message": result.message,
        "index": result.index,
    }


def write_reply_fields(command: Command, result: Result) -> ReplyFields:
    """The reply fields of applying `command`: a delete also says how many keys it
    deleted (`deleted`: 0 or 1), so a client can tell a delete of nothing."""
    fields = result_fields(result)
    if result.ok and isinstance(command.op, Delete):
        return {**fields, "extra": {"deleted": 1 if result.found else 0}}
    return fields


def _op_of(request: Request) -> Op:
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


class KVMachine:
    """The key-value store behind the `StateMachine` protocol.

    Args:
        store: the store to drive (a new one by default).
    """

    commands = frozenset({"put", "delete", "cas"})
    reads = frozenset({"get"})

    def __init__(self, store: KVStore | None = None) -> None:
        self.store = store if store is not None else KVStore()

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (0 before any)."""
        return self.store.applied_index

    @staticmethod
    def command_of(request: Request) -> Command:
        """The kv command of write `request`.

        Raises:
            ValueError: `request` is not one of `commands` (a node bug).
        """
        fields = request.fields
        return Command(_op_of(request), fields.get("client"), fields.get("seq"))

    def command(self, request: Request) -> bytes:
        """The log entry data that carries write `request`."""
        return encode_command(self.command_of(request))

    def apply(self, entry: Entry) -> ReplyFields | None:
        """Apply `entry`: a NORMAL entry's command, or just its index for the others.

        Raises:
            DecodeError: a NORMAL entry whose data is not a command (a corrupt log that
                passed its CRC, or a bug: the node stops).
        """
        if entry.kind is not EntryKind.NORMAL:
            self.store.skip(entry.index)
            return None
        command = decode_command(entry.data)
        return write_reply_fields(command, self.store.apply(entry.index, command))

    def read(self, request: Request) -> ReplyFields:
        """Serve `get`."""
        value = self.store.get(request.fields["key"])
        return {"ok": True, "value": value, "found": value is not None}

    def snapshot_view(self) -> SnapshotView:
        """See `KVStore.snapshot_view`."""
        return self.store.snapshot_view()

    def restore(self, view: SnapshotView) -> None:
        """See `KVStore.restore_snapshot`."""
        self.store.restore_snapshot(view)
