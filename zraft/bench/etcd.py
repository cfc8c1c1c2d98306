"""etcd 3.4 beside zraft in a benchmark: a local etcd cluster, and the same closed-loop
load through etcd's v3 JSON gateway.

`EtcdCluster` runs `etcd` members on 127.0.0.1 (ports from the OS, data under a given
directory), started and killed by PID, with etcd's own defaults unless timings are given.
`run_etcd_bench` drives it with the load model of `zraft.bench.load`: N clients, each one
HTTP/1.1 keep-alive connection with exactly one request in flight, all on one selector
(no threads); puts (`/v3/kv/put`) or linearizable gets (`/v3/kv/range`, etcd's
default), keys cycled over `bench-0` ... by a global counter, `value_size` bytes per put,
gets after a prefill of every key. A reply counts as ok when its status is 200; latency
runs from the send to the selector event that completed the reply. The requests are
built once per key, and replies are not decoded beyond the status line and the length,
so the generator spends less per request on etcd than on zraft (whose replies it
decodes): a comparison that errs in etcd's favour.
"""

from __future__ import annotations

import base64
import json
import selectors
import socket
import subprocess
import time
import urllib.request
from collections import Counter
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from zraft.bench.load import BenchResult, BenchSpec
from zraft.testing.cluster import free_ports, wait_for

RECV_BYTES = 1 << 16


def etcd_request(url: str, path: str, body: dict[str, Any], timeout: float = 1.0) -> Any:
    """One blocking JSON request to etcd's gateway (its decoded answer).

    Raises:
        OSError: no answer (refused, timed out) or an HTTP error.
    """
    request = urllib.request.Request(
        url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=timeout) as answer:
        return json.loads(answer.read())


def b64(data: bytes | str) -> str:
    """etcd's JSON gateway carries bytes as base64 text."""
    return base64.b64encode(data.encode() if isinstance(data, str) else data).decode()


class EtcdCluster:
    """`members` etcd processes on 127.0.0.1, data in `directory`.

    Args:
        binary: the etcd executable.
        directory: where data dirs and logs go.
        members: how many.
        timings: (heartbeat ms, election timeout ms), or None for etcd's defaults
            (100 ms, 1,000 ms).
    """

    def __init__(
        self,
        binary: str,
        directory: Path,
        members: int = 3,
        timings: tuple[int, int] | None = None,
    ) -> None:
        self.binary, self.directory, self.timings = binary, directory, timings
        directory.mkdir(parents=True, exist_ok=True)
        ports = free_ports(2 * members)
        self.names = [f"m{i + 1}" for i in range(members)]
        self.client = {n: f"http://127.0.0.1:{ports[2 * i]}" for i, n in enumerate(self.names)}
        self.peer = {n: f"http://127.0.0.1:{ports[2 * i + 1]}" for i, n in enumerate(self.names)}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self, name: str, state: str = "new") -> None:
        """Start member `name` (its data dir is kept across restarts)."""
        initial = ",".join(f"{n}={self.peer[n]}" for n in self.names)
        timing = []
        if self.timings is not None:
            timing = ["--heartbeat-interval", str(self.timings[0])]
            timing += ["--election-timeout", str(self.timings[1])]
        with (self.directory / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(
                [
                    self.binary,
                    *("--name", name, "--data-dir", str(self.directory / name)),
                    *("--listen-client-urls", self.client[name]),
                    *("--advertise-client-urls", self.client[name]),
                    *("--listen-peer-urls", self.peer[name]),
                    *("--initial-advertise-peer-urls", self.peer[name]),
                    *("--initial-cluster", initial, "--initial-cluster-state", state),
                    *timing,
                ],
                stdout=log,
                stderr=log,
                start_new_session=True,
            )

    def start_all(self) -> None:
        """Start every member."""
        for name in self.names:
            self.start(name)

    def running(self) -> list[str]:
        """The members whose process is alive."""
        return [n for n in self.names if n in self.procs and self.procs[n].poll() is None]

    def leader(self, timeout: float = 20.0) -> str:
        """The member that leads (polled, bounded)."""

        def find() -> str | None:
            for name in self.running():
                try:
                    status = etcd_request(self.client[name], "/v3/maintenance/status", {}, 0.5)
                except OSError:
                    continue
                if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                    return name
            return None

        found: str = wait_for(find, timeout, what="an etcd leader")
        return found

    def pid(self, name: str) -> int:
        """The PID of member `name`."""
        return self.procs[name].pid

    def kill(self, name: str) -> None:
        """SIGKILL member `name` and reap it."""
        self.procs[name].kill()
        self.procs[name].wait(5)

    def close(self) -> None:
        """Kill every process this cluster started, by PID."""
        for proc in self.procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)


