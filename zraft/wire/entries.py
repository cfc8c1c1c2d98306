"""The commands stored in log entries: the data of a NORMAL entry, as bytes.

This is the longest-lived contract of the three: entries sit in write-ahead logs (and
their effects in snapshots) for months, and every release must still read what an older
one wrote. So an opcode, once used, keeps its layout forever; a new command gets a new
opcode. Only the state machine (`zraft.state.machine`) calls this module: the node moves
entry bytes without knowing what they mean.

Format: a msgpack array ``[opcode, client, seq, ...]`` (`client`/`seq` nil without a
session):

- ``0 put -> [0, c, s, key, value]``, ``1 delete -> [1, c, s, key]``,
  ``2 cas -> [2, c, s, key, expected, value]``: the first release's three commands, still
  written for a plain put, delete and cas (the shortest form, and one a node of the
  previous release can apply during a rolling upgrade);
- ``3 request -> [3, c, s, op, fields]``: any other write, as its op name and validated
  request fields (`zraft.wire.ops`), checked again against the op table when decoded;
- ``4 model -> [4, nil, nil, model]``: from here on the store is `model` ("mvcc": the
  revisions of `zraft.state.mvcc`); see `zraft.state.machine` for the upgrade;
- ``5 alarm -> [5, nil, nil, alarm]``: the cluster raises `alarm` ("nospace": the space
  quota is exhausted); a leader writes it, `alarm_disarm` (opcode 3) lowers it;
- ``6 lease refresh -> [6, nil, nil, [id, ...]]``: the keepalives a leader took in one
  loop turn (`zraft.node.leases`);
- ``7 lease expiry -> [7, nil, nil, [[id, refreshed_index], ...]]``: leases whose time
  ran out on the leader, each with the refresh it saw (`zraft.state.leases`).

`decode_entry` reads them all; `encode_command`/`decode_command` are the first release's
codec of opcodes 0-2 (`zraft.state.kv` commands), kept for the legacy store.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zraft.state.kv import Cas, Command, Delete, Put
from zraft.wire.client import Request, request_from_map
from zraft.wire.codec import MAX_CLIENT_ID_LEN, DecodeError, describe, packb, short_str, unpack
from zraft.wire.codec import blob as _bytes
from zraft.wire.codec import uint as _uint
from zraft.wire.fields import MAX_LEASE_ID, SESSION_FIELDS, Limits
from zraft.wire.ops import OPS

_MAX_BIN = 1 << 26  # a command's key and values are far below this (max_value_bytes)

_OP_PUT, _OP_DELETE, _OP_CAS, _OP_REQUEST, _OP_MODEL, _OP_ALARM = 0, 1, 2, 3, 4, 5
_OP_REFRESH, _OP_EXPIRY = 6, 7
MAX_BATCH = 1 << 16  # lease ids in one refresh or expiry entry
_LOG_LIMITS = Limits(_MAX_BIN, _MAX_BIN, 1 << 16)  # the leader checked its own limits
MODELS = frozenset({"mvcc"})
"""The store models a model entry may name."""
ALARMS = frozenset({"nospace"})
"""The alarms an alarm entry may raise."""


def encode_command(cmd: Command) -> bytes:
    """Encode a kv command as the data of a NORMAL log entry.

    Raises:
        TypeError: `cmd.op` is not a known operation.
    """
    op = cmd.op
    match op:
        case Put():
            return packb([_OP_PUT, cmd.client, cmd.seq, op.key, op.value])
        case Delete():
            return packb([_OP_DELETE, cmd.client, cmd.seq, op.key])
        case Cas():
            return packb([_OP_CAS, cmd.client, cmd.seq, op.key, op.expected, op.value])
    raise TypeError(f"unknown operation: {op!r}")


_COMMAND_ARITY = {_OP_PUT: 5, _OP_DELETE: 4, _OP_CAS: 6}
_ENTRY_ARITY = {
    **_COMMAND_ARITY,
    _OP_REQUEST: 5,
    _OP_MODEL: 4,
    _OP_ALARM: 4,
    _OP_REFRESH: 4,
    _OP_EXPIRY: 4,
}


@dataclass(slots=True)  # not frozen: built for every applied write, and frozen costs
class LoggedWrite:
    """A client write as a log entry carries it: the request (op and fields, without the
    session) and its session."""

    request: Request
    client: str | None = None
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class ModelUpgrade:
    """The entry after which the store is `model` (see `zraft.state.machine`)."""

    model: str


@dataclass(frozen=True, slots=True)
class AlarmRaised:
    """The entry that raises `alarm` on every replica."""

    alarm: str


@dataclass(frozen=True, slots=True)
class LeaseRefresh:
    """Keepalives the leader took: each lease of `leases` starts its TTL again."""

    leases: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class LeaseExpiry:
    """Leases whose time ran out: `(id, refreshed_index)` pairs (see `zraft.state.leases`)."""

    leases: tuple[tuple[int, int], ...]


Logged = LoggedWrite | ModelUpgrade | AlarmRaised | LeaseRefresh | LeaseExpiry
"""Anything a NORMAL entry carries."""


def encode_write(request: Request) -> bytes:
    """The data of the NORMAL entry that carries write `request` (its session included):
    the first release's form for a plain put, delete or cas, opcode 3 for the rest."""
    fields = request.fields
    client, seq = fields.get("client"), fields.get("seq")
    op = request.op
    if op == "put" and not fields.get("prev_kv") and not fields.get("lease"):
        return packb([_OP_PUT, client, seq, fields["key"], fields["value"]])
    if op == "delete" and not fields.get("prev_kv"):
        return packb([_OP_DELETE, client, seq, fields["key"]])
    if op == "cas":
        return packb([_OP_CAS, client, seq, fields["key"], fields["expected"], fields["value"]])
    plain = {name: value for name, value in fields.items() if name not in SESSION_FIELDS}
    return packb([_OP_REQUEST, client, seq, op, plain])


