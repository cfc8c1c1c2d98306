"""Lease benchmarks on a local 3-node cluster (a tool, not a test file): how many keepalives
one leader sustains, whether 10,000 kept leases disturb the cluster, and how long a key
outlives its owner's last keepalive, with a stable leader and across a kill -9 of it; the
same delay for etcd 3.4 when an `etcd` binary is given.

    PYTHONPATH=. .venv/bin/python tests/lease_bench.py throughput --leases 10000 --clients 100
    PYTHONPATH=. .venv/bin/python tests/lease_bench.py steady --leases 10000 --ttl 30
    PYTHONPATH=. .venv/bin/python tests/lease_bench.py delay --trials 10
    PYTHONPATH=. .venv/bin/python tests/lease_bench.py etcd-delay --etcd /usr/bin/etcd

Each command starts its own cluster in a temporary directory (`--keep DIR` to keep it),
stops every process it started by PID, and prints one JSON object.

- `throughput`: grants `--leases` leases (keys attached) through `--clients` concurrent
  REQ clients on one poller, then for `--seconds` every client sends keepalives back to
  back (one in flight each) over its share of the leases, all to the leader (`--spread`:
  over every node, followers forwarding): acknowledged keepalives per second, latency.
- `steady`: the same leases kept alive at TTL/3 each (the client library's pace) for
  `--seconds`; then the node logs are read: `loop_stalled`, `leader_elected` after the
  first, `lease_expired` (all must be zero), and how late the pacing ran.
- `delay`: per trial, `--per-trial` leases (TTL `--ttl`) with keys, one keepalive each,
  then the owner stops; a linearizable range every 10 ms finds when each key is gone.
  Reported per lease: first read seeing it gone, and the first `lease_expired` in the
  node logs (both minus the last acknowledgement and the TTL). `--kill` SIGKILLs the
  leader `--kill-at` TTLs (default 0.5) after the keepalives (reads go to a survivor; it
  is restarted after).
- `etcd-delay`: the same trials against a 3-member etcd on 127.0.0.1 (heartbeat 50 ms,
  election timeout 300 ms: etcd randomizes it in [300, 600) ms like zraft's default),
  through its v3 JSON gateway; `--kill` likewise.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.lease_workload import node_marks, percentile  # noqa: E402
from tests.procs import ProcessCluster  # noqa: E402
from zraft import wire  # noqa: E402
from zraft.bench.etcd import EtcdCluster, b64, etcd_request  # noqa: E402
from zraft.net.security import ClientCurve  # noqa: E402

LEASE_BASE = 7_000_000
"""Bench lease ids start here (ids of our own: grants are idempotent by id)."""


# --- many REQ clients on one poller ---------------------------------------------------


@dataclass(slots=True)
class _Slot:
    endpoint: str
    sock: zmq.Socket[bytes]
    items: list[int]
    position: int = 0
    sent_at: float = 0.0
    busy: bool = False
    due: list[float] = field(default_factory=list)  # paced: when each item is next due


@dataclass(slots=True)
class Drive:
    """What one drive measured."""

    ok: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    elapsed_s: float = 0.0
    max_lateness_s: float = 0.0

    def summary(self) -> dict[str, Any]:
        """The figures as plain values."""
        ordered = sorted(self.latencies)
        return {
            "ok": self.ok,
            "errors": dict(self.errors),
            "elapsed_s": round(self.elapsed_s, 2),
            "ok_per_s": round(self.ok / self.elapsed_s, 1) if self.elapsed_s else 0.0,
            "latency_ms_p50": round(1000 * percentile(ordered, 0.5), 2),
            "latency_ms_p99": round(1000 * percentile(ordered, 0.99), 2),
            "max_lateness_s": round(self.max_lateness_s, 3),
        }


class Clients:
    """`n` REQ clients on one poller, each given endpoint and item list.

    Args:
        endpoints: one per client (cycled).
        items: lease ids, dealt round-robin to the clients.
        curve: the cluster's client keys.
    """

    def __init__(
        self, endpoints: Sequence[str], clients: int, items: Sequence[int], curve: ClientCurve
    ) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._poller = zmq.Poller()
        self._curve = curve
        self._slots: dict[zmq.Socket[bytes], _Slot] = {}
        for i in range(clients):
            endpoint = endpoints[i % len(endpoints)]
            slot = _Slot(endpoint, self._socket(endpoint), list(items[i::clients]))
            self._slots[slot.sock] = slot

    def _socket(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = self._context.socket(zmq.REQ)
        sock.linger = 0
        self._curve.apply(sock, endpoint)
        sock.connect(endpoint)
        self._poller.register(sock, zmq.POLLIN)
        return sock

    def close(self) -> None:
        """Close every socket and the context."""
        self._context.destroy(linger=0)

    def drive(
        self,
        request: Callable[[int], bytes],
        *,
        once: bool = False,
        seconds: float = math.inf,
        interval_s: float | None = None,
        timeout_s: float = 5.0,
    ) -> Drive:
        """Send `request(item)` for each client's items, one in flight per client.

        Args:
            once: each item once, then stop (grants, puts); else cycle until `seconds`.
            interval_s: paced: each item is sent again `interval_s` after it was last
                sent (spread evenly at the start); None: back to back.
            timeout_s: an unanswered request counts as `timeout`; its socket is replaced.
        """
        result = Drive()
        start = time.monotonic()
        for slot in self._slots.values():
            count = len(slot.items)
            if interval_s is not None and count:
                slot.due = [start + interval_s * k / count for k in range(count)]
        stop_at = start + seconds
        while True:
            now = time.monotonic()
            for slot in list(self._slots.values()):
                if slot.busy and now - slot.sent_at > timeout_s:
                    result.errors["timeout"] += 1
                    slot.busy = False
                    del self._slots[slot.sock]
                    self._poller.unregister(slot.sock)
                    slot.sock.close(linger=0)
                    slot.sock = self._socket(slot.endpoint)
                    self._slots[slot.sock] = slot
                if slot.busy or not slot.items or now >= stop_at:
                    continue
                if once and slot.position >= len(slot.items):
                    continue
                index = slot.position % len(slot.items)
                if interval_s is not None:
                    if slot.due[index] > now:
                        continue
                    result.max_lateness_s = max(result.max_lateness_s, now - slot.due[index])
                    slot.due[index] = max(slot.due[index] + interval_s, now)
                slot.sock.send(request(slot.items[index]))
                slot.position += 1
                slot.sent_at, slot.busy = now, True
            busy = [s for s in self._slots.values() if s.busy]
            idle_done = once and all(s.position >= len(s.items) for s in self._slots.values())
            if not busy and (now >= stop_at or idle_done):
                break
            timeout_ms = 10 if interval_s is not None or not busy else 100
            for sock, _ in self._poller.poll(timeout_ms):
                slot = self._slots[sock]
                raw = wire.decode_reply(sock.recv())
                slot.busy = False
                if raw.get("ok"):
                    result.ok += 1
                    result.latencies.append(time.monotonic() - slot.sent_at)
                else:
                    result.errors[str(raw.get("error"))] += 1
        result.elapsed_s = time.monotonic() - start
        return result


# --- zraft ----------------------------------------------------------------------------


def _cluster(directory: Path, nodes: int = 3) -> ProcessCluster:
    cluster = ProcessCluster(directory / "cluster", nodes, request_timeout_ms=3000)
    cluster.start_all()
    cluster.wait_leader(timeout=20)
    return cluster


def _grant_all(cluster: ProcessCluster, leases: int, ttl: int, clients: int) -> list[int]:
    """Grant `leases` leases with keys `svc/<i>` through many clients; their ids."""
    leader = cluster.wait_leader()
    ids = [LEASE_BASE + i for i in range(leases)]
    pool = Clients([cluster.client_endpoints[leader]], clients, ids, cluster.curve)
    try:
        grants = pool.drive(
            lambda i: wire.encode_request("lease_grant", ttl=ttl, lease=i), once=True
        )
        assert grants.ok == leases, grants.summary()
        pool = _replace(
            pool, Clients([cluster.client_endpoints[leader]], clients, ids, cluster.curve)
        )
        puts = pool.drive(
            lambda i: wire.encode_request("put", key=f"svc/{i}", value="up", lease=i), once=True
        )
        assert puts.ok == leases, puts.summary()
    finally:
        pool.close()
    return ids


def _replace(old: Clients, new: Clients) -> Clients:
    old.close()
    return new


def throughput(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """Keepalives per second, back to back, from many clients."""
    cluster = _cluster(directory)
    try:
        ids = _grant_all(cluster, args.leases, args.ttl, args.clients)
        leader = cluster.wait_leader()
        nodes = list(cluster.client_endpoints.values()) if args.spread else None
        endpoints = nodes or [cluster.client_endpoints[leader]]
        pool = Clients(endpoints, args.clients, ids, cluster.curve)
        try:
            run = pool.drive(
                lambda i: wire.encode_request("lease_keepalive", lease=i), seconds=args.seconds
            )
        finally:
            pool.close()
        events = cluster.events()
        return {
            "command": "throughput",
            "leases": args.leases,
            "clients": args.clients,
            "to": "every node" if args.spread else "the leader",
            **run.summary(),
            "loop_stalled": sum(1 for e in events if e["event"] == "loop_stalled"),
            "leader_elected": sum(1 for e in events if e["event"] == "leader_elected"),
            "lease_expired": sum(1 for e in events if e["event"] == "lease_expired"),
        }
    finally:
        cluster.close()


def steady(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """`--leases` leases kept alive at TTL/3 by `--clients` clients: a quiet cluster?"""
    cluster = _cluster(directory)
    try:
        ids = _grant_all(cluster, args.leases, args.ttl, args.clients)
        before = {e["event"]: 0 for e in cluster.events()}
        for event in cluster.events():
            before[event["event"]] += 1
        endpoints = list(cluster.client_endpoints.values())
        pool = Clients(endpoints, args.clients, ids, cluster.curve)
        try:
            run = pool.drive(
                lambda i: wire.encode_request("lease_keepalive", lease=i),
                seconds=args.seconds,
                interval_s=args.ttl / 3,
            )
        finally:
            pool.close()
        counts = Counter(e["event"] for e in cluster.events())
        listed = cluster.request(cluster.wait_leader(), "lease_leases")["leases"]
        return {
            "command": "steady",
            "leases": args.leases,
            "clients": args.clients,
            "ttl_s": args.ttl,
            "keepalives_per_s_needed": round(args.leases / (args.ttl / 3), 1),
            **run.summary(),
            "leases_alive_after": len(listed),
            "loop_stalled_during": counts["loop_stalled"] - before.get("loop_stalled", 0),
            "leader_elected_during": counts["leader_elected"] - before.get("leader_elected", 0),
            "lease_expired": counts["lease_expired"],
        }
    finally:
        cluster.close()


def _zraft_range(cluster: ProcessCluster, node: str, prefix: str) -> set[str] | None:
    try:
        reply = cluster.request(node, "range", timeout=1.0, key=prefix, prefix=True)
    except AssertionError:
        return None
    if not reply.get("ok"):
        return None
    return {
        kv["key"].decode() if isinstance(kv["key"], bytes) else kv["key"] for kv in reply["kvs"]
    }


def delay(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """How long keys outlive the owner's last keepalive (zraft)."""
    cluster = _cluster(directory)
    wall_offset = time.time_ns() - time.monotonic_ns()
    seen: list[float] = []
    expired: list[float] = []
    try:
        next_id = LEASE_BASE
        for trial in range(args.trials):
            leader = cluster.wait_leader(timeout=20)
            prefix = f"t{trial}/"
            acks: dict[str, tuple[int, float]] = {}
            for n in range(args.per_trial):
                lease = next_id
                next_id += 1
                assert cluster.request(leader, "lease_grant", ttl=args.ttl, lease=lease)["ok"]
                assert cluster.request(leader, "put", key=f"{prefix}{n}", value="x", lease=lease)[
                    "ok"
                ]
                acks[f"{prefix}{n}"] = (lease, 0.0)
            time.sleep(args.ttl / 3)
            for key, (lease, _) in acks.items():
                assert cluster.request(leader, "lease_keepalive", lease=lease)["ok"]
                acks[key] = (lease, time.monotonic())
            reader = leader
            if args.kill:
                time.sleep(args.ttl * args.kill_at)
                cluster.kill(leader, signal.SIGKILL)
                reader = next(n for n in cluster.ids if n != leader)
            gone: dict[str, float] = {}
            deadline = time.monotonic() + args.ttl + 15
            while len(gone) < len(acks) and time.monotonic() < deadline:
                keys = _zraft_range(cluster, reader, prefix)
                now = time.monotonic()
                if keys is not None:
                    for key in acks:
                        if key not in keys and key not in gone:
                            gone[key] = now
                time.sleep(0.01)
            first_expiry: dict[int, float] = {}
            origin = 0
            for mark in node_marks(cluster.events(), wall_offset, origin):
                if mark.event == "lease_expired":
                    first_expiry.setdefault(mark.lease, mark.at_ns / 1e9)
            for key, (lease, acked) in acks.items():
                if key in gone:
                    seen.append(gone[key] - acked - args.ttl)
                if lease in first_expiry:
                    expired.append(first_expiry[lease] - acked - args.ttl)
            if args.kill:
                cluster.start(leader)
                cluster.wait_leader(timeout=20)
    finally:
        cluster.close()
    return _delay_result("zraft", args, seen, expired)


