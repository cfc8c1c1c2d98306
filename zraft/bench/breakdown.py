"""Where the time of one sequential write goes, from the nodes' own timing.

    python -m zraft.bench.breakdown [--writes 2000] [--value-size 256] [--json]

Starts a 3-node cluster (CURVE on, fsync on, as `zraft.testing.cluster` configures it)
whose nodes run with `--trace-writes` (`zraft.node.trace`), sends `--writes` puts to the
leader one at a time from one client (the first `--warmup` are not counted), stops the
cluster so every node writes its trace, and joins the client's send/receive times with
the leader's and the followers' stage times by log index (one machine-wide monotonic
clock). Each write's time splits into consecutive stages:

    client -> leader     the request from the client's send to the leader reading it
    decode + propose     decoding, checks, the command, the core's append
    propose -> send      until the append to the followers is handed to the transport
    leader fsync         the leader's own write and fsync (in parallel with the followers)
    to follower          the append from the leader's transport into the follower's core
    follower fsync       the follower's write and fsync
    follower ack         until the follower's acknowledgement is handed to its transport
    ack -> leader        the acknowledgement back into the leader's core
    commit wait          from the later of (leader fsync, first ack) to the apply loop
    apply + reply        applying the entry and handing the reply to the transport
    leader -> client     the reply from the leader's transport to the client's receive

The leader's fsync and the follower's path run in parallel; the one that ends later is on
the critical path (its share is printed). The medians of the stages do not add up to the
median write exactly (each is the median of its own column). A benchmark that prints
figures, never a pass/fail test; processes are started and stopped by PID, on free
loopback ports, in a temporary directory removed at the end (`--keep DIR` keeps it).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import zmq

from zraft import wire
from zraft.bench.workdir import run_in_workdir
from zraft.testing.cluster import ProcessCluster

STAGES = (
    ("client -> leader", "client_to_leader"),
    ("decode + propose", "propose"),
    ("propose -> send", "to_send"),
    ("leader fsync", "leader_fsync"),
    ("to follower", "to_follower"),
    ("follower fsync", "follower_fsync"),
    ("follower ack", "follower_ack"),
    ("ack -> leader", "ack_to_leader"),
    ("commit wait", "commit_wait"),
    ("apply + reply", "apply_reply"),
    ("leader -> client", "leader_to_client"),
)
"""(label, key) of each stage, in the order of a write's life."""


class TracedCluster(ProcessCluster):
    """A cluster whose nodes note their write stages (`--trace-writes`)."""

    def trace_path(self, node_id: str) -> Path:
        """Where `node_id` writes its trace when it stops."""
        return self.directory / f"{node_id}.trace.jsonl"

    def node_flags(self, node_id: str) -> list[str]:
        """The harness's flags and `--trace-writes`."""
        return [*super().node_flags(node_id), "--trace-writes", str(self.trace_path(node_id))]


def sequential_writes(
    cluster: ProcessCluster, leader: str, writes: int, value_size: int
) -> list[tuple[float, float, int]]:
    """(sent, received, index) of each put, one at a time, at the leader."""
    context: zmq.Context[Any] = zmq.Context()
    sock = context.socket(zmq.REQ)
    sock.linger = 0
    endpoint = cluster.client_endpoints[leader]
    if cluster.curve is not None:
        cluster.curve.apply(sock, endpoint)
    sock.connect(endpoint)
    value = b"x" * value_size
    done: list[tuple[float, float, int]] = []
    try:
        for n in range(writes):
            frame = wire.encode_request("put", key=f"bench-{n % 1000}", value=value)
            sent = time.monotonic()
            sock.send(frame)
            if not sock.poll(5000, zmq.POLLIN):
                raise TimeoutError(f"put {n}: no reply within 5 s")
            reply = sock.recv()
            received = time.monotonic()
            answer = wire.decode_reply(reply)
            if not answer.get("ok"):
                raise RuntimeError(f"put {n}: {answer.get('error')}")
            done.append((sent, received, answer["index"]))
    finally:
        context.destroy(linger=0)
    return done


def read_trace(path: Path) -> dict[int, dict[str, Any]]:
    """A node's trace: index -> its stages."""
    return {
        line["index"]: line
        for line in map(json.loads, path.read_text().splitlines())
        if isinstance(line, dict)
    }