def encode_upgrade(model: str) -> bytes:
    """The data of the entry that moves the store to `model`."""
    return packb([_OP_MODEL, None, None, model])


def encode_alarm(alarm: str) -> bytes:
    """The data of the entry that raises `alarm`."""
    return packb([_OP_ALARM, None, None, alarm])


def encode_refresh(leases: list[int]) -> bytes:
    """The data of the entry that refreshes `leases`."""
    return packb([_OP_REFRESH, None, None, leases])


def encode_expiry(leases: list[tuple[int, int]]) -> bytes:
    """The data of the entry that expires `(id, refreshed_index)` pairs."""
    return packb([_OP_EXPIRY, None, None, [list(pair) for pair in leases]])


def decode_entry(data: bytes) -> Logged:
    """Decode and validate the data of any NORMAL log entry.

    Raises:
        DecodeError: `data` is not a valid entry (an op unknown to this release too).
    """
    raw = _unpack_entry(data, _ENTRY_ARITY)
    opcode, client, seq = raw[0], raw[1], raw[2]
    if opcode == _OP_MODEL:
        if client is not None or seq is not None or raw[3] not in MODELS:
            raise DecodeError(f"unknown store model {describe(raw[3])}")
        return ModelUpgrade(raw[3])
    if opcode == _OP_ALARM:
        if client is not None or seq is not None or raw[3] not in ALARMS:
            raise DecodeError(f"unknown alarm {describe(raw[3])}")
        return AlarmRaised(raw[3])
    if opcode in (_OP_REFRESH, _OP_EXPIRY):
        return _lease_entry(opcode, client, seq, raw[3])
    if opcode == _OP_REQUEST:
        op, fields = raw[3], raw[4]
        if type(op) is not str or type(fields) is not dict or "op" in fields:
            raise DecodeError("a request entry needs an op name and a field map")
        if SESSION_FIELDS.intersection(fields):
            raise DecodeError("a request entry carries its session outside its fields")
        request = request_from_map({"op": op, **fields}, _LOG_LIMITS)
        if request.spec.route != "log":
            raise DecodeError(f"op {op!r} is not a write")
        return LoggedWrite(request, client, seq)
    # The first release's layouts: the hot path of every plain write, so built directly.
    key = _bytes(raw[3], "command.key")
    if opcode == _OP_PUT:
        fields: dict[str, Any] = {"key": key, "value": _bytes(raw[4], "command.value")}
    elif opcode == _OP_DELETE:
        fields = {"key": key}
    else:
        expected = None if raw[4] is None else _bytes(raw[4], "command.expected")
        fields = {"key": key, "expected": expected, "value": _bytes(raw[5], "command.value")}
    return LoggedWrite(Request._validated(_LEGACY_SPECS[opcode], fields), client, seq)


