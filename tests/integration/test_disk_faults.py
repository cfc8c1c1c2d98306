"""Disk faults on real node processes: failing fsync, a full disk, torn and corrupt WALs.

Storage is fail-stop (`zraft/storage/base.py`): any OSError fails the store, the node logs
`fatal_error` (kind `StorageError`) and exits 1 before anything that depended on the failed
write leaves it. These tests check that promise from the outside, and that the cluster
loses nothing it acknowledged:

- fsync failures (EIO), write failures (ENOSPC) and short write counts come from
  `tests/faultlib` (an LD_PRELOAD shim armed by a trigger file, per node; skipped without
  gcc); every node of those clusters loads it, only the chosen node is armed;
- the full disk is a 2 MiB tmpfs mounted on one node's data dir (root only: skipped
  otherwise), enlarged with `mount -o remount` before the node restarts;
- torn and corrupt logs are made by editing a SIGKILLed node's last WAL segment.

A follower whose tail repair dropped an entry it had already acknowledged (a disk that
lied about fsync) must be sent it again: the leader lowers its match when a rejection's
hint shows the follower holds less than it acknowledged.

Random choices (cut offsets, flipped bytes) use a seed that failure messages print;
`ZRAFT_DISK_SEED=N` replays one. Every wait is bounded; every process is stopped by PID and
every mount unmounted in the fixture's finalizer, even when a test fails.
"""

from __future__ import annotations

import contextlib
import os
import random
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import logscan
from tests.faultlib import INJECTED_MARKER, FailIO, build_shim
from tests.procs import START_TIMEOUT_S, TRANSIENT_ERRORS, NoReply, ProcessCluster, ReqClient
from zraft import wire
from zraft.core.types import Entry
from zraft.storage.wal import (
    FRAME_SAVE,
    Frame,
    Truncate,
    decode_items,
    parse_segment_name,
    read_frame,
)

REQUEST_TIMEOUT_MS = 1500
EXIT_TIMEOUT_S = 10.0  # an armed fault -> the node has exited
CATCH_UP_TIMEOUT_S = 20.0
BIG_VALUE_BYTES = 64 << 10
TMPFS_SMALL, TMPFS_BIG = "2m", "64m"
MAX_FILL_WRITES = 100  # 6.4 MB of values: far more than the 2 MiB tmpfs holds


# --- helpers ------------------------------------------------------------------------------


@contextlib.contextmanager
def _environ(extra: dict[str, str]) -> Iterator[None]:
    """Set `extra` in os.environ for the block (children started in it inherit it)."""
    saved = {key: os.environ.get(key) for key in extra}
    os.environ.update(extra)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class DiskCluster(ProcessCluster):
    """A `ProcessCluster` whose nodes may get extra environment (the failio shim).

    `node_env[id]` is added to the environment of every (re)start of that node.
    """

    def __init__(self, directory: Path, n: int, **options: Any) -> None:
        super().__init__(directory, n, **options)
        self.node_env: dict[str, dict[str, str]] = {}

    def start(self, node_id: str, *, wait: bool = True) -> None:
        """Start `node_id` with `node_env[node_id]`; see `ProcessCluster.start`."""
        before = logscan.count(self.node_events(node_id), "node_started")
        with _environ(self.node_env.get(node_id, {})):
            super().start(node_id, wait=False)
        if wait:
            self.wait_started([node_id], {node_id: before})

    def data_dir(self, node_id: str) -> Path:
        """The node's data directory (from the generated config)."""
        return self.config.node(node_id).data_dir

    def exit_code(self, node_id: str) -> int | None:
        """The exit code of the node's last process, or None while it runs."""
        return self._procs[node_id].poll()

    def wait_exit(self, node_id: str, timeout: float = EXIT_TIMEOUT_S) -> int:
        """Wait (bounded) until the node's process exits by itself; its exit code."""
        logscan.wait_for(
            lambda: self.exit_code(node_id) is not None, timeout=timeout, describe=self.describe
        )
        code = self.exit_code(node_id)
        assert code is not None
        return code

    def stderr_size(self, node_id: str) -> int:
        """Bytes in the node's stderr file so far (all its runs append to it)."""
        path = self.directory / f"{node_id}.stderr"
        return path.stat().st_size if path.exists() else 0

    def stderr_since(self, node_id: str, offset: int) -> str:
        """What the node wrote to stderr after `offset` (see `stderr_size`)."""
        data = (self.directory / f"{node_id}.stderr").read_bytes()
        return data[offset:].decode("utf-8", "replace")


