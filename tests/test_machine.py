"""The state machine on the multi-version store (issue 13): every op through `apply` and
`read` as the node drives them, the revision rules, sessions, the model upgrade from the
first release's store, snapshots of both models, and determinism across replicas."""

from __future__ import annotations

import random
from typing import Any

import pytest

from zraft.core.types import Entry, EntryKind
from zraft.state.kv import Command, Put
from zraft.state.machine import KVMachine, Refused
from zraft.wire.client import Request
from zraft.wire.entries import encode_command


class Driver:
    """Feeds a machine entries at increasing indexes, as the node does."""

    def __init__(self, machine: KVMachine | None = None) -> None:
        self.machine = machine if machine is not None else KVMachine(model="mvcc")
        self.index = self.machine.applied_index

    def entry(self, data: bytes, kind: EntryKind = EntryKind.NORMAL) -> Any:
        self.index += 1
        return self.machine.apply(Entry(1, self.index, kind, data))

    def write(self, op: str, **fields: Any) -> dict[str, Any]:
        reply = self.entry(self.machine.command(Request.of(op, **fields)))
        assert reply is not None
        return dict(reply)

    def read(self, op: str, **fields: Any) -> dict[str, Any]:
        return dict(self.machine.read(Request.of(op, **fields)))

    def keys(self, **fields: Any) -> list[tuple[bytes, bytes, int, int, int]]:
        reply = self.read("range", key=b"\0", range_end=b"\0", **fields)
        assert reply["ok"], reply
        return [
            (kv["key"], kv["value"], kv["create_revision"], kv["mod_revision"], kv["version"])
            for kv in reply["extra"]["kvs"]
        ]


def test_revisions_move_once_per_changing_write() -> None:
    d = Driver()
    assert d.machine.revision == 1
    assert d.write("put", key=b"a", value=b"1")["revision"] == 2
    assert d.write("put", key=b"a", value=b"2")["revision"] == 3
    assert d.write("delete", key=b"zz")["revision"] == 3  # nothing deleted
    failed = d.write("cas", key=b"a", expected=b"nope", value=b"x")
    assert (failed["ok"], failed["error"], failed["value"], failed["revision"]) == (
        False,
        "cas_failed",
        b"2",
        3,
    )
    assert d.write("cas", key=b"a", expected=b"2", value=b"3")["revision"] == 4
    d.entry(b"", EntryKind.NOOP)  # entries without a command move nothing
    assert d.machine.revision == 4
    assert d.keys() == [(b"a", b"3", 2, 4, 3)]
    assert d.write("delete", key=b"a")["extra"] == {"deleted": 1}
    assert d.write("put", key=b"a", value=b"new")["revision"] == 6
    assert d.keys() == [(b"a", b"new", 6, 6, 1)]  # the history restarts after a delete


def test_put_and_delete_report_what_was_there() -> None:
    d = Driver()
    assert d.write("put", key=b"k", value=b"1", prev_kv=True)["extra"] == {"prev_kv": None}
    previous = d.write("put", key=b"k", value=b"2", prev_kv=True)["extra"]["prev_kv"]
    assert (previous["value"], previous["version"], previous["mod_revision"]) == (b"1", 1, 2)
    for key in (b"p/1", b"p/2", b"q"):
        d.write("put", key=key, value=key)
    gone = d.write("delete_range", key=b"p/", prefix=True, prev_kv=True)["extra"]
    assert gone["deleted"] == 2
    assert [kv["key"] for kv in gone["prev_kvs"]] == [b"p/1", b"p/2"]
    assert d.write("delete_range", key=b"a", range_end=b"\0")["extra"] == {"deleted": 2}
    assert d.keys() == []


