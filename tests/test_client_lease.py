"""The client library's leases (issue 14) against a fake cluster: the raw lease methods,
`put(..., lease=)`, and the `Lease` object with its keepalive thread.

`tests.fakeserver.FakeCluster` serves the lease ops from a real `KVMachine` (grant,
revoke and list are the machine's own; keepalive and time-to-live are answered as a
leader's `LeaseKeeper` answers them). Its leases expire only when a test says so:
`expire(id)` now, or `auto_expire` (each lease past its TTL since its last grant or
refresh, as a leader would). Waits are bounded polls on conditions (`wait_for`), never a
sleep followed by an assertion.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from tests.fakeserver import FakeCluster
from tests.logscan import wait_for
from zraft.client import (
    Client,
    ClientError,
    ClientTimeout,
    Lease,
    LeaseError,
    LeaseLost,
    LeaseNotFound,
    Reply,
    lease,
    put_op,
    range_op,
)
from zraft.client.leases import KEEPALIVE_REQUEST_MAX_S, check_interval


@pytest.fixture
def cluster() -> Iterator[FakeCluster]:
    """One fake node (n1, the leader), closed at teardown."""
    with FakeCluster(1) as fake:
        yield fake


@pytest.fixture
def client(cluster: FakeCluster) -> Iterator[Client]:
    """A client of `cluster`."""
    with Client(cluster.endpoints, timeout=3) as made:
        yield made


def keepalives(cluster: FakeCluster, lease_id: int | None = None) -> int:
    """How many `lease_keepalive` requests the fake received (for one lease, if given)."""
    return sum(
        1
        for _, req in cluster.requests
        if req.op == "lease_keepalive" and lease_id in (None, req.get("lease"))
    )


def lease_threads() -> list[str]:
    """The names of the live keepalive threads."""
    return [t.name for t in threading.enumerate() if t.name.startswith("zraft-lease-")]


class LostCalls:
    """An `on_lost` callback that records its calls."""

    def __init__(self) -> None:
        self.calls: list[tuple[Lease, str]] = []
        self.threads: list[str] = []

    def __call__(self, lost: Lease, reason: str) -> None:
        self.calls.append((lost, reason))
        self.threads.append(threading.current_thread().name)


# --- the raw methods ------------------------------------------------------------------


def test_grant_timetolive_keepalive_list_and_revoke(client: Client, cluster: FakeCluster) -> None:
    granted = client.lease_grant(30)
    assert (granted.ok, granted.ttl) == (True, 30)
    assert granted.lease == cluster.index  # the fake gives the grant entry's index
    named = client.lease_grant(60, lease=1000)
    assert (named.lease, named.ttl) == (1000, 60)
    assert client.lease_leases().leases == (granted.lease, 1000)
    assert client.put("a", "1", lease=1000).ok
    assert client.put("b", "2", lease=1000).ok
    info = client.lease_timetolive(1000)
    assert (info.lease, info.ttl, info.keys) == (1000, 60, None)  # keys only when asked
    assert 59 <= info.remaining <= 60  # type: ignore[operator]
    assert client.lease_timetolive(1000, keys=True).keys == (b"a", b"b")
    refreshed = client.lease_keepalive(1000)
    assert (refreshed.lease, refreshed.ttl, refreshed.remaining) == (1000, 60, 60)
    before = client.get("a").revision
    revoked = client.lease_revoke(1000)
    assert revoked.ok and revoked.revision == before + 1  # both keys, at one revision
    assert not client.get("a").found and not client.get("b").found
    assert client.lease_leases().leases == (granted.lease,)


def test_a_put_attaches_and_a_put_without_lease_detaches(client: Client) -> None:
    held = client.lease(30)
    assert client.put("k", "1", lease=held).ok  # a Lease works as well as its id
    assert client.range("k").kvs[0].lease == held.id  # type: ignore[index]
    assert held.keys() == [b"k"]
    assert client.put("k", "2").ok
    assert client.range("k").kvs[0].lease == 0  # type: ignore[index]
    assert held.keys() == []
    held.revoke()
    assert client.get("k").value == b"2"  # detached: it outlives the lease


def test_lease_errors_come_back_as_replies(client: Client) -> None:
    taken = client.lease_grant(10, lease=7)
    again = client.lease_grant(10, lease=7)
    assert (again.ok, again.error_code) == (False, "bad_request")
    too_long = client.lease_grant(9_000_000_001)
    assert too_long.error_code == "bad_request" and "ttl" in (too_long.error_message or "")
    for reply in (
        client.lease_revoke(99),
        client.lease_keepalive(99),
        client.lease_timetolive(99),
        client.put("k", "v", lease=99),
    ):
        assert (reply.ok, reply.error_code) == (False, "lease_not_found")
        assert "99" in (reply.error_message or "")
    assert taken.ok and client.lease_leases().leases == (7,)


@pytest.mark.parametrize("bad", [-1, 2**63, True, 1.5, "7", None])
def test_bad_lease_ids_and_ttls_raise_before_sending(
    client: Client, cluster: FakeCluster, bad: object
) -> None:
    sent = cluster.frames
    for call in (
        lambda: client.lease_revoke(bad),  # type: ignore[arg-type]
        lambda: client.lease_keepalive(bad),  # type: ignore[arg-type]
        lambda: client.lease_timetolive(bad),  # type: ignore[arg-type]
        lambda: client.put("k", "v", lease=bad),  # type: ignore[arg-type]
        lambda: client.lease_grant(10, lease=bad),  # type: ignore[arg-type]
        lambda: put_op("k", "v", lease=bad),  # type: ignore[arg-type]
    ):
        with pytest.raises(ValueError, match="lease id"):
            call()
    for ttl in (0, -1, True, 1.5, "7", None):
        with pytest.raises(ValueError, match="ttl"):
            client.lease_grant(ttl)  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="ttl"):
            client.lease(ttl)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="lease id"):
        client.lease_revoke(0)  # 0 means "no lease": not a lease to revoke
    assert cluster.frames == sent


def test_transactions_put_with_a_lease_and_compare_it(client: Client) -> None:
    held = client.lease(30)
    assert put_op("k", "v", lease=held) == {"op": "put", "key": "k", "value": "v", "lease": held.id}
    assert put_op("k", "v", lease=0) == {"op": "put", "key": "k", "value": "v"}
    done = client.transaction(success=[put_op("k", "v", lease=held.id)])
    assert done.succeeded and held.keys() == [b"k"]
    check = client.transaction(compare=[lease("k") == held.id], success=[range_op("k")], failure=[])
    assert check.succeeded and check.responses[0].kvs[0].lease == held.id  # type: ignore[index]
    missing = client.transaction(success=[put_op("j", "v", lease=12345)])
    assert missing.error_code == "lease_not_found"


def test_reply_lease_views_treat_malformed_fields_as_absent() -> None:
    good = Reply.from_map(
        {"ok": True, "lease": 5, "ttl": 10, "remaining": 3, "keys": [b"a"], "leases": [1, 5]}
    )
    assert (good.lease, good.ttl, good.remaining, good.keys, good.leases) == (
        5,
        10,
        3,
        (b"a",),
        (1, 5),
    )
    bad = Reply.from_map(
        {"ok": True, "lease": "5", "ttl": -1, "remaining": 2.5, "keys": ["a"], "leases": [1, "x"]}
    )
    assert (bad.lease, bad.ttl, bad.remaining, bad.keys, bad.leases) == (None,) * 5
    assert Reply.from_map({"ok": True}).leases is None


# --- the Lease object -----------------------------------------------------------------


def test_client_lease_grants_and_the_lease_answers_for_itself(
    client: Client, cluster: FakeCluster
) -> None:
    held = client.lease(20, lease_id=0x2A)
    assert (held.id, held.ttl) == (42, 20)
    assert repr(held) == "Lease(id=42, ttl=20, held)"
    assert held.refresh() == 20
    assert 19 <= held.remaining() <= 20
    assert held.deadline > time.monotonic() + 19
    assert not held.keepalive_running and not held.lost.is_set()
    held.revoke()
    assert client.lease_leases().leases == ()
    client.lease(20, lease_id=5)
    with pytest.raises(LeaseError, match="bad_request") as refused:
        client.lease(20, lease_id=5)
    assert refused.value.reply is not None and refused.value.reply.error_code == "bad_request"
    assert not isinstance(refused.value, LeaseLost)


def test_a_bad_interval_is_refused_before_the_grant(client: Client, cluster: FakeCluster) -> None:
    sent = cluster.frames
    for interval in (0, -1, 10, 11):
        with pytest.raises(ValueError, match="interval"):
            client.lease(10, keepalive=True, interval=interval)
    assert cluster.frames == sent  # no lease was left without a handle
    assert check_interval(None, 9) == 3


def test_a_gone_lease_raises_lease_not_found_and_is_marked_lost(
    client: Client, cluster: FakeCluster
) -> None:
    on_lost = LostCalls()
    held = client.lease(20, on_lost=on_lost)
    assert cluster.expire(held.id)
    for call in (held.refresh, held.remaining, held.keys):
        with pytest.raises(LeaseNotFound, match=f"lease {held.id} does not exist") as gone:
            call()
        assert isinstance(gone.value, ClientError) and gone.value.lease_id == held.id
    assert held.lost.is_set() and "does not exist" in (held.lost_reason or "")
    # Once, from the thread that found out.
    assert [call[0] for call in on_lost.calls] == [held] and on_lost.threads == ["MainThread"]
    with pytest.raises(LeaseLost, match="is lost"):
        held.start_keepalive()
    with pytest.raises(LeaseNotFound):
        held.revoke()


def test_keepalive_keeps_a_lease_past_its_ttl_while_an_unkept_one_expires(
    client: Client, cluster: FakeCluster
) -> None:
    cluster.auto_expire = True
    on_lost = LostCalls()
    kept = client.lease(1, keepalive=True, interval=0.2, on_lost=on_lost)
    unkept = client.lease(1)
    assert client.put("kept", "1", lease=kept).ok and client.put("unkept", "1", lease=unkept).ok
    start = time.monotonic()
    assert kept.keepalive_running and client.keepalives.running() == [kept]
    wait_for(lambda: unkept.id not in client.lease_leases().leases, timeout=5)  # type: ignore[operator]
    assert not client.get("unkept").found
    wait_for(lambda: time.monotonic() - start > 2.5 and keepalives(cluster, kept.id) >= 8, 10)
    assert client.lease_leases().leases == (kept.id,)
    assert client.get("kept").found
    assert not kept.lost.is_set() and on_lost.calls == [] and kept.last_error is None
    kept.stop_keepalive()


def test_an_expired_lease_stops_the_keepalive_and_says_so(
    client: Client, cluster: FakeCluster
) -> None:
    on_lost = LostCalls()
    held = client.lease(10, keepalive=True, interval=0.2, on_lost=on_lost)
    wait_for(lambda: keepalives(cluster, held.id) >= 2, timeout=5)
    assert cluster.expire(held.id)
    expired = time.monotonic()
    assert held.lost.wait(0.2 + KEEPALIVE_REQUEST_MAX_S)  # the next refresh finds it gone
    assert time.monotonic() - expired < 0.2 + 1.0
    assert held.lost_reason == f"lease {held.id} does not exist (expired or revoked?)"
    assert [call[0] for call in on_lost.calls] == [held]
    assert on_lost.threads == [f"zraft-lease-{held.id}"]
    wait_for(lambda: not held.keepalive_running, timeout=2)
    assert client.keepalives.running() == []


def test_keepalives_failing_past_the_deadline_mean_the_lease_may_have_expired(
    client: Client, cluster: FakeCluster
) -> None:
    on_lost = LostCalls()
    held = client.lease(1, keepalive=True, interval=0.2, on_lost=on_lost)
    wait_for(lambda: keepalives(cluster, held.id) >= 1, timeout=5)
    cluster.silent = {"n1"}  # receives, never answers: a hung or unreachable node
    assert held.lost.wait(3)
    late = time.monotonic() - held.deadline
    assert 0 <= late < 0.5  # reported at the deadline, not a request timeout later
    reason = held.lost_reason or ""
    assert "may have expired" in reason and "TTL of 1 s" in reason and "no node answered" in reason
    assert held.last_error is not None and on_lost.calls == [(held, reason)]
    cluster.silent = set()
    assert held.refresh() == 1  # the fake never expired it: a refresh tells
    assert held.lost.is_set()  # the loss stays reported: it may have happened


def test_the_keepalive_survives_a_dead_leader_by_going_elsewhere() -> None:
    with FakeCluster(3) as cluster, Client(cluster.endpoints, timeout=3) as client:
        cluster.auto_expire = True
        held = client.lease(2, keepalive=True, interval=0.3)
        wait_for(lambda: keepalives(cluster, held.id) >= 1, timeout=5)
        cluster.silent = {"n1"}  # the node it used: hung, like a leader killed mid-request
        seen = keepalives(cluster)
        wait_for(lambda: keepalives(cluster) >= seen + 5, timeout=10)
        assert not held.lost.is_set(), held.lost_reason
        assert client.lease_leases().leases == (held.id,)
        answered_by = {node for node, req in cluster.requests[-4:] if req.op == "lease_keepalive"}
        assert answered_by and "n1" not in answered_by


def test_stop_keepalive_ends_the_thread_and_leaves_the_lease(
    client: Client, cluster: FakeCluster
) -> None:
    held = client.lease(10, keepalive=True, interval=0.1)
    held.start_keepalive()  # running already: nothing more
    assert lease_threads() == [f"zraft-lease-{held.id}"]
    wait_for(lambda: keepalives(cluster, held.id) >= 2, timeout=5)
    held.stop_keepalive()
    assert not held.keepalive_running and lease_threads() == []
    assert client.keepalives.running() == []
    assert client.lease_leases().leases == (held.id,) and not held.lost.is_set()
    held.stop_keepalive()  # idempotent
    held.start_keepalive(0.1)  # and it can start again
    assert held.keepalive_running
    held.revoke()  # stops it first: no loss reported for a lease ended on purpose
    assert lease_threads() == [] and not held.lost.is_set()


def test_no_keepalive_thread_outlives_close(cluster: FakeCluster) -> None:
    client = Client(cluster.endpoints, timeout=3)
    leases = [client.lease(10, keepalive=True, interval=0.1) for _ in range(3)]
    assert len(lease_threads()) == 3
    client.close()
    assert lease_threads() == []
    assert all(not held.keepalive_running for held in leases)
    assert all(not held.lost.is_set() for held in leases)
    with pytest.raises(ClientError, match="closed"):
        leases[0].start_keepalive()


def test_the_keepalive_thread_uses_a_client_of_its_own(
    client: Client, cluster: FakeCluster
) -> None:
    twin = client.clone()
    try:
        assert twin.endpoints == client.endpoints and twin.timeout == client.timeout
        assert twin.client_id != client.client_id  # two sessions never share an id
    finally:
        twin.close()
    held = client.lease(10, keepalive=True, interval=0.05)
    # The parent's sockets are busy in this thread meanwhile: no interference.
    for n in range(100):
        assert client.put(f"k{n}", "v", lease=held).ok
    wait_for(lambda: keepalives(cluster, held.id) >= 5, timeout=5)
    assert not held.lost.is_set() and len(held.keys()) == 100
    held.stop_keepalive()


def test_on_lost_may_stop_the_keepalive_itself(client: Client, cluster: FakeCluster) -> None:
    def stop_from_callback(lost: Lease, reason: str) -> None:
        lost.stop_keepalive()  # from the keepalive thread: must not join itself

    held = client.lease(10, keepalive=True, interval=0.1, on_lost=stop_from_callback)
    cluster.expire(held.id)
    assert held.lost.wait(3)
    wait_for(lambda: not held.keepalive_running, timeout=3)


# --- the context manager and the foreground keepalive ----------------------------------


def test_with_keeps_the_lease_alive_then_revokes_it(client: Client, cluster: FakeCluster) -> None:
    cluster.auto_expire = True
    with client.lease(1, keepalive=True, interval=0.2) as held:
        assert client.put("job", "running", lease=held).ok
        start = time.monotonic()
        wait_for(lambda: time.monotonic() - start > 1.5, timeout=3)
        assert client.get("job").found and held.keepalive_running
    assert not held.keepalive_running and lease_threads() == []
    assert client.lease_leases().leases == () and not client.get("job").found
    assert not held.lost.is_set()
    with client.lease(10) as gone:
        cluster.expire(gone.id)  # gone already at the end: nothing to revoke, no error


def test_a_revoke_failure_on_exit_never_hides_the_bodys_exception(cluster: FakeCluster) -> None:
    with Client(cluster.endpoints, timeout=0.3) as client:
        with pytest.raises(RuntimeError, match="the body failed") as raised, client.lease(10):
            cluster.silent = {"n1"}
            raise RuntimeError("the body failed")
        notes = getattr(raised.value, "__notes__", [])
        assert len(notes) == 1 and "revoking lease" in notes[0] and "until its TTL" in notes[0]
        cluster.silent = set()
        held = client.lease(10)
        with pytest.raises(ClientTimeout) as timed_out, held:
            cluster.silent = {"n1"}
        assert any("until its TTL" in note for note in timed_out.value.__notes__)


def test_keep_alive_in_the_calling_thread(client: Client, cluster: FakeCluster) -> None:
    held = client.lease(10)
    stop = threading.Event()
    refreshed: list[Reply] = []

    def on_refresh(reply: Reply) -> None:
        refreshed.append(reply)
        if len(refreshed) == 3:
            stop.set()

    held.keep_alive(0.05, stop=stop, on_refresh=on_refresh)  # returns once stopped
    assert [r.remaining for r in refreshed] == [10, 10, 10] and not held.lost.is_set()
    timer = threading.Timer(0.2, cluster.expire, args=(held.id,))
    timer.start()
    try:
        with pytest.raises(LeaseNotFound):
            held.keep_alive(0.05)
    finally:
        timer.join()
    assert held.lost.is_set()


def test_request_within_shortens_the_deadline_and_says_so(
    client: Client, cluster: FakeCluster
) -> None:
    assert client.request_within(1.0, "lease_leases").ok
    cluster.silent = {"n1"}
    start = time.monotonic()
    with pytest.raises(ClientTimeout, match=r"within 0\.3 s") as timed_out:
        client.request_within(0.3, "lease_leases")
    assert time.monotonic() - start < 1.0 and timed_out.value.timeout == 0.3
    with pytest.raises(ValueError, match="re-sent"):
        client.request_within(1.0, "add_member", id="n9", peer="tcp://127.0.0.1:1")
    with pytest.raises(ValueError, match="> 0"):
        client.request_within(0, "lease_leases")