class DiskLab:
    """Clusters and tmpfs mounts of one test; `close` stops processes, then unmounts."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.clusters: list[DiskCluster] = []
        self.mounts: list[Path] = []

    def cluster(self, n: int = 3, **options: Any) -> DiskCluster:
        """A new n-node cluster (not started) in its own folder."""
        options.setdefault("request_timeout_ms", REQUEST_TIMEOUT_MS)
        cluster = DiskCluster(self.directory / f"cluster{len(self.clusters)}", n, **options)
        self.clusters.append(cluster)
        return cluster

    def mount_tmpfs(self, path: Path, size: str) -> None:
        """Mount a tmpfs of `size` on `path`, or skip the test if mounting is not permitted."""
        path.mkdir(parents=True, exist_ok=True)
        command = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(path)]
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired) as exc:
            pytest.skip(f"cannot run mount to make a small tmpfs: {exc}")
        if result.returncode != 0:
            pytest.skip(
                f"mounting a tmpfs is not permitted here (needs root/CAP_SYS_ADMIN): "
                f"{' '.join(command)} -> {result.stderr.strip()}"
            )
        self.mounts.append(path)

    def resize_tmpfs(self, path: Path, size: str) -> None:
        """Grow (or shrink) the tmpfs mounted on `path`; its files stay."""
        subprocess.run(
            ["mount", "-o", f"remount,size={size}", str(path)],
            check=True,
            capture_output=True,
            timeout=10,
        )

    def close(self) -> None:
        """Stop every process by PID first (a busy mount cannot go), then unmount."""
        try:
            for cluster in self.clusters:
                cluster.close()
        finally:
            for path in reversed(self.mounts):
                result = subprocess.run(["umount", str(path)], capture_output=True, timeout=10)
                if result.returncode != 0:  # still busy: detach it now, freed when unused
                    subprocess.run(["umount", "-l", str(path)], check=True, timeout=10)
            self.mounts.clear()


@pytest.fixture(scope="session")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The compiled failio shim (built once per session; skips without gcc)."""
    return build_shim(tmp_path_factory.getbasetemp() / "failio")


