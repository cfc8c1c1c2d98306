"""Watch benchmark (a tool, not a test file): how fast watchers hear of writes, and what
they cost the writers, for zraft and, side by side in the same run, etcd 3.4.

    PYTHONPATH=. .venv/bin/python tests/watch_bench.py                 # zraft, then etcd
    PYTHONPATH=. .venv/bin/python tests/watch_bench.py --systems zraft --seconds 5

Each system runs as 3 nodes on 127.0.0.1 (zraft: CURVE and fsync on, the defaults;
etcd: its defaults with heartbeat 50 ms and election timeout 300 ms, through its v3 JSON
gateway), driven from ONE thread of this process (a zmq poller for zraft, a selector for
etcd's HTTP streams), in four phases:

1. **throughput without watchers**: `--inflight` closed-loop clients put 256-byte values
   to the leader for `--tput-seconds`: puts/s.
2. **watchers**: `--key-watchers` watchers on distinct keys `k/0000...` and
   `--prefix-watchers` on the prefix `k/`, spread over the three nodes, all from one
   revision.
3. **delivery**: puts at `--rate` per second to random watched keys for `--seconds`;
   for each event a watcher receives: the time from the write's acknowledgement to its
   arrival (p50, p99; key watchers and prefix watchers apart; 0 when the event arrived
   first), and how many acknowledged writes a watcher never received.
4. **throughput with watchers**: phase 1 again while every watcher keeps receiving.
5. **throughput with watchers and leases** (`--leases`, default 10,000; 0 skips it):
   that many leases of `--lease-ttl` seconds are granted, each with a key `svc/<n>`,
   and kept alive at TTL/3 (the client libraries' pace: `--leases` x 3 / TTL
   keepalives per second, spread evenly over 128 connections to the leader) while phase 1
   runs again with every watcher receiving: puts/s, keepalives acknowledged, refused (a
   lease that expired: must be 0) and how far the keepalives fell behind their pace; then
   the leader's peak resident memory (`VmHWM`).

It starts its clusters in a temporary directory, stops every process it started by PID,
and prints a table and one JSON object.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import random
import selectors
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import zmq

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.lease_workload import percentile  # noqa: E402
from tests.procs import ProcessCluster  # noqa: E402
from zraft import wire  # noqa: E402
from zraft.bench.etcd import EtcdCluster  # noqa: E402
from zraft.bench.versus import peak_rss_mib  # noqa: E402

VALUE = "v" * 256
LEASE_BASE = 7_000_000
"""The first lease id phase 5 grants (ids are chosen by the benchmark, the same for both)."""
KEEPERS = 128
"""Connections to the leader that carry phase 5's keepalives."""
KEEPALIVE_WAIT_S = 10.0
"""How long keepalives still in flight when the window closes are waited for."""


@dataclass
class Keeper:
    """Phase 5's keepalives: every lease once per `interval` (TTL/3), spread evenly, so
    `len(ids) / interval` keepalives are due per second; what came back, and how long each
    answer took (a keepalive still in flight when the window closes is waited for, not
    dropped: it counts in the latency, not in the rate)."""

    ids: list[int]
    interval: float
    began: float = field(default_factory=time.monotonic)
    ended: float = 0.0  # when the measured window closed
    sent: int = 0
    refused: int = 0
    behind_max_s: float = 0.0
    in_flight: dict[int, float] = field(default_factory=dict)  # handle -> when sent
    answers: list[tuple[float, float]] = field(default_factory=list)  # (when, latency)

    def due(self, now: float) -> int:
        """How many keepalives are due and not yet sent at `now`."""
        return int((now - self.began) * len(self.ids) / self.interval) - self.sent

    def take(self, now: float, handle: int) -> int:
        """The next lease to keep alive, sent over `handle`; notes how late it is."""
        self.behind_max_s = max(
            self.behind_max_s, now - self.began - self.sent * self.interval / len(self.ids)
        )
        lease = self.ids[self.sent % len(self.ids)]
        self.sent += 1
        self.in_flight[handle] = now
        return lease

    def answered(self, handle: int, kept: bool) -> None:
        """The keepalive sent over `handle` came back: the lease `kept` alive, or not."""
        now = time.monotonic()
        self.answers.append((now, now - self.in_flight.pop(handle)))
        if not kept:
            self.refused += 1

    def figures(self) -> dict[str, Any]:
        """What a report shows of it."""
        seconds = self.ended - self.began
        in_window = sum(1 for at, _ in self.answers if at <= self.ended)
        latencies = sorted(latency for _, latency in self.answers)
        return {
            "leases": len(self.ids),
            "sent": self.sent,
            "keepalives_per_s_due": round(len(self.ids) / self.interval),
            "keepalives_per_s_acked": round((in_window - self.refused) / seconds)
            if seconds > 0
            else 0,
            "refused": self.refused,
            "unanswered": len(self.in_flight),
            "p50_ms": round(1000 * percentile(latencies, 0.5), 1) if latencies else None,
            "p99_ms": round(1000 * percentile(latencies, 0.99), 1) if latencies else None,
            "max_ms": round(1000 * latencies[-1], 1) if latencies else None,
            "behind_max_ms": round(1000 * self.behind_max_s, 1),
        }


