"""The client library's key-value methods (issue 13's data model) against a fake cluster.

`tests.fakeserver.FakeCluster` serves every store op from a real `KVMachine` in the
multi-version model, so the revisions, versions and errors asserted here are the state
machine's own. The builders of `zraft.client.txn` and the typed views of `Reply` are
also checked on their own (pure values, no sockets).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fakeserver import FakeCluster
from zraft.client import (
    Client,
    CompareTarget,
    Header,
    KeyValue,
    Reply,
    TxnResponse,
    create_revision,
    delete_op,
    lease,
    mod_revision,
    put_op,
    range_op,
    txn,
    value,
    version,
)

# An empty store is at revision 1; each write that changes something adds one.
FIRST_REVISION = 2


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    """One fake node (n1, the leader, term 3), closed at teardown."""
    with FakeCluster(1) as fake:
        yield fake


@pytest.fixture
def client(cluster: FakeCluster) -> Iterator[Client]:
    """A client of `cluster`."""
    with Client(cluster.endpoints, timeout=3) as made:
        yield made


def keys(reply: Reply) -> list[bytes]:
    """The keys of a range reply, in the order returned."""
    assert reply.ok, reply.raw
    assert reply.kvs is not None
    return [kv.key for kv in reply.kvs]


def fill(client: Client, pairs: dict[str, str]) -> None:
    """Put every pair, in order."""
    for key, val in pairs.items():
        assert client.put(key, val).ok


# --- headers and put ------------------------------------------------------------------


def test_every_store_reply_has_a_header_with_increasing_revisions(
    client: Client, cluster: FakeCluster
) -> None:
    revisions = [client.put("a", "1").revision, client.put("b", "2").revision]
    assert revisions == [FIRST_REVISION, FIRST_REVISION + 1]
    put = client.put("a", "3")
    assert put.header == Header(revision=FIRST_REVISION + 2, raft_term=3, member="n1")
    # Reads and writes that change nothing report the current revision.
    assert client.get("a").revision == FIRST_REVISION + 2
    assert client.range("a").revision == FIRST_REVISION + 2
    nothing = client.delete("absent")
    assert (nothing.ok, nothing.deleted, nothing.revision) == (True, 0, FIRST_REVISION + 2)
    assert client.delete("b").revision == FIRST_REVISION + 3
    failed = client.cas("a", "wrong", "x")
    assert (failed.error_code, failed.revision) == ("cas_failed", FIRST_REVISION + 3)
    # Non-store replies have none.
    assert client.status().header is None and client.status().revision is None
    assert cluster.index == 6  # put, put, put, delete, delete, cas: one entry each


def test_put_with_prev_kv_returns_what_it_replaced(client: Client) -> None:
    first = client.put("k", "v1", prev_kv=True)
    assert first.ok and first.prev_kv is None and first.raw["prev_kv"] is None
    second = client.put("k", "v2", prev_kv=True)
    assert second.prev_kv == KeyValue(
        key=b"k",
        value=b"v1",
        create_revision=FIRST_REVISION,
        mod_revision=FIRST_REVISION,
        version=1,
        lease=0,
    )
    plain = client.put("k", "v3")
    assert "prev_kv" not in plain.raw and plain.prev_kv is None
    (kv,) = client.range("k").kvs or ()
    assert (kv.value, kv.version, kv.create_revision, kv.mod_revision) == (
        b"v3",
        3,
        FIRST_REVISION,
        FIRST_REVISION + 2,
    )


# --- range --------------------------------------------------------------------------


def test_range_one_key_a_prefix_an_interval_and_everything(client: Client) -> None:
    fill(client, {"app/a": "1", "app/b": "2", "app/c": "3", "apq": "4", "zz": "5"})
    assert keys(client.range("app/b")) == [b"app/b"]
    assert keys(client.range("missing")) == []
    assert keys(client.range("app/", prefix=True)) == [b"app/a", b"app/b", b"app/c"]
    assert keys(client.get_prefix("app/")) == [b"app/a", b"app/b", b"app/c"]
    assert keys(client.range("app/b", "apq")) == [b"app/b", b"app/c"]  # end excluded
    assert keys(client.range("apq", b"\0")) == [b"apq", b"zz"]  # every key from apq on
    everything = [b"app/a", b"app/b", b"app/c", b"apq", b"zz"]
    assert keys(client.get_all()) == everything
    assert keys(client.get_prefix("")) == everything
    values = [kv.value for kv in client.get_prefix("app/").kvs or ()]
    assert values == [b"1", b"2", b"3"]


def test_range_limit_more_and_count(client: Client) -> None:
    fill(client, {f"k{i}": str(i) for i in range(5)})
    limited = client.get_prefix("k", limit=2)
    assert keys(limited) == [b"k0", b"k1"]
    assert (limited.more, limited.count) == (True, 5)
    whole = client.get_prefix("k", limit=5)
    assert (len(whole.kvs or ()), whole.more, whole.count) == (5, False, 5)


def test_range_sorts_by_each_target(client: Client) -> None:
    fill(client, {"b": "x", "a": "z", "c": "y"})
    assert client.put("c", "w").ok  # c: version 2, the latest mod revision
    assert keys(client.get_all(sort_order="descend")) == [b"c", b"b", b"a"]
    assert keys(client.get_all(sort_order="ascend", sort_target="value")) == [b"c", b"b", b"a"]
    assert keys(client.get_all(sort_order="descend", sort_target="version"))[0] == b"c"
    assert keys(client.get_all(sort_order="ascend", sort_target="create")) == [b"b", b"a", b"c"]
    assert keys(client.get_all(sort_order="descend", sort_target="mod")) == [b"c", b"a", b"b"]


def test_keys_only_and_count_only(client: Client) -> None:
    fill(client, {"p/1": "one", "p/2": "two", "q": "three"})
    only_keys = client.get_prefix("p/", keys_only=True)
    assert [(kv.key, kv.value) for kv in only_keys.kvs or ()] == [(b"p/1", b""), (b"p/2", b"")]
    assert all(kv.version == 1 for kv in only_keys.kvs or ())
    counted = client.get_prefix("p/", count_only=True)
    assert (counted.kvs, counted.count, counted.more) == ((), 2, False)


def test_range_reads_a_past_revision(client: Client, cluster: FakeCluster) -> None:
    old = client.put("k", "old").revision
    assert old is not None
    client.put("k", "new")
    client.put("other", "x")
    past = client.range("k", revision=old)
    assert [kv.value for kv in past.kvs or ()] == [b"old"]
    assert past.revision == old + 2  # the header is where the store stands now
    assert keys(client.get_all(revision=old)) == [b"k"]
    serial = client.range("k", serializable=True)
    assert [kv.value for kv in serial.kvs or ()] == [b"new"]
    sent = [req for _, req in cluster.requests if req.op == "range"]
    assert sent[0].fields == {"key": b"k", "revision": old}  # defaults are not sent
    assert sent[-1].fields == {"key": b"k", "serializable": True}


def test_future_revision_and_compacted_errors(client: Client) -> None:
    fill(client, {"k": "1"})
    client.put("k", "2")
    current = client.put("k", "3").revision
    assert current == FIRST_REVISION + 2
    future = client.range("k", revision=current + 1)
    assert (future.ok, future.error_code, future.revision) == (False, "future_revision", current)

    compacted = client.compact(current - 1)
    assert (compacted.ok, compacted.compact_revision, compacted.revision) == (
        True,
        current - 1,
        current,
    )
    below = client.range("k", revision=FIRST_REVISION)
    assert (below.ok, below.error_code, below.compact_revision) == (
        False,
        "compacted",
        current - 1,
    )
    assert below.kvs is None and below.error_message and "compacted" in below.error_message
    at = client.range("k", revision=current - 1)
    assert [kv.value for kv in at.kvs or ()] == [b"2"]  # the compact revision is readable

    again = client.compact(current - 1)
    assert (again.error_code, again.compact_revision) == ("compacted", current - 1)
    ahead = client.compact(current + 5)
    assert (ahead.ok, ahead.error_code) == (False, "future_revision")


# --- deletes --------------------------------------------------------------------------


def test_delete_says_how_many_and_what(client: Client) -> None:
    fill(client, {"k": "v"})
    gone = client.delete("k", prev_kv=True)
    assert (gone.ok, gone.deleted) == (True, 1)
    assert [(kv.key, kv.value, kv.version) for kv in gone.prev_kvs or ()] == [(b"k", b"v", 1)]
    again = client.delete("k", prev_kv=True)
    assert (again.deleted, again.prev_kvs) == (0, ())
    plain = client.delete("k")
    assert plain.deleted == 0 and plain.prev_kvs is None


def test_delete_range_and_delete_prefix(client: Client) -> None:
    fill(client, {"a/1": "1", "a/2": "2", "a/3": "3", "b/1": "4", "c": "5"})
    ranged = client.delete_range("a/2", "b/2", prev_kv=True)
    assert ranged.deleted == 3
    assert [(kv.key, kv.value) for kv in ranged.prev_kvs or ()] == [
        (b"a/2", b"2"),
        (b"a/3", b"3"),
        (b"b/1", b"4"),
    ]
    by_prefix = client.delete_prefix("a/")
    assert (by_prefix.deleted, by_prefix.prev_kvs) == (1, None)
    assert client.delete_range("x", prefix=True).deleted == 0
    assert keys(client.get_all()) == [b"c"]
    assert client.delete_range(b"\0", b"\0").deleted == 1
    assert client.get_all().count == 0


# --- transactions ---------------------------------------------------------------------


def test_txn_runs_success_when_every_compare_holds(client: Client) -> None:
    fill(client, {"config": "v1", "data/a": "1", "data/b": "2"})
    reply = client.transaction(
        compare=[value("config") == "v1", version("config") > 0, create_revision("lock") == 0],
        success=[
            put_op("lock", "me", prev_kv=True),
            put_op("config", "v2", prev_kv=True),
            range_op("data/", prefix=True, limit=1),
            delete_op("data/b", prev_kv=True),
            range_op("lock"),
        ],
        failure=[put_op("never", "x")],
    )
    assert reply.ok and reply.succeeded is True
    put_lock, put_config, read, delete, read_lock = reply.responses or ()
    assert put_lock == TxnResponse(op="put")
    assert put_config.op == "put" and put_config.prev_kv is not None
    assert put_config.prev_kv.value == b"v1"
    assert (read.op, read.count, read.more) == ("range", 2, True)
    assert [kv.key for kv in read.kvs or ()] == [b"data/a"]
    assert (delete.op, delete.deleted) == ("delete_range", 1)
    assert [kv.value for kv in delete.prev_kvs or ()] == [b"2"]
    # A range sees the writes before it in the branch, all made at one revision.
    (lock,) = read_lock.kvs or ()
    assert (lock.value, lock.create_revision) == (b"me", reply.revision)
    assert reply.revision == FIRST_REVISION + 3
    assert client.get("config").value == b"v2" and not client.get("never").found


def test_txn_runs_failure_when_a_compare_fails(client: Client) -> None:
    fill(client, {"lock": "other"})
    held = client.put("lock", "other2").revision
    reply = client.txn(
        compare=[create_revision("lock") == 0],
        success=[put_op("lock", "me")],
        failure=[range_op("lock", keys_only=True), range_op("lock", count_only=True)],
    )
    assert (reply.ok, reply.succeeded) == (True, False)
    keys_only, counted = reply.responses or ()
    assert [(kv.key, kv.value, kv.version) for kv in keys_only.kvs or ()] == [(b"lock", b"", 2)]
    assert (counted.kvs, counted.count) == ((), 1)
    assert reply.revision == held  # a branch that only reads moves no revision
    assert client.get("lock").value == b"other2"


def test_txn_compares_each_target_and_range(client: Client) -> None:
    fill(client, {"r/1": "a", "r/2": "b"})
    modified = client.put("m", "x").revision
    assert modified is not None

    def holds(*compares: dict[str, object]) -> bool | None:
        return client.transaction(compare=list(compares)).succeeded

    assert holds(mod_revision("m") == modified, mod_revision("m") < modified + 1)
    assert not holds(mod_revision("m") > modified)
    assert holds(lease("m") == 0, lease("absent") == 0, version("absent") == 0)
    assert not holds(value("absent") == b"")  # a value compare on a missing key fails
    assert holds(value("m") != b"y", value("m") == "x", version("m") > 0)
    assert holds(version("r/", prefix=True) == 1, value("r/1", "r/3") > b"0")
    assert not holds(value("r/", prefix=True) == b"a")  # r/2 is "b"
    assert holds(txn.create("m") == modified, txn.mod("m") == modified)
    # No compare: success runs; no ops: nothing changes.
    empty = client.transaction()
    assert (empty.ok, empty.succeeded, empty.responses, empty.revision) == (
        True,
        True,
        (),
        modified,
    )


def test_txn_takes_raw_maps(client: Client, cluster: FakeCluster) -> None:
    reply = client.transaction(
        compare=[{"key": "k", "target": "version", "result": "=", "operand": 0}],
        success=[{"op": "put", "key": "k", "value": "v"}],
    )
    assert reply.succeeded and client.get("k").value == b"v"
    sent = next(req for _, req in cluster.requests if req.op == "txn")
    assert sent.fields["compare"] == [
        {"key": b"k", "target": "version", "result": "equal", "operand": 0}
    ]
    assert "failure" not in sent.fields  # empty branches are not sent


def test_txn_refusals(client: Client) -> None:
    twice = client.transaction(success=[put_op("k", "1"), put_op("k", "2")])
    assert (twice.ok, twice.error_code, twice.succeeded) == (False, "bad_request", None)
    inside = client.transaction(success=[delete_op("a", prefix=True), put_op("a/1", "x")])
    assert inside.error_code == "bad_request"
    assert client.get_all().count == 0  # nothing was applied


def test_a_branch_longer_than_the_cluster_allows_is_refused() -> None:
    with FakeCluster(1, max_txn_ops=2) as cluster, Client(cluster.endpoints) as client:
        reply = client.transaction(success=[put_op(f"k{i}", "v") for i in range(3)])
        assert (reply.ok, reply.error_code) == (False, "too_many_ops")
        assert reply.error_message == (
            "field 'success' has 3 entries, the limit is 2 (max_txn_ops)"
        )
        assert client.transaction(success=[put_op("a", "1"), put_op("b", "2")]).ok
        assert cluster.index == 1  # the refused one used no log entry


def test_new_writes_carry_sessions_and_a_lost_txn_reply_is_applied_once() -> None:
    with FakeCluster(2) as cluster:
        cluster.drop_replies = 1  # n1 applies the txn; its reply never arrives
        with Client(cluster.endpoints, timeout=5, attempt_timeout=0.3, client_id="me") as client:
            reply = client.transaction(
                compare=[version("counter") == 0], success=[put_op("counter", "1")]
            )
            assert reply.ok and reply.succeeded  # the first attempt's answer, not a rerun
            assert reply.replayed and reply.responses[0].op == "put"
            assert reply.endpoint == cluster.endpoints[1]
            client.delete_range("x", prefix=True)
            client.compact(2)
            client.range("counter")
        assert cluster.applied_writes == 3  # txn, delete_range, compact: each once
        assert cluster.writes() == [
            ("txn", 1, "me"),
            ("txn", 1, "me"),
            ("delete_range", 2, "me"),
            ("compact", 3, "me"),
        ]
        read = next(req for _, req in cluster.requests if req.op == "range")
        assert read.client is None  # reads need no session


# --- misuse, refused before sending ------------------------------------------------------


def test_misuse_raises_before_anything_is_sent(client: Client, cluster: FakeCluster) -> None:
    with pytest.raises(ValueError, match="sort_order"):
        client.range("k", sort_order="up")
    with pytest.raises(ValueError, match="sort_target"):
        client.get_all(sort_target="size")
    with pytest.raises(ValueError, match="limit"):
        client.get_prefix("k", limit=-1)
    with pytest.raises(ValueError, match="not both"):
        client.range("a", "b", prefix=True)
    with pytest.raises(ValueError, match="not both"):
        client.delete_range("a", "b", prefix=True)
    with pytest.raises(ValueError, match="every key"):
        client.delete_prefix("")
    with pytest.raises(ValueError, match="revision"):
        client.compact(-1)
    with pytest.raises(TypeError, match="compare"):
        client.transaction(compare=[version("k")])  # never compared
    with pytest.raises(TypeError, match="success"):
        client.transaction(success=["put k v"])  # type: ignore[list-item]
    assert cluster.frames == 0


# --- the builders and the reply views, pure ----------------------------------------------


def test_compare_builders_make_the_protocol_maps() -> None:
    assert (value("k") == b"v") == {
        "key": "k",
        "target": "value",
        "result": "equal",
        "operand": b"v",
    }
    assert (version(b"k") != 2)["result"] == "not_equal"
    assert (mod_revision("k") < 5)["result"] == "less"
    assert (create_revision("k") > 0)["target"] == "create"
    assert (lease("k", prefix=True) == 0) == {
        "key": "k",
        "prefix": True,
        "target": "lease",
        "result": "equal",
        "operand": 0,
    }
    # Python reflects a comparison whose left side is the operand: still mod < 5.
    assert (5 > mod_revision("k"))["result"] == "less"  # noqa: SIM300
    assert (b"v" == value("k"))["result"] == "equal"  # noqa: SIM300
    assert (value("a", b"\0") == "x")["range_end"] == b"\0"
    with pytest.raises(TypeError):
        _ = version("k") <= 1  # type: ignore[operator]
    with pytest.raises(ValueError, match="int >= 0"):
        _ = version("k") == "1"
    with pytest.raises(ValueError, match="int >= 0"):
        _ = version("k") > True
    with pytest.raises(ValueError, match="bytes or str"):
        _ = value("k") == 1
    with pytest.raises(ValueError, match="target"):
        CompareTarget("size", "k")
    with pytest.raises(TypeError):
        hash(version("k"))
    assert "version" in repr(version("k"))


def test_op_builders_make_the_protocol_maps() -> None:
    assert put_op("k", "v") == {"op": "put", "key": "k", "value": "v"}
    assert put_op("k", b"v", prev_kv=True)["prev_kv"] is True
    assert range_op("k") == {"op": "range", "key": "k"}
    assert range_op("p", prefix=True, limit=3, keys_only=True, count_only=True) == {
        "op": "range",
        "key": "p",
        "prefix": True,
        "limit": 3,
        "keys_only": True,
        "count_only": True,
    }
    assert delete_op("a", "b", prev_kv=True) == {
        "op": "delete_range",
        "key": "a",
        "range_end": "b",
        "prev_kv": True,
    }
    with pytest.raises(ValueError, match="not both"):
        delete_op("a", "b", prefix=True)
    with pytest.raises(ValueError, match="limit"):
        range_op("a", limit=-1)


def test_reply_views_treat_malformed_fields_as_absent() -> None:
    kv = {"key": b"k", "value": b"v", "create_revision": 2, "mod_revision": 3, "version": 2}
    good = Reply.from_map(
        {
            "ok": True,
            "header": {"revision": 3, "raft_term": 1, "member": "n2"},
            "kvs": [{**kv, "lease": 0}],
            "count": 1,
            "more": False,
            "responses": [{"op": "range", "kvs": [], "count": 0, "more": False}],
        }
    )
    assert good.header == Header(3, 1, "n2") and good.revision == 3
    assert good.kvs == (KeyValue(b"k", b"v", 2, 3, 2, 0),)
    assert good.responses == (TxnResponse(op="range", kvs=(), more=False, count=0),)
    bad = Reply.from_map(
        {
            "ok": True,
            "header": {"revision": "3", "raft_term": 1, "member": "n2"},
            "kvs": [kv],  # no lease
            "count": -1,
            "more": 1,
            "deleted": True,
            "succeeded": "yes",
            "prev_kv": {**kv, "lease": 0, "key": "k"},  # a str key
            "prev_kvs": "nope",
            "responses": [{"no": "op"}],
            "compact_revision": None,
        }
    )
    assert bad.header is None and bad.revision is None
    assert (bad.kvs, bad.count, bad.more, bad.deleted, bad.succeeded) == (None,) * 5
    assert (bad.prev_kv, bad.prev_kvs, bad.responses, bad.compact_revision) == (None,) * 4
    legacy = Reply.from_map({"ok": True, "index": 4})  # a reply from before issue 13
    assert (legacy.header, legacy.kvs, legacy.deleted) == (None, None, None)
