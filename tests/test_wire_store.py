"""The byte formats of the data model (issue 13): the new ops' requests, the log entries
that carry them, the model entry, `Hello` peer frames and snapshot records; valid ones
round-trip, invalid ones raise `DecodeError` with a message that names the problem, and
a fuzz over all of them raises nothing else."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest

from zraft.state.kv import Command, Put
from zraft.wire.client import Request, decode_request, encode_request
from zraft.wire.codec import DecodeError, TooLarge
from zraft.wire.entries import (
    LoggedWrite,
    ModelUpgrade,
    decode_entry,
    encode_command,
    encode_upgrade,
    encode_write,
)
from zraft.wire.peer import WIRE_VERSION, Hello, decode_peer_frame, encode_hello
from zraft.wire.records import pack_records, unpack_records


def pack(obj: Any) -> bytes:
    """msgpack as any client would pack it."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


TXN = {
    "op": "txn",
    "compare": [
        {"key": "k", "target": "mod_revision", "result": "<", "operand": 5},
        {"key": "a", "prefix": True, "target": "value", "result": "!=", "operand": "x"},
    ],
    "success": [
        {"op": "put", "key": "k", "value": "v", "prev_kv": True},
        {"op": "range", "key": "a", "range_end": "b", "limit": 2, "keys_only": True},
    ],
    "failure": [{"op": "delete_range", "key": "a", "prefix": True, "prev_kv": True}],
}

VALID = [
    (
        {"op": "range", "key": "a", "range_end": "\0", "limit": 5, "sort_order": "descend"},
        Request.of("range", key=b"a", range_end=b"\0", limit=5, sort_order="descend"),
    ),
    (
        {"op": "range", "key": "a", "prefix": True, "revision": 7, "serializable": True},
        Request.of("range", key=b"a", prefix=True, revision=7, serializable=True),
    ),
    (
        {"op": "delete_range", "key": "a", "range_end": "", "prev_kv": False},
        Request.of("delete_range", key=b"a", range_end=b"", prev_kv=False),
    ),
    ({"op": "compact", "revision": 3}, Request.of("compact", revision=3)),
    ({"op": "put", "key": "k", "value": "v", "prev_kv": True}, None),
    (
        TXN,
        Request.of(
            "txn",
            compare=[
                {"key": b"k", "target": "mod", "result": "less", "operand": 5},
                {
                    "key": b"a",
                    "prefix": True,
                    "target": "value",
                    "result": "not_equal",
                    "operand": b"x",
                },
            ],
            success=[
                {"op": "put", "key": b"k", "value": b"v", "prev_kv": True},
                {"op": "range", "key": b"a", "range_end": b"b", "limit": 2, "keys_only": True},
            ],
            failure=[{"op": "delete_range", "key": b"a", "prefix": True, "prev_kv": True}],
        ),
    ),
    ({"op": "txn"}, Request.of("txn")),
    (
        {"op": "watch", "key": "a", "prefix": True, "start_revision": 9, "filters": ["noput"]},
        Request.of("watch", key=b"a", prefix=True, start_revision=9, filters=["noput"]),
    ),
    (
        {"op": "watch", "key": "a", "range_end": "\0", "wait_ms": 0, "max_events": 10_000},
        Request.of("watch", key=b"a", range_end=b"\0", wait_ms=0, max_events=10_000),
    ),
    (
        {"op": "watch", "key": "a", "prev_kv": True, "require_leader": True},
        Request.of("watch", key=b"a", prev_kv=True, require_leader=True),
    ),
]


@pytest.mark.parametrize(("raw", "want"), VALID, ids=lambda v: str(v)[:50])
def test_new_ops_decode_to_their_canonical_fields(
    raw: dict[str, Any], want: Request | None
) -> None:
    request = decode_request(pack(raw))
    if want is not None:
        assert request == want
    fields = {k: v for k, v in raw.items() if k != "op"}
    assert decode_request(encode_request(raw["op"], **fields)) == request


