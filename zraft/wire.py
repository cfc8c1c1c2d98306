"""msgpack encoding of everything zraft sends: peer messages, kv commands, client frames.

This module owns the byte formats, and it is the gate that keeps malformed input out of the
core (STYLE rule 9): every decoder validates the whole structure (types, ranges, sizes) and
raises `DecodeError`, and only `DecodeError`, for anything it does not accept.

Formats (all msgpack, packed with ``use_bin_type=True`` so bytes stay bytes):

- **Peer frames**: an array ``[WIRE_VERSION, TAG, *fields]``. For a `Message`, TAG is the
  class's position in `zraft.core.messages.MESSAGE_TYPES` and the fields follow the
  dataclass field order. An `Entry` is ``[term, index, kind, data]``, a `SnapshotMeta`
  ``[index, term, [voters, learners, promotable]]`` (id lists sorted; a
  two-list membership, without `promotable`, is read too). Two more frames, with tags
  outside the message range, carry a client request a follower forwards to the leader and
  the leader's answer: ``[V, TAG_FORWARD, src, request_id, request_map]`` and
  ``[V, TAG_FORWARD_REPLY, src, request_id, reply_bytes]``. A snapshot travels as
  ``[V, TAG_SNAPSHOT_CHUNK, src, dst, term, meta, offset, total, data]`` frames, each
  answered by ``[V, TAG_SNAPSHOT_ACK, src, dst, term, index, next_offset, ok, reason]``.
  `decode_peer_frame` accepts all of these but never a bare `SnapshotRequest`: a follower's
  core sees one only once its node has the whole, verified file. `decode_message` accepts
  messages only.
- **Commands** (the data of a NORMAL log entry): ``[opcode, client, seq, key, ...]`` with
  ``put -> [0, c, s, key, value]``, ``delete -> [1, c, s, key]``,
  ``cas -> [2, c, s, key, expected, value]``. New opcodes are the way to extend it.
- **Client frames**: maps with short named keys, per DESIGN.md §2 (`decode_request`,
  `encode_reply`; `encode_request` and `decode_reply` for the client side).

Decoders catch msgpack's exceptions, `ValueError`, `TypeError` and `OverflowError`, and
nothing else; encoders trust their (local) input and may raise anything on misuse.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from operator import attrgetter
from typing import Any, NoReturn

import msgpack

from zraft.core.membership import decode_config
from zraft.core.messages import (
    MESSAGE_TYPES,
    AppendRequest,
    AppendResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotRequest,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from zraft.core.types import Entry, EntryKind, Membership, SnapshotMeta
from zraft.state.kv import Cas, Command, Delete, Put, Result

WIRE_VERSION = 1
"""First element of every peer frame; a node refuses frames of another version."""

TAG_FORWARD = 64
"""Tag of a `Forward` frame (outside the range of message tags)."""

TAG_FORWARD_REPLY = 65
"""Tag of a `ForwardReply` frame."""

TAG_SNAPSHOT_CHUNK = 66
"""Tag of a `SnapshotChunk` frame."""

TAG_SNAPSHOT_ACK = 67
"""Tag of a `SnapshotAck` frame."""

MAX_REASON_LEN = 512
"""Longest refusal reason in a `SnapshotAck`, in characters."""

MAX_ENTRIES = 65_536
"""Most entries one AppendRequest may carry."""

MAX_NODE_ID_LEN = 64
"""Longest node id, in characters."""

MAX_MEMBERS = 1024
"""Most ids in one voter or learner list."""

MAX_CLIENT_ID_LEN = 256
"""Longest client session id, in characters."""

MAX_ENDPOINT_LEN = 256
"""Longest endpoint string (`peer`, `client_endpoint`) in a request."""

DEFAULT_MAX_KEY = 4096
"""Default limit on a key, in bytes (DESIGN.md §2)."""

DEFAULT_MAX_VALUE = 1 << 20
"""Default limit on a value, in bytes (DESIGN.md §2)."""

REQUEST_OVERHEAD = 4096
"""Bytes a request frame may use beyond its key and values (field names, ids, numbers)."""

# msgpack's explicit limits for peer frames: a snapshot chunk is the largest bin.
_PEER_MAX_BIN = 1 << 26
_PEER_MAX_STR = 1 << 16
_PEER_MAX_ARRAY = MAX_ENTRIES + 16
_PEER_MAX_MAP = 32

ERROR_CODES = frozenset(
    {
        "bad_request",
        "too_large",
        "cas_failed",
        "unavailable",
        "timeout",
        "not_leader",
        "internal",
        "conflict",
        "forbidden",  # the client key's role does not allow the op (security.role_allows)
    }
)
"""The error codes a reply may carry (DESIGN.md §2)."""

CONSISTENCY_LEVELS = frozenset({"linearizable", "serializable"})
"""Accepted values of a get's `consistency` field."""


