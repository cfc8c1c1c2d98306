"""Adapter tests of zraft.wire: round trips, validation of every field, and a seeded fuzz."""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from typing import Any

import msgpack
import pytest

from zraft.core.membership import encode_config
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
from zraft.state.legacy import result_fields
from zraft.state.machine import KVMachine
from zraft.wire import (
    MAX_ENTRIES,
    TAG_FORWARD,
    WIRE_VERSION,
    DecodeError,
    Forward,
    ForwardReply,
    Request,
    SnapshotAck,
    SnapshotChunk,
    TooLarge,
    decode_command,
    decode_message,
    decode_peer_frame,
    decode_reply,
    decode_request,
    encode_command,
    encode_forward,
    encode_forward_reply,
    encode_message,
    encode_reply,
    encode_request,
    encode_snapshot_ack,
    encode_snapshot_chunk,
    ops,
)
from zraft.wire.ops import Retry, Route

PEERS = frozenset({"n1", "n2", "n3"})

ENTRIES = (
    Entry(term=2, index=8, kind=EntryKind.NOOP, data=b""),
    Entry(term=3, index=9, kind=EntryKind.NORMAL, data=b"\x00\xffcmd"),
    Entry(
        term=3,
        index=10,
        kind=EntryKind.CONFIG,
        data=encode_config(Membership(frozenset({"n1", "n2"}), frozenset({"n3"})), b"ctx"),
    ),
)
META = SnapshotMeta(
    index=40, term=6, membership=Membership(voters=frozenset({"n1", "n2"}), learners=frozenset())
)

# Every field of every sample holds a value distinct from its neighbours, so a field-order
# mix-up between the encoder and the decoder cannot round-trip unnoticed.
MESSAGES: list[Message] = [
    VoteRequest(src="n1", dst="n2", term=5, last_log_index=7, last_log_term=4, prevote=True),
    VoteRequest(src="n1", dst="n2", term=5, last_log_index=7, last_log_term=4, transfer=True),
    VoteResponse(src="n2", dst="n1", term=5, granted=True, prevote=False),
    VoteResponse(src="n2", dst="n1", term=5, granted=False, prevote=True),
    AppendRequest(src="n1", dst="n3", term=3, prev_index=7, prev_term=2, entries=ENTRIES, commit=6),
    AppendRequest(src="n1", dst="n3", term=9, prev_index=0, prev_term=0, entries=(), commit=0),
    AppendRequest(
        src="n1", dst="n2", term=4, prev_index=11, prev_term=3, entries=(), commit=10, seq=99
    ),
    AppendResponse(src="n3", dst="n1", term=3, success=True, index=10, hint=0, seq=12),
    AppendResponse(src="n3", dst="n1", term=3, success=False, index=7, hint=5, seq=13),
    SnapshotRequest(src="n1", dst="n2", term=7, meta=META),
    SnapshotRequest(
        src="n1",
        dst="n2",
        term=7,
        meta=SnapshotMeta(
            index=3,
            term=1,
            membership=Membership(
                voters=frozenset({"n1"}),
                learners=frozenset({"n2", "n3"}),
                promotable=frozenset({"n3"}),
            ),
        ),
    ),
    SnapshotResponse(src="n2", dst="n1", term=7, index=40),
    TimeoutNow(src="n1", dst="n3", term=8),
    ReadIndexRequest(src="n2", dst="n1", term=8, context=77),
    ReadIndexResponse(src="n1", dst="n2", term=8, context=77, index=31, success=True),
    ReadIndexResponse(src="n1", dst="n2", term=8, context=78, index=0, success=False),
]

COMMANDS = [
    Command(Put(b"k", b"v")),
    Command(Put(b"", b""), "client-1", 0),
    Command(Delete(b"k")),
    Command(Delete(b"\x00k"), "c", 2**63),
    Command(Cas(b"k", None, b"v")),
    Command(Cas(b"k", b"old", b"new"), "c", 5),
    Command(Cas(b"k", b"", b"new"), "c", 6),
]

REQUESTS = [
    Request.of("put", key=b"k", value=b"v"),
    Request.of("put", key=b"k", value=b"", client="c1", seq=3),
    Request.of("get", key=b"k"),
    Request.of("get", key=b"k", consistency="serializable"),
    Request.of("delete", key=b"\xffk"),
    Request.of("cas", key=b"k", expected=None, value=b"v"),
    Request.of("cas", key=b"k", expected=b"a", value=b"b", client="c", seq=0),
    Request.of("status"),
    Request.of("add_member", id="n4", peer="tcp://h:7104", client_endpoint="tcp://h:7204"),
    Request.of("add_member", id="n5", peer="tcp://h:7105", learner=True),
    Request.of("transfer_leader", id="n2"),
    Request.of("snapshot"),
]