@pytest.fixture
def lab(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[DiskLab]:
    """A `DiskLab` in `tmp_path`; on failure, each cluster's last events are printed."""
    failed_before = request.session.testsfailed
    made = DiskLab(tmp_path)
    yield made
    try:
        if request.session.testsfailed > failed_before:
            for cluster in made.clusters:
                print(f"=== {cluster.directory} at teardown\n{cluster.describe()}")
    finally:
        made.close()


@pytest.fixture
def seed() -> int:
    """The seed of this test's random choices (`ZRAFT_DISK_SEED` to replay one)."""
    chosen = int(os.environ.get("ZRAFT_DISK_SEED") or random.SystemRandom().randrange(1 << 32))
    print(f"ZRAFT_DISK_SEED={chosen}")
    return chosen


def arm_all_with_shim(cluster: DiskCluster, shim: Path) -> dict[str, FailIO]:
    """Give every node the shim with its own (unarmed) triggers, matching its WAL files."""
    faults: dict[str, FailIO] = {}
    for node_id in cluster.ids:
        match = str(cluster.data_dir(node_id) / "wal-")
        faults[node_id] = FailIO(cluster.directory / "failio" / node_id, match=match)
        cluster.node_env[node_id] = faults[node_id].env(shim)
    return faults


def put_all(cluster: DiskCluster, via: str, items: dict[str, bytes]) -> dict[str, bytes]:
    """Put every item (retrying transient errors); returns them: all were acknowledged."""
    for key, value in items.items():
        reply = cluster.request_until_ok(via, "put", key=key, value=value)
        assert reply["ok"], reply
    return dict(items)


def assert_readable(cluster: DiskCluster, via: str, acked: dict[str, bytes]) -> None:
    """Every acknowledged key reads back (linearizably, through `via`) with its value."""
    for key, value in acked.items():
        reply = cluster.request_until_ok(via, "get", key=key)
        assert reply["value"] == value, f"acknowledged {key!r} lost or changed: {reply}"


def wait_caught_up(
    cluster: DiskCluster,
    node_id: str,
    acked: dict[str, bytes],
    timeout: float = CATCH_UP_TIMEOUT_S,
) -> None:
    """Wait until `node_id` serves every acknowledged value from its own state
    (serializable gets: proof that it replicated and applied them itself)."""
    last_key = next(reversed(acked))

    def local(key: str) -> bytes | None:
        try:
            reply = cluster.request(
                node_id, "get", timeout=1.0, key=key, consistency="serializable"
            )
        except NoReply:  # still starting up
            return None
        value: bytes | None = reply.get("value")
        return value

    def caught_up() -> bool:
        if local(last_key) != acked[last_key]:
            return False
        return all(local(key) == value for key, value in acked.items())

    logscan.wait_for(caught_up, timeout=timeout, describe=cluster.describe)


def last_fatal(cluster: DiskCluster, node_id: str) -> dict[str, Any]:
    """The node's last `fatal_error` event (asserts there is one)."""
    fatal = logscan.select(cluster.node_events(node_id), "fatal_error")
    assert fatal, f"{node_id} exited without fatal_error\n{cluster.describe()}"
    return fatal[-1]


def last_segment(data_dir: Path) -> Path:
    """The newest WAL segment of a data dir (names sort by segment number)."""
    segments = sorted(data_dir.glob("wal-*.log"))
    assert segments, f"no WAL segment in {data_dir}"
    return segments[-1]


def valid_frames(data: bytes) -> list[Frame]:
    """The CRC-valid frames from the start of a segment, up to the first bad one."""
    frames: list[Frame] = []
    offset = 0
    while (frame := read_frame(data, offset)) is not None:
        frames.append(frame)
        offset = frame.end
    return frames


def replayed_last_index(frames: list[Frame], base: int) -> int:
    """The log's last index after replaying save `frames` onto a log ending at `base`."""
    last = base
    for frame in frames:
        if frame.type != FRAME_SAVE:
            continue
        for item in decode_items(frame.payload):
            if isinstance(item, Truncate):
                last = item.from_index - 1
            elif isinstance(item, Entry):
                last = item.index
    return last


def repairs(cluster: DiskCluster, node_id: str) -> list[dict[str, Any]]:
    """Every `log_tail_repaired` event the node has logged, in order."""
    return logscan.select(cluster.node_events(node_id), "log_tail_repaired")


def big_value(i: int) -> bytes:
    """A deterministic, incompressible 64 KiB value for key number `i`."""
    return random.Random(i).randbytes(BIG_VALUE_BYTES)


# --- 1. failing fsync ----------------------------------------------------------------------


def started_with_data(
    lab: DiskLab, shim: Path, count: int
) -> tuple[DiskCluster, dict[str, FailIO], str, str, str, dict[str, bytes]]:
    """Three nodes with the shim loaded (no fault armed yet), `count` writes acknowledged
    and held by both followers: (cluster, faults, leader, follower, other, acked)."""
    cluster = lab.cluster(3)
    faults = arm_all_with_shim(cluster, shim)
    cluster.start_all()
    leader = cluster.wait_leader()
    first, second = (n for n in cluster.ids if n != leader)
    acked = put_all(cluster, leader, {f"k{i}": f"v{i}".encode() for i in range(count)})
    wait_caught_up(cluster, first, acked)
    wait_caught_up(cluster, second, acked)
    return cluster, faults, leader, first, second, acked


def test_follower_fsync_failure_stops_it_before_it_acknowledges(lab: DiskLab, shim: Path) -> None:
    """A follower whose WAL fdatasync fails (EIO) exits 1 with `fatal_error` (StorageError)
    and never acknowledges the entry it could not make durable: with the other follower
    paused, the leader needs that follower's ack, and the write is NOT acknowledged.
    The remaining majority keeps serving; restarted on the same data dir with the fault
    healed, the follower catches up, and every acknowledged write is readable."""
    # The victim holds the data it will rejoin with.
    cluster, faults, leader, victim, other, acked = started_with_data(lab, shim, 10)

    cluster.pause(other)  # from now on only the victim's ack can commit anything
    faults[victim].arm("fsync")
    stderr_at = cluster.stderr_size(victim)
    reply = cluster.request(
        leader, "put", timeout=REQUEST_TIMEOUT_MS / 1000 + 3, key="undurable", value=b"u"
    )
    assert not reply["ok"], f"a write was acknowledged on an undurable copy: {reply}"
    assert reply["error"]["code"] in TRANSIENT_ERRORS, reply
    code = cluster.wait_exit(victim)
    assert code == 1, f"{victim} exited with {code}\n{cluster.describe()}"
    fatal = last_fatal(cluster, victim)
    assert fatal["kind"] == "StorageError", fatal
    assert "[Errno 5]" in fatal["exception"], fatal["exception"]
    injected = cluster.stderr_since(victim, stderr_at)
    assert INJECTED_MARKER in injected and "fdatasync" in injected, injected
    print(f"{victim}: exit {code}, fatal_error kind={fatal['kind']}; the write got {reply}")

    cluster.resume(other)  # 2 of 3: the cluster serves again
    acked |= put_all(cluster, other, {f"k{i}": f"v{i}".encode() for i in range(10, 20)})
    maybe = cluster.request_until_ok(other, "get", key="undurable")["value"]
    assert maybe in (None, b"u"), maybe  # unacknowledged: may or may not have committed

    faults[victim].heal()
    cluster.start(victim)
    acked |= put_all(cluster, other, {"after_restart": b"yes"})
    wait_caught_up(cluster, victim, acked)
    assert_readable(cluster, cluster.wait_leader(), acked)
    cluster.assert_safety()


def test_a_vote_that_cannot_be_made_durable_is_never_cast(lab: DiskLab, shim: Path) -> None:
    """§5.1 (Figure 2): a vote is persisted before it is sent. With the leader killed and
    follower F's fdatasync failing, the election needs F's vote, which F must write
    (term and voted_for) first: F stops with `fatal_error` instead, and the other
    follower C cannot win: it keeps campaigning (each new campaign means the last one
    found no majority) and no leader exists until the old leader comes back."""
    cluster, faults, leader, voter, candidate, acked = started_with_data(lab, shim, 5)
    term = cluster.status(leader)["term"]
    faults[voter].arm("fsync")  # idle: its next fsync is the one a term change needs
    cluster.kill(leader)
    assert cluster.wait_exit(voter) == 1, cluster.describe()
    assert last_fatal(cluster, voter)["kind"] == "StorageError"

    def campaigns() -> int:
        return logscan.count(cluster.node_events(candidate), "election_started")

    after_exit = campaigns()
    logscan.wait_for(  # two more (pre-)campaigns: each one it starts means the last failed
        lambda: (
            campaigns() >= after_exit + 2 or any(e["term"] > term for e in cluster.leader_elected())
        ),
        timeout=30,
        describe=cluster.describe,
    )
    assert [e for e in cluster.leader_elected() if e["term"] > term] == [], cluster.describe()
    assert cluster.status(candidate)["role"] != "leader"
    faults[voter].heal()
    cluster.start(leader)
    cluster.start(voter)
    new_leader = cluster.wait_leader(min_term=term)
    assert_readable(cluster, new_leader, acked)
    cluster.assert_safety()


def test_leader_fsync_failure_fails_over_without_losing_acknowledged_writes(
    lab: DiskLab, shim: Path
) -> None:
    """A leader whose WAL fdatasync fails exits 1 with `fatal_error` (StorageError); the
    other two elect a higher-term leader; every write acknowledged before is readable;
    each write in flight at the failure is either absent or has exactly its value (none
    was acknowledged by the dying leader). The old leader, healed, rejoins and catches up."""
    cluster = lab.cluster(3)
    faults = arm_all_with_shim(cluster, shim)
    cluster.start_all()
    leader = cluster.wait_leader()
    term = cluster.status(leader)["term"]
    others = [n for n in cluster.ids if n != leader]
    acked = put_all(cluster, leader, {f"k{i}": f"v{i}".encode() for i in range(10)})

    in_flight = {f"inflight{i}": f"w{i}".encode() for i in range(8)}
    endpoint = cluster.client_endpoints[leader]
    clients = [ReqClient(cluster.curve) for _ in in_flight]
    answered: dict[str, dict[str, Any]] = {}
    stderr_at = cluster.stderr_size(leader)
    try:
        faults[leader].arm("fsync")
        for client, (key, value) in zip(clients, in_flight.items(), strict=True):
            client.send(endpoint, [wire.encode_request("put", key=key, value=value)])
        code = cluster.wait_exit(leader)
        deadline = time.monotonic() + 0.5  # the process is gone: anything sent has arrived
        for client, key in zip(clients, in_flight, strict=True):
            frames = client.receive(endpoint, max(0.0, deadline - time.monotonic()))
            if frames is not None:
                answered[key] = wire.decode_reply(frames[0])
    finally:
        for client in clients:
            client.close()
    assert code == 1, f"{leader} exited with {code}\n{cluster.describe()}"
    fatal = last_fatal(cluster, leader)
    assert fatal["kind"] == "StorageError", fatal
    assert "[Errno 5]" in fatal["exception"], fatal["exception"]
    assert INJECTED_MARKER in cluster.stderr_since(leader, stderr_at)
    acked |= {key: in_flight[key] for key, reply in answered.items() if reply["ok"]}

    new_leader = cluster.wait_leader(among=others, min_term=term, timeout=15)
    assert_readable(cluster, new_leader, acked)
    survived = 0
    for key, value in in_flight.items():
        got = cluster.request_until_ok(new_leader, "get", key=key)["value"]
        assert got in (None, value), f"in-flight {key!r} corrupted: {got!r}"
        survived += got is not None
    print(
        f"old leader {leader}: exit {code}; new leader {new_leader}; in-flight writes "
        f"answered {len(answered)}/{len(in_flight)}, present after failover {survived}"
    )
    acked |= put_all(cluster, new_leader, {"after_failover": b"yes"})

    faults[leader].heal()
    cluster.start(leader)
    wait_caught_up(cluster, leader, acked)
    assert_readable(cluster, cluster.wait_leader(), acked)
    cluster.assert_safety()


def test_follower_write_enospc_stops_it(lab: DiskLab, shim: Path) -> None:
    """A follower whose WAL write fails with ENOSPC (the shim, no mount needed) exits 1
    with `fatal_error` (StorageError, errno 28) instead of carrying on; the majority keeps
    serving and the healed follower rejoins with every acknowledged write."""
    cluster = lab.cluster(3)
    faults = arm_all_with_shim(cluster, shim)
    cluster.start_all()
    leader = cluster.wait_leader()
    victim = next(n for n in cluster.ids if n != leader)
    acked = put_all(cluster, leader, {f"k{i}": f"v{i}".encode() for i in range(5)})
    wait_caught_up(cluster, victim, acked)

    faults[victim].arm("write")
    acked |= put_all(cluster, leader, {"while_failing": b"x"})
    code = cluster.wait_exit(victim)
    assert code == 1, f"{victim} exited with {code}\n{cluster.describe()}"
    fatal = last_fatal(cluster, victim)
    assert fatal["kind"] == "StorageError" and "[Errno 28]" in fatal["exception"], fatal
    acked |= put_all(cluster, leader, {"after_death": b"y"})

    faults[victim].heal()
    cluster.start(victim)
    wait_caught_up(cluster, victim, acked)
    assert_readable(cluster, leader, acked)
    cluster.assert_safety()


def test_short_writes_are_completed_not_silently_accepted(lab: DiskLab, shim: Path) -> None:
    """Every WAL write of a follower returns a legal short count (half the bytes, as
    write(2) does near a full disk): the node must loop until each record is whole. It
    keeps replicating, and after a SIGKILL its WAL is whole CRC-valid records to the last
    byte, so it restarts with no repair and catches up."""
    cluster = lab.cluster(3)
    faults = arm_all_with_shim(cluster, shim)
    cluster.start_all()
    leader = cluster.wait_leader()
    victim = next(n for n in cluster.ids if n != leader)
    acked = put_all(cluster, leader, {f"k{i}": f"v{i}".encode() for i in range(5)})
    wait_caught_up(cluster, victim, acked)

    stderr_at = cluster.stderr_size(victim)
    faults[victim].arm("short")
    acked |= put_all(cluster, leader, {f"k{i}": f"v{i}".encode() * 50 for i in range(5, 15)})
    wait_caught_up(cluster, victim, acked)
    injected = cluster.stderr_since(victim, stderr_at).count(INJECTED_MARKER)
    assert injected, "no short write was injected"
    cluster.kill(victim)
    faults[victim].heal()
    data = last_segment(cluster.data_dir(victim)).read_bytes()
    whole = valid_frames(data)[-1].end
    bad = len(data) - whole if any(data[whole:]) else 0  # zeros after it: preallocated room
    assert not bad, f"WAL has {bad} bad bytes after offset {whole}"
    print(f"{victim}: {injected} short writes injected; WAL whole ({whole} bytes written)")

    before = len(repairs(cluster, victim))
    cluster.start(victim)
    assert repairs(cluster, victim)[before:] == []
    acked |= put_all(cluster, leader, {"after": b"restart"})
    wait_caught_up(cluster, victim, acked)
    assert_readable(cluster, leader, acked)
    cluster.assert_safety()


# --- 2. full disk --------------------------------------------------------------------------


def test_full_disk_stops_the_node_which_recovers_after_space_is_freed(lab: DiskLab) -> None:
    """A follower whose data dir is a 2 MiB tmpfs is filled with 64 KiB writes: it exits 1
    with `fatal_error` (StorageError, ENOSPC) rather than writing short frames silently,
    while the other two keep acknowledging writes. After the tmpfs is enlarged, the node
    recovers its WAL: a partial last frame left by the short write is cut off and reported
    (`log_tail_repaired` with exactly the partial frame's bytes); it rejoins, catches up,
    and every acknowledged write is readable."""
    cluster = lab.cluster(3)
    victim = cluster.ids[-1]
    data_dir = cluster.data_dir(victim)
    lab.mount_tmpfs(data_dir, TMPFS_SMALL)
    first = cluster.ids[:-1]
    cluster.start_all(first)
    leader = cluster.wait_leader(among=first)  # the victim joins later, as a follower
    cluster.start(victim)

    acked: dict[str, bytes] = {}
    for i in range(MAX_FILL_WRITES):
        if not cluster.is_running(victim):
            break
        acked |= put_all(cluster, leader, {f"big{i}": big_value(i)})
    code = cluster.wait_exit(victim)
    assert code == 1, f"{victim} exited with {code}\n{cluster.describe()}"
    fatal = last_fatal(cluster, victim)
    assert fatal["kind"] == "StorageError", fatal
    assert "[Errno 28]" in fatal["exception"], fatal["exception"]
    acked |= put_all(cluster, leader, {"small_after": b"still serving"})

    segment = last_segment(data_dir)
    data = segment.read_bytes()
    valid_end = valid_frames(data)[-1].end
    torn = len(data) - valid_end if any(data[valid_end:]) else 0  # zeros: unwritten room
    print(
        f"{victim}: exit {code} after {len(acked) - 1} big writes; WAL {len(data)} bytes, "
        f"{torn} bytes after the last valid frame"
    )

    lab.resize_tmpfs(data_dir, TMPFS_BIG)
    before = len(repairs(cluster, victim))
    cluster.start(victim)
    new = repairs(cluster, victim)[before:]
    if torn:
        assert len(new) == 1 and new[0]["dropped_bytes"] == torn, (new, torn)
    else:
        assert not new, new
    wait_caught_up(cluster, victim, acked)
    assert_readable(cluster, leader, acked)
    cluster.assert_safety()


# --- 3. torn tail and mid-log corruption ---------------------------------------------------


class StillBehind(AssertionError):
    """A restarted follower did not catch up in time."""


def _torn_restart(
    cluster: DiskCluster,
    victim: str,
    damage: Callable[[bytearray, Frame], int],
) -> tuple[dict[str, Any], int]:
    """SIGKILL `victim`, damage its last WAL record with `damage(data, last_frame)` (which
    returns the bytes recovery must drop), restart it, and check its `log_tail_repaired`:
    exactly those bytes dropped, and the last index a replay of the other records gives.

    Returns:
        The event, and how many entries the dropped record held (entries the victim had
        stored, and so acknowledged, before it was killed).
    """
    cluster.kill(victim)
    segment = last_segment(cluster.data_dir(victim))
    data = bytearray(segment.read_bytes())
    frames = valid_frames(bytes(data))  # frames hold views: parse a copy
    # A SIGKILLed idle node's WAL ends in a whole frame, then the preallocated room (zeros).
    assert not any(data[frames[-1].end :]), "the WAL ends in something other than room"
    assert len(frames) >= 3 and frames[-1].type == FRAME_SAVE, frames
    dropped = damage(data, frames[-1])
    segment.write_bytes(data)
    parsed = parse_segment_name(segment.name)
    assert parsed is not None, segment
    expected_last = replayed_last_index(frames[:-1], base=parsed[1] - 1)
    stored_last = replayed_last_index(frames, base=parsed[1] - 1)

    before = len(repairs(cluster, victim))
    cluster.start(victim)
    new = repairs(cluster, victim)[before:]
    assert len(new) == 1, f"expected one log_tail_repaired, got {new}\n{cluster.describe()}"
    assert new[0]["dropped_bytes"] == dropped, (new[0], dropped)
    assert new[0]["last_index"] == expected_last, (new[0], expected_last)
    return new[0], stored_last - expected_last


def wait_follows(cluster: DiskCluster, node_id: str, leader: str) -> None:
    """Wait until `node_id` is a follower of `leader` in the leader's current term."""

    def follows() -> bool:
        mine, theirs = cluster.status(node_id), cluster.status(leader)
        return mine["role"] == "follower" and (mine["leader"], mine["term"]) == (
            leader,
            theirs["term"],
        )

    logscan.wait_for(follows, timeout=CATCH_UP_TIMEOUT_S, describe=cluster.describe)


def assert_no_wrong_value(cluster: DiskCluster, node_id: str, acked: dict[str, bytes]) -> None:
    """`node_id`'s own state holds each acknowledged key with its value, or not yet."""
    for key, value in acked.items():
        got = cluster.request(node_id, "get", key=key, consistency="serializable")
        assert got["ok"] and got["value"] in (None, value), (key, got)


def test_torn_last_record_is_repaired_and_nothing_acknowledged_is_lost(
    lab: DiskLab, seed: int
) -> None:
    """A follower killed with SIGKILL whose last WAL record is then (a) cut at a random
    offset inside it, and later (b) damaged by flipped bytes, restarts each time: it logs
    `log_tail_repaired` with exactly the dropped bytes and the log's last index after the
    cut, rejoins (follows the same leader in the same term, no disruption), never serves
    a wrong value; every write the cluster acknowledged stays readable. (Whether it then
    catches up is `test_follower_that_lost_its_acknowledged_last_entry_catches_up`.)"""
    rng = random.Random(seed)
    cluster = lab.cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    term = cluster.status(leader)["term"]
    victim = next(n for n in cluster.ids if n != leader)
    acked = put_all(cluster, leader, {f"k{i}": f"v{i}".encode() for i in range(20)})
    wait_caught_up(cluster, victim, acked)

    def cut(data: bytearray, last: Frame) -> int:
        at = rng.randrange(last.offset + 1, last.end)  # strictly inside the last record
        del data[at:]
        return at - last.offset

    event, lost = _torn_restart(cluster, victim, cut)
    print(f"seed {seed}: cut inside the last record -> {event}; it held {lost} entries")
    acked |= put_all(cluster, leader, {f"k{i}": f"v{i}".encode() for i in range(20, 30)})
    wait_follows(cluster, victim, leader)
    assert_no_wrong_value(cluster, victim, acked)

    def flip(data: bytearray, last: Frame) -> int:
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(last.offset, last.end)] ^= rng.randint(1, 255)
        return len(data) - last.offset  # the record and the preallocated room after it

    event, lost = _torn_restart(cluster, victim, flip)
    print(f"seed {seed}: bytes flipped in the last record -> {event}; it held {lost} entries")
    acked |= put_all(cluster, leader, {"after": b"repairs"})
    wait_follows(cluster, victim, leader)
    assert_no_wrong_value(cluster, victim, acked)
    assert_readable(cluster, leader, acked)
    assert cluster.status(leader)["term"] == term, "the repaired follower disrupted the leader"
    cluster.assert_safety()