@dataclass
class Measure:
    """What one system's run measured."""

    puts_per_s_alone: float = 0.0
    puts_per_s_watched: float = 0.0
    acked: dict[tuple[str, int], float] = field(default_factory=dict)  # (key, rev) -> ack time
    received: dict[str, list[tuple[str, int, float]]] = field(
        default_factory=lambda: {"key": [], "prefix": []}
    )
    window: tuple[float, float] = (0.0, 0.0)
    paced_sent: int = 0
    paced_late: int = 0
    paced_cpu_s: float = 0.0  # this process's CPU time in the paced phase
    puts_per_s_leases: float = 0.0
    keeper: Keeper | None = None
    leader_rss_mib: float = 0.0

    def delivery(self, kind: str, per_write: int) -> dict[str, Any]:
        """Latency figures of one kind of watcher, and the deliveries it missed (writes
        acknowledged up to 2 s before the end of the paced phase, times the watchers that
        should receive each: 1 for key watchers, all of them for prefix watchers)."""
        start, end = self.window
        lags = []
        for key, revision, at in self.received[kind]:
            acked = self.acked.get((key, revision))
            if acked is not None and start <= acked <= end:
                lags.append(max(0.0, at - acked))
        lags.sort()
        due = {item for item, t in self.acked.items() if start <= t <= end - 2.0}
        delivered = sum(1 for k, r, _ in self.received[kind] if (k, r) in due)
        return {
            "events": len(lags),
            "p50_ms": round(1000 * percentile(lags, 0.5), 2) if lags else None,
            "p99_ms": round(1000 * percentile(lags, 0.99), 2) if lags else None,
            "missing": len(due) * per_write - delivered,
        }


# --- zraft ----------------------------------------------------------------------------------


