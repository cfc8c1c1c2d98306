"""The state machine as the node sees it: a narrow protocol, and the key-value machine.

The node moves bytes: it asks the machine to turn a write request into the data of a log
entry (`command`), hands it every committed entry (`apply`), asks it to serve reads
(`read`), and moves its state in and out of snapshots (`snapshot_view`, `restore`). What a
command *means*, and how it is encoded in the log, is the machine's alone (hashicorp's
FSM): the node never encodes or decodes a command itself.

Rules it keeps: `apply` is deterministic (same entries, same state and replies on every
replica); entries arrive in index order, every one of them (a NOOP or CONFIG entry only
advances the applied index). Replies come back as the fields of a client reply
(`zraft.wire.client.encode_reply`'s keywords) plus `revision`, which the node turns into
the reply's `header`. This module must not do I/O or know about sockets.

Two store models, and the upgrade between them
-----------------------------------------------
The first release kept a plain dictionary (`zraft.state.kv`, "legacy"); this one keeps
revisions and history (`zraft.state.mvcc`, "mvcc"). Revisions must be a function of the
log, so the switch is an entry of the log: a leader of this release whose applied state
is still legacy proposes a *model entry* (`zraft.wire.entries.ModelUpgrade`) once every
member runs this release (`zraft.node` decides when). Until it is applied the store keeps
the legacy semantics, and serves only the first release's ops (`put`, `delete`, `cas`,
`get`); when it is applied, every replica converts the same dictionary the same way:
every key gets `create_revision = mod_revision = 2`, version 1, the store revision 2 and
the compact revision 2 (no history from before); an empty store starts at revision 1.
A second model entry changes nothing. A brand-new node starts legacy too, so it replays
an old log exactly as its first release did; a new cluster's first leader writes the
model entry before any client write.

Snapshots say which model they hold (`model` in their header: absent = legacy) and are
written in the first release's file format while the store is legacy.

The space quota
---------------
`quota_bytes` bounds the store's accounted size (`MVCCStore.size_bytes`: keys, values and
history). A leader refuses a write that may grow the store past it (`command` raises
`Refused` with `alarm = "nospace"`) and writes an alarm entry, so every replica raises
the `nospace` alarm at the same point. While it is raised, every write that may grow the
store is answered `no_space` when applied (deletes, compaction and reads still work);
`alarm_disarm` lowers it (the leader raises it again at the next write if the store is
still full). The quota is each node's own config; what replicas apply depends only on
the log.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from zraft.core.types import Entry, EntryKind
from zraft.state import execute, leasing
from zraft.state.kv import Command, KVStore, SnapshotView
from zraft.state.leases import LeaseTable
from zraft.state.leasing import LeaseEvent
from zraft.state.legacy import LEGACY_OPS, convert, op_of, write_reply_fields
from zraft.state.mvcc import RECORD_OVERHEAD, MVCCStore, Record, records_of
from zraft.state.sessions import DEFAULT_MAX_SESSIONS, SessionTable, replayable
from zraft.state.txn import DEFAULT_MAX_TXN_OPS, TxnRefused
from zraft.wire.client import Request
from zraft.wire.entries import (
    ALARMS,
    AlarmRaised,
    LeaseExpiry,
    LeaseRefresh,
    LoggedWrite,
    ModelUpgrade,
    decode_entry,
    encode_alarm,
    encode_expiry,
    encode_refresh,
    encode_upgrade,
    encode_write,
)
from zraft.wire.records import pack_records, unpack_records

ReplyFields = Mapping[str, Any]
"""Keyword arguments of `encode_reply` (`ok`, `value`, `found`, `error`, `message`,
`index`, `extra`) without `leader`, which the node adds; plus `revision`, which it turns
into the reply's `header`."""

MODEL = "mvcc"
"""The store model of this release."""

STATE_FORMAT = 2
"""Version of the state inside a snapshot (1: the legacy dictionary, no `model`)."""

MAX_LEASE_TTL = 9_000_000_000
"""The longest lease TTL granted, in seconds (etcd's)."""


NOSPACE = "nospace"
"""The alarm of an exhausted space quota."""