class DecodeError(ValueError):
    """Bytes that are not a valid frame of the expected kind.

    Attributes:
        reason: what was wrong, readable by a client or an operator.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooLarge(DecodeError):
    """A client request whose key, value or frame exceeds the configured limits."""


def _reject_ext(code: int, data: bytes) -> NoReturn:
    raise DecodeError(f"msgpack extension types are not accepted (type {code})")


def _unpack(buf: bytes, max_bin: int, max_str: int, max_array: int, max_map: int) -> Any:
    """msgpack.unpackb with explicit limits; every failure becomes DecodeError."""
    if type(buf) is not bytes:
        raise DecodeError("a frame must be bytes")
    try:
        return msgpack.unpackb(
            buf,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bin,
            max_str_len=max_str,
            max_array_len=max_array,
            max_map_len=max_map,
            ext_hook=_reject_ext,
        )
    except DecodeError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(f"not valid msgpack: {exc}") from exc


def _packb(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def _type_name(value: object) -> str:
    return type(value).__name__


def _describe(value: object) -> str:
    """A short description of an untrusted value for an error message.

    Never the repr of a container: a deeply nested one would recurse without bound.
    """
    if isinstance(value, str | bytes):
        return repr(value[:20]) + ("..." if len(value) > 20 else "")
    if value is None or type(value) in (bool, int, float):
        return repr(value)
    return _type_name(value)


# --- field checkers for peer frames ---------------------------------------------------
# Each takes the raw value and a label for the error message and returns the typed value.
# `type(x) is int` on purpose: bool is an int subclass and must not pass as one.


def _uint(value: Any, label: str) -> int:
    if type(value) is not int or value < 0:
        raise DecodeError(f"{label}: expected an int >= 0, got {_describe(value)}")
    return value


def _bool(value: Any, label: str) -> bool:
    if type(value) is not bool:
        raise DecodeError(f"{label}: expected a bool, got {_type_name(value)}")
    return value


def _bytes(value: Any, label: str) -> bytes:
    if type(value) is not bytes:
        raise DecodeError(f"{label}: expected bytes, got {_type_name(value)}")
    return value


def _node_id(value: Any, label: str) -> str:
    if type(value) is not str or not 0 < len(value) <= MAX_NODE_ID_LEN:
        raise DecodeError(
            f"{label}: expected a node id (str of 1..{MAX_NODE_ID_LEN} chars), "
            f"got {_type_name(value)}"
        )
    return value


_ENTRY_KINDS = {int(kind): kind for kind in EntryKind}
_CONFIG_KIND = int(EntryKind.CONFIG)


def _entries(value: Any, label: str) -> tuple[Entry, ...]:
    if type(value) is not list:
        raise DecodeError(f"{label}: expected an array of entries, got {_type_name(value)}")
    if len(value) > MAX_ENTRIES:
        raise DecodeError(f"{label}: {len(value)} entries exceed the limit of {MAX_ENTRIES}")
    out = []
    # The hot loop of peer decoding: plain checks, no helper calls per field.
    for item in value:
        if type(item) is not list or len(item) != 4:
            raise DecodeError(f"{label}: an entry must be [term, index, kind, data]")
        term, index, kind, data = item
        if type(term) is not int or term < 0 or type(index) is not int or index < 1:
            raise DecodeError(f"{label}: entry term must be an int >= 0 and index an int >= 1")
        if type(kind) is not int or kind not in _ENTRY_KINDS:
            raise DecodeError(f"{label}: unknown entry kind {_describe(kind)}")
        if type(data) is not bytes:
            raise DecodeError(f"{label}: entry data must be bytes, got {_type_name(data)}")
        if kind == _CONFIG_KIND:
            # The core takes a CONFIG entry's membership as soon as it is appended.
            try:
                decode_config(data)
            except ValueError as exc:
                raise DecodeError(f"{label}: entry {index}: {exc}") from exc
        out.append(Entry(term, index, _ENTRY_KINDS[kind], data))
    return tuple(out)


def _id_set(value: Any, label: str) -> frozenset[str]:
    if type(value) is not list or len(value) > MAX_MEMBERS:
        raise DecodeError(f"{label}: expected an array of at most {MAX_MEMBERS} node ids")
    ids = frozenset(_node_id(item, label) for item in value)
    if len(ids) != len(value):
        raise DecodeError(f"{label}: duplicate node ids")
    return ids


def _snapshot_meta(value: Any, label: str) -> SnapshotMeta:
    if type(value) is not list or len(value) != 3:
        raise DecodeError(f"{label}: expected [index, term, [voters, learners, promotable]]")
    index, term, membership = value
    if type(membership) is not list or len(membership) not in (2, 3):
        raise DecodeError(f"{label}: membership must be [voters, learners, promotable]")
    voters = _id_set(membership[0], f"{label}.voters")
    learners = _id_set(membership[1], f"{label}.learners")
    promotable = _id_set(membership[2], f"{label}.promotable") if len(membership) == 3 else None
    try:
        members = Membership(voters, learners, promotable or frozenset())
    except ValueError as exc:
        raise DecodeError(f"{label}: {exc}") from exc
    return SnapshotMeta(
        index=_uint(index, f"{label}.index"), term=_uint(term, f"{label}.term"), membership=members
    )


def _encode_entries(entries: tuple[Entry, ...]) -> list[list[Any]]:
    return [[e.term, e.index, int(e.kind), e.data] for e in entries]


def _encode_meta(meta: SnapshotMeta) -> list[Any]:
    members = meta.membership
    lists = [sorted(members.voters), sorted(members.learners), sorted(members.promotable)]
    return [meta.index, meta.term, lists]


# --- peer messages ----------------------------------------------------------------------

_Checker = Callable[[Any, str], Any]

# The wire format of each message: one checker per dataclass field, in field order. The
# encoder is derived from the same order, so the two cannot disagree.
_CHECKERS: dict[type, tuple[_Checker, ...]] = {
    VoteRequest: (_node_id, _node_id, _uint, _uint, _uint, _bool, _bool),
    VoteResponse: (_node_id, _node_id, _uint, _bool, _bool),
    AppendRequest: (_node_id, _node_id, _uint, _uint, _uint, _entries, _uint, _uint),
    AppendResponse: (_node_id, _node_id, _uint, _bool, _uint, _uint, _uint),
    SnapshotRequest: (_node_id, _node_id, _uint, _snapshot_meta),
    SnapshotResponse: (_node_id, _node_id, _uint, _uint),
    TimeoutNow: (_node_id, _node_id, _uint),
    ReadIndexRequest: (_node_id, _node_id, _uint, _uint),
    ReadIndexResponse: (_node_id, _node_id, _uint, _uint, _uint, _bool),
}

# Fields whose values are not msgpack-ready, by checker, with their encoder.
_CONVERTERS: dict[_Checker, Callable[[Any], Any]] = {
    _entries: _encode_entries,
    _snapshot_meta: _encode_meta,
}


@dataclass(frozen=True, slots=True)
class _MessageSpec:
    cls: type
    tag: int
    labels: tuple[str, ...]  # "Class.field", for error messages
    checkers: tuple[_Checker, ...]
    getter: Callable[[Any], tuple[Any, ...]]  # all field values in one C call
    converts: tuple[tuple[int, Callable[[Any], Any]], ...]  # (frame position, encoder)


def _build_specs() -> tuple[_MessageSpec, ...]:
    specs = []
    for tag, cls in enumerate(MESSAGE_TYPES):
        names: tuple[str, ...] = cls.__match_args__  # type: ignore[attr-defined]
        checkers = _CHECKERS[cls]
        if len(names) != len(checkers) or len(names) < 2:
            # A message class changed without its wire format: fail at import, loudly.
            raise RuntimeError(f"zraft.wire is out of date for {cls.__name__}")
        converts = tuple(
            (position + 2, _CONVERTERS[check])
            for position, check in enumerate(checkers)
            if check in _CONVERTERS
        )
        specs.append(
            _MessageSpec(
                cls=cls,
                tag=tag,
                labels=tuple(f"{cls.__name__}.{name}" for name in names),
                checkers=checkers,
                getter=attrgetter(*names),
                converts=converts,
            )
        )
    return tuple(specs)


_SPECS = _build_specs()
_SPEC_OF = {spec.cls: spec for spec in _SPECS}


def encode_message(msg: Message) -> bytes:
    """Encode a peer message as one frame.

    Raises:
        KeyError: `msg` is not a message class (a programming error).
    """
    spec = _SPEC_OF[type(msg)]
    frame = [WIRE_VERSION, spec.tag, *spec.getter(msg)]
    for position, convert in spec.converts:
        frame[position] = convert(frame[position])
    return _packb(frame)


def _check_append(msg: AppendRequest) -> None:
    """Entries must continue the log at prev_index, with terms a leader could have sent."""
    if msg.prev_term > msg.term:
        raise DecodeError("AppendRequest: prev_term is above term")
    expected_index = msg.prev_index + 1
    last_term = msg.prev_term
    for entry in msg.entries:
        if entry.index != expected_index:
            raise DecodeError(
                f"AppendRequest: entries not contiguous (index {entry.index}, "
                f"expected {expected_index})"
            )
        # §5.3: a leader's log has non-decreasing terms, none above its current term.
        if not last_term <= entry.term <= msg.term:
            raise DecodeError(f"AppendRequest: entry {entry.index} has an impossible term")
        expected_index += 1
        last_term = entry.term


def _decode_message_frame(frame: list[Any], tag: int) -> Message:
    spec = _SPECS[tag]
    fields = len(frame) - 2
    if fields != len(spec.checkers):
        raise DecodeError(
            f"{spec.cls.__name__}: expected {len(spec.checkers)} fields, got {fields}"
        )
    values = [
        check(value, label)
        for check, label, value in zip(spec.checkers, spec.labels, frame[2:], strict=True)
    ]
    msg: Message = spec.cls(*values)
    if type(msg) is AppendRequest:
        _check_append(msg)
    return msg


@dataclass(frozen=True, slots=True)
class Forward:
    """A client request a follower forwards to the leader (`request_id` is the follower's)."""

    src: str
    request_id: int
    request: Request


@dataclass(frozen=True, slots=True)
class ForwardReply:
    """The leader's answer to a `Forward`: an encoded client reply, relayed unchanged."""

    src: str
    request_id: int
    reply: bytes


@dataclass(frozen=True, slots=True)
class SnapshotChunk:
    """Bytes `[offset, offset + len(data))` of the snapshot file `meta` names, of `total`."""

    src: str
    dst: str
    term: int
    meta: SnapshotMeta
    offset: int
    total: int
    data: bytes

    @property
    def is_last(self) -> bool:
        """Whether this chunk completes the file."""
        return self.offset + len(self.data) == self.total


@dataclass(frozen=True, slots=True)
class SnapshotAck:
    """The receiver's answer to a chunk of snapshot `index`: send from `next_offset` on.

    `ok` False means the transfer is refused for good (`reason` says why); the sender
    reports the failure to its core, which decides whether to try again.
    """

    src: str
    dst: str
    term: int
    index: int
    next_offset: int
    ok: bool
    reason: str = ""


PeerFrame = Message | Forward | ForwardReply | SnapshotChunk | SnapshotAck
"""Anything that arrives on the peer channel."""


def _unpack_peer(buf: bytes) -> tuple[list[Any], int]:
    frame = _unpack(buf, _PEER_MAX_BIN, _PEER_MAX_STR, _PEER_MAX_ARRAY, _PEER_MAX_MAP)
    if type(frame) is not list or len(frame) < 2:
        raise DecodeError("a peer frame must be an array [version, tag, ...]")
    version, tag = frame[0], frame[1]
    if type(version) is not int or version != WIRE_VERSION:
        raise DecodeError(
            f"unsupported wire version {_describe(version)} (expected {WIRE_VERSION})"
        )
    if type(tag) is not int:
        raise DecodeError(f"the frame tag must be an int, got {_type_name(tag)}")
    return frame, tag


def _check_src(src: str, peers: frozenset[str] | None) -> None:
    if peers is not None and src not in peers:
        raise DecodeError(f"sender {src!r} is not a known peer")


def decode_message(buf: bytes, *, peers: frozenset[str] | None = None) -> Message:
    """Decode and validate one peer message frame.

    Args:
        buf: the frame.
        peers: if given, the message's `src` must be one of these ids.

    Returns:
        The message. AppendRequest entries are guaranteed contiguous from `prev_index + 1`
        with terms non-decreasing from `prev_term` and never above `term`.

    Raises:
        DecodeError: anything wrong, including a `Forward`/`ForwardReply` frame.
    """
    frame, tag = _unpack_peer(buf)
    if not 0 <= tag < len(_SPECS):
        raise DecodeError(f"unknown message tag {tag}")
    msg = _decode_message_frame(frame, tag)
    _check_src(msg.src, peers)
    return msg


def decode_peer_frame(
    buf: bytes,
    *,
    peers: frozenset[str] | None = None,
    max_key: int = DEFAULT_MAX_KEY,
    max_value: int = DEFAULT_MAX_VALUE,
) -> PeerFrame:
    """Decode and validate anything that arrives on the peer channel.

    Args:
        buf: the frame.
        peers: if given, the frame's `src` must be one of these ids.
        max_key, max_value: limits applied to a forwarded request.

    Returns:
        A `Message` (validated as by `decode_message`), a `Forward` whose request is
        validated as by `decode_request`, or a `ForwardReply` whose reply is a valid reply
        frame (as by `decode_reply`).

    Raises:
        DecodeError: anything wrong.
    """
    frame, tag = _unpack_peer(buf)
    if 0 <= tag < len(_SPECS):
        msg = _decode_message_frame(frame, tag)
        if type(msg) is SnapshotRequest:
            # Only the node may hand its core a SnapshotRequest, after the file arrived.
            raise DecodeError("SnapshotRequest travels as snapshot chunks only")
        _check_src(msg.src, peers)
        return msg
    if tag in (TAG_SNAPSHOT_CHUNK, TAG_SNAPSHOT_ACK):
        snapshot_frame = _decode_snapshot_frame(frame, tag)
        _check_src(snapshot_frame.src, peers)
        return snapshot_frame
    if tag not in (TAG_FORWARD, TAG_FORWARD_REPLY):
        raise DecodeError(f"unknown message tag {tag}")
    name = "Forward" if tag == TAG_FORWARD else "ForwardReply"
    if len(frame) != 5:
        raise DecodeError(f"{name}: expected 3 fields, got {len(frame) - 2}")
    src = _node_id(frame[2], f"{name}.src")
    _check_src(src, peers)
    request_id = _uint(frame[3], f"{name}.request_id")
    if tag == TAG_FORWARD:
        if type(frame[4]) is not dict:
            raise DecodeError("Forward.request: expected a map")
        request = _request_from_map(frame[4], max_key, max_value)
        return Forward(src=src, request_id=request_id, request=request)
    reply = _bytes(frame[4], "ForwardReply.reply")
    decode_reply(reply)  # relayed to a client as is: it must be a well-formed reply
    return ForwardReply(src=src, request_id=request_id, reply=reply)


def _decode_snapshot_frame(frame: list[Any], tag: int) -> SnapshotChunk | SnapshotAck:
    if tag == TAG_SNAPSHOT_CHUNK:
        if len(frame) != 9:
            raise DecodeError(f"SnapshotChunk: expected 7 fields, got {len(frame) - 2}")
        chunk = SnapshotChunk(
            src=_node_id(frame[2], "SnapshotChunk.src"),
            dst=_node_id(frame[3], "SnapshotChunk.dst"),
            term=_uint(frame[4], "SnapshotChunk.term"),
            meta=_snapshot_meta(frame[5], "SnapshotChunk.meta"),
            offset=_uint(frame[6], "SnapshotChunk.offset"),
            total=_uint(frame[7], "SnapshotChunk.total"),
            data=_bytes(frame[8], "SnapshotChunk.data"),
        )
        if chunk.offset + len(chunk.data) > chunk.total:
            raise DecodeError("SnapshotChunk: data runs past the total size")
        return chunk
    if len(frame) != 9:
        raise DecodeError(f"SnapshotAck: expected 7 fields, got {len(frame) - 2}")
    reason = frame[8]
    if type(reason) is not str or len(reason) > MAX_REASON_LEN:
        raise DecodeError(f"SnapshotAck.reason: expected a str of at most {MAX_REASON_LEN}")
    return SnapshotAck(
        src=_node_id(frame[2], "SnapshotAck.src"),
        dst=_node_id(frame[3], "SnapshotAck.dst"),
        term=_uint(frame[4], "SnapshotAck.term"),
        index=_uint(frame[5], "SnapshotAck.index"),
        next_offset=_uint(frame[6], "SnapshotAck.next_offset"),
        ok=_bool(frame[7], "SnapshotAck.ok"),
        reason=reason,
    )


def encode_snapshot_chunk(chunk: SnapshotChunk) -> bytes:
    """Encode one chunk of a snapshot file."""
    return _packb(
        [
            WIRE_VERSION,
            TAG_SNAPSHOT_CHUNK,
            chunk.src,
            chunk.dst,
            chunk.term,
            _encode_meta(chunk.meta),
            chunk.offset,
            chunk.total,
            chunk.data,
        ]
    )


def encode_snapshot_ack(ack: SnapshotAck) -> bytes:
    """Encode the answer to a snapshot chunk."""
    return _packb(
        [
            WIRE_VERSION,
            TAG_SNAPSHOT_ACK,
            ack.src,
            ack.dst,
            ack.term,
            ack.index,
            ack.next_offset,
            ack.ok,
            ack.reason[:MAX_REASON_LEN],
        ]
    )


def encode_forward(src: str, request_id: int, request: Request) -> bytes:
    """Encode a client request that node `src` forwards to the leader."""
    return _packb([WIRE_VERSION, TAG_FORWARD, src, request_id, _request_to_map(request)])


def encode_forward_reply(src: str, request_id: int, reply: bytes) -> bytes:
    """Encode the leader's (`src`) encoded client reply to the forward `request_id`."""
    return _packb([WIRE_VERSION, TAG_FORWARD_REPLY, src, request_id, reply])


# --- kv commands ------------------------------------------------------------------------

_OP_PUT, _OP_DELETE, _OP_CAS = 0, 1, 2


def encode_command(cmd: Command) -> bytes:
    """Encode a kv command as the data of a NORMAL log entry.

    Raises:
        TypeError: `cmd.op` is not a known operation.
    """
    op = cmd.op
    match op:
        case Put():
            return _packb([_OP_PUT, cmd.client, cmd.seq, op.key, op.value])
        case Delete():
            return _packb([_OP_DELETE, cmd.client, cmd.seq, op.key])
        case Cas():
            return _packb([_OP_CAS, cmd.client, cmd.seq, op.key, op.expected, op.value])
    raise TypeError(f"unknown operation: {op!r}")


_COMMAND_ARITY = {_OP_PUT: 5, _OP_DELETE: 4, _OP_CAS: 6}


def decode_command(data: bytes) -> Command:
    """Decode and validate the data of a NORMAL log entry.

    Raises:
        DecodeError: `data` is not a valid command.
    """
    raw = _unpack(data, _PEER_MAX_BIN, MAX_CLIENT_ID_LEN * 4, 8, 0)
    if type(raw) is not list or not raw:
        raise DecodeError("a command must be a non-empty array")
    opcode = raw[0]
    if type(opcode) is not int or opcode not in _COMMAND_ARITY:
        raise DecodeError(f"unknown command opcode {_describe(opcode)}")
    if len(raw) != _COMMAND_ARITY[opcode]:
        raise DecodeError(f"command {opcode}: expected {_COMMAND_ARITY[opcode]} elements")
    client, seq = raw[1], raw[2]
    if (client is None) != (seq is None):
        raise DecodeError("command: client and seq must be given together")
    if client is not None:
        _short_str(client, "client", MAX_CLIENT_ID_LEN)
        _uint(seq, "command.seq")
    key = _bytes(raw[3], "command.key")
    if opcode == _OP_PUT:
        return Command(Put(key, _bytes(raw[4], "command.value")), client, seq)
    if opcode == _OP_DELETE:
        return Command(Delete(key), client, seq)
    expected = None if raw[4] is None else _bytes(raw[4], "command.expected")
    return Command(Cas(key, expected, _bytes(raw[5], "command.value")), client, seq)


# --- client requests --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OpSpec:
    """How a client op is served and which request fields it takes.

    `kind` is `write` (a kv command through the log), `read` (get), `local` (answered by
    the receiving node: status) or `admin` (membership and leadership ops, later issues).
    """

    kind: str
    required: frozenset[str]
    optional: frozenset[str]


# Every op also accepts `client` and `seq` (a client library may send them on every
# request); they only mean something for writes.
_SESSION_FIELDS = frozenset({"client", "seq"})


def _op(kind: str, required: tuple[str, ...] = (), optional: tuple[str, ...] = ()) -> OpSpec:
    return OpSpec(kind, frozenset(required), frozenset(optional) | _SESSION_FIELDS)


KNOWN_OPS: Mapping[str, OpSpec] = {
    "put": _op("write", ("key", "value")),
    "delete": _op("write", ("key",)),
    # `expected` is required (nil allowed): forgetting it must not silently mean "absent".
    "cas": _op("write", ("key", "expected", "value")),
    "get": _op("read", ("key",), ("consistency",)),
    "status": _op("local"),
    "members": _op("local"),
    "add_member": _op("admin", ("id", "peer"), ("client_endpoint", "learner", "public_key")),
    "promote_member": _op("admin", ("id",)),
    "remove_member": _op("admin", ("id",)),
    "transfer_leader": _op("admin", (), ("id",)),
    "snapshot": _op("admin"),
}
"""Every op a request may name, with its fields."""

OP_ALIASES: Mapping[str, str] = {"del": "delete"}
"""Alternative op names, mapped to the canonical one."""


@dataclass(frozen=True, slots=True)
class Request:
    """A validated client request (DESIGN.md §2). Field names equal the map keys.

    Args:
        op: the canonical op name (aliases resolved), a key of `KNOWN_OPS`.
        key, value: UTF-8 encoded if they arrived as str.
        expected: the `cas` expected value; None with `has_expected` = the key must be absent.
        has_expected: whether the request carried `expected` (always True for a valid cas).
        client, seq: the session, both set or both None.
        consistency: for `get`, `linearizable` (default) or `serializable`.
        id, peer, client_endpoint, learner, public_key: fields of the membership and
            leadership ops (`public_key`: the new member's Z85 CURVE key).
    """

    op: str
    key: bytes | None = None
    value: bytes | None = None
    expected: bytes | None = None
    has_expected: bool = False
    client: str | None = None
    seq: int | None = None
    consistency: str = "linearizable"
    id: str | None = None
    peer: str | None = None
    client_endpoint: str | None = None
    learner: bool = False
    public_key: str | None = None

    @property
    def kind(self) -> str:
        """`write`, `read`, `local` or `admin` (see `OpSpec`)."""
        return KNOWN_OPS[self.op].kind

    def to_command(self) -> Command:
        """The kv command of a write request.

        Raises:
            ValueError: the request is not a `put`, `delete` or `cas`.
        """
        key = self.key
        if key is None:
            raise ValueError(f"op {self.op!r} without a key is not a kv write")
        if self.op == "put" and self.value is not None:
            op: Put | Delete | Cas = Put(key, self.value)
        elif self.op == "delete":
            op = Delete(key)
        elif self.op == "cas" and self.value is not None:
            op = Cas(key, self.expected, self.value)
        else:
            raise ValueError(f"op {self.op!r} is not a kv write")
        return Command(op, self.client, self.seq)


def _blob(value: Any, name: str, limit: int, *, nullable: bool = False) -> bytes | None:
    if value is None and nullable:
        return None
    if type(value) is str:
        value = value.encode("utf-8")
    elif type(value) is not bytes:
        kinds = "bytes, str or nil" if nullable else "bytes or str"
        raise DecodeError(f"field {name!r} must be {kinds}, got {_type_name(value)}")
    if len(value) > limit:
        raise TooLarge(f"field {name!r} is {len(value)} bytes, the limit is {limit}")
    return value


def _short_str(value: Any, name: str, limit: int) -> str:
    if type(value) is not str or not 0 < len(value) <= limit:
        raise DecodeError(f"field {name!r} must be a non-empty str of at most {limit} chars")
    return value


def _request_from_map(raw: dict[Any, Any], max_key: int, max_value: int) -> Request:
    """Validate a request map against KNOWN_OPS and build the Request."""
    op = raw.get("op")
    if op is None:
        raise DecodeError("missing field 'op'")
    if type(op) is not str:
        raise DecodeError(f"field 'op' must be a str, got {_type_name(op)}")
    op = OP_ALIASES.get(op, op)
    spec = KNOWN_OPS.get(op)
    if spec is None:
        raise DecodeError(f"unknown op {_describe(op)}; known ops: {', '.join(sorted(KNOWN_OPS))}")
    for name in raw:
        if name != "op" and name not in spec.required and name not in spec.optional:
            if type(name) is not str:
                raise DecodeError("map keys must be str")
            raise DecodeError(f"unknown field {_describe(name)} for op {op!r}")
    for name in spec.required:
        if name not in raw:
            raise DecodeError(f"missing field {name!r} for op {op!r}")
    fields: dict[str, Any] = {"op": op}
    for name, value in raw.items():
        if name == "op":
            continue
        fields[name] = _FIELD_PARSERS[name](value, max_key, max_value)
    if "key" in fields and not fields["key"]:
        raise DecodeError("field 'key' must not be empty")
    if ("client" in fields) != ("seq" in fields):
        raise DecodeError("fields 'client' and 'seq' must be given together")
    fields["has_expected"] = "expected" in fields
    return Request(**fields)


def _parse_seq(value: Any, max_key: int, max_value: int) -> int:
    if type(value) is not int or value < 0:
        raise DecodeError(f"field 'seq' must be an int >= 0, got {_type_name(value)}")
    return value


def _parse_consistency(value: Any, max_key: int, max_value: int) -> str:
    if type(value) is not str or value not in CONSISTENCY_LEVELS:
        raise DecodeError(
            f"field 'consistency' must be one of: {', '.join(sorted(CONSISTENCY_LEVELS))}"
        )
    return value


def _parse_learner(value: Any, max_key: int, max_value: int) -> bool:
    if type(value) is not bool:
        raise DecodeError(f"field 'learner' must be a bool, got {_type_name(value)}")
    return value


_FIELD_PARSERS: dict[str, Callable[[Any, int, int], Any]] = {
    "key": lambda v, max_key, _: _blob(v, "key", max_key),
    "value": lambda v, _, max_value: _blob(v, "value", max_value),
    "expected": lambda v, _, max_value: _blob(v, "expected", max_value, nullable=True),
    "client": lambda v, _k, _v: _short_str(v, "client", MAX_CLIENT_ID_LEN),
    "seq": _parse_seq,
    "consistency": _parse_consistency,
    "id": lambda v, _k, _v: _short_str(v, "id", MAX_NODE_ID_LEN),
    "peer": lambda v, _k, _v: _short_str(v, "peer", MAX_ENDPOINT_LEN),
    "client_endpoint": lambda v, _k, _v: _short_str(v, "client_endpoint", MAX_ENDPOINT_LEN),
    "public_key": lambda v, _k, _v: _short_str(v, "public_key", MAX_ENDPOINT_LEN),
    "learner": _parse_learner,
}


def _reject_duplicate_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise DecodeError("duplicate keys in a map")
    return out


def decode_request(
    buf: bytes, *, max_key: int = DEFAULT_MAX_KEY, max_value: int = DEFAULT_MAX_VALUE
) -> Request:
    """Decode and validate a client request frame (DESIGN.md §2).

    Args:
        buf: the frame.
        max_key: the longest key accepted, in bytes (after UTF-8 encoding).
        max_value: the longest `value` or `expected` accepted, in bytes.

    Returns:
        The request, with the op alias resolved and str keys/values encoded to bytes.

    Raises:
        TooLarge: the frame, the key or a value exceeds the limits.
        DecodeError: anything else wrong; the message is meant for the client.
    """
    if type(buf) is not bytes:
        raise DecodeError("a frame must be bytes")
    max_frame = max_key + 2 * max_value + REQUEST_OVERHEAD
    if len(buf) > max_frame:
        raise TooLarge(f"request of {len(buf)} bytes exceeds the limit of {max_frame}")
    try:
        # The frame size bounds every string; arrays are never valid in a request.
        raw = msgpack.unpackb(
            buf,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_frame,
            max_str_len=max_frame,
            max_array_len=16,
            max_map_len=32,
            ext_hook=_reject_ext,
            object_pairs_hook=_reject_duplicate_keys,
        )
    except DecodeError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(f"not valid msgpack: {exc}") from exc
    if type(raw) is not dict:
        raise DecodeError(f"a request must be a msgpack map, got {_type_name(raw)}")
    return _request_from_map(raw, max_key, max_value)


def _request_to_map(request: Request) -> dict[str, Any]:
    """The map form of a validated request; decoding it gives the same Request back."""
    out: dict[str, Any] = {"op": request.op}
    for name in ("key", "value", "client", "seq", "id", "peer", "client_endpoint", "public_key"):
        value = getattr(request, name)
        if value is not None:
            out[name] = value
    if request.has_expected:
        out["expected"] = request.expected
    if request.op == "get":
        out["consistency"] = request.consistency
    if request.learner:
        out["learner"] = True
    return out


def encode_request(op: str, **fields: Any) -> bytes:
    """Encode a client request map ``{"op": op, **fields}`` (client library side).

    Pass only the fields to send; ``expected=None`` sends nil ("the key must be absent").

    Raises:
        ValueError: `op` or a field name is unknown.
    """
    spec = KNOWN_OPS.get(OP_ALIASES.get(op, op))
    if spec is None:
        raise ValueError(f"unknown op {op!r}")
    unknown = set(fields) - spec.required - spec.optional
    if unknown:
        raise ValueError(f"unknown fields for op {op!r}: {sorted(unknown)}")
    return _packb({"op": op, **fields})


# --- client replies ---------------------------------------------------------------------

_REPLY_KEYS = frozenset({"ok", "value", "found", "error", "leader", "index"})


def encode_reply(
    *,
    ok: bool,
    value: bytes | None = None,
    found: bool | None = None,
    error: str | None = None,
    message: str | None = None,
    leader: str | None = None,
    index: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> bytes:
    """Encode a reply map (DESIGN.md §2).

    Args:
        ok: whether the request succeeded; must be False exactly when `error` is set.
        value: the value of a get, or the current value after a failed cas.
        found: for get only (omitted from the map when None).
        error: an error code from `ERROR_CODES`, or None.
        message: text for the error (defaults to the code).
        leader: the leader this node knows of, or None.
        index: the log index at which a write was applied, or None.
        extra: more top-level keys (e.g. a status's `id`, `role`, `term`, ...); they must
            not collide with the standard ones.

    Raises:
        ValueError: an unknown error code, `ok` inconsistent with `error`, or a colliding
            extra key.
    """
    if error is not None and error not in ERROR_CODES:
        raise ValueError(f"unknown error code {error!r}")
    if ok == (error is not None):
        raise ValueError("ok must be False exactly when an error is given")
    reply: dict[str, Any] = {
        "ok": ok,
        "value": value,
        "error": None if error is None else {"code": error, "message": message or error},
        "leader": leader,
        "index": index,
    }
    if found is not None:
        reply["found"] = found
    if extra:
        clash = _REPLY_KEYS.intersection(extra)
        if clash:
            raise ValueError(f"extra keys collide with reply keys: {sorted(clash)}")
        reply.update(extra)
    return _packb(reply)


def encode_result_reply(result: Result, *, leader: str | None) -> bytes:
    """Encode the reply to a write from the kv `Result` it produced."""
    return encode_reply(
        ok=result.ok,
        value=result.value,
        error=result.error,
        message=result.message,
        leader=leader,
        index=result.index,
    )


def decode_reply(buf: bytes) -> dict[str, Any]:
    """Decode a reply frame (client library side).

    Returns:
        The reply map: `ok` is a bool, `error` None or a map with a str `code`.

    Raises:
        DecodeError: not a map, or the checks above fail.
    """
    limit = len(buf) if type(buf) is bytes else 0
    reply = _unpack(buf, limit, limit, 1 << 16, 1 << 12)
    if type(reply) is not dict:
        raise DecodeError(f"a reply must be a msgpack map, got {_type_name(reply)}")
    if type(reply.get("ok")) is not bool:
        raise DecodeError("a reply needs a bool 'ok'")
    error = reply.get("error")
    if error is not None and (type(error) is not dict or type(error.get("code")) is not str):
        raise DecodeError("a reply's 'error' must be nil or a map with a str 'code'")
    return reply