class ZraftDriver:
    """Writers and watchers as REQ sockets on one poller."""

    def __init__(self, cluster: ProcessCluster, args: argparse.Namespace) -> None:
        self.cluster, self.args = cluster, args
        self.context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.context.set(zmq.MAX_SOCKETS, 16384)
        self.poller = zmq.Poller()
        self.leader = cluster.client_endpoints[cluster.wait_leader()]
        self.nodes = list(cluster.client_endpoints.values())
        self.handlers: dict[zmq.Socket[bytes], Callable[[dict[str, Any]], None]] = {}

    def socket(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = self.context.socket(zmq.REQ)
        sock.linger = 0
        if self.cluster.curve is not None:
            self.cluster.curve.apply(sock, endpoint)
        sock.connect(endpoint)
        self.poller.register(sock, zmq.POLLIN)
        return sock

    def turn(self, timeout_ms: int) -> None:
        for sock, _ in self.poller.poll(timeout_ms):
            self.handlers[sock](wire.decode_reply(sock.recv()))

    def closed_loop(self, seconds: float, keeper: Keeper | None = None) -> float:
        """Puts/s of `--inflight` clients back to back (and `keeper`'s keepalives)."""
        done = [0]
        stop_at = time.monotonic() + seconds
        sockets = [self.socket(self.leader) for _ in range(self.args.inflight)]
        feed = self._keepalives(keeper) if keeper is not None else None
        rng = random.Random(1)

        def send(sock: zmq.Socket[bytes]) -> None:
            key = f"k/{rng.randrange(self.args.key_watchers):04d}"
            sock.send(wire.encode_request("put", key=key, value=VALUE))

        for sock in sockets:
            self.handlers[sock] = self._count(sock, done, stop_at, send)
            send(sock)
        began = time.monotonic()
        if keeper is not None:
            keeper.began = began
        while any(s in self.handlers for s in sockets):
            if feed is not None:
                feed()
            self.turn(5 if feed is not None else 50)
        elapsed = time.monotonic() - began
        if keeper is not None:
            keeper.ended = began + elapsed
            deadline = time.monotonic() + KEEPALIVE_WAIT_S
            while keeper.in_flight and time.monotonic() < deadline:
                self.turn(50)
        for sock in sockets:
            self.poller.unregister(sock)
            sock.close(linger=0)
        return done[0] / elapsed

    def _keepalives(self, keeper: Keeper) -> Callable[[], None]:
        """A function that sends the keepalives due now over idle keepalive sockets."""
        idle = [self.socket(self.leader) for _ in range(KEEPERS)]
        for sock in idle:

            def on_reply(reply: dict[str, Any], sock: zmq.Socket[bytes] = sock) -> None:
                keeper.answered(id(sock), bool(reply.get("ok")) and reply.get("remaining", 0) > 0)
                idle.append(sock)

            self.handlers[sock] = on_reply

        def feed() -> None:
            now = time.monotonic()
            for _ in range(min(keeper.due(now), len(idle))):
                sock = idle.pop()
                sock.send(wire.encode_request("lease_keepalive", lease=keeper.take(now, id(sock))))

        return feed

    def grant(self, count: int, ttl: int) -> list[int]:
        """Grant `count` leases, then put a key `svc/<id>` on each."""
        ids = [LEASE_BASE + n for n in range(count)]
        self._all([wire.encode_request("lease_grant", ttl=ttl, lease=i) for i in ids])
        self._all([wire.encode_request("put", key=f"svc/{i}", value="up", lease=i) for i in ids])
        return ids

    def _all(self, requests: list[bytes]) -> None:
        """Send every request to the leader, 64 in flight; raise unless all succeed."""
        waiting = list(reversed(requests))
        failed: list[dict[str, Any]] = []
        sockets = [self.socket(self.leader) for _ in range(64)]
        busy: set[zmq.Socket[bytes]] = set()

        def next_one(sock: zmq.Socket[bytes]) -> None:
            if waiting:
                sock.send(waiting.pop())
                busy.add(sock)

        for sock in sockets:

            def on_reply(reply: dict[str, Any], sock: zmq.Socket[bytes] = sock) -> None:
                if not reply.get("ok"):
                    failed.append(reply)
                busy.discard(sock)
                next_one(sock)

            self.handlers[sock] = on_reply
            next_one(sock)
        deadline = time.monotonic() + 120
        while busy and time.monotonic() < deadline:
            self.turn(50)
        for sock in sockets:
            del self.handlers[sock]
            self.poller.unregister(sock)
            sock.close(linger=0)
        if busy or failed:
            raise RuntimeError(f"setting up leases failed: {failed[:3]} ({len(busy)} unanswered)")

    def _count(self, sock, done, stop_at, send):  # type: ignore[no-untyped-def]
        def on_reply(reply: dict[str, Any]) -> None:
            if reply.get("ok"):
                done[0] += 1
            if time.monotonic() < stop_at:
                send(sock)
            else:
                del self.handlers[sock]

        return on_reply

    def start_watchers(self, measure: Measure) -> None:
        sock = self.socket(self.leader)
        sock.send(wire.encode_request("put", key="marker", value="x"))
        sock.poll(5000)
        start = wire.decode_reply(sock.recv())["header"]["revision"] + 1
        self.poller.unregister(sock)
        sock.close(linger=0)
        specs = [("key", f"k/{n:04d}", False) for n in range(self.args.key_watchers)]
        specs += [("prefix", "k/", True) for _ in range(self.args.prefix_watchers)]
        for number, (kind, key, prefix) in enumerate(specs):
            watcher = self.socket(self.nodes[number % len(self.nodes)])
            state = {"next": start}

            def poll(sock=watcher, key=key, prefix=prefix, state=state) -> None:  # type: ignore[no-untyped-def]
                fields: dict[str, Any] = {"key": key, "start_revision": state["next"]}
                if prefix:
                    fields["prefix"] = True
                sock.send(wire.encode_request("watch", wait_ms=5000, **fields))

            def on_reply(reply, kind=kind, poll=poll, state=state) -> None:  # type: ignore[no-untyped-def]
                now = time.monotonic()
                if reply.get("ok"):
                    got = measure.received[kind]
                    for event in reply["events"]:
                        kv = event["kv"]
                        got.append((kv["key"].decode(), kv["mod_revision"], now))
                    state["next"] = reply["next_revision"]
                poll()

            self.handlers[watcher] = on_reply
            poll()

    def paced(self, measure: Measure, seconds: float) -> None:
        rate, rng = self.args.rate, random.Random(2)
        writers = [self.socket(self.leader) for _ in range(64)]
        idle = list(writers)
        stop_at = time.monotonic() + seconds
        due = time.monotonic()
        measure.window = (due, stop_at)

        for sock in writers:

            def on_reply(reply, sock=sock) -> None:  # type: ignore[no-untyped-def]
                if reply.get("ok"):
                    measure.acked[(self.pending[sock], reply["header"]["revision"])] = (
                        time.monotonic()
                    )
                idle.append(sock)

            self.handlers[sock] = on_reply
        self.pending: dict[zmq.Socket[bytes], str] = {}
        while time.monotonic() < stop_at:
            now = time.monotonic()
            while due <= now:
                if idle:
                    sock = idle.pop()
                    key = f"k/{rng.randrange(self.args.key_watchers):04d}"
                    self.pending[sock] = key
                    sock.send(wire.encode_request("put", key=key, value=VALUE))
                    measure.paced_sent += 1
                else:
                    measure.paced_late += 1
                due += 1 / rate
            self.turn(max(0, int((due - time.monotonic()) * 1000)))
        settle = time.monotonic() + 3
        while time.monotonic() < settle:
            self.turn(50)
        for sock in writers:
            del self.handlers[sock]
            self.poller.unregister(sock)
            sock.close(linger=0)

    def close(self) -> None:
        self.context.destroy(linger=0)


def run_zraft(args: argparse.Namespace, directory: Path) -> Measure:
    measure = Measure()
    cluster = ProcessCluster(directory / "zraft", 3, request_timeout_ms=5000)
    try:
        cluster.start_all()
        cluster.wait_leader(timeout=20)
        driver = ZraftDriver(cluster, args)
        try:
            measure.puts_per_s_alone = driver.closed_loop(args.tput_seconds)
            driver.start_watchers(measure)
            cpu = time.process_time()
            driver.paced(measure, args.seconds)
            measure.paced_cpu_s = time.process_time() - cpu
            measure.puts_per_s_watched = driver.closed_loop(args.tput_seconds)
            if args.leases:
                ids = driver.grant(args.leases, args.lease_ttl)
                measure.keeper = Keeper(ids, args.lease_ttl / 3)
                measure.puts_per_s_leases = driver.closed_loop(args.tput_seconds, measure.keeper)
            measure.leader_rss_mib = peak_rss_mib(cluster.pid(cluster.wait_leader()))
        finally:
            driver.close()
    finally:
        cluster.close()
    return measure


# --- etcd -----------------------------------------------------------------------------------


class Http:
    """One HTTP/1.1 connection on the selector: unary requests (Content-Length replies) or
    one streaming request (a chunked reply of JSON lines)."""

    def __init__(self, url: str, selector: selectors.BaseSelector) -> None:
        parsed = urlparse(url)
        self.host = f"{parsed.hostname}:{parsed.port}"
        self.sock = socket.create_connection((parsed.hostname, parsed.port))
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = b""
        self.on_message: Callable[[dict[str, Any]], None] = lambda m: None
        self.streaming = False
        self.headers_done = False
        self.selector = selector
        selector.register(self.sock, selectors.EVENT_READ, self)

    def post(self, path: str, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(data)}\r\n\r\n"
        ).encode()
        self.sock.sendall(head + data)

    def readable(self) -> None:
        chunk = self.sock.recv(1 << 20)
        if not chunk:
            raise ConnectionError("etcd closed a connection")
        self.buffer += chunk
        while self._one():
            pass

    def _one(self) -> bool:
        if not self.headers_done:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return False
            head = self.buffer[:end].decode("latin-1").lower()
            self.buffer = self.buffer[end + 4 :]
            self.streaming = "transfer-encoding: chunked" in head
            self.length = 0
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    self.length = int(line.split(":")[1])
            self.headers_done = True
            self.lines = b""
        if not self.streaming:
            if len(self.buffer) < self.length:
                return False
            body, self.buffer = self.buffer[: self.length], self.buffer[self.length :]
            self.headers_done = False
            self.on_message(json.loads(body))
            return True
        end = self.buffer.find(b"\r\n")
        if end < 0:
            return False
        size = int(self.buffer[:end], 16)
        if len(self.buffer) < end + 2 + size + 2:
            return False
        if size == 0:  # the last chunk: the stream ended (a keepalive's), the next reply follows
            self.buffer = self.buffer[end + 4 :]
            self.headers_done = False
            return True
        self.lines += self.buffer[end + 2 : end + 2 + size]
        self.buffer = self.buffer[end + 2 + size + 2 :]
        while b"\n" in self.lines:
            line, self.lines = self.lines.split(b"\n", 1)
            if line.strip():
                self.on_message(json.loads(line))
        return True


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