INVALID = [
    ({"op": "range"}, "missing field 'key'"),
    ({"op": "range", "key": "a", "prefix": True, "range_end": "b"}, "not both"),
    ({"op": "range", "key": "a", "limit": -1}, "'limit' must be an int >= 0"),
    ({"op": "range", "key": "a", "limit": True}, "'limit' must be an int >= 0"),
    ({"op": "range", "key": "a", "sort_order": "up"}, "'sort_order' must be one of"),
    ({"op": "range", "key": "a", "sort_target": "lease"}, "'sort_target' must be one of"),
    ({"op": "range", "key": "a", "revision": "1"}, "'revision' must be an int"),
    ({"op": "range", "key": "a", "range_end": 5}, "'range_end' must be bytes or str"),
    ({"op": "range", "key": "a", "value": "v"}, "unknown field 'value'"),
    ({"op": "compact"}, "missing field 'revision'"),
    ({"op": "txn", "compare": {"key": "k"}}, "must be an array of maps"),
    ({"op": "txn", "compare": ["k"]}, "must be a map"),
    ({"op": "txn", "compare": [{"key": "k", "result": "=", "operand": 1}]}, "'target'"),
    (
        {"op": "txn", "compare": [{"key": "k", "target": "size", "result": "=", "operand": 1}]},
        "target",
    ),
    (
        {"op": "txn", "compare": [{"key": "k", "target": "version", "result": "~", "operand": 1}]},
        "result",
    ),
    ({"op": "txn", "compare": [{"key": "k", "target": "version", "result": "="}]}, "'operand'"),
    (
        {
            "op": "txn",
            "compare": [{"key": "k", "target": "version", "result": "=", "operand": "1"}],
        },
        "int >= 0",
    ),
    (
        {"op": "txn", "compare": [{"key": "k", "target": "value", "result": "=", "operand": 1}]},
        "bytes or str",
    ),
    ({"op": "txn", "compare": [{"target": "value", "result": "=", "operand": "v"}]}, "'key'"),
    (
        {
            "op": "txn",
            "compare": [{"key": "k", "target": "lease", "result": "=", "operand": 0, "x": 1}],
        },
        "unknown field 'x'",
    ),
    ({"op": "txn", "success": [{"key": "k"}]}, "'op' must be one of"),
    ({"op": "txn", "success": [{"op": "cas", "key": "k"}]}, "'op' must be one of"),
    ({"op": "txn", "success": [{"op": "put", "key": "k"}]}, "missing field 'value'"),
    (
        {"op": "txn", "success": [{"op": "put", "key": "k", "value": "v", "client": "c"}]},
        "unknown field 'client'",
    ),
    (
        {"op": "txn", "failure": [{"op": "range", "key": "k", "revision": 1}]},
        "unknown field 'revision'",
    ),
    (
        {
            "op": "txn",
            "failure": [{"op": "delete_range", "key": "k", "prefix": True, "range_end": "z"}],
        },
        "not both",
    ),
    ({"op": "txn", "success": [{"op": "put", "key": "", "value": "v"}]}, "must not be empty"),
    ({"op": "txn", "success": [[1]]}, "must be a map"),
    ({"op": "txn", "success": [{"op": "put", "key": "k", "value": "v"}] * 129}, "limit is 128"),
    ({"op": "watch"}, "missing field 'key'"),
    ({"op": "watch", "key": "a", "wait_ms": 60_001}, "'wait_ms' must be an int from 0 to 60000"),
    ({"op": "watch", "key": "a", "max_events": 0}, "'max_events' must be an int from 1"),
    ({"op": "watch", "key": "a", "start_revision": -1}, "'start_revision' must be an int >= 0"),
    ({"op": "watch", "key": "a", "filters": "noput"}, "'filters' must be an array of"),
    ({"op": "watch", "key": "a", "filters": ["noput"] * 3}, "'filters' must be an array of"),
    ({"op": "watch", "key": "a", "filters": ["nothing"]}, "'filters' must be an array of"),
    ({"op": "watch", "key": "a", "require_leader": 1}, "'require_leader' must be a bool"),
    ({"op": "watch", "key": "a", "prefix": True, "range_end": "b"}, "not both"),
    ({"op": "watch", "key": "a", "revision": 3}, "unknown field 'revision'"),
]