def _delay_result(
    system: str, args: argparse.Namespace, seen: list[float], expired: list[float]
) -> dict[str, Any]:
    def stats(values: list[float]) -> dict[str, float]:
        ordered = sorted(values)
        return {
            "n": len(ordered),
            "p50": round(percentile(ordered, 0.5), 3),
            "p99": round(percentile(ordered, 0.99), 3),
            "max": round(max(ordered, default=0.0), 3),
        }

    result: dict[str, Any] = {
        "command": f"{system} delay",
        "ttl_s": args.ttl,
        "leases": args.trials * args.per_trial,
        "kill_leader": args.kill,
        "kill_at_ttl": args.kill_at if args.kill else None,
        "seen_gone_minus_ttl_s": stats(seen),
    }
    if expired:
        result["first_expiry_minus_ttl_s"] = stats(expired)
    return result


# --- etcd -----------------------------------------------------------------------------


def _etcd(url: str, path: str, body: dict[str, Any], timeout: float = 1.0) -> dict[str, Any]:
    answer: dict[str, Any] = etcd_request(url, path, body, timeout)
    return answer


def etcd_delay(args: argparse.Namespace, directory: Path) -> dict[str, Any]:
    """The same trials as `delay`, against etcd's v3 JSON gateway."""
    etcd = EtcdCluster(args.etcd, directory, timings=(50, 300))
    seen: list[float] = []
    try:
        for name in etcd.names:
            etcd.start(name)
        for trial in range(args.trials):
            leader = etcd.leader()
            url = etcd.client[leader]
            prefix = f"t{trial}/"
            acks: dict[str, tuple[str, float]] = {}
            for n in range(args.per_trial):
                lease = _etcd(url, "/v3/lease/grant", {"TTL": args.ttl})["ID"]
                key = f"{prefix}{n}"
                _etcd(url, "/v3/kv/put", {"key": b64(key), "value": b64("x"), "lease": lease})
                acks[key] = (lease, 0.0)
            time.sleep(args.ttl / 3)
            for key, (lease, _) in acks.items():
                _etcd(url, "/v3/lease/keepalive", {"ID": lease})
                acks[key] = (lease, time.monotonic())
            reader = url
            if args.kill:
                time.sleep(args.ttl * args.kill_at)
                etcd.kill(leader)
                reader = etcd.client[next(n for n in etcd.names if n != leader)]
            gone: dict[str, float] = {}
            deadline = time.monotonic() + args.ttl + 15
            end = prefix[:-1] + chr(ord(prefix[-1]) + 1)
            while len(gone) < len(acks) and time.monotonic() < deadline:
                try:
                    reply = _etcd(
                        reader, "/v3/kv/range", {"key": b64(prefix), "range_end": b64(end)}
                    )
                except OSError:
                    time.sleep(0.01)
                    continue
                now = time.monotonic()
                keys = {base64.b64decode(kv["key"]).decode() for kv in reply.get("kvs", [])}
                for key in acks:
                    if key not in keys and key not in gone:
                        gone[key] = now
                time.sleep(0.01)
            seen += [gone[k] - acked - args.ttl for k, (_, acked) in acks.items() if k in gone]
            if args.kill:
                etcd.start(leader, state="existing")
                etcd.leader()
    finally:
        etcd.close()
    result = _delay_result("etcd", args, seen, [])
    result["etcd_version"] = subprocess.run(
        [args.etcd, "--version"], capture_output=True, text=True, check=False
    ).stdout.split("\n")[0]
    return result