def stages_of(
    sent: float, received: float, lead: dict[str, Any], followers: dict[str, dict[str, Any]]
) -> dict[str, float] | None:
    """One write's stages in milliseconds (None if a stage is missing from a trace). The
    follower is the one whose acknowledgement reached the leader first (it made the
    quorum of three)."""
    acked = lead.get("acked") or {}
    if not acked or any(k not in lead for k in ("accepted", "sent", "persisted", "replied")):
        return None
    first = min(acked, key=acked.get)
    mine = followers.get(first)
    if mine is None or any(k not in mine for k in ("received", "persisted", "ack_sent")):
        return None
    ms = 1000.0
    quorum_at = max(lead["persisted"], acked[first])
    return {
        "client_to_leader": (lead["accepted"] - sent) * ms,
        "propose": (lead["proposed"] - lead["accepted"]) * ms,
        "to_send": (lead["sent"] - lead["proposed"]) * ms,
        "leader_fsync": (lead["persisted"] - lead["sent"]) * ms,
        "to_follower": (mine["received"] - lead["sent"]) * ms,
        "follower_fsync": (mine["persisted"] - mine["received"]) * ms,
        "follower_ack": (mine["ack_sent"] - mine["persisted"]) * ms,
        "ack_to_leader": (acked[first] - mine["ack_sent"]) * ms,
        "commit_wait": (lead["committed"] - quorum_at) * ms,
        "apply_reply": (lead["replied"] - lead["committed"]) * ms,
        "leader_to_client": (received - lead["replied"]) * ms,
        "total": (received - sent) * ms,
        "follower_path": (acked[first] - lead["sent"]) * ms,
        "follower_last": float(acked[first] > lead["persisted"]),
    }


def measure(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """Run the writes and join the traces; the medians and counts."""
    cluster = TracedCluster(directory, 3)
    try:
        cluster.start_all()
        leader = cluster.wait_leader(timeout=20)
        done = sequential_writes(cluster, leader, args.warmup + args.writes, args.value_size)
    finally:
        cluster.close()  # SIGTERM: every node writes its trace as it stops
    lead = read_trace(cluster.trace_path(leader))
    followers = {n: read_trace(cluster.trace_path(n)) for n in cluster.ids if n != leader}
    rows = []
    for sent, received, index in done[args.warmup :]:
        # An index missing from the first leader's trace was led by another (leadership
        # moved during the run): not joined, like a write with a stage missing.
        row = stages_of(
            sent, received, lead.get(index, {}), {n: t.get(index, {}) for n, t in followers.items()}
        )
        if row is not None:
            rows.append(row)
    if not rows:
        raise RuntimeError("no write has every stage in the traces")
    medians = {
        key: statistics.median(r[key] for r in rows) for key in rows[0] if key != "follower_last"
    }
    return {
        "writes": len(done) - args.warmup,
        "joined": len(rows),
        "value_size": args.value_size,
        "median_ms": medians,
        "follower_path_last_share": statistics.fmean(r["follower_last"] for r in rows),
    }


def table(report: dict[str, Any]) -> list[str]:
    """The stage medians as Markdown lines."""
    medians = report["median_ms"]
    lines = ["| stage | median (ms) |", "|---|---|"]
    lines += [f"| {label} | {medians[key]:.3f} |" for label, key in STAGES]
    lines.append(f"| whole write (client) | {medians['total']:.3f} |")
    lines.append(f"| follower path (send -> ack at the leader) | {medians['follower_path']:.3f} |")
    share = report["follower_path_last_share"]
    lines.append(f"| writes whose follower path ended after the leader's fsync | {share:.0%} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point: measure and print the breakdown (or JSON)."""
    parser = argparse.ArgumentParser(
        prog="python -m zraft.bench.breakdown", description="Where one write's time goes."
    )
    parser.add_argument("--writes", type=int, default=2000, help="measured puts (2000)")
    parser.add_argument("--warmup", type=int, default=200, help="puts not counted (200)")
    parser.add_argument("--value-size", type=int, default=256, help="bytes per value (256)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the cluster's files")
    args = parser.parse_args(argv)
    if args.writes < 1 or args.warmup < 0 or args.value_size < 0:
        parser.error("--writes must be >= 1, --warmup and --value-size >= 0")
    return run_in_workdir(
        "breakdown",
        args.keep,
        lambda directory: measure(args, directory),
        table,
        as_json=args.json,
        failures=(RuntimeError, TimeoutError, AssertionError, OSError),
    )


if __name__ == "__main__":
    sys.exit(main())