def frame_of(buf: bytes) -> list[Any]:
    """The raw msgpack array of an encoded peer frame, to mutate in validation tests."""
    return msgpack.unpackb(buf, raw=False)  # type: ignore[no-any-return]


def pack(obj: Any) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


# --- peer messages: round trips ---------------------------------------------------------


def test_samples_cover_every_message_class() -> None:
    assert {type(m) for m in MESSAGES} == set(MESSAGE_TYPES)


@pytest.mark.parametrize("msg", MESSAGES, ids=lambda m: type(m).__name__)
def test_message_round_trip(msg: Message) -> None:
    buf = encode_message(msg)
    frame = frame_of(buf)
    assert frame[:2] == [WIRE_VERSION, MESSAGE_TYPES.index(type(msg))]
    assert len(frame) == 2 + len(dataclasses.fields(msg))
    assert decode_message(buf) == msg
    assert decode_message(buf, peers=PEERS) == msg
    if isinstance(msg, SnapshotRequest):
        with pytest.raises(DecodeError, match="snapshot chunks only"):
            decode_peer_frame(buf, peers=PEERS)
    else:
        assert decode_peer_frame(buf, peers=PEERS) == msg


def test_decoded_entries_are_typed() -> None:
    decoded = decode_message(encode_message(MESSAGES[4]))
    assert isinstance(decoded, AppendRequest)
    assert [type(e.kind) for e in decoded.entries] == [EntryKind] * 3
    assert isinstance(decoded.entries, tuple)


# --- peer messages: validation ----------------------------------------------------------

VOTE = encode_message(MESSAGES[0])  # [1, 0, src, dst, term, lli, llt, prevote, transfer]
APPEND = encode_message(MESSAGES[4])  # [1, 2, src, dst, term, pi, pt, entries, commit, seq]
SNAP = encode_message(MESSAGES[9])  # [1, 4, src, dst, term, meta, data]


def mutated(buf: bytes, change: Callable[[list[Any]], None]) -> bytes:
    frame = frame_of(buf)
    change(frame)
    return pack(frame)


def setitem(position: int, value: Any) -> Callable[[list[Any]], None]:
    def change(frame: list[Any]) -> None:
        frame[position] = value

    return change


def set_entry(entry: int, position: int, value: Any) -> Callable[[list[Any]], None]:
    def change(frame: list[Any]) -> None:
        frame[7][entry][position] = value

    return change


def set_meta(*path: int, value: Any) -> Callable[[list[Any]], None]:
    def change(frame: list[Any]) -> None:
        target = frame[5]
        for step in path[:-1]:
            target = target[step]
        target[path[-1]] = value

    return change


