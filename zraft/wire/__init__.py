"""zraft's byte formats, one module per conversation, each with its own compatibility rule:

- `peer`: Raft messages and node-to-node frames. Must survive a rolling upgrade
  (versioned frames; new kinds get new tags).
- `client`: the public client protocol (request and reply maps, validated against the op
  table in `ops`). Only grows: nothing a client relies on is ever renamed or removed.
- `entries`: the commands stored in log entries. Lives on disk for months: an opcode's
  layout never changes; only the state machine reads and writes it.

`codec` holds what they share (msgpack with limits, `DecodeError`, field checkers). This
package re-exports the names scripts and tests use; zraft's own modules import the
module of the conversation they take part in.
"""

from zraft.wire.client import (
    DEFAULT_MAX_KEY,
    DEFAULT_MAX_VALUE,
    ERROR_CODES,
    REQUEST_OVERHEAD,
    Request,
    decode_reply,
    decode_request,
    encode_reply,
    encode_request,
)
from zraft.wire.codec import MAX_CLIENT_ID_LEN, MAX_NODE_ID_LEN, DecodeError, TooLarge
from zraft.wire.entries import decode_command, encode_command
from zraft.wire.ops import CONSISTENCY_LEVELS, OP_ALIASES, OPS, OpSpec
from zraft.wire.peer import (
    MAX_ENTRIES,
    MAX_MEMBERS,
    TAG_FORWARD,
    TAG_FORWARD_REPLY,
    TAG_SNAPSHOT_ACK,
    TAG_SNAPSHOT_CHUNK,
    WIRE_VERSION,
    Forward,
    ForwardReply,
    PeerFrame,
    SnapshotAck,
    SnapshotChunk,
    decode_message,
    decode_peer_frame,
    encode_forward,
    encode_forward_reply,
    encode_message,
    encode_snapshot_ack,
    encode_snapshot_chunk,
)

__all__ = [
    "CONSISTENCY_LEVELS",
    "DEFAULT_MAX_KEY",
    "DEFAULT_MAX_VALUE",
    "ERROR_CODES",
    "MAX_CLIENT_ID_LEN",
    "MAX_ENTRIES",
    "MAX_MEMBERS",
    "MAX_NODE_ID_LEN",
    "OPS",
    "OP_ALIASES",
    "REQUEST_OVERHEAD",
    "TAG_FORWARD",
    "TAG_FORWARD_REPLY",
    "TAG_SNAPSHOT_ACK",
    "TAG_SNAPSHOT_CHUNK",
    "WIRE_VERSION",
    "DecodeError",
    "Forward",
    "ForwardReply",
    "OpSpec",
    "PeerFrame",
    "Request",
    "SnapshotAck",
    "SnapshotChunk",
    "TooLarge",
    "decode_command",
    "decode_message",
    "decode_peer_frame",
    "decode_reply",
    "decode_request",
    "encode_command",
    "encode_forward",
    "encode_forward_reply",
    "encode_message",
    "encode_reply",
    "encode_request",
    "encode_snapshot_ack",
    "encode_snapshot_chunk",
]