class _Conn:
    """One client: a keep-alive connection with at most one request in flight."""

    def __init__(self, url: str) -> None:
        parsed = urlparse(url)
        self.host = f"{parsed.hostname}:{parsed.port}"
        self.sock = socket.create_connection((parsed.hostname, parsed.port), timeout=5)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.buffer = b""
        self.sent_at = 0.0
        self.left: int | None = None

    def request(self, path: str, body: bytes) -> bytes:
        """The bytes of one POST."""
        head = (
            f"POST {path} HTTP/1.1\r\nHost: {self.host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n"
        )
        return head.encode() + body

    def reply(self) -> int | None:
        """The status of the reply complete in the buffer (consumed), or None yet."""
        end = self.buffer.find(b"\r\n\r\n")
        if end < 0:
            return None
        head = self.buffer[:end]
        length, chunked = 0, False
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        done = _chunked_end(self.buffer, end + 4) if chunked else end + 4 + length
        if done is None or len(self.buffer) < done:
            return None
        self.buffer = self.buffer[done:]
        return int(head.split(b" ", 2)[1])


def _chunked_end(buffer: bytes, at: int) -> int | None:
    """Where a chunked body starting at `at` ends (after its last chunk and trailer), or
    None while it is incomplete. Go's server sends one once a reply outgrows its 2 KiB
    write buffer without a Content-Length (etcd's gateway, for a get of a large value)."""
    while True:
        line_end = buffer.find(b"\r\n", at)
        if line_end < 0:
            return None
        size = int(buffer[at:line_end].split(b";", 1)[0], 16)
        if size == 0:
            trailer_end = buffer.find(b"\r\n\r\n", line_end)
            return None if trailer_end < 0 else trailer_end + 4
        at = line_end + 2 + size + 2
        if at > len(buffer):
            return None


class _EtcdEngine:
    """Closed-loop clients on one selector (see the module doc)."""

    def __init__(self, urls: list[str], spec: BenchSpec) -> None:
        self.spec = spec
        self.conns = [_Conn(urls[i % len(urls)]) for i in range(spec.clients)]
        self.selector = selectors.DefaultSelector()
        for conn in self.conns:
            self.selector.register(conn.sock, selectors.EVENT_READ, conn)
        value = b64(b"x" * spec.value_size)
        keys = [b64(f"bench-{i}") for i in range(spec.keys)]
        self.puts = [json.dumps({"key": k, "value": value}).encode() for k in keys]
        self.gets = [json.dumps({"key": k}).encode() for k in keys]
        self.counter = 0
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()

    def _send(self, conn: _Conn, op: str) -> None:
        index = self.counter % self.spec.keys
        self.counter += 1
        if op == "put":
            data = conn.request("/v3/kv/put", self.puts[index])
        else:
            data = conn.request("/v3/kv/range", self.gets[index])
        conn.sent_at = time.monotonic()
        conn.sock.sendall(data)  # small; the kernel buffer takes it at once

    def run(self, op: str, counts: list[int] | None, duration: float | None) -> float:
        """Send until every client sent its count (or the duration ended); returns the
        seconds from the first send to the last reply."""
        began = time.monotonic()
        stop_at = began + duration if duration is not None else None
        busy = 0
        for i, conn in enumerate(self.conns):
            conn.left = counts[i] if counts is not None else None
            if conn.left is None or conn.left > 0:
                self._send(conn, op)
                busy += 1
        last = began
        while busy:
            for key, _ in self.selector.select(self.spec.timeout):
                conn = key.data
                chunk = conn.sock.recv(RECV_BYTES)
                if not chunk:
                    raise ConnectionError("etcd closed a connection")
                conn.buffer += chunk
                status = conn.reply()
                if status is None:
                    continue
                last = time.monotonic()
                if status == 200:
                    self.latencies.append(last - conn.sent_at)
                else:
                    self.errors[f"http_{status}"] += 1
                if conn.left is not None:
                    conn.left -= 1
                more = conn.left > 0 if conn.left is not None else last < (stop_at or 0)
                if more:
                    self._send(conn, op)
                else:
                    busy -= 1
            if time.monotonic() - last > self.spec.timeout:
                raise TimeoutError(f"etcd answered nothing for {self.spec.timeout:g}s")
        return last - began

    def close(self) -> None:
        """Close every connection."""
        self.selector.close()
        for conn in self.conns:
            conn.sock.close()


def run_etcd_bench(urls: list[str], spec: BenchSpec) -> BenchResult:
    """Run `spec` against etcd members at `urls` (client i uses urls[i % len(urls)]).

    Raises:
        ConnectionError, TimeoutError: etcd closed a connection or stopped answering.
    """
    if spec.op == "get":
        # The same keys and value size as the measured gets (zraft's prefill does the same).
        fill = replace(spec, clients=1, requests=spec.keys, duration=None, op="put")
        prefill = _EtcdEngine(urls, fill)
        try:
            prefill.run("put", [spec.keys], None)
        finally:
            prefill.close()
    engine = _EtcdEngine(urls, spec)
    try:
        counts = None if spec.requests is None else [spec.requests] * spec.clients
        elapsed = engine.run(spec.op, counts, spec.duration)
    finally:
        engine.close()
    return BenchResult.of(spec, urls, engine.latencies, engine.errors, elapsed)