INVALID_PEER_FRAMES = {
    "empty": b"",
    "not msgpack": b"\xc1",
    "trailing bytes": VOTE + b"\x00",
    "top level map": pack({"v": 1}),
    "top level int": pack(1),
    "too short": pack([WIRE_VERSION]),
    "wrong version": mutated(VOTE, setitem(0, 2)),
    "version bool": mutated(VOTE, setitem(0, True)),
    "version str": mutated(VOTE, setitem(0, "1")),
    "unknown tag": mutated(VOTE, setitem(1, len(MESSAGE_TYPES))),
    "negative tag": mutated(VOTE, setitem(1, -1)),
    "tag bool": mutated(VOTE, setitem(1, False)),
    "tag float": mutated(VOTE, setitem(1, 0.0)),
    "extra field": mutated(VOTE, lambda f: f.append(False)),
    "missing field": mutated(VOTE, lambda f: f.pop()),
    "bool for int": mutated(VOTE, setitem(4, True)),
    "int for bool": mutated(VOTE, setitem(7, 1)),
    "nil for bool": mutated(VOTE, setitem(7, None)),
    "negative int": mutated(VOTE, setitem(4, -1)),
    "float for int": mutated(VOTE, setitem(5, 1.0)),
    "nan for int": mutated(VOTE, setitem(5, math.nan)),
    "empty node id": mutated(VOTE, setitem(2, "")),
    "long node id": mutated(VOTE, setitem(2, "n" * 65)),
    "bytes node id": mutated(VOTE, setitem(3, b"n2")),
    "ext value": mutated(VOTE, setitem(4, msgpack.ExtType(5, b"x"))),
    "timestamp value": mutated(VOTE, setitem(4, msgpack.Timestamp(1, 0))),
    "entries not a list": mutated(APPEND, setitem(7, {"a": 1})),
    "entry too short": mutated(APPEND, set_entry(0, 3, None)),
    "entry term negative": mutated(APPEND, set_entry(0, 0, -2)),
    "entry index bool": mutated(APPEND, set_entry(0, 1, True)),
    "entry kind unknown": mutated(APPEND, set_entry(0, 2, 7)),
    "entry kind bool": mutated(APPEND, set_entry(0, 2, True)),
    "entry data str": mutated(APPEND, set_entry(1, 3, "cmd")),
    "entry gap": mutated(APPEND, set_entry(2, 1, 11)),
    "config entry not a config": mutated(APPEND, set_entry(2, 3, b"cfg")),
    "config entry bad id": mutated(APPEND, set_entry(2, 3, b"zraft-config/1 n 1 -\n")),
    "config entry no voters": mutated(APPEND, set_entry(2, 3, b"zraft-config/1  -\n")),
    "entries start after prev_index+1": mutated(APPEND, setitem(5, 6)),
    "entries overlap prev_index": mutated(APPEND, setitem(5, 8)),
    "entry term decreases": mutated(APPEND, set_entry(2, 0, 2)),
    "entry term below prev_term": mutated(APPEND, setitem(6, 3)),
    "entry term above message term": mutated(APPEND, set_entry(2, 0, 4)),
    "prev_term above term": mutated(
        encode_message(MESSAGES[5]), setitem(6, 10)
    ),  # heartbeat, no entries
    "meta not a list": mutated(SNAP, setitem(5, 40)),
    "meta index negative": mutated(SNAP, set_meta(0, value=-1)),
    "meta no voters": mutated(SNAP, set_meta(2, 0, value=[])),
    "meta voter is learner": mutated(SNAP, set_meta(2, 1, value=["n1"])),
    "meta duplicate voters": mutated(SNAP, set_meta(2, 0, value=["n1", "n1"])),
    "meta voter not str": mutated(SNAP, set_meta(2, 0, value=[1])),
    "meta membership map": mutated(SNAP, set_meta(2, value={"voters": ["n1"]})),
}


