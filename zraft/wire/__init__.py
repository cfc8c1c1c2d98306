"""zraft's byte formats, one module per conversation, each with its own compatibility rule:

- `peer`: Raft messages and node-to-node frames. Must survive a rolling upgrade
  (versioned frames; new kinds get new tags).
- `client`: the public client protocol (request and reply maps, validated against the op
  table in `ops`). Only grows: nothing a client relies on is ever renamed or removed.
- `entries`: the commands stored in log entries. Lives on disk for months: an opcode's
  layout never changes; only the state machine reads and writes it.

`codec` holds what they share (msgpack with limits, `DecodeError`, field checkers). This
package re-exports the names scripts and tests use, loaded on first use (PEP 562), so
importing one conversation does not load the others (a one-shot client never loads the
peer formats or the Raft core); zraft's own modules import the module of the
conversation they take part in.
"""

from __future__ import annotations

import importlib
from typing import Any

_HOMES: dict[str, str] = {
    "DEFAULT_MAX_KEY": "zraft.wire.client",
    "DEFAULT_MAX_VALUE": "zraft.wire.client",
    "ERROR_CODES": "zraft.wire.client",
    "REQUEST_OVERHEAD": "zraft.wire.client",
    "Request": "zraft.wire.client",
    "decode_reply": "zraft.wire.client",
    "decode_request": "zraft.wire.client",
    "encode_reply": "zraft.wire.client",
    "encode_request": "zraft.wire.client",
    "MAX_CLIENT_ID_LEN": "zraft.wire.codec",
    "MAX_NODE_ID_LEN": "zraft.wire.codec",
    "DecodeError": "zraft.wire.codec",
    "TooLarge": "zraft.wire.codec",
    "decode_command": "zraft.wire.entries",
    "encode_command": "zraft.wire.entries",
    "CONSISTENCY_LEVELS": "zraft.wire.ops",
    "OP_ALIASES": "zraft.wire.ops",
    "OPS": "zraft.wire.ops",
    "OpSpec": "zraft.wire.ops",
    "MAX_ENTRIES": "zraft.wire.peer",
    "MAX_MEMBERS": "zraft.wire.peer",
    "TAG_FORWARD": "zraft.wire.peer",
    "TAG_FORWARD_REPLY": "zraft.wire.peer",
    "TAG_SNAPSHOT_ACK": "zraft.wire.peer",
    "TAG_SNAPSHOT_CHUNK": "zraft.wire.peer",
    "WIRE_VERSION": "zraft.wire.peer",
    "Forward": "zraft.wire.peer",
    "ForwardReply": "zraft.wire.peer",
    "PeerFrame": "zraft.wire.peer",
    "SnapshotAck": "zraft.wire.peer",
    "SnapshotChunk": "zraft.wire.peer",
    "decode_message": "zraft.wire.peer",
    "decode_peer_frame": "zraft.wire.peer",
    "encode_forward": "zraft.wire.peer",
    "encode_forward_reply": "zraft.wire.peer",
    "encode_message": "zraft.wire.peer",
    "encode_snapshot_ack": "zraft.wire.peer",
    "encode_snapshot_chunk": "zraft.wire.peer",
}
"""Each re-exported name and the module that owns it."""

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Load a re-exported name from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'zraft.wire' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip this function
    return value
