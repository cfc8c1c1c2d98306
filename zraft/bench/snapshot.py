"""Snapshot benchmark: snapshot time, loop pauses and InstallSnapshot on a local cluster.

    python -m zraft.bench.snapshot [--keys 100000] [--value-size 256] [--rate 200] ...

Starts three `zraft-node` processes (`zraft.testing.cluster`: 127.0.0.1, free ports, fresh
CURVE keys) in a temporary directory, with automatic snapshots out of the way
(`snapshot_entries` 1,000,000), and:

1. **load**: puts `--keys` distinct keys of `--value-size` bytes to the leader, pipelined;
2. **snapshot under load**: while one client writes to the leader at `--rate` puts/s
   (open loop: a put is sent on schedule whatever the previous one is doing, so a loop
   pause shows up as latency), asks the leader for `snapshot` and reports its
   `snapshot_saved` event (total, copy and longest slice), the client's latency before
   and during the snapshot, `loop_stalled` events and elections;
3. **InstallSnapshot**: kills a follower, wipes its data directory, writes a few more keys
   and takes another snapshot on the leader (its log now starts `--trailing` entries
   behind that snapshot, far past index 1), restarts the follower and reports the
   leader's `snapshot_sent` event, the follower's `snapshot_installed` and its time to
   catch up, with the writer still running; then elections and `election_started`;
4. **restart**: stops that follower (SIGTERM) and starts it again: `snapshot_loaded`
   gives the time to rebuild the state from the installed snapshot.

Every process it starts is killed by PID when it ends, also on Ctrl-C or an exception.
The directory is removed unless `--keep DIR` is given. `--json` prints the figures as one
JSON object. This is a measuring tool, not a node: it waits with plain sleeps and polls.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

from zraft import wire
from zraft.client.policy import ClientPolicy, Finish, NoReply, Send
from zraft.client.reply import Reply
from zraft.net import security
from zraft.testing.cluster import ProcessCluster, wait_for

START_TIMEOUT_S = 20.0  # a node is up (node_started), also one restoring a big snapshot


def connect(
    context: zmq.Context[Any], kind: int, endpoint: str, curve: security.ClientCurve | None
) -> zmq.Socket[bytes]:
    """A socket of `kind` (linger 0) connected to a node's client endpoint, with CURVE
    when the cluster is secured."""
    sock = context.socket(kind)
    sock.linger = 0
    if curve is not None:
        curve.apply(sock, endpoint)
    sock.connect(endpoint)
    return sock


def request_once(
    context: zmq.Context[Any],
    endpoint: str,
    curve: security.ClientCurve | None,
    op: str,
    timeout: float = 5.0,
    **fields: Any,
) -> dict[str, Any]:
    """One attempt of `op` at `endpoint` on a fresh REQ socket: the reply map, or {} when
    none came within `timeout`.

    The attempt is the client policy's node-addressed exchange (`ClientPolicy.begin_at`):
    one node, one send, the whole timeout, never retried elsewhere, which is what a
    measuring tool asking one node for a snapshot wants.

    Raises:
        DecodeError: the reply is malformed.
    """
    exchange = ClientPolicy(endpoint, timeout=timeout).begin_at(
        endpoint, op, fields, time.monotonic()
    )
    step = exchange.next_step(time.monotonic())
    if not isinstance(step, Send):  # a node-addressed exchange starts with its one attempt
        raise RuntimeError(f"expected the attempt, got {step}")
    sock = connect(context, zmq.REQ, step.endpoint, curve)
    try:
        sock.send(exchange.frame)
        if sock.poll(int(step.wait_s * 1000)):
            exchange.received(wire.decode_reply(sock.recv()))
        else:
            exchange.failed(NoReply.timed_out(step.wait_s))
    finally:
        sock.close(linger=0)
    end = exchange.next_step(time.monotonic())
    return dict(end.reply.raw) if isinstance(end, Finish) else {}


# --- load ---------------------------------------------------------------------------------


def load_keys(
    endpoint: str,
    count: int,
    value: bytes,
    curve: security.ClientCurve | None,
    *,
    window: int = 256,
) -> float:
    """Put keys `k-000000`.. pipelined (`window` in flight); return the seconds it took.

    Raises:
        RuntimeError: a put failed or no reply came for 30 s.
    """
    context: zmq.Context[Any] = zmq.Context()
    sock = connect(context, zmq.DEALER, endpoint, curve)
    started = time.monotonic()
    try:
        sent = acked = 0
        while acked < count:
            while sent < count and sent - acked < window:
                frame = wire.encode_request("put", key=b"k-%06d" % sent, value=value)
                sock.send_multipart([b"", frame])
                sent += 1
            if not sock.poll(30_000):
                raise RuntimeError(f"no reply for 30 s after {acked}/{count} puts")
            reply = Reply.from_map(wire.decode_reply(sock.recv_multipart()[-1]))
            if not reply.ok:
                raise RuntimeError(f"a put failed: {dict(reply.raw)}")
            acked += 1
        return time.monotonic() - started
    finally:
        context.destroy(linger=0)


@dataclass
class Writer:
    """Puts at a fixed rate to one endpoint, open loop, with latencies by phase.

    Each put carries an 8-byte id as a routing hop (`[id, b"", body]`), which the node's
    ROUTER hands back with the reply, so replies are matched whatever their order. A reply
    is read as the client library reads it (`zraft.client.reply.Reply`): `ok` or an error.
    Puts are never retried and carry no session (each key is written once, and a retry
    would blur the latency being measured), so nothing else of the client policy applies.
    """

    endpoint: str
    rate: float
    value: bytes
    curve: security.ClientCurve | None
    context: zmq.Context[Any] = field(default_factory=zmq.Context)
    latencies: dict[str, list[float]] = field(default_factory=dict)
    errors: int = 0
    _sent: dict[int, tuple[float, str]] = field(default_factory=dict)
    _next_id: int = 0
    _next_send: float = 0.0

    def __post_init__(self) -> None:
        self.sock = connect(self.context, zmq.DEALER, self.endpoint, self.curve)

    def run(self, phase: str, until: Callable[[], bool], *, check_every: float = 0.05) -> None:
        """Keep writing, attributing latencies to `phase`, until `until()` holds."""
        self.latencies.setdefault(phase, [])
        now = time.monotonic()
        self._next_send = max(self._next_send, now)
        next_check = now
        while True:
            now = time.monotonic()
            while self._next_send <= now:
                self._send(phase)
                self._next_send += 1.0 / self.rate
            if now >= next_check:
                if until():
                    return
                next_check = time.monotonic() + check_every
            wait = max(0.0, min(self._next_send, next_check) - time.monotonic())
            if self.sock.poll(int(wait * 1000) + 1):
                self._receive()

    def drain(self, timeout: float = 10.0) -> None:
        """Wait for the replies still outstanding (counted as errors after `timeout`)."""
        deadline = time.monotonic() + timeout
        while self._sent and time.monotonic() < deadline:
            if self.sock.poll(100):
                self._receive()
        self.errors += len(self._sent)
        self._sent.clear()

    def _send(self, phase: str) -> None:
        self._next_id += 1
        key = b"w-%08d" % self._next_id
        frame = wire.encode_request("put", key=key, value=self.value)
        self.sock.send_multipart([self._next_id.to_bytes(8, "big"), b"", frame])
        self._sent[self._next_id] = (time.monotonic(), phase)

    def _receive(self) -> None:
        while True:
            try:
                parts = self.sock.recv_multipart(zmq.NOBLOCK)
            except zmq.Again:
                return
            sent = self._sent.pop(int.from_bytes(parts[0], "big"), None)
            if sent is None:
                continue
            if not Reply.from_map(wire.decode_reply(parts[-1])).ok:
                self.errors += 1
                continue
            self.latencies[sent[1]].append((time.monotonic() - sent[0]) * 1000)

    def close(self) -> None:
        """Close the socket and the context."""
        self.context.destroy(linger=0)


def latency_summary(values: list[float]) -> dict[str, float | int]:
    """count, p50, p99 and max of `values` (ms), nearest rank."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def rank(p: float) -> float:
        return round(ordered[max(0, -(-len(ordered) * p // 100) - 1)], 1)

    return {"count": len(ordered), "p50": rank(50), "p99": rank(99), "max": rank(100)}


# --- the phases ---------------------------------------------------------------------------


SAVED_FIELDS = ("index", "size_bytes", "pairs", "copy_ms", "max_slice_ms", "total_ms")


def _status(cluster: ProcessCluster, node_id: str) -> dict[str, Any]:
    """The `status` map of `node_id`, {} when it does not answer within a second."""
    reply = cluster.probe([node_id], timeout=1.0).get(node_id)
    return (reply.status if reply is not None else None) or {}


def _stalls(cluster: ProcessCluster, mark: dict[str, int]) -> list[dict[str, Any]]:
    return [_fields(e, "node", "lag_ms") for e in cluster.events_since(mark, "loop_stalled")]


def _fields(event: dict[str, Any], *names: str) -> dict[str, Any]:
    return {name: event.get(name) for name in names}


def phase_snapshot(cluster: ProcessCluster, leader: str, writer: Writer) -> dict[str, Any]:
    """Phase 2: a snapshot of the leader under a steady write load."""
    mark = cluster.mark()
    writer.run("before", _for(2.0))
    req = connect(writer.context, zmq.REQ, cluster.client_endpoints[leader], cluster.curve)
    req.send(wire.encode_request("snapshot"))
    asked = time.monotonic()
    replies: list[dict[str, Any]] = []

    def answered() -> bool:
        if req.poll(0):
            replies.append(wire.decode_reply(req.recv()))
        return bool(replies) or time.monotonic() - asked > 60

    writer.run("during", answered, check_every=0.005)
    reply_s = time.monotonic() - asked
    req.close(linger=0)
    writer.run("after", _for(1.0))
    if not replies:
        raise RuntimeError("the leader did not answer `snapshot` within 60 s")
    index = replies[0]["snapshot"]["index"]
    saved = cluster.events_since(mark, "snapshot_saved")
    saved = [e for e in saved if e["node"] == leader and e["index"] == index]
    return {
        "reply": replies[0]["snapshot"],
        "reply_ms": round(reply_s * 1000, 1),
        "saved": _fields(saved[-1] if saved else {}, *SAVED_FIELDS),
        "latency_before": latency_summary(writer.latencies["before"]),
        "latency_during": latency_summary(writer.latencies["during"]),
        "latency_after": latency_summary(writer.latencies["after"]),
        "loop_stalled": _stalls(cluster, mark),
        "leader_elected": len(cluster.events_since(mark, "leader_elected")),
        "election_started": len(cluster.events_since(mark, "election_started")),
    }


def _for(seconds: float) -> Callable[[], bool]:
    """A predicate that holds once `seconds` have passed from now."""
    end = time.monotonic() + seconds
    return lambda: time.monotonic() >= end


def phase_install(
    cluster: ProcessCluster, leader: str, writer: Writer, value: bytes, extra_keys: int
) -> dict[str, Any]:
    """Phase 3: a wiped follower comes back through InstallSnapshot."""
    follower = next(n for n in cluster.ids if n != leader)
    cluster.kill(follower)
    shutil.rmtree(cluster.directory / "data" / follower)
    endpoint = cluster.client_endpoints[leader]
    load_keys(endpoint, extra_keys, value, cluster.curve)
    asked = request_once(writer.context, endpoint, cluster.curve, "snapshot", timeout=60)
    snap = asked.get("snapshot") or {}
    status = _status(cluster, leader)
    mark = cluster.mark()
    cluster.start(follower)
    spawned = cluster.spawned_at[follower]
    started_s = time.monotonic() - spawned
    installed_at: list[float] = []

    def caught_up() -> bool:
        if not installed_at and cluster.events_since(mark, "snapshot_installed"):
            installed_at.append(time.monotonic() - spawned)
        mine = _status(cluster, follower).get("applied_index", 0)
        return bool(installed_at) and mine >= _status(cluster, leader).get("commit_index", 1 << 62)

    writer.run("install", caught_up, check_every=0.05)
    caught_up_s = time.monotonic() - spawned
    sent = [e for e in cluster.events_since(mark, "snapshot_sent") if e.get("peer") == follower]
    installed = cluster.events_since(mark, "snapshot_installed")
    return {
        "follower": follower,
        "leader_snapshot": snap,
        "leader_first_index": status.get("first_index"),
        "leader_log_bytes": status.get("log_bytes"),
        "node_started_s": round(started_s, 2),
        "installed_s": round(installed_at[0], 2) if installed_at else None,
        "caught_up_s": round(caught_up_s, 2),
        "snapshot_sent": [
            _fields(e, "index", "size_bytes", "duration_ms", "delivered", "reason") for e in sent
        ],
        "snapshot_installed": [_fields(e, "index", "size_bytes") for e in installed],
        "latency_during": latency_summary(writer.latencies["install"]),
        "loop_stalled": _stalls(cluster, mark),
        "leader_elected": len(cluster.events_since(mark, "leader_elected")),
        "election_started": [
            _fields(e, "node", "term", "prevote")
            for e in cluster.events_since(mark, "election_started")
        ],
    }


def phase_restart(cluster: ProcessCluster, follower: str) -> dict[str, Any]:
    """Phase 4: the follower restarts from its (installed) snapshot."""
    cluster.kill(follower, signal.SIGTERM)
    mark = cluster.mark()
    cluster.start(follower)
    started_s = time.monotonic() - cluster.spawned_at[follower]
    loaded = cluster.events_since(mark, "snapshot_loaded")
    return {
        "node_started_s": round(started_s, 2),
        "snapshot_loaded": [_fields(e, "index", "size_bytes", "duration_ms") for e in loaded],
    }


def run(args: argparse.Namespace, directory: Path, say: Callable[[str], None]) -> dict[str, Any]:
    """The whole benchmark in `directory`; returns the figures."""
    value = b"x" * args.value_size
    cluster = ProcessCluster(
        directory,
        3,
        name="bench-snapshot",
        request_timeout_ms=5000,
        start_timeout_s=START_TIMEOUT_S,
        snapshot_entries=1_000_000,
        snapshot_bytes=1 << 40,
        snapshot_trailing=args.trailing,
        wal_segment_bytes=args.segment_bytes,
    )
    writer: Writer | None = None
    try:
        cluster.start_all()
        leader = cluster.wait_leader(timeout=20, agreed=True)
        say(f"cluster up in {directory}, leader {leader}; loading {args.keys} keys")
        load_s = load_keys(cluster.client_endpoints[leader], args.keys, value, cluster.curve)
        commit = cluster.status(leader)["commit_index"]
        wait_for(
            lambda: all(_status(cluster, n).get("applied_index", 0) >= commit for n in cluster.ids),
            60,
            what="the followers applied the load",
            describe=cluster.describe,
        )
        say(f"loaded in {load_s:.1f} s; snapshot of the leader under {args.rate:g} puts/s")
        writer = Writer(cluster.client_endpoints[leader], args.rate, value, cluster.curve)
        figures: dict[str, Any] = {
            "keys": args.keys,
            "value_size": args.value_size,
            "rate": args.rate,
            "leader": leader,
            "load_s": round(load_s, 1),
        }
        figures["snapshot"] = phase_snapshot(cluster, leader, writer)
        say("wiping a follower; InstallSnapshot")
        figures["install"] = phase_install(cluster, leader, writer, value, args.extra_keys)
        writer.drain()
        say("restarting that follower from its snapshot")
        figures["restart"] = phase_restart(cluster, figures["install"]["follower"])
        figures["writer_errors"] = writer.errors
        figures["leader_elected_total"] = sum(
            1 for e in cluster.events() if e["event"] == "leader_elected"
        )
        return figures
    finally:
        if writer is not None:
            writer.close()
        cluster.close()


def describe(figures: dict[str, Any]) -> list[str]:
    """The figures as text lines."""
    snap, inst, restart = figures["snapshot"], figures["install"], figures["restart"]
    saved = snap["saved"]
    size = saved.get("size_bytes") or 0
    lines = [
        f"{figures['keys']} keys x {figures['value_size']} B loaded in {figures['load_s']} s; "
        f"leader {figures['leader']}; writer {figures['rate']:g} puts/s",
        f"snapshot: index {saved.get('index')}, {size / 1e6:.1f} MB, {saved.get('pairs')} "
        f"pairs; total {saved.get('total_ms')} ms, copy {saved.get('copy_ms')} ms, longest "
        f"slice {saved.get('max_slice_ms')} ms; reply after {snap['reply_ms']} ms",
        f"  put latency ms before {snap['latency_before']}",
        f"  put latency ms during {snap['latency_during']}",
        f"  put latency ms 1 s after {snap['latency_after']}",
        f"  loop_stalled {snap['loop_stalled']}; leader_elected {snap['leader_elected']}; "
        f"election_started {snap['election_started']}",
        f"install: follower {inst['follower']}; leader snapshot {inst['leader_snapshot']}, "
        f"leader first_index {inst['leader_first_index']}, log {inst['leader_log_bytes']} B",
        f"  snapshot_sent {inst['snapshot_sent']}",
        f"  snapshot_installed {inst['snapshot_installed']}",
        f"  follower: node_started {inst['node_started_s']} s, installed {inst['installed_s']} s,"
        f" caught up {inst['caught_up_s']} s after the spawn",
        f"  put latency ms during {inst['latency_during']}",
        f"  loop_stalled {inst['loop_stalled']}; leader_elected {inst['leader_elected']}; "
        f"election_started {inst['election_started']}",
        f"restart: node_started {restart['node_started_s']} s after the spawn; "
        f"snapshot_loaded {restart['snapshot_loaded']}",
        f"writer errors {figures['writer_errors']}; leader_elected in all "
        f"{figures['leader_elected_total']}",
    ]
    return lines


def build_parser() -> argparse.ArgumentParser:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="python -m zraft.bench.snapshot",
        description="Measure snapshot time, loop pauses and InstallSnapshot on a local "
        "3-node cluster (started and stopped by this script).",
    )
    parser.add_argument("--keys", type=int, default=100_000, help="distinct keys (100000)")
    parser.add_argument("--value-size", type=int, default=256, help="bytes per value (256)")
    parser.add_argument("--rate", type=float, default=200.0, help="writer puts/s (200)")
    parser.add_argument(
        "--extra-keys", type=int, default=1000, help="puts after the follower is wiped (1000)"
    )
    parser.add_argument(
        "--trailing", type=int, default=100, help="snapshot_trailing of the cluster (100)"
    )
    parser.add_argument(
        "--segment-bytes",
        type=int,
        default=4 << 20,
        help="wal_segment_bytes of the cluster (4 MiB, so compaction frees whole segments)",
    )
    parser.add_argument("--keep", type=Path, metavar="DIR", help="run in DIR and keep it")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run once; 0 on success, 1 if the run failed (its directory is kept)."""
    args = build_parser().parse_args(argv)
    if args.keep is not None:
        args.keep.mkdir(parents=True, exist_ok=True)
        directory = args.keep
    else:
        directory = Path(tempfile.mkdtemp(prefix="zraft-bench-snapshot-"))

    def say(line: str) -> None:
        print(f"-- {line}", file=sys.stderr, flush=True)

    try:
        figures = run(args, directory, say)
    except (Exception, KeyboardInterrupt) as exc:
        print(f"bench_snapshot: failed: {exc!r}; files kept in {directory}", file=sys.stderr)
        return 130 if isinstance(exc, KeyboardInterrupt) else 1
    if args.json:
        print(json.dumps(figures))
    else:
        print("\n".join(describe(figures)))
    if args.keep is None:
        shutil.rmtree(directory, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
