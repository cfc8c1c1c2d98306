"""Watches on real processes (issue 15): the library's iterator and `zraft-client watch`
across kills of the node they talk to and of the leader, cancellation from another thread,
`Compacted`, and the callback form.

Each stream is compared with the writes the test made and saw acknowledged: the same
keys at the same revisions, in order, none missing and none twice.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.procs import ClusterFactory, ProcessCluster
from zraft.cli.usage import EXIT_INTERRUPTED
from zraft.client import Client
from zraft.client.watch import Compacted, Watch, WatchEvent
from zraft.testing.cluster import wait_for

ROOT = Path(__file__).resolve().parents[2]


class Collector(threading.Thread):
    """Iterates a watch in a thread of its own, keeping every event (and what ended it)."""

    def __init__(self, watch: Watch) -> None:
        super().__init__(daemon=True)
        self.watch = watch
        self.events: list[WatchEvent] = []
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for event in self.watch:
                self.events.append(event)
        except BaseException as exc:  # kept for the test to look at
            self.error = exc

    def seen(self) -> list[tuple[bytes, int]]:
        return [(e.key, e.revision) for e in list(self.events)]


def write(client: Client, key: str, value: str) -> tuple[bytes, int]:
    reply = client.put(key, value)
    assert reply.ok and reply.header is not None, reply
    return key.encode(), reply.header.revision


def test_a_watch_survives_kills_of_its_node_and_of_the_leader(
    make_cluster: ClusterFactory,
) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    follower = next(n for n in cluster.running() if n != leader)
    with Client.from_config(cluster.config_path, timeout=10) as client:
        before = write(client, "w/before", "0")
        watch = client.watch("w/", prefix=True, node=follower, wait_s=0.5)
        collector = Collector(watch)
        collector.start()
        wait_for(lambda: watch.next_revision is not None, timeout=10)
        assert watch.next_revision > before[1]  # a linearizable start: after that write
        acked = [write(client, f"w/{n}", str(n)) for n in range(20)]
        client.put("elsewhere", "x")  # outside the range
        wait_for(lambda: collector.seen() == acked, timeout=10)
        # Kill the node the watch talks to, write on, bring it back.
        cluster.kill(follower)
        acked += [write(client, f"w/{n}", str(n)) for n in range(20, 40)]
        wait_for(lambda: collector.seen() == acked, timeout=15)
        cluster.start(follower)
        # Then the leader: the watch's node loses its leader, the cluster elects another.
        cluster.kill(cluster.wait_leader())
        acked += [write(client, f"w/{n}", str(n)) for n in range(40, 60)]
        wait_for(lambda: collector.seen() == acked, timeout=15)
        assert [e.type for e in collector.events] == ["put"] * 60
        revisions = [e.revision for e in collector.events]
        assert revisions == sorted(set(revisions))
        watch.cancel()
        collector.join(timeout=2)
        assert not collector.is_alive() and collector.error is None


def test_cancel_compacted_and_callbacks(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()
    with Client.from_config(cluster.config_path, timeout=10) as client:
        # Cancelled from another thread while a poll is held: it ends at once.
        idle = Collector(client.watch("idle", wait_s=30))
        idle.start()
        wait_for(lambda: idle.watch.next_revision is not None, timeout=10)
        wait_for(lambda: started(cluster), timeout=10)  # a node holds its poll now
        began = time.monotonic()
        idle.watch.cancel()
        idle.join(timeout=2)
        assert not idle.is_alive() and time.monotonic() - began < 1.0
        # A compacted start ends the watch with Compacted.
        first = write(client, "c", "1")[1]
        last = write(client, "c", "2")[1]
        assert client.compact(last).ok
        with pytest.raises(Compacted) as caught:
            next(iter(client.watch("c", start_revision=first)))
        assert caught.value.compact_revision == last
        # From a past revision, with prev_kv; and the callback form.
        seen: list[WatchEvent] = []
        running = client.watch("c", start_revision=last + 1, prev_kv=True, callback=seen.append)
        third = write(client, "c", "3")[1]
        wait_for(lambda: [e.revision for e in seen] == [third], timeout=10)
        assert seen[0].prev_kv is not None and seen[0].prev_kv.value == b"2"
        running_deletes: list[WatchEvent] = []
        deletes = client.watch("c", filters=["noput"], callback=running_deletes.append)
        wait_for(lambda: deletes.next_revision is not None, timeout=10)  # started: after it
        client.put("c", "4")
        deleted = client.delete("c").header.revision
        wait_for(lambda: [e.revision for e in running_deletes] == [deleted], timeout=10)
        # A callback may close its own watch.
        closing: list[Watch] = []
        ready = threading.Event()

        def close_it(event: WatchEvent) -> None:
            ready.wait(5)
            closing[0].close()

        closing.append(client.watch("c", start_revision=last + 1, callback=close_it))
        ready.set()
        wait_for(lambda: closing[0].join(timeout=0), timeout=10)
        assert closing[0].error is None and closing[0].cancelled
    # Closing the client stopped both callback threads.
    assert running.join(timeout=0) and deletes.join(timeout=0)
    assert running.error is None and deletes.error is None


def test_zraft_client_watch_streams_across_a_kill(make_cluster: ClusterFactory) -> None:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()
    command = [sys.executable, str(ROOT / "bin" / "zraft-client"), "--config"]
    command += [str(cluster.config_path), "watch", "svc/", "--prefix", "--prev-kv"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(
        target=lambda: [lines.put(line.rstrip("\n")) for line in process.stdout or ()],
        daemon=True,
    )
    reader.start()
    try:
        with Client.from_config(cluster.config_path, timeout=10) as client:
            wait_for(lambda: started(cluster), timeout=10)
            client.put("svc/a", "1")
            assert take(lines, 3) == ["PUT", "svc/a", "1"]
            # The CLI talks to the first node of the file: kill it, write, restart it.
            first = cluster.running()[0]
            cluster.kill(first)
            client.put("svc/a", "2")
            assert take(lines, 5) == ["PUT", "svc/a", "1", "svc/a", "2"]
            cluster.start(first)
            client.delete("svc/a")
            assert take(lines, 5) == ["DELETE", "svc/a", "2", "svc/a", ""]
        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=10) == EXIT_INTERRUPTED
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)


def started(cluster: ProcessCluster) -> bool:
    """Whether some node holds a watch (the CLI's first poll arrived)."""
    return any(cluster.status(node).get("watches", 0) > 0 for node in cluster.running())


def take(lines: queue.Queue[str], count: int, timeout: float = 15.0) -> list[str]:
    """The next `count` lines the CLI prints (bounded wait)."""
    deadline = time.monotonic() + timeout
    return [lines.get(timeout=max(0.01, deadline - time.monotonic())) for _ in range(count)]


def test_the_watch_benchmark_runs(tmp_path: Path) -> None:
    """A smoke run of `tests/watch_bench.py` (zraft alone, a few watchers, 60 leases): it
    prints its JSON, every watcher received every acknowledged write, and no kept lease
    expired (figures are its to print, not this test's to judge)."""
    command = [sys.executable, str(ROOT / "tests" / "watch_bench.py"), "--systems", "zraft"]
    command += ["--key-watchers", "20", "--prefix-watchers", "3", "--rate", "100"]
    command += ["--seconds", "3", "--tput-seconds", "1", "--keep", str(tmp_path / "bench")]
    command += ["--leases", "60", "--lease-ttl", "3"]
    ran = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert ran.returncode == 0, ran.stderr[-2000:]
    result = json.loads(ran.stdout.splitlines()[-1])["zraft"]
    assert result["acknowledged"] > 0
    for kind in ("key_watchers", "prefix_watchers"):
        assert result[kind]["events"] > 0 and result[kind]["missing"] == 0, result
    # The leases phase: keepalives went out, every one was answered and kept its lease alive
    # (how many fit in its one-second window is a figure, not this test's to judge).
    keepalives = result["keepalives"]
    assert keepalives["leases"] == 60 and keepalives["sent"] > 0, keepalives
    assert keepalives["refused"] == 0 and keepalives["unanswered"] == 0, keepalives
    assert result["leader_peak_rss_mib"] > 0, result