class EtcdDriver:
    """Writers and watchers as HTTP connections on one selector."""

    def __init__(self, etcd: EtcdCluster, args: argparse.Namespace) -> None:
        self.etcd, self.args = etcd, args
        self.selector = selectors.DefaultSelector()
        self.leader = etcd.client[etcd.leader()]
        self.nodes = list(etcd.client.values())
        self.connections: list[Http] = []

    def connect(self, url: str) -> Http:
        connection = Http(url, self.selector)
        self.connections.append(connection)
        return connection

    def drop(self, connection: Http) -> None:
        self.selector.unregister(connection.sock)
        connection.sock.close()
        self.connections.remove(connection)

    def turn(self, timeout_s: float) -> None:
        for key, _ in self.selector.select(timeout_s):
            key.data.readable()

    def put(self, connection: Http, key: str) -> None:
        connection.post("/v3/kv/put", {"key": _b64(key), "value": _b64(VALUE)})

    def closed_loop(self, seconds: float, keeper: Keeper | None = None) -> float:
        done = [0]
        stop_at = time.monotonic() + seconds
        rng = random.Random(1)
        writers = [self.connect(self.leader) for _ in range(self.args.inflight)]
        feed = self._keepalives(keeper) if keeper is not None else None
        active = set(range(len(writers)))
        for number, connection in enumerate(writers):

            def on_message(message, connection=connection, number=number) -> None:  # type: ignore[no-untyped-def]
                if "header" in message:
                    done[0] += 1
                if time.monotonic() < stop_at:
                    self.put(connection, f"k/{rng.randrange(self.args.key_watchers):04d}")
                else:
                    active.discard(number)

            connection.on_message = on_message
            self.put(connection, f"k/{rng.randrange(self.args.key_watchers):04d}")
        began = time.monotonic()
        if keeper is not None:
            keeper.began = began
        while active:
            if feed is not None:
                feed()
            self.turn(0.005 if feed is not None else 0.05)
        elapsed = time.monotonic() - began
        if keeper is not None:
            keeper.ended = began + elapsed
            deadline = time.monotonic() + KEEPALIVE_WAIT_S
            while keeper.in_flight and time.monotonic() < deadline:
                self.turn(0.05)
        for connection in writers:
            self.drop(connection)
        return done[0] / elapsed

    def _keepalives(self, keeper: Keeper) -> Callable[[], None]:
        """A function that sends the keepalives due now over idle connections (one
        keepalive per request: the gateway ends the stream when the body ends)."""
        idle = [self.connect(self.leader) for _ in range(KEEPERS)]
        for connection in idle:

            def on_message(message: dict[str, Any], connection: Http = connection) -> None:
                kept = int(message.get("result", {}).get("TTL", 0)) > 0
                keeper.answered(id(connection), kept)
                idle.append(connection)

            connection.on_message = on_message

        def feed() -> None:
            now = time.monotonic()
            for _ in range(min(keeper.due(now), len(idle))):
                connection = idle.pop()
                connection.post("/v3/lease/keepalive", {"ID": keeper.take(now, id(connection))})

        return feed

    def grant(self, count: int, ttl: int) -> list[int]:
        """Grant `count` leases, then put a key `svc/<id>` on each."""
        ids = [LEASE_BASE + n for n in range(count)]
        self._all([("/v3/lease/grant", {"TTL": ttl, "ID": i}) for i in ids])
        self._all(
            [
                ("/v3/kv/put", {"key": _b64(f"svc/{i}"), "value": _b64("up"), "lease": i})
                for i in ids
            ]
        )
        return ids

    def _all(self, requests: list[tuple[str, dict[str, Any]]]) -> None:
        """POST every request to the leader, 64 in flight; raise unless all succeed."""
        waiting = list(reversed(requests))
        failed: list[dict[str, Any]] = []
        connections = [self.connect(self.leader) for _ in range(64)]
        busy: set[int] = set()

        def next_one(connection: Http) -> None:
            if waiting:
                connection.post(*waiting.pop())
                busy.add(id(connection))

        for connection in connections:

            def on_message(message: dict[str, Any], connection: Http = connection) -> None:
                if "header" not in message or "error" in message:
                    failed.append(message)
                busy.discard(id(connection))
                next_one(connection)

            connection.on_message = on_message
            next_one(connection)
        deadline = time.monotonic() + 120
        while busy and time.monotonic() < deadline:
            self.turn(0.05)
        for connection in connections:
            self.drop(connection)
        if busy or failed:
            raise RuntimeError(f"setting up leases failed: {failed[:3]} ({len(busy)} unanswered)")

    def start_watchers(self, measure: Measure) -> None:
        first = self.connect(self.leader)
        answer: list[dict[str, Any]] = []
        first.on_message = answer.append
        first.post("/v3/kv/put", {"key": _b64("marker"), "value": _b64("x")})
        while not answer:
            self.turn(0.05)
        start = int(answer[0]["header"]["revision"]) + 1
        self.drop(first)
        created = [0]
        names = {_b64(f"k/{n:04d}"): f"k/{n:04d}" for n in range(self.args.key_watchers)}
        specs = [("key", f"k/{n:04d}", None) for n in range(self.args.key_watchers)]
        specs += [("prefix", "k/", "k0") for _ in range(self.args.prefix_watchers)]
        for number, (kind, key, end) in enumerate(specs):
            connection = self.connect(self.nodes[number % len(self.nodes)])

            def on_message(message, kind=kind) -> None:  # type: ignore[no-untyped-def]
                result = message.get("result", {})
                if result.get("created"):
                    created[0] += 1
                now = time.monotonic()
                got = measure.received[kind]
                for event in result.get("events", ()):
                    kv = event["kv"]
                    got.append((names[kv["key"]], int(kv["mod_revision"]), now))

            connection.on_message = on_message
            request: dict[str, Any] = {"key": _b64(key), "start_revision": start}
            if end is not None:
                request["range_end"] = _b64(end)
            connection.post("/v3/watch", {"create_request": request})
        deadline = time.monotonic() + 30
        while created[0] < len(specs) and time.monotonic() < deadline:
            self.turn(0.05)

    def paced(self, measure: Measure, seconds: float) -> None:
        rate, rng = self.args.rate, random.Random(2)
        writers = [self.connect(self.leader) for _ in range(64)]
        idle = list(writers)
        pending: dict[int, str] = {}
        stop_at = time.monotonic() + seconds
        due = time.monotonic()
        measure.window = (due, stop_at)
        for connection in writers:

            def on_message(message, connection=connection) -> None:  # type: ignore[no-untyped-def]
                header = message.get("header")
                if header is not None:
                    key = pending[id(connection)]
                    measure.acked[(key, int(header["revision"]))] = time.monotonic()
                idle.append(connection)

            connection.on_message = on_message
        while time.monotonic() < stop_at:
            now = time.monotonic()
            while due <= now:
                if idle:
                    connection = idle.pop()
                    key = f"k/{rng.randrange(self.args.key_watchers):04d}"
                    pending[id(connection)] = key
                    self.put(connection, key)
                    measure.paced_sent += 1
                else:
                    measure.paced_late += 1
                due += 1 / rate
            self.turn(max(0.0, due - time.monotonic()))
        settle = time.monotonic() + 3
        while time.monotonic() < settle:
            self.turn(0.05)
        for connection in writers:
            self.drop(connection)

    def close(self) -> None:
        for connection in list(self.connections):
            self.drop(connection)
        self.selector.close()