def test_range_reads_at_a_revision_until_compacted() -> None:
    d = Driver()
    for number in range(5):
        d.write("put", key=b"k%d" % number, value=b"v%d" % number)  # revisions 2..6
    d.write("put", key=b"k0", value=b"changed")  # 7
    assert [kv[1] for kv in d.keys(revision=3)] == [b"v0", b"v1"]
    assert d.keys(revision=6)[0][1] == b"v0"
    future = d.read("range", key=b"k", prefix=True, revision=8)
    assert (future["ok"], future["error"]) == (False, "future_revision")
    limited = d.read("range", key=b"k", prefix=True, limit=2, sort_order="descend")
    assert limited["extra"]["more"] and limited["extra"]["count"] == 5
    assert [kv["key"] for kv in limited["extra"]["kvs"]] == [b"k4", b"k3"]
    assert d.read("range", key=b"k", prefix=True, count_only=True)["extra"]["kvs"] == []
    keys_only = d.read("range", key=b"k1", keys_only=True)["extra"]["kvs"]
    assert keys_only[0]["value"] == b"" and keys_only[0]["key"] == b"k1"
    assert d.read("range", key=b"k3", range_end=b"k1")["extra"]["count"] == 0  # end <= key

    assert d.write("compact", revision=4)["extra"] == {"compact_revision": 4}
    old = d.read("range", key=b"k", prefix=True, revision=3)
    assert (old["error"], old["extra"]) == ("compacted", {"compact_revision": 4})
    assert [kv[1] for kv in d.keys(revision=4)] == [b"v0", b"v1", b"v2"]
    again = d.write("compact", revision=4)
    assert (again["ok"], again["error"]) == (False, "compacted")
    assert d.write("compact", revision=99)["error"] == "future_revision"
    assert d.machine.revision == 7  # compaction writes no revision


def test_a_transaction_is_one_revision_and_answers_per_op() -> None:
    d = Driver()
    d.write("put", key=b"balance/a", value=b"10")  # 2
    d.write("put", key=b"balance/b", value=b"0")  # 3
    txn = {
        "compare": [{"key": b"balance/a", "target": "mod", "result": "equal", "operand": 2}],
        "success": [
            {"op": "put", "key": b"balance/a", "value": b"5", "prev_kv": True},
            {"op": "put", "key": b"balance/b", "value": b"5"},
            {"op": "range", "key": b"balance/", "prefix": True},
        ],
        "failure": [{"op": "range", "key": b"balance/a"}],
    }
    won = d.write("txn", **txn)
    assert won["revision"] == 4 and won["extra"]["succeeded"]
    put_a, put_b, listed = won["extra"]["responses"]
    assert put_a["prev_kv"]["value"] == b"10" and put_b == {"op": "put"}
    assert [kv["value"] for kv in listed["kvs"]] == [b"5", b"5"]  # sees its own writes
    assert {kv["mod_revision"] for kv in listed["kvs"]} == {4}
    lost = d.write("txn", **txn)  # the compare now fails: the failure branch reads
    assert not lost["extra"]["succeeded"] and lost["revision"] == 4
    assert lost["extra"]["responses"][0]["kvs"][0]["value"] == b"5"


def test_transactions_refused_before_and_at_apply() -> None:
    machine = KVMachine(model="mvcc", max_txn_ops=2)
    twice = [{"op": "put", "key": b"k", "value": b"1"}, {"op": "put", "key": b"k", "value": b"2"}]
    with pytest.raises(Refused) as refused:
        machine.command(Request.of("txn", success=twice))
    assert refused.value.code == "bad_request"
    three = [{"op": "range", "key": b"k"}] * 3
    with pytest.raises(Refused) as refused:
        machine.command(Request.of("txn", failure=three))
    assert refused.value.code == "too_many_ops"
    # A replica's own limit never changes what a logged transaction does.
    other = Driver(KVMachine(model="mvcc", max_txn_ops=128))
    logged = other.machine.command(Request.of("txn", failure=three))
    assert Driver(machine).entry(logged)["ok"]


def test_sessions_answer_a_retry_with_its_first_reply() -> None:
    """A retry is answered, never applied again; the answer leaves out the values the
    first one carried (a session keeps no values: `replayed` says so)."""
    d = Driver()
    first = d.write("put", key=b"k", value=b"1", prev_kv=True, client="c", seq=1)
    d.write("put", key=b"k", value=b"2")
    retry = d.write("put", key=b"k", value=b"1", prev_kv=True, client="c", seq=1)
    assert {**first, "extra": {}, "replayed": True} == retry
    assert d.keys()[0][1] == b"2"
    stale = d.write("put", key=b"k", value=b"0", client="c", seq=0)
    assert stale["error"] == "bad_request" and d.keys()[0][1] == b"2"
    txn = {
        "success": [
            {"op": "delete_range", "key": b"k", "prev_kv": True},
            {"op": "range", "key": b"k"},
        ]
    }
    done = d.write("txn", client="c", seq=2, **txn)
    assert done["extra"]["responses"][0]["prev_kvs"][0]["value"] == b"2"
    again = d.write("txn", client="c", seq=2, **txn)
    assert again["replayed"] and again["index"] == done["index"]
    assert again["extra"]["responses"] == [
        {"op": "delete_range", "deleted": 1},
        {"op": "range", "more": False, "count": 0},
    ]
    d.write("put", key=b"k", value=b"now")
    lost = d.write("cas", key=b"k", expected=b"x", value=b"y", client="c", seq=3)
    assert (lost["error"], lost["value"]) == ("cas_failed", b"now")
    again = d.write("cas", key=b"k", expected=b"x", value=b"y", client="c", seq=3)
    # A replayed failed cas still says what it saw (the nemesis caught None here).
    assert (again["error"], again["value"], again["replayed"]) == ("cas_failed", b"now", True)