# --- the command line -----------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Run one benchmark; print its JSON result."""
    parser = argparse.ArgumentParser(prog="lease_bench", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("throughput", "steady", "delay", "etcd-delay"):
        cmd = sub.add_parser(name)
        cmd.add_argument("--keep", type=Path, help="run in DIR and keep it")
        if name in ("throughput", "steady"):
            cmd.add_argument("--leases", type=int, default=10_000)
            cmd.add_argument("--clients", type=int, default=100)
            cmd.add_argument("--seconds", type=float, default=20.0)
            cmd.add_argument("--ttl", type=int, default=60 if name == "throughput" else 30)
            cmd.add_argument("--spread", action="store_true", help="clients on every node")
        else:
            cmd.add_argument("--trials", type=int, default=10)
            cmd.add_argument("--per-trial", type=int, default=20)
            cmd.add_argument("--ttl", type=int, default=2)
            cmd.add_argument("--kill", action="store_true", help="SIGKILL the leader mid-TTL")
            cmd.add_argument(
                "--kill-at",
                type=float,
                default=0.5,
                help="when to kill, in TTLs after the last keepalive (default 0.5)",
            )
        if name == "etcd-delay":
            cmd.add_argument("--etcd", default="etcd", help="the etcd binary")
    args = parser.parse_args(argv)
    directory = args.keep or Path(tempfile.mkdtemp(prefix="lease-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    run = {"throughput": throughput, "steady": steady, "delay": delay, "etcd-delay": etcd_delay}
    result = run[args.command](args, directory)
    result["directory"] = str(directory)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    sys.exit(main())