def run_etcd(args: argparse.Namespace, directory: Path) -> Measure:
    measure = Measure()
    path = directory / "etcd"
    path.mkdir(parents=True, exist_ok=True)
    etcd = EtcdCluster(args.etcd, path, timings=(50, 300))
    try:
        for name in etcd.names:
            etcd.start(name)
        driver = EtcdDriver(etcd, args)
        try:
            measure.puts_per_s_alone = driver.closed_loop(args.tput_seconds)
            driver.start_watchers(measure)
            cpu = time.process_time()
            driver.paced(measure, args.seconds)
            measure.paced_cpu_s = time.process_time() - cpu
            measure.puts_per_s_watched = driver.closed_loop(args.tput_seconds)
            if args.leases:
                ids = driver.grant(args.leases, args.lease_ttl)
                measure.keeper = Keeper(ids, args.lease_ttl / 3)
                measure.puts_per_s_leases = driver.closed_loop(args.tput_seconds, measure.keeper)
            measure.leader_rss_mib = peak_rss_mib(etcd.pid(etcd.leader()))
        finally:
            driver.close()
    finally:
        etcd.close()
    return measure


# --- the report -----------------------------------------------------------------------------


def figures(measure: Measure, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "puts_per_s_without_watchers": round(measure.puts_per_s_alone),
        "puts_per_s_with_watchers": round(measure.puts_per_s_watched),
        "throughput_kept": round(measure.puts_per_s_watched / measure.puts_per_s_alone, 3)
        if measure.puts_per_s_alone
        else None,
        "paced_writes": measure.paced_sent,
        "paced_late": measure.paced_late,
        "paced_writes_per_s": round(len(measure.acked) / args.seconds),
        "load_generator_cpu_s": round(measure.paced_cpu_s, 1),
        "acknowledged": len(measure.acked),
        "key_watchers": measure.delivery("key", 1),
        "prefix_watchers": measure.delivery("prefix", args.prefix_watchers),
        "puts_per_s_with_watchers_and_leases": round(measure.puts_per_s_leases),
        "keepalives": measure.keeper.figures() if measure.keeper else None,
        "leader_peak_rss_mib": round(measure.leader_rss_mib, 1),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="watch_bench", description=__doc__.split("\n")[0])
    parser.add_argument("--systems", default="zraft,etcd", help="zraft, etcd or both")
    parser.add_argument("--key-watchers", type=int, default=1000)
    parser.add_argument("--prefix-watchers", type=int, default=100)
    parser.add_argument("--rate", type=float, default=2000.0, help="paced puts per second")
    parser.add_argument("--seconds", type=float, default=15.0, help="the paced phase")
    parser.add_argument("--tput-seconds", type=float, default=8.0)
    parser.add_argument("--inflight", type=int, default=64)
    parser.add_argument("--leases", type=int, default=10_000, help="phase 5's (0: skip it)")
    parser.add_argument("--lease-ttl", type=int, default=30, help="seconds")
    parser.add_argument("--etcd", default="etcd", help="the etcd binary")
    parser.add_argument("--keep", type=Path, help="run in DIR and keep it")
    args = parser.parse_args(argv)
    directory = args.keep or Path(tempfile.mkdtemp(prefix="watch-bench-"))
    directory.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {}
    for system in [s.strip() for s in args.systems.split(",") if s.strip()]:
        run = {"zraft": run_zraft, "etcd": run_etcd}[system]
        print(f"-- {system}", file=sys.stderr, flush=True)
        results[system] = figures(run(args, directory), args)
    for system, result in results.items():
        key, prefix = result["key_watchers"], result["prefix_watchers"]
        print(
            f"{system:<6} paced {result['paced_writes_per_s']}/s (bench CPU "
            f"{result['load_generator_cpu_s']} s); "
            f"puts/s {result['puts_per_s_without_watchers']:>6} -> "
            f"{result['puts_per_s_with_watchers']:>6} with watchers; delivery key p50 "
            f"{key['p50_ms']} p99 {key['p99_ms']} ms (missing {key['missing']}), prefix p50 "
            f"{prefix['p50_ms']} p99 {prefix['p99_ms']} ms (missing {prefix['missing']})",
            file=sys.stderr,
        )
        keep = result["keepalives"]
        if keep:
            print(
                f"{system:<6} with {keep['leases']} leases kept alive too: puts/s "
                f"{result['puts_per_s_with_watchers_and_leases']:>6}, keepalives/s "
                f"{keep['keepalives_per_s_acked']} of {keep['keepalives_per_s_due']} due "
                f"(refused {keep['refused']}, unanswered {keep['unanswered']}, p50 "
                f"{keep['p50_ms']} p99 {keep['p99_ms']} ms, max {keep['max_ms']} ms, "
                f"sending behind at most {keep['behind_max_ms']} ms); "
                f"leader peak RSS {result['leader_peak_rss_mib']} MiB",
                file=sys.stderr,
            )
    print(json.dumps({"params": vars(args) | {"keep": str(args.keep)}, **results}))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONHASHSEED", "0")
    raise SystemExit(main())
