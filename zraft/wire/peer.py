"""Peer frames: the Raft messages and the node-to-node frames around them.

This contract must survive a rolling upgrade: nodes of two releases talk while a cluster
is restarted one node at a time. Every frame starts with `WIRE_VERSION`; a node refuses
frames of another version, and a new frame kind gets a new tag rather than changing an
old one. It never carries client semantics of its own: a forwarded request is the client
map (`zraft.wire.client`), a forwarded reply the client reply bytes.

Formats (msgpack arrays, packed with ``use_bin_type=True`` so bytes stay bytes):

- A `Message`: ``[WIRE_VERSION, TAG, *fields]``, TAG being the class's position in
  `zraft.core.messages.MESSAGE_TYPES`, the fields in dataclass field order. An `Entry` is
  ``[term, index, kind, data]``, a `SnapshotMeta` ``[index, term, [voters, learners,
  promotable]]`` (id lists sorted; a two-list membership, without `promotable`, is read
  too).
- A client request a follower forwards to the leader, and the answer:
  ``[V, TAG_FORWARD, src, request_id, request_map]`` and
  ``[V, TAG_FORWARD_REPLY, src, request_id, reply_bytes]``.
- A snapshot travels as ``[V, TAG_SNAPSHOT_CHUNK, src, dst, term, meta, offset, total,
  data]`` frames, each answered by ``[V, TAG_SNAPSHOT_ACK, src, dst, term, index,
  next_offset, ok, reason]``.
- ``[V, TAG_HELLO, src, dst, features]``: what a node's release reads (``"mvcc"``,
  ``"retired-marks"``): a leader upgrades the store, or writes a format, only once every
  member reads it. A first-release node drops it as an unknown tag ("cannot read").

`decode_peer_frame` accepts all of these but never a bare `SnapshotRequest`: a follower's
core sees one only once its node has the whole, verified file. `decode_message` accepts
messages only. Every decoder raises `DecodeError`, and only that, on bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

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
from zraft.wire.client import (
    DEFAULT_MAX_KEY,
    DEFAULT_MAX_VALUE,
    Request,
    decode_reply,
    request_from_map,
)
from zraft.wire.codec import (
    MAX_NODE_ID_LEN,
    DecodeError,
    describe,
    packb,
    type_name,
    unpack,
)
from zraft.wire.codec import blob as _bytes
from zraft.wire.codec import boolean as _bool
from zraft.wire.codec import node_id as _node_id
from zraft.wire.codec import uint as _uint
from zraft.wire.ops import Limits

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

TAG_HELLO = 68
"""Tag of a `Hello` frame."""

MAX_REASON_LEN = 512
"""Longest refusal reason in a `SnapshotAck`, in characters."""

MAX_ENTRIES = 65_536
"""Most entries one AppendRequest may carry."""

MAX_MEMBERS = 1024
"""Most ids in one voter or learner list."""

# msgpack's explicit limits for peer frames: a snapshot chunk is the largest bin.
PEER_MAX_BIN = 1 << 26
_PEER_MAX_STR = 1 << 16
_PEER_MAX_ARRAY = MAX_ENTRIES + 16
_PEER_MAX_MAP = 32

__all__ = ["MAX_NODE_ID_LEN"]  # re-exported for callers that size ids


_ENTRY_KINDS = {int(kind): kind for kind in EntryKind}
_CONFIG_KIND = int(EntryKind.CONFIG)


def _entries(value: Any, label: str) -> tuple[Entry, ...]:
    if type(value) is not list:
        raise DecodeError(f"{label}: expected an array of entries, got {type_name(value)}")
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
            raise DecodeError(f"{label}: unknown entry kind {describe(kind)}")
        if type(data) is not bytes:
            raise DecodeError(f"{label}: entry data must be bytes, got {type_name(data)}")
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
    return packb(frame)


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


@dataclass(frozen=True, slots=True)
class Hello:
    """What the sending node's release can do (see the module doc)."""

    src: str
    dst: str
    features: tuple[str, ...]


MAX_FEATURES = 32  # most feature names a `Hello` may carry

PeerFrame = Message | Forward | ForwardReply | SnapshotChunk | SnapshotAck | Hello
"""Anything that arrives on the peer channel."""


def _unpack_peer(buf: bytes) -> tuple[list[Any], int]:
    frame = unpack(buf, PEER_MAX_BIN, _PEER_MAX_STR, _PEER_MAX_ARRAY, _PEER_MAX_MAP)
    if type(frame) is not list or len(frame) < 2:
        raise DecodeError("a peer frame must be an array [version, tag, ...]")
    version, tag = frame[0], frame[1]
    if type(version) is not int or version != WIRE_VERSION:
        raise DecodeError(f"unsupported wire version {describe(version)} (expected {WIRE_VERSION})")
    if type(tag) is not int:
        raise DecodeError(f"the frame tag must be an int, got {type_name(tag)}")
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
    if tag == TAG_HELLO:
        hello = _decode_hello(frame)
        _check_src(hello.src, peers)
        return hello
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
        request = request_from_map(frame[4], Limits(max_key, max_value))
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
    return packb(
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
    return packb(
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


def _decode_hello(frame: list[Any]) -> Hello:
    if len(frame) != 5:
        raise DecodeError(f"Hello: expected 3 fields, got {len(frame) - 2}")
    features = frame[4]
    if type(features) is not list or len(features) > MAX_FEATURES:
        raise DecodeError(f"Hello.features: expected a list of at most {MAX_FEATURES} names")
    for name in features:
        if type(name) is not str or not 0 < len(name) <= 64:
            raise DecodeError("Hello.features: every name must be a str of 1 to 64 chars")
    return Hello(
        src=_node_id(frame[2], "Hello.src"),
        dst=_node_id(frame[3], "Hello.dst"),
        features=tuple(features),
    )


def encode_hello(hello: Hello) -> bytes:
    """Encode what a node's release can do, for one peer."""
    return packb([WIRE_VERSION, TAG_HELLO, hello.src, hello.dst, list(hello.features)])


def encode_forward(src: str, request_id: int, request: Request) -> bytes:
    """Encode a client request that node `src` forwards to the leader."""
    return packb([WIRE_VERSION, TAG_FORWARD, src, request_id, request.to_map()])


def encode_forward_reply(src: str, request_id: int, reply: bytes) -> bytes:
    """Encode the leader's (`src`) encoded client reply to the forward `request_id`."""
    return packb([WIRE_VERSION, TAG_FORWARD_REPLY, src, request_id, reply])