def test_the_model_upgrade_converts_the_first_release_store() -> None:
    """A legacy store (a data directory of the previous release) converts identically on
    every replica when the model entry is applied."""
    legacy = Driver(KVMachine())
    assert legacy.machine.model == "legacy" and legacy.machine.revision is None
    for key in (b"b", b"a"):
        legacy.entry(encode_command(Command(Put(key, key * 2))))
    answer = legacy.entry(encode_command(Command(Put(b"s", b"1"), "c", 7)))
    with pytest.raises(Refused) as refused:
        legacy.machine.command(Request.of("range", key=b"a"))
    assert refused.value.code == "unavailable"
    assert legacy.read("range", key=b"a")["error"] == "unavailable"
    assert legacy.read("get", key=b"a")["value"] == b"aa"

    assert legacy.entry(legacy.machine.upgrade_command()) is None
    machine = legacy.machine
    assert (machine.model, machine.revision, machine.store.compact_revision) == ("mvcc", 2, 2)
    assert legacy.keys() == [(b"a", b"aa", 2, 2, 1), (b"b", b"bb", 2, 2, 1), (b"s", b"1", 2, 2, 1)]
    assert legacy.read("range", key=b"a", revision=1)["error"] == "compacted"
    retry = legacy.write("put", key=b"s", value=b"1", client="c", seq=7)  # an old retry
    assert retry["ok"] and retry["index"] == answer["index"] and machine.revision == 2
    legacy.entry(machine.upgrade_command())  # a second model entry changes nothing
    assert machine.revision == 2 and len(legacy.keys()) == 3

    empty = Driver(KVMachine())
    empty.entry(empty.machine.upgrade_command())
    assert empty.machine.revision == 1 and empty.machine.store.compact_revision == 0


def test_a_new_op_before_the_model_entry_stops_the_node() -> None:
    legacy = Driver(KVMachine())
    data = KVMachine(model="mvcc").command(Request.of("compact", revision=1))
    with pytest.raises(ValueError, match="before the store was upgraded"):
        legacy.entry(data)


@pytest.mark.parametrize("model", [None, "mvcc"])
def test_snapshots_round_trip_both_models(model: str | None) -> None:
    d = Driver(KVMachine(model=model))
    d.write("put", key=b"a", value=b"1", client="c", seq=1)
    d.write("put", key=b"a", value=b"2")
    d.write("delete", key=b"a")
    d.write("put", key=b"b", value=b"3", client="d", seq=1)
    view = d.machine.snapshot_view()
    d.write("put", key=b"late", value=b"not in the snapshot")  # the copy is consistent
    copy = KVMachine()
    copy.restore(view)
    assert copy.model == d.machine.model and copy.applied_index == view.applied_index
    if model is None:
        assert copy.value(b"b") == b"3" and copy.value(b"late") is None
        return
    assert view.header["model"] == "mvcc"
    assert dict(view.data.items()).keys() == {b"a", b"b"}
    restored = Driver(copy)
    assert restored.keys() == [(b"b", b"3", 5, 5, 1)]
    assert restored.keys(revision=3)[0][:2] == (b"a", b"2")  # history travels too
    assert restored.write("put", key=b"b", value=b"3", client="d", seq=1)["index"] == 4


def test_restore_refuses_a_state_it_cannot_read() -> None:
    view = KVMachine(model="mvcc").snapshot_view()
    bad_model = type(view)(0, {}, [], {**view.header, "model": "sql"})
    future_format = type(view)(0, {}, [], {**view.header, "state_format": 3})
    bad_records = type(view)(0, {b"k": b"\xc1"}, [], view.header)
    out_of_order = type(view)(
        0, {b"k": b"\x92\x95\xa1v\x02\x03\x01\x00\x95\xa1v\x02\x02\x01\x00"}, [], view.header
    )
    for broken in (bad_model, future_format, bad_records, out_of_order):
        machine = Driver()
        machine.write("put", key=b"kept", value=b"1")
        with pytest.raises(ValueError):
            machine.machine.restore(broken)
        assert machine.machine.value(b"kept") == b"1"  # nothing changed