@pytest.mark.parametrize(("raw", "reason"), INVALID, ids=lambda v: str(v)[:50])
def test_invalid_new_requests_name_the_problem(raw: dict[str, Any], reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_request(pack(raw))


def test_a_txn_is_bounded_by_the_frame_and_the_op_limit() -> None:
    many = {"op": "txn", "success": [{"op": "put", "key": "k", "value": "v"}] * 5}
    with pytest.raises(DecodeError, match="limit is 4"):
        decode_request(pack(many), max_ops=4)
    assert decode_request(pack(many), max_ops=5).op == "txn"
    huge = {"op": "txn", "success": [{"op": "put", "key": "k", "value": "v" * 1000}] * 100}
    with pytest.raises(TooLarge):
        decode_request(pack(huge), max_value=1000)  # each value fits; the frame does not


# --- log entries --------------------------------------------------------------------------


WRITES = [
    Request.of("put", key=b"k", value=b"v"),
    Request.of("put", key=b"k", value=b"v", prev_kv=True, client="c", seq=4),
    Request.of("delete", key=b"k", client="c", seq=5),
    Request.of("delete", key=b"k", prev_kv=True),
    Request.of("cas", key=b"k", expected=None, value=b"v"),
    Request.of("delete_range", key=b"a", prefix=True, prev_kv=True),
    Request.of("compact", revision=9, client="c", seq=6),
    decode_request(pack(TXN)),
]


@pytest.mark.parametrize("request_", WRITES, ids=repr)
def test_every_write_round_trips_through_its_log_entry(request_: Request) -> None:
    logged = decode_entry(encode_write(request_))
    assert isinstance(logged, LoggedWrite)
    fields = dict(request_.fields)
    client, seq = fields.pop("client", None), fields.pop("seq", None)
    assert (logged.request, logged.client, logged.seq) == (
        Request(request_.op, fields),
        client,
        seq,
    )


def test_plain_writes_keep_the_first_release_layout() -> None:
    """A node of the previous release can apply a plain put during a rolling upgrade."""
    put = Request.of("put", key=b"k", value=b"v", client="c", seq=1)
    assert encode_write(put) == encode_command(Command(Put(b"k", b"v"), "c", 1))
    assert msgpack.unpackb(encode_write(Request.of("compact", revision=2)))[0] == 3


def test_the_model_entry() -> None:
    assert decode_entry(encode_upgrade("mvcc")) == ModelUpgrade("mvcc")


INVALID_ENTRIES = {
    "unknown model": pack([4, None, None, "sql"]),
    "model with a session": pack([4, "c", 1, "mvcc"]),
    "request: op not a str": pack([3, None, None, 1, {}]),
    "request: fields not a map": pack([3, None, None, "txn", []]),
    "request: a read": pack([3, None, None, "range", {"key": b"k"}]),
    "request: unknown op": pack([3, None, None, "explode", {}]),
    "request: session inside": pack([3, None, None, "compact", {"revision": 1, "seq": 1}]),
    "request: op inside": pack([3, None, None, "compact", {"op": "put", "revision": 1}]),
    "request: bad field": pack([3, None, None, "compact", {"revision": -1}]),
    "request: arity": pack([3, None, None, "compact"]),
    "opcode 5": pack([5, None, None, b"k"]),
}


@pytest.mark.parametrize("buf", INVALID_ENTRIES.values(), ids=INVALID_ENTRIES.keys())
def test_invalid_entries(buf: bytes) -> None:
    with pytest.raises(DecodeError):
        decode_entry(buf)


# --- hello and records --------------------------------------------------------------------


def test_hello_round_trip_and_refusals() -> None:
    hello = Hello("n1", "n2", ("mvcc",))
    assert decode_peer_frame(encode_hello(hello), peers=frozenset({"n1"})) == hello
    with pytest.raises(DecodeError, match="not a known peer"):
        decode_peer_frame(encode_hello(hello), peers=frozenset({"n3"}))
    for bad in (
        [WIRE_VERSION, 68, "n1", "n2"],
        [WIRE_VERSION, 68, "n1", "n2", "mvcc"],
        [WIRE_VERSION, 68, "n1", "n2", [1]],
        [WIRE_VERSION, 68, "n1", "n2", [""]],
        [WIRE_VERSION, 68, "n1", "n2", ["x"] * 33],
        [WIRE_VERSION, 68, 5, "n2", []],
    ):
        with pytest.raises(DecodeError):
            decode_peer_frame(pack(bad))


def test_records_round_trip_and_refusals() -> None:
    records = [(b"v", 2, 2, 1, 0), (b"", 0, 3, 0, 0)]
    assert unpack_records(pack_records(records)) == [[b"v", 2, 2, 1, 0], [b"", 0, 3, 0, 0]]
    for bad in (b"\xc1", pack({"a": 1}), pack(7), "text"):
        with pytest.raises(ValueError):
            unpack_records(bad)


# --- fuzz ---------------------------------------------------------------------------------

FUZZ_SEED = 20261204
FUZZ_INPUTS = 5_000


def mutate(rng: random.Random, buf: bytes) -> bytes:
    """A valid frame with a few bytes flipped, cut or inserted."""
    data = bytearray(buf)
    for _ in range(rng.randint(1, 4)):
        choice = rng.random()
        position = rng.randrange(len(data) + 1)
        if choice < 0.5 and data:
            data[min(position, len(data) - 1)] = rng.randrange(256)
        elif choice < 0.75:
            del data[position : position + rng.randint(1, 8)]
        else:
            data[position:position] = rng.randbytes(rng.randint(1, 8))
    return bytes(data)


def test_fuzz_the_new_formats_raise_only_decode_error() -> None:
    rng = random.Random(FUZZ_SEED)
    seeds = (
        [pack(raw) for raw, _ in VALID]
        + [pack(raw) for raw, _ in INVALID]
        + [encode_write(r) for r in WRITES]
        + [encode_upgrade("mvcc"), encode_hello(Hello("n1", "n2", ("mvcc",)))]
    )
    decoders = [decode_request, decode_entry, decode_peer_frame]
    accepted = 0
    for number in range(FUZZ_INPUTS):
        buf = mutate(rng, rng.choice(seeds))
        for decode in decoders:
            try:
                decode(buf)
            except DecodeError:
                continue
            except Exception as exc:  # the assertion under test: nothing else escapes
                pytest.fail(f"seed {FUZZ_SEED} input #{number} {buf[:80]!r}: {exc!r}")
            accepted += 1
    assert accepted > 0  # sanity: mutations are not all rejected at the first byte
