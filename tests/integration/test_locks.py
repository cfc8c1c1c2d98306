"""Locks and elections with fencing (issue 16) against a real cluster: mutual exclusion
and growing tokens under contention, a lost lease reported and fenced off, a timeout that
leaves the queue, and an election's campaign, proclaim, observe and resign."""

from __future__ import annotations

import itertools
import threading
import time

import pytest

from tests.procs import ClusterFactory, ProcessCluster
from zraft.client import Client
from zraft.client.recipes import LockLost, LockTimeout
from zraft.testing.cluster import wait_for


def client_of(cluster: ProcessCluster) -> Client:
    return Client.from_config(cluster.config_path, timeout=10)


def test_mutual_exclusion_and_growing_tokens(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()
    sections: list[tuple[float, float, int]] = []  # (entered, left, token)
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            with client_of(cluster) as client:
                for _ in range(3):
                    with client.lock("counter", ttl=5) as held:
                        entered = time.monotonic()
                        current = client.get("counter/value")
                        count = int(current.value or b"0") if current.found else 0
                        held.put("counter/value", str(count + 1))  # guarded
                        time.sleep(0.02)
                        sections.append((entered, time.monotonic(), held.fencing_token))
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors, errors
    assert len(sections) == 12
    ordered = sorted(sections)
    for before, after in itertools.pairwise(ordered):
        assert before[1] <= after[0], "two holders at once"
        assert before[2] < after[2], "a later holder got a lower token"
    with client_of(cluster) as client:
        assert client.get("counter/value").value == b"12"  # no update lost
        assert client.range("_locks/counter/", prefix=True, count_only=True).count == 0


def test_a_lost_lease_is_reported_and_fenced(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()
    with client_of(cluster) as client, client_of(cluster) as other:
        losses: list[str] = []
        first = client.lock("job", ttl=5, on_lost=lambda held, why: losses.append(why))
        first.acquire()
        token = first.fencing_token
        waiter = other.lock("job", ttl=5, timeout=0.5)
        with pytest.raises(LockTimeout):
            waiter.acquire()
        assert other.range("_locks/job/", prefix=True, count_only=True).count == 1  # left
        # The holder's lease ends behind its back (as if it hung past its TTL).
        assert first.lease is not None
        other.lease_revoke(first.lease.id)
        wait_for(first.lost.is_set, timeout=10)
        assert losses and "does not exist" in losses[0]
        with other.lock("job", ttl=5) as second:
            assert second.fencing_token > token
            with pytest.raises(LockLost):
                first.put("job/result", "stale")  # fenced: nothing written
            second.put("job/result", "fresh")
        assert client.get("job/result").value == b"fresh"
        first.release()  # quietly: it was lost


def test_election(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()
    with client_of(cluster) as a, client_of(cluster) as b, client_of(cluster) as c:
        election = a.election("primary")
        assert election.leader() is None
        seen: list[bytes | None] = []
        stop = threading.Event()

        def observe() -> None:
            for leader in c.election("primary").observe(stop=stop):
                seen.append(None if leader is None else leader.value)

        observer = threading.Thread(target=observe)
        observer.start()
        wait_for(lambda: seen == [None], timeout=10)  # it saw no leader first
        leading = election.campaign("a-1", ttl=5).acquire()
        waiting = b.election("primary").campaign("b-1", ttl=5)
        runner = threading.Thread(target=waiting.acquire)
        runner.start()
        wait_for(
            lambda: a.range("_elections/primary/", prefix=True, count_only=True).count == 2,
            timeout=10,
        )
        assert election.leader().value == b"a-1"  # type: ignore[union-attr]
        leading.proclaim("a-2")
        wait_for(lambda: seen[-1:] == [b"a-2"], timeout=10)
        token = leading.fencing_token
        leading.resign()
        runner.join(timeout=10)
        assert waiting.fencing_token > token
        wait_for(lambda: seen[-1:] == [b"b-1"], timeout=10)
        with pytest.raises(LockLost):
            leading.proclaim("a-3")
        waiting.resign()
        wait_for(lambda: seen[-1:] == [None], timeout=10)
        stop.set()
        observer.join(timeout=5)
        assert not observer.is_alive()
        assert seen == [None, b"a-1", b"a-2", b"b-1", None]