class Refused(Exception):
    """A request the machine will not propose; `code` and `message` are the reply's, and
    `alarm` one the cluster should raise (the leader proposes it)."""

    def __init__(self, code: str, message: str, alarm: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.alarm = alarm


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

    def command(self, request: Request, *, upgrading: bool = False) -> bytes:
        """The log entry data that carries write `request` (its session included);
        `upgrading`: a model entry precedes it in the log, not applied yet.

        Raises:
            Refused: the request must be answered with an error instead.
        """
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


class KVMachine:
    """The key-value store behind the `StateMachine` protocol (see the module doc).

    Args:
        max_sessions: the session table's bound (equal on every replica).
        model: None to start legacy (a node: the log decides), or `MODEL` to start
            with the multi-version store at once (tests and tools).
        max_txn_ops: the longest transaction branch this node proposes.
        quota_bytes: the space quota this node enforces as leader (0: none).
        lease_ttl: the shortest and longest TTL this node grants as leader, in seconds.
    """

    commands = frozenset(
        {
            "put",
            "delete",
            "delete_range",
            "cas",
            "txn",
            "compact",
            "alarm_disarm",
            "lease_grant",
            "lease_revoke",
        }
    )
    reads = frozenset({"get", "range", "alarm_list", "lease_leases"})

    def __init__(
        self,
        max_sessions: int = DEFAULT_MAX_SESSIONS,
        *,
        model: str | None = None,
        max_txn_ops: int = DEFAULT_MAX_TXN_OPS,
        quota_bytes: int = 0,
        lease_ttl: tuple[int, int] = (1, MAX_LEASE_TTL),
    ) -> None:
        if model not in (None, MODEL):
            raise ValueError(f"unknown store model {model!r}")
        self._max_sessions = max_sessions
        self._max_txn_ops = max_txn_ops
        self._quota = quota_bytes
        self._lease_ttl = lease_ttl
        self.leases = LeaseTable()
        """Every lease and its keys (replicated; their clocks are the node's)."""
        self._lease_events: list[LeaseEvent] = []
        self.alarms: set[str] = set()
        """The alarms raised (replicated: raised and lowered by log entries)."""
        self._legacy: KVStore | None = KVStore(max_sessions) if model is None else None
        self.store = MVCCStore()
        self._sessions = SessionTable(max_sessions)
        self._applied = 0

    # --- what it holds ----------------------------------------------------------------

    @property
    def model(self) -> str:
        """`legacy` until the model entry is applied, then `mvcc`."""
        return "legacy" if self._legacy is not None else MODEL

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied (0 before any)."""
        return self._legacy.applied_index if self._legacy is not None else self._applied

    @property
    def revision(self) -> int | None:
        """The store's revision (None while legacy)."""
        return None if self._legacy is not None else self.store.revision

    def value(self, key: bytes) -> bytes | None:
        """The current value of `key` (either model), or None."""
        if self._legacy is not None:
            return self._legacy.get(key)
        kv = self.store.get(key)
        return None if kv is None else kv.value

    def status(self) -> dict[str, Any]:
        """What `status` reports about the store: its model, revisions, size and alarms."""
        if self._legacy is not None:
            return {"model": "legacy", "keys": len(self._legacy), "quota_bytes": self._quota}
        store = self.store
        return {
            "model": MODEL,
            "keys": len(store),
            "revision": store.revision,
            "compact_revision": store.compact_revision,
            "store_bytes": store.size_bytes,
            "alarms": sorted(self.alarms),
            "quota_bytes": self._quota,
            "leases": len(self.leases),
        }

    def key_count(self) -> int:
        """How many keys exist now."""
        return len(self._legacy) if self._legacy is not None else len(self.store)

    # --- proposing --------------------------------------------------------------------

    @staticmethod
    def command_of(request: Request) -> Command:
        """The legacy kv command of a put, delete or cas `request`.

        Raises:
            ValueError: `request` is not one of them (a node bug).
        """
        fields = request.fields
        return Command(op_of(request), fields.get("client"), fields.get("seq"))

    def command(self, request: Request, *, upgrading: bool = False) -> bytes:
        """The log entry data that carries write `request`. `upgrading`: this leader
        proposed the model entry in this term, before this write, and it is not applied
        yet; the write is judged as the new model will see it (an empty store: a new
        cluster's first writes).

        Raises:
            Refused: the store is still legacy and the op or option is new, or a
                transaction is refused (`too_many_ops`, `bad_request`).
        """
        op, fields = request.op, request.fields
        legacy = self._legacy is not None and not upgrading
        if legacy and (op not in LEGACY_OPS or fields.get("prev_kv")):
            raise Refused("unavailable", _UPGRADING)
        client, seq = fields.get("client"), fields.get("seq")
        if not legacy and seq is not None and self._sessions.applied(client, seq):
            # A retry of a write already applied: its first answer comes back when this
            # entry is applied. Judging it again (its lease expired since, the quota
            # filled up) would refuse a write that WAS made.
            return encode_write(request)
        if op != "put":  # a plain put (the hot path) has nothing of these to check
            try:
                execute.check(op, fields, self._max_txn_ops)
            except TxnRefused as exc:
                raise Refused(exc.code, str(exc)) from exc
        if op == "lease_grant" or fields.get("lease"):
            self._check_lease(request)
        data = encode_write(request)
        puts = execute.puts_in(op, fields)
        if not legacy and puts:
            size = self.store.size_bytes
            if NOSPACE in self.alarms:
                raise Refused("no_space", _no_space(size))
            if self._quota and size + len(data) + puts * RECORD_OVERHEAD > self._quota:
                message = (
                    f"the space quota is exhausted: the store holds {size} bytes of "
                    f"quota_bytes {self._quota}; the nospace alarm is raised. {_FREE_SPACE}"
                )
                raise Refused("no_space", message, alarm=NOSPACE)
        return data

    def _check_lease(self, request: Request) -> None:
        fields = request.fields
        if request.op == "lease_grant":
            low, high = self._lease_ttl
            if not low <= fields["ttl"] <= high:
                raise Refused(
                    "bad_request",
                    f"ttl {fields['ttl']} is outside {low}..{high} seconds (the minimum is "
                    "1.5 election timeouts: a shorter lease could expire during an election)",
                )
        elif request.op == "put" and fields.get("lease"):
            missing = execute.missing_lease(self.leases, (fields,))
            if missing:
                raise Refused("lease_not_found", f"lease {missing} does not exist")

    @staticmethod
    def refresh_command(leases: list[int]) -> bytes:
        """The data of the entry that records keepalives of `leases`."""
        return encode_refresh(leases)

    @staticmethod
    def expiry_command(leases: list[tuple[int, int]]) -> bytes:
        """The data of the entry that expires `(id, refreshed_index)` pairs."""
        return encode_expiry(leases)

    def take_lease_events(self) -> Sequence[LeaseEvent]:
        """The lease clocks to start or stop after the entries applied since the last call
        (every lease after a restore)."""
        if not self._lease_events:
            return ()  # the common case: no allocation per applied entry
        events, self._lease_events = self._lease_events, []
        return events

    @staticmethod
    def alarm_command(alarm: str) -> bytes:
        """The data of the entry that raises `alarm` on every replica."""
        return encode_alarm(alarm)

    @staticmethod
    def upgrade_command() -> bytes:
        """The data of the model entry a leader proposes (see the module doc)."""
        return encode_upgrade(MODEL)

    # --- applying ---------------------------------------------------------------------

    def apply(self, entry: Entry) -> ReplyFields | None:
        """Apply `entry`: a NORMAL entry's write or model change, or just its index.

        Raises:
            DecodeError: a NORMAL entry whose data is not a command of this release (a
                corrupt log that passed its CRC, a newer release's entry, or a bug: the
                node stops).
            ValueError: `entry.index` is not the next one, or a new op precedes the
                model entry (a bug: the node stops).
        """
        index = entry.index
        if entry.kind is not EntryKind.NORMAL:
            self._advance(index)
            return None
        logged = decode_entry(entry.data)
        if type(logged) is LoggedWrite:  # the common case first
            return self._apply_write(logged, index)
        if isinstance(logged, ModelUpgrade):
            self._advance(index)
            self._upgrade()
            return None
        if isinstance(logged, AlarmRaised):
            self._advance(index)
            if self._legacy is None:
                self.alarms.add(logged.alarm)
            return None
        if isinstance(logged, LeaseRefresh | LeaseExpiry):
            self._advance(index)
            if self._legacy is not None:
                raise ValueError("a lease entry logged before the store was upgraded")
            if isinstance(logged, LeaseRefresh):
                self._lease_events += leasing.refresh(self.leases, logged.leases, index)
            else:
                self._lease_events += leasing.expire(self.store, self.leases, logged.leases, index)
            return None
        raise TypeError(f"unknown entry {logged!r}")  # decode_entry returns nothing else

    def _apply_write(self, logged: LoggedWrite, index: int) -> ReplyFields:
        request, client, seq = logged.request, logged.client, logged.seq
        if self._legacy is not None:
            if request.op not in LEGACY_OPS:
                raise ValueError(f"op {request.op!r} logged before the store was upgraded")
            command = Command(op_of(request), client, seq)
            return write_reply_fields(command, self._legacy.apply(index, command))
        self._advance(index)
        if client is not None and seq is not None:
            answered = self._sessions.answered(client, seq)
            if answered is not None:
                return answered
        reply = self._write(request, index)
        if client is not None and seq is not None:
            self._sessions.remember(client, seq, replayable(reply))
        return reply

    def _write(self, request: Request, index: int) -> ReplyFields:
        op, store = request.op, self.store
        if op == "alarm_disarm":
            self.alarms.clear()
            return {"ok": True, "revision": store.revision, "index": index, "extra": {"alarms": []}}
        if self.alarms and NOSPACE in self.alarms and execute.puts_in(op, request.fields):
            message = _no_space(store.size_bytes)
            return {"ok": False, "error": "no_space", "message": message, "index": index}
        if op in ("lease_grant", "lease_revoke"):
            if op == "lease_grant":
                reply, event = leasing.grant(store, self.leases, request.fields, index)
            else:
                reply, event = leasing.revoke(store, self.leases, request.fields["lease"], index)
            if event is not None:
                self._lease_events.append(event)
            return reply
        return execute.write(store, self.leases, op, request.fields, index)

    def _advance(self, index: int) -> None:
        if self._legacy is not None:
            self._legacy.skip(index)
            return
        if index <= self._applied:
            raise ValueError(
                f"apply out of order: index {index} is not above applied index {self._applied}"
            )
        self._applied = index

    def _upgrade(self) -> None:
        legacy = self._legacy
        if legacy is None:
            return  # a second model entry (two leaders proposed one): nothing to do
        store, sessions, applied = convert(legacy, self._max_sessions)
        self.store, self._sessions, self._applied = store, sessions, applied
        self._legacy = None

    # --- reading ----------------------------------------------------------------------

    def read(self, request: Request) -> ReplyFields:
        """Serve `get` or `range`."""
        if self._legacy is not None:
            if request.op != "get":
                return {"ok": False, "error": "unavailable", "message": _UPGRADING}
            value = self._legacy.get(request.fields["key"])
            return {"ok": True, "value": value, "found": value is not None}
        if request.op == "range":
            return execute.read_range(self.store, request.fields)
        if request.op == "lease_leases":
            extra = {"leases": self.leases.ids()}
            return {"ok": True, "revision": self.store.revision, "extra": extra}
        if request.op == "alarm_list":
            extra = {"alarms": sorted(self.alarms), "size_bytes": self.store.size_bytes}
            return {"ok": True, "revision": self.store.revision, "extra": extra}
        return execute.read_get(self.store, request.fields)

    # --- snapshots --------------------------------------------------------------------

    def snapshot_view(self) -> SnapshotView:
        """A copy of the state (one shallow dict copy) to write a snapshot from."""
        if self._legacy is not None:
            return self._legacy.snapshot_view()
        store = self.store
        return SnapshotView(
            self._applied,
            _PackedRecords(store.records_view()),  # type: ignore[arg-type]
            self._sessions.export(),
            {
                "model": MODEL,
                "state_format": STATE_FORMAT,
                "revision": store.revision,
                "compact_revision": store.compact_revision,
                "alarms": sorted(self.alarms),
                "leases": self.leases.export(),
            },
        )

    def restore(self, view: SnapshotView) -> None:
        """Replace the whole state with a snapshot's (either model).

        Raises:
            ValueError: `view` is not a valid state.
        """
        header = view.header
        model = header.get("model")
        if model is None:
            legacy = KVStore(self._max_sessions)
            legacy.restore_snapshot(view)
            self._legacy = legacy
            return
        if model != MODEL or header.get("state_format") != STATE_FORMAT:
            raise ValueError(f"a snapshot of store model {model!r} this release cannot read")
        applied = view.applied_index
        if type(applied) is not int or applied < 0:
            raise ValueError("applied_index must be an int >= 0")
        store = MVCCStore.from_records(
            header.get("revision"),
            header.get("compact_revision"),
            ((key, unpack_records(packed)) for key, packed in view.data.items()),
        )
        sessions = SessionTable.restore(view.sessions, self._max_sessions)
        alarms = header.get("alarms", [])
        if type(alarms) is not list or not set(alarms) <= ALARMS:
            raise ValueError(f"unknown alarms in a snapshot: {alarms!r}")
        leases = LeaseTable.restore(header.get("leases", []), store.leased())
        self.store, self._sessions, self._applied = store, sessions, applied
        self.alarms = set(alarms)
        self.leases = leases
        self._lease_events = [LeaseEvent(row[0], row[1]) for row in leases.export()]
        self._legacy = None


_FREE_SPACE = (
    "Free space (delete keys, or compact the history), then lower the alarm with "
    "`zraft-client alarm disarm`; or raise quota_bytes"
)


def _no_space(size: int) -> str:
    # Deterministic (a session may keep it): no node-local setting in the text.
    return f"the nospace alarm is raised (the store holds {size} bytes). {_FREE_SPACE}"


_UPGRADING = (
    "the store still has the previous release's model (no revisions): it is upgraded once "
    "every member runs this release; until then only put, delete, cas and get are served"
)


class _PackedRecords:
    """A snapshot's pairs, packed as they are written: key -> msgpack ``[[value, create,
    mod, version, lease], ...]`` (the key's records, oldest first)."""

    def __init__(self, records: dict[bytes, Record | tuple[Record, ...]]) -> None:
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        for key, held in self._records.items():
            yield key, pack_records(records_of(held))