def test_follower_that_lost_its_acknowledged_last_entry_catches_up(lab: DiskLab) -> None:
    """Torn write of the last append on a follower, after that follower had acknowledged
    it (a lying disk, or the brief's torn-write model): the cluster still holds the entry
    on a majority, so the follower should be sent it again and catch up."""
    cluster = lab.cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    victim = next(n for n in cluster.ids if n != leader)
    acked = put_all(cluster, leader, {f"k{i}": f"v{i}".encode() for i in range(5)})
    wait_caught_up(cluster, victim, acked)

    def cut(data: bytearray, last: Frame) -> int:
        del data[last.end - 1 :]
        return last.end - 1 - last.offset

    _, lost = _torn_restart(cluster, victim, cut)
    if not lost:
        pytest.fail("precondition: the cut record held no entry; nothing to re-replicate")
    acked |= put_all(cluster, leader, {"after": b"cut"})
    try:
        wait_caught_up(cluster, victim, acked, timeout=5.0)
    except AssertionError as exc:
        status = cluster.status(victim)
        raise StillBehind(f"{victim} stuck at last_index {status['last_index']}") from exc


def test_corruption_in_mid_log_is_refused(lab: DiskLab, seed: int) -> None:
    """A byte flipped in an early WAL record (valid records follow it) is corruption, not a
    torn tail: the node refuses to start (exit 1, no `node_started`), its stderr names the
    segment file and the record's byte offset, and the file is left untouched. The other
    two keep serving every acknowledged write."""
    rng = random.Random(seed)
    cluster = lab.cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    victim = next(n for n in cluster.ids if n != leader)
    acked = put_all(cluster, leader, {f"k{i}": f"v{i}".encode() for i in range(10)})
    wait_caught_up(cluster, victim, acked)

    cluster.kill(victim)
    segment = last_segment(cluster.data_dir(victim))
    data = bytearray(segment.read_bytes())
    frames = valid_frames(bytes(data))  # frames hold views: parse a copy
    assert len(frames) >= 3, frames
    early = frames[1]  # the first record after the segment header
    data[rng.randrange(early.offset, early.end)] ^= rng.randint(1, 255)
    segment.write_bytes(data)

    started = len(logscan.select(cluster.node_events(victim), "node_started"))
    stderr_at = cluster.stderr_size(victim)
    cluster.start(victim, wait=False)
    code = cluster.wait_exit(victim, timeout=START_TIMEOUT_S)
    stderr = cluster.stderr_since(victim, stderr_at)
    print(f"seed {seed}: exit {code}; stderr: {stderr.strip()}")
    assert code == 1, f"exit code {code}; stderr: {stderr}"
    assert str(segment) in stderr, stderr
    assert f"byte offset {early.offset}" in stderr, (early.offset, stderr)
    assert len(logscan.select(cluster.node_events(victim), "node_started")) == started
    assert segment.read_bytes() == data, "a refused log must not be modified"

    acked |= put_all(cluster, leader, {"after": b"refusal"})
    assert_readable(cluster, leader, acked)
    cluster.assert_safety()
