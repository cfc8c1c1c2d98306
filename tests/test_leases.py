"""Leases in the state machine (issue 14): grant, attach, detach, revoke, refresh and
expiry entries, snapshots and determinism, with `tests.test_machine.Driver` feeding
entries as a node does. Clocks are the node's (tests/test_node_leases.py)."""

from __future__ import annotations

import random

import pytest

from tests.test_machine import Driver
from zraft.state.leasing import LeaseEvent
from zraft.state.machine import KVMachine, Refused
from zraft.wire.client import Request
from zraft.wire.entries import encode_write


def grant(d: Driver, ttl: int = 10, **fields: int) -> int:
    reply = d.write("lease_grant", ttl=ttl, **fields)
    assert reply["ok"], reply
    lease: int = reply["extra"]["lease"]
    return lease


def test_grant_attach_revoke() -> None:
    d = Driver()
    lease = grant(d)
    assert lease == d.index  # a lease without a chosen id gets its entry's index
    assert d.machine.take_lease_events() == [LeaseEvent(lease, 10)]
    assert d.machine.revision == 1  # a grant changes no key
    assert grant(d, 5, lease=42) == 42
    refused = d.write("lease_grant", ttl=5, lease=42)
    assert (refused["ok"], refused["error"]) == (False, "bad_request")
    for key in (b"svc/b", b"svc/a"):
        assert d.write("put", key=key, value=b"up", lease=lease)["ok"]
    d.write("put", key=b"svc/c", value=b"up", lease=42)
    d.write("put", key=b"svc/c", value=b"moved", lease=lease)  # moves to the other lease
    d.write("put", key=b"svc/b", value=b"kept")  # a put without a lease detaches
    assert d.machine.leases.get(lease).keys == {b"svc/a", b"svc/c"}  # type: ignore[union-attr]
    assert d.machine.leases.get(42).keys == set()  # type: ignore[union-attr]
    assert d.read("lease_leases")["extra"]["leases"] == [lease, 42]
    kvs = d.read("range", key=b"svc/", prefix=True)["extra"]["kvs"]
    assert [(kv["key"], kv["lease"]) for kv in kvs] == [
        (b"svc/a", lease),
        (b"svc/b", 0),
        (b"svc/c", lease),
    ]
    d.machine.take_lease_events()
    before = d.machine.revision
    revoked = d.write("lease_revoke", lease=lease)
    assert revoked["ok"] and revoked["revision"] == before + 1  # both keys, one revision
    assert d.keys() == [(b"svc/b", b"kept", 2, 6, 2)]
    assert d.machine.take_lease_events() == [LeaseEvent(lease, None, False, 2)]
    again = d.write("lease_revoke", lease=lease)
    assert (again["ok"], again["error"]) == (False, "lease_not_found")
    empty = d.write("lease_revoke", lease=42)
    assert empty["ok"] and d.machine.revision == before + 1  # no keys: no revision


def test_puts_with_unknown_leases_are_refused() -> None:
    d = Driver()
    with pytest.raises(Refused) as refused:
        d.machine.command(Request.of("put", key=b"k", value=b"v", lease=9))
    assert refused.value.code == "lease_not_found"
    logged = encode_write(Request.of("put", key=b"k", value=b"v", lease=9))
    assert d.entry(logged)["error"] == "lease_not_found"  # checked again when applied
    lease = grant(d)
    txn = {
        "compare": [{"key": b"k", "target": "lease", "result": "equal", "operand": 0}],
        "success": [{"op": "put", "key": b"k", "value": b"v", "lease": lease}],
        "failure": [{"op": "put", "key": b"k", "value": b"w", "lease": 999}],
    }
    assert d.write("txn", **txn)["extra"]["succeeded"]  # the failure branch's lease is moot
    assert d.machine.leases.get(lease).keys == {b"k"}  # type: ignore[union-attr]
    lost = d.write("txn", **txn)  # now the failure branch runs, with a missing lease
    assert lost["error"] == "lease_not_found" and d.keys()[0][1] == b"v"


def test_a_retry_of_an_applied_put_is_answered_after_its_lease_is_gone() -> None:
    """The watch nemesis found it: a put with a lease was applied, its reply lost; the
    lease expired; the session's retry was refused `lease_not_found`, as if never made.
    A retry of an applied write is not judged again: its first answer comes back."""
    d = Driver()
    lease = grant(d)
    put = {"key": b"k", "value": b"v", "lease": lease, "client": "c", "seq": 1}
    first = d.write("put", **put)
    assert first["ok"]
    assert d.write("lease_revoke", lease=lease)["ok"]
    retry = d.entry(d.machine.command(Request.of("put", **put)))  # not Refused
    assert (retry["ok"], retry["replayed"], retry["index"]) == (True, True, first["index"])
    assert d.keys() == []  # and not applied again
    with pytest.raises(Refused):  # a new write still is judged
        d.machine.command(Request.of("put", **{**put, "seq": 2}))