@pytest.mark.parametrize("buf", INVALID_PEER_FRAMES.values(), ids=INVALID_PEER_FRAMES.keys())
def test_invalid_peer_frames_raise_decode_error(buf: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_message(buf)
    with pytest.raises(DecodeError):
        decode_peer_frame(buf)


def test_too_many_entries() -> None:
    entries = [[1, 1 + i, 0, b""] for i in range(MAX_ENTRIES + 1)]
    buf = pack([WIRE_VERSION, 2, "n1", "n2", 1, 0, 0, entries, 0, 0])
    with pytest.raises(DecodeError, match="entries"):
        decode_message(buf)


def test_max_entries_accepted() -> None:
    entries = tuple(Entry(1, 1 + i, EntryKind.NORMAL, b"") for i in range(MAX_ENTRIES))
    msg = AppendRequest(
        src="n1", dst="n2", term=1, prev_index=0, prev_term=0, entries=entries, commit=0
    )
    assert decode_message(encode_message(msg)) == msg


@pytest.mark.parametrize("src", ["n4", "n"])
def test_src_must_be_a_known_peer(src: str) -> None:
    buf = encode_message(TimeoutNow(src=src, dst="n1", term=1))
    assert decode_message(buf).src == src  # without a peer set, any id is accepted
    for decode in (decode_message, decode_peer_frame):
        with pytest.raises(DecodeError, match="not a known peer"):
            decode(buf, peers=PEERS)


def test_decode_error_carries_reason() -> None:
    with pytest.raises(DecodeError) as info:
        decode_message(INVALID_PEER_FRAMES["bool for int"])
    assert "VoteRequest.term" in info.value.reason
    assert isinstance(info.value, ValueError)


# --- forward frames ---------------------------------------------------------------------


@pytest.mark.parametrize("request_", REQUESTS, ids=lambda r: r.op)
def test_forward_round_trip(request_: Request) -> None:
    buf = encode_forward("n2", 17, request_)
    assert decode_peer_frame(buf, peers=PEERS) == Forward(src="n2", request_id=17, request=request_)
    with pytest.raises(DecodeError, match="unknown message tag"):
        decode_message(buf)


def test_forward_reply_round_trip() -> None:
    reply = encode_reply(ok=True, value=b"v", found=True, leader="n1")
    buf = encode_forward_reply("n1", 2**40, reply)
    assert decode_peer_frame(buf, peers=PEERS) == ForwardReply(
        src="n1", request_id=2**40, reply=reply
    )
    with pytest.raises(DecodeError):
        decode_message(buf)


GOOD_FORWARD = encode_forward("n2", 1, REQUESTS[0])
INVALID_FORWARDS = {
    "src not a peer": encode_forward("n9", 1, REQUESTS[0]),
    "bad src": mutated(GOOD_FORWARD, setitem(2, 5)),
    "negative id": mutated(GOOD_FORWARD, setitem(3, -1)),
    "request not a map": mutated(GOOD_FORWARD, setitem(4, [])),
    "request bad op": mutated(GOOD_FORWARD, setitem(4, {"op": "nope"})),
    "request key too large": mutated(GOOD_FORWARD, setitem(4, {"op": "get", "key": b"k" * 5000})),
    "missing field": mutated(GOOD_FORWARD, lambda f: f.pop()),
    "reply not bytes": encode_forward_reply("n1", 1, "x"),  # type: ignore[arg-type]
    "reply not a reply": encode_forward_reply("n1", 1, pack({"value": 1})),
    "reply not msgpack": encode_forward_reply("n1", 1, b"\xc1"),
    "tag between": mutated(GOOD_FORWARD, setitem(1, TAG_FORWARD - 1)),
}


@pytest.mark.parametrize("buf", INVALID_FORWARDS.values(), ids=INVALID_FORWARDS.keys())
def test_invalid_forward_frames(buf: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_peer_frame(buf, peers=PEERS)


# --- snapshot transfer frames -------------------------------------------------------------
CHUNK = SnapshotChunk("n1", "n2", 7, META, 1024, 4096, b"\x00" * 512)
ACK = SnapshotAck("n2", "n1", 7, META.index, 1536, True)


def test_snapshot_chunk_and_ack_round_trip() -> None:
    assert decode_peer_frame(encode_snapshot_chunk(CHUNK), peers=PEERS) == CHUNK
    assert decode_peer_frame(encode_snapshot_ack(ACK), peers=PEERS) == ACK
    refused = SnapshotAck("n2", "n1", 7, 3, 0, False, "checksum mismatch")
    assert decode_peer_frame(encode_snapshot_ack(refused), peers=PEERS) == refused
    assert not CHUNK.is_last
    assert SnapshotChunk("n1", "n2", 7, META, 10, 12, b"ab").is_last


GOOD_CHUNK = encode_snapshot_chunk(CHUNK)
GOOD_ACK = encode_snapshot_ack(ACK)
INVALID_SNAPSHOT_FRAMES = {
    "chunk past total": mutated(GOOD_CHUNK, setitem(7, 100)),
    "chunk data not bytes": mutated(GOOD_CHUNK, setitem(8, "text")),
    "chunk negative offset": mutated(GOOD_CHUNK, setitem(6, -1)),
    "chunk bad meta": mutated(GOOD_CHUNK, setitem(5, [1, 2])),
    "chunk src not a peer": mutated(GOOD_CHUNK, setitem(2, "n9")),
    "chunk missing field": mutated(GOOD_CHUNK, lambda f: f.pop()),
    "ack ok not bool": mutated(GOOD_ACK, setitem(7, 1)),
    "ack reason not str": mutated(GOOD_ACK, setitem(8, b"x")),
    "ack reason too long": mutated(GOOD_ACK, setitem(8, "x" * 600)),
    "ack extra field": mutated(GOOD_ACK, lambda f: f.append(1)),
}


@pytest.mark.parametrize(
    "buf", INVALID_SNAPSHOT_FRAMES.values(), ids=INVALID_SNAPSHOT_FRAMES.keys()
)
def test_invalid_snapshot_frames(buf: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_peer_frame(buf, peers=PEERS)


# --- commands ---------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS, ids=repr)
def test_command_round_trip(command: Command) -> None:
    assert decode_command(encode_command(command)) == command


INVALID_COMMANDS = {
    "empty": b"",
    "not an array": pack({"op": 0}),
    "empty array": pack([]),
    "unknown opcode": pack([9, None, None, b"k"]),
    "opcode bool": pack([False, None, None, b"k", b"v"]),
    "put arity": pack([0, None, None, b"k"]),
    "cas arity": pack([2, None, None, b"k", b"v"]),
    "client without seq": pack([1, "c", None, b"k"]),
    "seq without client": pack([1, None, 1, b"k"]),
    "empty client": pack([1, "", 1, b"k"]),
    "negative seq": pack([1, "c", -1, b"k"]),
    "seq bool": pack([1, "c", True, b"k"]),
    "key str": pack([1, None, None, "k"]),
    "value nil": pack([0, None, None, b"k", None]),
    "expected int": pack([2, None, None, b"k", 1, b"v"]),
    "nested map": pack([0, None, None, b"k", {"a": 1}]),
}


@pytest.mark.parametrize("buf", INVALID_COMMANDS.values(), ids=INVALID_COMMANDS.keys())
def test_invalid_commands(buf: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_command(buf)


# --- client requests --------------------------------------------------------------------

VALID_REQUESTS = [
    ({"op": "put", "key": "k", "value": "v"}, Request.of("put", key=b"k", value=b"v")),
    ({"op": "put", "key": b"\x00", "value": b""}, Request.of("put", key=b"\x00", value=b"")),
    ({"op": "get", "key": "k"}, Request.of("get", key=b"k")),
    (
        {"op": "get", "key": "k", "consistency": "serializable"},
        Request.of("get", key=b"k", consistency="serializable"),
    ),
    ({"op": "del", "key": "k"}, Request.of("delete", key=b"k")),
    ({"op": "delete", "key": "ключ"}, Request.of("delete", key="ключ".encode())),
    (
        {"op": "cas", "key": "k", "expected": None, "value": "v"},
        Request.of("cas", key=b"k", expected=None, value=b"v"),
    ),
    (
        {"op": "cas", "key": "k", "expected": "a", "value": b"b", "client": "c", "seq": 4},
        Request.of("cas", key=b"k", expected=b"a", value=b"b", client="c", seq=4),
    ),
    ({"op": "status"}, Request.of("status")),
    ({"op": "status", "client": "c", "seq": 1}, Request.of("status", client="c", seq=1)),
    (
        {"op": "add_member", "id": "n4", "peer": "tcp://h:1", "learner": True},
        Request.of("add_member", id="n4", peer="tcp://h:1", learner=True),
    ),
    ({"op": "remove_member", "id": "n4"}, Request.of("remove_member", id="n4")),
    ({"op": "members"}, Request.of("members")),
]


@pytest.mark.parametrize(("fields", "want"), VALID_REQUESTS, ids=lambda v: str(v)[:40])
def test_valid_requests(fields: dict[str, Any], want: Request) -> None:
    assert decode_request(pack(fields)) == want
    op = fields.pop("op")
    assert decode_request(encode_request(op, **fields)) == want


def test_request_policies_and_command() -> None:
    """What `kind` used to say is three attributes of the op; the command is the machine's."""
    policies = [(r.spec.role, r.spec.route, r.spec.retry) for r in REQUESTS[:8]]
    write = ("write", Route.LOG, Retry.SESSION)
    read = ("read", Route.READ, Retry.ALWAYS)
    assert policies == [write] * 2 + [read] * 2 + [write] * 3 + [
        ("read", Route.LOCAL, Retry.ALWAYS)
    ]
    assert KVMachine.command_of(REQUESTS[1]) == Command(Put(b"k", b""), "c1", 3)
    assert KVMachine.command_of(REQUESTS[4]) == Command(Delete(b"\xffk"))
    assert KVMachine.command_of(REQUESTS[6]) == Command(Cas(b"k", b"a", b"b"), "c", 0)
    with pytest.raises(ValueError):
        KVMachine.command_of(REQUESTS[2])


INVALID_REQUESTS = [
    (pack([1, 2]), "must be a msgpack map"),
    (pack("put"), "must be a msgpack map"),
    (pack({}), "missing field 'op'"),
    (pack({"op": 1}), "'op' must be a str"),
    (pack({"op": "frobnicate"}), "unknown op"),
    (pack({"op": "put", "key": "k"}), "missing field 'value'"),
    (pack({"op": "put", "value": "v"}), "missing field 'key'"),
    (pack({"op": "cas", "key": "k", "value": "v"}), "missing field 'expected'"),
    (pack({"op": "get", "key": 5}), "'key' must be bytes or str"),
    (pack({"op": "put", "key": "k", "value": None}), "'value' must be bytes or str"),
    (pack({"op": "cas", "key": "k", "value": "v", "expected": 1}), "bytes, str or nil"),
    (pack({"op": "get", "key": ""}), "must not be empty"),
    (pack({"op": "get", "key": "k", "foo": 1}), "unknown field 'foo'"),
    (pack({"op": "get", "key": "k", "value": "v"}), "unknown field 'value' for op 'get'"),
    (pack({"op": "get", "key": "k", "consistency": "eventual"}), "consistency"),
    (pack({"op": "put", "key": "k", "value": "v", "client": "c"}), "given together"),
    (pack({"op": "put", "key": "k", "value": "v", "seq": 1}), "given together"),
    (pack({"op": "put", "key": "k", "value": "v", "client": "c", "seq": -1}), "'seq'"),
    (pack({"op": "put", "key": "k", "value": "v", "client": "c", "seq": True}), "'seq'"),
    (pack({"op": "put", "key": "k", "value": "v", "client": "", "seq": 1}), "'client'"),
    (pack({"op": "add_member", "id": "n4", "peer": "p", "learner": 1}), "'learner'"),
    (pack({"op": "remove_member", "id": "n" * 65}), "'id'"),
    (pack({b"op": "status"}), "missing field 'op'"),
    (pack({"op": "status", b"x": 1}), "map keys must be str"),
    (pack({"op": "status", "x": msgpack.ExtType(1, b"")}), "extension"),
    (pack({"op": "status", 1: 1}), "not valid msgpack"),
    (b"\x82\xa2op\xa6status\xa2op\xa3get", "duplicate keys"),
    (b"\x81\xa2op\xa2\xff\xfe", "not valid msgpack"),
    (b"", "not valid msgpack"),
]


@pytest.mark.parametrize(("buf", "reason"), INVALID_REQUESTS, ids=lambda v: str(v)[:40])
def test_invalid_requests(buf: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason) as info:
        decode_request(buf)
    assert not isinstance(info.value, TooLarge)


K = 4096
V = 1 << 20


@pytest.mark.parametrize(
    ("fields", "limits", "too_large"),
    [
        ({"op": "get", "key": b"k" * K}, {}, False),
        ({"op": "get", "key": b"k" * (K + 1)}, {}, True),
        ({"op": "get", "key": "k" * (K + 1)}, {}, True),
        ({"op": "get", "key": "é" * (K // 2)}, {}, False),
        ({"op": "get", "key": "é" * (K // 2 + 1)}, {}, True),  # measured in UTF-8 bytes
        ({"op": "put", "key": "k", "value": b"v" * V}, {}, False),
        ({"op": "put", "key": "k", "value": b"v" * (V + 1)}, {}, True),
        ({"op": "cas", "key": "k", "expected": b"v" * V, "value": b"v" * V}, {}, False),
        ({"op": "cas", "key": "k", "expected": b"v" * (V + 1), "value": b""}, {}, True),
        ({"op": "put", "key": "abcd", "value": "v"}, {"max_key": 3}, True),
        ({"op": "put", "key": "k", "value": "vvv"}, {"max_value": 2}, True),
        ({"op": "put", "key": "k", "value": "v" * 10_000}, {"max_value": 10}, True),  # frame
        ({"op": "put", "key": "k", "value": "vv"}, {"max_value": 2}, False),
    ],
    ids=lambda v: str(v)[:30],
)
def test_size_limits(fields: dict[str, Any], limits: dict[str, int], too_large: bool) -> None:
    buf = pack(fields)
    if too_large:
        with pytest.raises(TooLarge):
            decode_request(buf, **limits)
    else:
        assert decode_request(buf, **limits).op == fields["op"]


@pytest.mark.parametrize(
    ("op", "fields"),
    [("frobnicate", {}), ("get", {"value": b"v"}), ("put", {"bogus": 1})],
)
def test_encode_request_rejects_unknown_names(op: str, fields: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_request(op, **fields)


# --- replies ----------------------------------------------------------------------------


def test_reply_round_trip() -> None:
    reply = decode_reply(encode_reply(ok=True, value=b"v", found=True, leader="n1"))
    assert reply == {
        "ok": True,
        "value": b"v",
        "found": True,
        "error": None,
        "leader": "n1",
        "index": None,
    }


def test_error_reply_and_status_extra() -> None:
    reply = decode_reply(
        encode_reply(ok=False, error="not_leader", message="ask n2", leader="n2", index=None)
    )
    assert reply["error"] == {"code": "not_leader", "message": "ask n2"}
    status = decode_reply(encode_reply(ok=True, leader="n1", extra={"role": "leader", "term": 3}))
    assert (status["role"], status["term"], "found" in status) == ("leader", 3, False)


@pytest.mark.parametrize(
    ("result", "want"),
    [
        (
            Result(ok=True, index=4, found=True),
            {"ok": True, "value": None, "error": None, "leader": "n1", "index": 4},
        ),
        (
            Result(ok=False, index=5, value=b"cur", found=True, error="cas_failed", message="m"),
            {
                "ok": False,
                "value": b"cur",
                "error": {"code": "cas_failed", "message": "m"},
                "leader": "n1",
                "index": 5,
            },
        ),
    ],
)
def test_result_reply(result: Result, want: dict[str, Any]) -> None:
    assert decode_reply(encode_reply(leader="n1", **result_fields(result))) == want


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ok": False, "error": "nope"},
        {"ok": True, "error": "internal"},
        {"ok": False},
        {"ok": True, "extra": {"leader": "n1"}},
    ],
)
def test_encode_reply_misuse_raises(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ValueError):
        encode_reply(**kwargs)


@pytest.mark.parametrize(
    "buf",
    [
        b"",
        pack([]),
        pack({"value": 1}),
        pack({"ok": 1}),
        pack({"ok": False, "error": "internal"}),
        pack({"ok": False, "error": {"code": 1}}),
    ],
)
def test_invalid_replies(buf: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_reply(buf)


# --- fuzz -------------------------------------------------------------------------------

FUZZ_SEED = 20240611
FUZZ_INPUTS = 20_000

VALID_FRAMES: list[bytes] = (
    [encode_message(m) for m in MESSAGES]
    + [encode_command(c) for c in COMMANDS]
    + [encode_forward("n1", 3, r) for r in REQUESTS]
    + [encode_forward_reply("n2", 3, encode_reply(ok=True, value=b"v", found=True))]
    + [pack(fields) for fields, _ in VALID_REQUESTS]
    + [
        encode_reply(ok=False, error="cas_failed", value=b"v", index=3, leader="n1"),
        encode_reply(ok=True, extra={"role": "leader", "peers": ["n1", "n2"]}),
    ]
)

SPECIAL_INPUTS: list[bytes] = [
    b"\x91" * 1000 + b"\xc0",  # deep but legal nesting
    b"\x91" * 200_000 + b"\xc0",  # deeper than msgpack's stack
    b"\x81\xa1a" * 2000 + b"\xc0",  # deeply nested maps
    b"\xdd\xff\xff\xff\xff",  # array32 declaring 4e9 elements
    b"\xdf\xff\xff\xff\xff",  # map32 declaring 4e9 pairs
    b"\xc6\xff\xff\xff\xff",  # bin32 declaring 4 GiB
    b"\xdb\xff\xff\xff\xff",  # str32 declaring 4 GiB
    b"\xc9\xff\xff\xff\xff\x05",  # ext32 declaring 4 GiB
    b"\x95\x01\x02\xdd\xff\xff\xff\xff",  # huge array inside a frame
    b"\xc1",  # reserved byte
    b"GET / HTTP/1.1\r\n\r\n",
    b"\xa2\xff\xfe",  # invalid UTF-8
    pack(math.nan),
    pack([WIRE_VERSION, 0, "n1", "n2", math.nan, math.inf, -math.inf, True, False]),
    pack(msgpack.ExtType(5, b"x")),
    pack(msgpack.Timestamp(10**9, 5)),
    pack([WIRE_VERSION, 2, "n1", "n2", 1, 0, 0, [[1, 1, 0, msgpack.ExtType(1, b"")]], 0, 0]),
    pack({"op": "put", "key": [[[[]]]], "value": {"a": {"b": None}}}),
    pack(2**64 - 1),
    pack(-(2**63)),
]


SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    2,
    7,
    64,
    65,
    -1,
    2**63 - 1,
    2**64 - 1,
    -(2**63),
    math.nan,
    math.inf,
    0.0,
    "",
    "n1",
    "n9",
    "put",
    "get",
    "cas",
    "del",
    "status",
    "serializable",
    "x" * 70,
    "é",
    b"",
    b"k",
    b"\x00" * 300,
]
REQUEST_FIELDS = sorted(ops.FIELDS)  # every declared field: a new op's fields join the fuzz
REQUEST_OPS = sorted([*ops.OPS, *ops.OP_ALIASES])  # every op and alias


def random_value(rng: random.Random, depth: int = 0) -> Any:
    """A random msgpack-able value: scalars of every type, rare ext types, containers."""
    roll = rng.random()
    if roll < 0.03:
        return rng.choice([msgpack.ExtType(rng.randint(0, 127), b"x"), msgpack.Timestamp(5, 0)])
    if depth >= 4 or roll < 0.65:
        return rng.choice(SCALARS) if rng.random() < 0.8 else rng.randint(-5, 100)
    if roll < 0.80:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    if roll < 0.90:  # entry-shaped
        return [[random_value(rng, depth + 1) for _ in range(4)] for _ in range(rng.randint(0, 3))]
    keys = ["op", "key", "value", "a", b"op", 1]
    return {rng.choice(keys): random_value(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def mutate_structure(rng: random.Random, buf: bytes) -> bytes:
    """Decode a valid frame, replace, drop or insert one element somewhere inside it."""
    obj = msgpack.unpackb(buf, raw=False)
    target = obj
    while True:
        if isinstance(target, dict) and target:
            key = rng.choice(list(target))
            child = target[key]
        elif isinstance(target, list) and target:
            key = rng.randrange(len(target))
            child = target[key]
        else:
            return pack(random_value(rng))
        if isinstance(child, list | dict) and child and rng.random() < 0.5:
            target = child
            continue
        action = rng.randrange(3)
        if action == 0 or isinstance(target, dict):
            target[key] = random_value(rng)
        elif action == 1:
            del target[key]
        else:
            target.insert(key, random_value(rng))
        return pack(obj)


def shaped_frame(rng: random.Random) -> bytes:
    """Right version and tag, random fields: gets past the header to every field checker."""
    tag = rng.choice(range(len(MESSAGE_TYPES) + 2))
    if tag >= len(MESSAGE_TYPES):
        tag = TAG_FORWARD + tag - len(MESSAGE_TYPES)
        count = 3
    else:
        count = len(dataclasses.fields(MESSAGE_TYPES[tag]))
    count += rng.choice([0, 0, 0, -1, 1])
    return pack([WIRE_VERSION, tag, *(random_value(rng) for _ in range(max(count, 0)))])


def shaped_request(rng: random.Random) -> bytes:
    """A map with a real op and a random choice of real fields with random values."""
    fields = {name: random_value(rng) for name in rng.sample(REQUEST_FIELDS, rng.randint(0, 4))}
    return pack({"op": rng.choice(REQUEST_OPS), **fields})


def shaped_command(rng: random.Random) -> bytes:
    """An array with a real opcode and random session and operands."""
    return pack([rng.randint(0, 2), *(random_value(rng) for _ in range(rng.randint(2, 5)))])


def fuzz_inputs(rng: random.Random, count: int) -> list[bytes]:
    """SPECIAL_INPUTS, then random bytes, truncations, bit flips and wrong shapes."""
    inputs = list(SPECIAL_INPUTS)
    while len(inputs) < count:
        kind = rng.randrange(9)
        base = rng.choice(VALID_FRAMES)
        if kind == 0:
            inputs.append(rng.randbytes(rng.randint(0, 40)))
        elif kind == 1:
            inputs.append(base[: rng.randrange(len(base))])
        elif kind == 2:
            flipped = bytearray(base)
            for _ in range(rng.randint(1, 4)):
                flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            inputs.append(bytes(flipped))
        elif kind == 3:
            inputs.append(pack(random_value(rng)))
        elif kind in (4, 5):
            inputs.append(mutate_structure(rng, base))
        elif kind == 6:
            inputs.append(shaped_frame(rng))
        elif kind == 7:
            inputs.append(shaped_request(rng))
        else:
            inputs.append(shaped_command(rng))
    return inputs


def test_fuzz_decoders_raise_only_decode_error() -> None:
    rng = random.Random(FUZZ_SEED)
    inputs = fuzz_inputs(rng, FUZZ_INPUTS)
    decoders: list[Callable[[bytes], object]] = [
        decode_message,
        lambda b: decode_message(b, peers=PEERS),
        lambda b: decode_peer_frame(b, peers=PEERS),
        decode_request,
        decode_command,
        decode_reply,
    ]
    accepted = 0
    for number, buf in enumerate(inputs):
        for decode in decoders:
            try:
                value = decode(buf)
            except DecodeError:
                continue
            except Exception as exc:  # the assertion under test: nothing else escapes
                pytest.fail(f"seed {FUZZ_SEED} input #{number} {buf[:80]!r}: {exc!r}")
            accepted += 1
            # Whatever a decoder accepts is well-formed: it encodes back to the same value.
            if decode is decode_message:
                assert decode_message(encode_message(value)) == value  # type: ignore[arg-type]
            elif decode is decode_command:
                assert decode_command(encode_command(value)) == value  # type: ignore[arg-type]
    assert len(inputs) >= FUZZ_INPUTS
    assert accepted > 0  # sanity: the fuzz is not rejecting everything at the first byte