def random_write(rng: random.Random, revision: int) -> Request:
    key = b"k%d" % rng.randrange(8)
    roll = rng.random()
    if roll < 0.4:
        return Request.of("put", key=key, value=rng.randbytes(3), prev_kv=rng.random() < 0.5)
    if roll < 0.55:
        return Request.of("delete_range", key=key, range_end=b"k%d" % rng.randrange(9))
    if roll < 0.65:
        return Request.of("compact", revision=max(1, revision - rng.randrange(4)))
    if roll < 0.75:
        return Request.of("cas", key=key, expected=rng.choice([None, b"x"]), value=b"x")
    return Request.of(
        "txn",
        compare=[{"key": key, "target": "version", "result": "greater", "operand": 1}],
        success=[
            {"op": "put", "key": key, "value": b"t"},
            {"op": "range", "key": b"k0", "range_end": b"\0"},
        ],
        failure=[{"op": "delete_range", "key": b"k", "prefix": True}],
    )


@pytest.mark.parametrize("seed", range(5))
def test_replicas_agree_on_state_and_replies(seed: int) -> None:
    """Two replicas apply the same entries, one of them restarted from a snapshot half
    way: every reply and the final state are equal."""
    rng = random.Random(seed)
    leader = Driver(KVMachine())
    entries = [leader.machine.upgrade_command()]
    for _ in range(300):
        request = random_write(rng, leader.machine.revision or 1)
        if rng.random() < 0.3:
            request = Request(
                request.op,
                {**request.fields, "client": f"c{rng.randrange(3)}", "seq": rng.randrange(50)},
            )
        entries.append(KVMachine(model="mvcc").command(request))
    one, two = Driver(KVMachine()), Driver(KVMachine())
    replies_one = [one.entry(data) for data in entries]
    replies_two = [two.entry(data) for data in entries[:150]]
    restarted = KVMachine()
    restarted.restore(two.machine.snapshot_view())
    two = Driver(restarted)
    replies_two += [two.entry(data) for data in entries[150:]]
    assert replies_one == replies_two
    assert one.machine.store.export() == two.machine.store.export()
    assert one.keys() == two.keys()


def test_the_space_quota_raises_an_alarm_and_keeps_deletes_and_compaction() -> None:
    d = Driver(KVMachine(model="mvcc", quota_bytes=2000))
    written = 0
    with pytest.raises(Refused) as refused:
        for number in range(100):
            d.write("put", key=b"k%02d" % number, value=b"x" * 100)
            written += 1
    assert refused.value.code == "no_space" and refused.value.alarm == "nospace"
    assert "quota_bytes 2000" in refused.value.message
    assert 0 < written < 100 and d.machine.store.size_bytes <= 2000
    # A write already in the log when the alarm entry is applied is refused at apply.
    in_flight = d.machine.command(Request.of("put", key=b"late", value=b"v"))
    assert d.entry(d.machine.alarm_command("nospace")) is None
    assert d.read("alarm_list")["extra"]["alarms"] == ["nospace"]
    late = d.entry(in_flight)
    assert (late["ok"], late["error"]) == (False, "no_space") and d.machine.value(b"late") is None
    with pytest.raises(Refused) as refused:
        d.machine.command(Request.of("txn", success=[{"op": "put", "key": b"k", "value": b"v"}]))
    assert refused.value.code == "no_space" and refused.value.alarm is None
    # Reads, deletes, compaction and a txn that only deletes still work.
    assert d.read("get", key=b"k00")["value"] == b"x" * 100
    assert d.write("delete_range", key=b"k", prefix=True)["extra"]["deleted"] == written
    assert d.write("txn", success=[{"op": "delete_range", "key": b"z"}])["ok"]
    assert d.write("compact", revision=d.machine.revision)["ok"]
    assert d.machine.store.size_bytes == 0
    view = d.machine.snapshot_view()
    copy = KVMachine(model="mvcc")
    copy.restore(view)
    assert copy.alarms == {"nospace"}  # the alarm travels in snapshots
    assert d.write("alarm_disarm")["extra"] == {"alarms": []}
    assert d.write("put", key=b"again", value=b"v")["ok"]
