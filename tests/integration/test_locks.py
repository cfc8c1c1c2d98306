"""Locks and elections with fencing (issue 16) against a real cluster: mutual exclusion
and growing tokens under contention, a lost lease reported and fenced off, a timeout that
leaves the queue, and an election's campaign, proclaim, observe and resign."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.procs import ClusterFactory, ProcessCluster
from zraft.cli.usage import EXIT_FAILED, EXIT_INTERRUPTED
from zraft.client import Client
from zraft.client.recipes import LockLost, LockTimeout
from zraft.testing.cluster import wait_for

ROOT = Path(__file__).resolve().parents[2]


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
        with waiter as second:  # the one that timed out, entered again
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


def cli(cluster: ProcessCluster, *args: str) -> list[str]:
    return [
        sys.executable,
        str(ROOT / "bin" / "zraft-client"),
        "--config",
        str(cluster.config_path),
        *args,
    ]


def test_zraft_client_lock_and_elect(make_cluster: ClusterFactory, tmp_path: Path) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()
    out = tmp_path / "token"
    # A command run under the lock sees its fencing token.
    ran = subprocess.run(
        cli(cluster, "lock", "deploy", "--", "sh", "-c", f'echo "$ZRAFT_LOCK_TOKEN" > {out}'),
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert ran.returncode == 0, ran.stderr
    first_token = int(out.read_text())
    # Held by one process: another times out; Ctrl-C releases it.
    holder = subprocess.Popen(cli(cluster, "lock", "deploy"), stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None
        key = holder.stdout.readline().strip()
        token_line = holder.stdout.readline().strip()
        assert key.startswith("_locks/deploy/") and token_line.startswith("fencing token ")
        assert int(token_line.split()[-1]) > first_token
        blocked = subprocess.run(
            cli(cluster, "lock", "deploy", "--timeout", "0.5"),
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        assert blocked.returncode == EXIT_FAILED and "timeout" in blocked.stderr
        holder.send_signal(signal.SIGINT)
        assert holder.wait(timeout=10) == EXIT_INTERRUPTED
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(timeout=10)
    # A lost lock terminates the command and exits 1.
    runner = subprocess.Popen(
        cli(cluster, "lock", "deploy", "--ttl", "2", "--", "sleep", "60"),
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with client_of(cluster) as client:
            found = wait_for(lambda: client.range("_locks/deploy/", prefix=True).kvs, timeout=10)
            lease = int(found[0].key.decode().rsplit("/", 1)[1], 16)
            client.lease_revoke(lease)
        assert runner.wait(timeout=15) == EXIT_FAILED
        assert "lock_lost" in (runner.stderr.read() if runner.stderr else "")
    finally:
        if runner.poll() is None:
            runner.kill()
            runner.wait(timeout=10)
    # An election: a candidate leads, an observer prints its value.
    candidate = subprocess.Popen(
        cli(cluster, "elect", "db", "primary-1"), stdout=subprocess.PIPE, text=True
    )
    observer = subprocess.Popen(cli(cluster, "elect", "db"), stdout=subprocess.PIPE, text=True)
    try:
        assert candidate.stdout is not None and observer.stdout is not None
        assert candidate.stdout.readline().startswith("_elections/db/")
        assert candidate.stdout.readline().strip() == "primary-1"
        seen = [observer.stdout.readline().strip() for _ in range(1)]
        while seen[-1] != "primary-1":
            seen.append(observer.stdout.readline().strip())
        candidate.send_signal(signal.SIGINT)  # resigns
        assert candidate.wait(timeout=10) == EXIT_INTERRUPTED
        assert observer.stdout.readline().strip() == "(no leader)"
    finally:
        for process in (candidate, observer):
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=10)