def test_ttl_bounds_are_the_leaders_to_enforce() -> None:
    machine = KVMachine(model="mvcc", lease_ttl=(2, 100))
    for ttl in (0, 1, 101):
        with pytest.raises(Refused, match=r"outside 2\.\.100 seconds"):
            machine.command(Request.of("lease_grant", ttl=ttl))
    assert machine.command(Request.of("lease_grant", ttl=2))


def test_refresh_and_expiry_entries() -> None:
    d = Driver()
    one, two = grant(d, 10), grant(d, 20)
    d.write("put", key=b"a", value=b"1", lease=one)
    d.machine.take_lease_events()
    d.entry(d.machine.refresh_command([one, two, 777]))  # a gone lease is skipped
    refreshed_at = d.index
    assert d.machine.take_lease_events() == [LeaseEvent(one, 10), LeaseEvent(two, 20)]
    assert d.machine.leases.get(one).refreshed_index == refreshed_at  # type: ignore[union-attr]
    # An expiry that saw an older refresh is stale: a keepalive was logged since.
    d.entry(d.machine.expiry_command([(one, refreshed_at - 1)]))
    assert one in d.machine.leases and d.machine.value(b"a") == b"1"
    d.entry(d.machine.expiry_command([(one, refreshed_at), (two, refreshed_at), (5, 1)]))
    assert d.machine.leases.ids() == [] and d.machine.value(b"a") is None
    assert d.machine.take_lease_events() == [
        LeaseEvent(one, None, True, 1),
        LeaseEvent(two, None, True, 0),
    ]


def test_leases_travel_in_snapshots_and_restart_every_clock() -> None:
    d = Driver()
    lease = grant(d, 30)
    d.write("put", key=b"k", value=b"v", lease=lease)
    d.write("put", key=b"k2", value=b"v")
    copy = KVMachine()
    copy.restore(d.machine.snapshot_view())
    assert copy.leases.export() == d.machine.leases.export()
    assert copy.leases.get(lease).keys == {b"k"}  # type: ignore[union-attr]
    assert list(copy.take_lease_events()) == [LeaseEvent(lease, 30)]
    restored = Driver(copy)
    assert restored.write("lease_revoke", lease=lease)["ok"] and copy.value(b"k") is None


def test_a_snapshot_naming_a_missing_lease_is_refused() -> None:
    d = Driver()
    lease = grant(d)
    d.write("put", key=b"k", value=b"v", lease=lease)
    view = d.machine.snapshot_view()
    broken = type(view)(view.applied_index, view.data, view.sessions, {**view.header, "leases": []})
    with pytest.raises(ValueError, match="attached to lease"):
        KVMachine().restore(broken)


@pytest.mark.parametrize("seed", range(4))
def test_replicas_agree_with_leases(seed: int) -> None:
    rng = random.Random(seed)
    maker = KVMachine(model="mvcc")
    entries = [KVMachine().upgrade_command()]
    granted: list[int] = []
    for step in range(300):
        roll = rng.random()
        if roll < 0.15 or not granted:
            lease = 1000 + step
            granted.append(lease)
            entries.append(maker.command(Request.of("lease_grant", ttl=5, lease=lease)))
        elif roll < 0.6:
            lease = rng.choice([*granted, 0])
            key = b"k%d" % rng.randrange(10)
            entries.append(encode_write(Request.of("put", key=key, value=b"v", lease=lease)))
        elif roll < 0.7:
            entries.append(maker.command(Request.of("lease_revoke", lease=rng.choice(granted))))
        elif roll < 0.8:
            entries.append(maker.refresh_command(rng.sample(granted, min(3, len(granted)))))
        elif roll < 0.9:
            entries.append(
                maker.expiry_command([(rng.choice(granted), rng.randrange(len(entries) + 1))])
            )
        else:
            entries.append(maker.command(Request.of("delete_range", key=b"k", prefix=True)))
    one, two = Driver(KVMachine()), Driver(KVMachine())
    replies = [one.entry(data) for data in entries]
    half = [two.entry(data) for data in entries[:150]]
    restarted = KVMachine()
    restarted.restore(two.machine.snapshot_view())
    two = Driver(restarted)
    assert replies == half + [two.entry(data) for data in entries[150:]]
    assert one.machine.leases.export() == two.machine.leases.export()
    assert one.machine.store.export() == two.machine.store.export()
    for lease_id in one.machine.leases.ids():
        assert one.machine.leases.get(lease_id).keys == two.machine.leases.get(lease_id).keys  # type: ignore[union-attr]
