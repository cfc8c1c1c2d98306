"""The commands stored in log entries: the data of a NORMAL entry, as bytes.

This is the longest-lived contract of the three: entries sit in write-ahead logs (and
their effects in snapshots) for months, and every release must still read what an older
one wrote. So an opcode, once used, keeps its layout forever; a new command gets a new
opcode. Only the state machine (`zraft.state.machine`) calls this module: the node moves
entry bytes without knowing what they mean.

Format: a msgpack array ``[opcode, client, seq, key, ...]`` with
``put -> [0, c, s, key, value]``, ``delete -> [1, c, s, key]``,
``cas -> [2, c, s, key, expected, value]`` (`client`/`seq` nil without a session).
"""

from __future__ import annotations

from zraft.state.kv import Cas, Command, Delete, Put
from zraft.wire.codec import MAX_CLIENT_ID_LEN, DecodeError, describe, packb, short_str, unpack
from zraft.wire.codec import blob as _bytes
from zraft.wire.codec import uint as _uint

_MAX_BIN = 1 << 26  # a command's key and values are far below this (max_value_bytes)

_OP_PUT, _OP_DELETE, _OP_CAS = 0, 1, 2


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


def decode_command(data: bytes) -> Command:
    """Decode and validate the data of a NORMAL log entry.

    Raises:
        DecodeError: `data` is not a valid command.
    """
    raw = unpack(data, _MAX_BIN, MAX_CLIENT_ID_LEN * 4, 8, 0)
    if type(raw) is not list or not raw:
        raise DecodeError("a command must be a non-empty array")
    opcode = raw[0]
    if type(opcode) is not int or opcode not in _COMMAND_ARITY:
        raise DecodeError(f"unknown command opcode {describe(opcode)}")
    if len(raw) != _COMMAND_ARITY[opcode]:
        raise DecodeError(f"command {opcode}: expected {_COMMAND_ARITY[opcode]} elements")
    client, seq = raw[1], raw[2]
    if (client is None) != (seq is None):
        raise DecodeError("command: client and seq must be given together")
    if client is not None:
        short_str(client, "client", MAX_CLIENT_ID_LEN)
        _uint(seq, "command.seq")
    key = _bytes(raw[3], "command.key")
    if opcode == _OP_PUT:
        return Command(Put(key, _bytes(raw[4], "command.value")), client, seq)
    if opcode == _OP_DELETE:
        return Command(Delete(key), client, seq)
    expected = None if raw[4] is None else _bytes(raw[4], "command.expected")
    return Command(Cas(key, expected, _bytes(raw[5], "command.value")), client, seq)