_LEGACY_SPECS = {_OP_PUT: OPS["put"], _OP_DELETE: OPS["delete"], _OP_CAS: OPS["cas"]}


def _lease_entry(opcode: int, client: Any, seq: Any, items: Any) -> LeaseRefresh | LeaseExpiry:
    if client is not None or seq is not None:
        raise DecodeError("a lease entry carries no session")
    if type(items) is not list or not 0 < len(items) <= MAX_BATCH:
        raise DecodeError(f"a lease entry needs 1 to {MAX_BATCH} leases")
    if opcode == _OP_REFRESH:
        for lease in items:
            _lease_id(lease)
        return LeaseRefresh(tuple(items))
    pairs = []
    for pair in items:
        if type(pair) is not list or len(pair) != 2:
            raise DecodeError("a lease expiry holds [id, refreshed_index] pairs")
        pairs.append((_lease_id(pair[0]), _uint(pair[1], "refreshed_index")))
    return LeaseExpiry(tuple(pairs))


def _lease_id(value: Any) -> int:
    if type(value) is not int or not 0 < value <= MAX_LEASE_ID:
        raise DecodeError(f"a lease id must be an int from 1 to 2**63-1, got {describe(value)}")
    return value


def decode_command(data: bytes) -> Command:
    """Decode and validate a first-release command (opcodes 0-2).

    Raises:
        DecodeError: `data` is not a valid command of that release.
    """
    return _legacy_command(_unpack_entry(data, _COMMAND_ARITY))


def _unpack_entry(data: bytes, arity: dict[int, int]) -> list[Any]:
    raw = unpack(data, _MAX_BIN, _MAX_BIN, 1 << 16, 1 << 10)
    if type(raw) is not list or not raw:
        raise DecodeError("a command must be a non-empty array")
    opcode = raw[0]
    if type(opcode) is not int or opcode not in arity:
        raise DecodeError(f"unknown command opcode {describe(opcode)}")
    if len(raw) != arity[opcode]:
        raise DecodeError(f"command {opcode}: expected {arity[opcode]} elements")
    client, seq = raw[1], raw[2]
    if (client is None) != (seq is None):
        raise DecodeError("command: client and seq must be given together")
    if client is not None:
        short_str(client, "client", MAX_CLIENT_ID_LEN)
        _uint(seq, "command.seq")
    return raw


def _legacy_command(raw: list[Any]) -> Command:
    opcode, client, seq = raw[0], raw[1], raw[2]
    key = _bytes(raw[3], "command.key")
    if opcode == _OP_PUT:
        return Command(Put(key, _bytes(raw[4], "command.value")), client, seq)
    if opcode == _OP_DELETE:
        return Command(Delete(key), client, seq)
    expected = None if raw[4] is None else _bytes(raw[4], "command.expected")
    return Command(Cas(key, expected, _bytes(raw[5], "command.value")), client, seq)
