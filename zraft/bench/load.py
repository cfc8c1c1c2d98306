"""A closed-loop load generator: N concurrent clients on one poller, no threads.

Each simulated client owns one REQ socket and keeps exactly one request in flight: when
its reply arrives, the latency is recorded and the next request goes out at once. Clients
are spread round-robin over the given endpoints. All sockets share one `zmq.Poller`, so
one Python thread drives hundreds of clients.

Rules it keeps:

- **Puts carry sessions** (`client`, `seq`), one session per simulated client, like the
  real client library, so the load has the production shape (the server's dedup table is
  exercised). A request without a reply within `timeout` counts as a `timeout` error; its
  socket is closed and replaced by one to the next endpoint (Lazy Pirate with failover),
  and the client goes on with its next seq.
- **The client library's policy** (`zraft.client.policy`) supplies what a client decides:
  each simulated client's `Session` (its id and seqs) and `Rotation` (its endpoint, and
  the next one after a timeout), and replies are read as `Reply`. A request is never
  retried (each one is measured once, whatever its answer), so the policy's `Exchange`,
  its back-off and leader preference are not used: they would change what is measured.
- **Keys** cycle over `keys` distinct keys (`bench-0` ... ) by a global counter: no
  randomness, so a run is reproducible. `value_size` bytes of filler per put.
- **`get` runs prefill first**: one put per key, not measured, so reads find values.
- Latency is measured from the send to the poll that saw the reply; percentiles are by
  nearest rank over every successful request.
- No printing: progress goes to an optional callback, results come back as `BenchResult`.
"""

from __future__ import annotations

import math
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from zraft import wire
from zraft.client.policy import Rotation, Session
from zraft.client.reply import Reply
from zraft.net.security import ClientCurve

BENCH_OPS = ("put", "get")
"""Operations `run_bench` can drive."""

_NOBLOCK = int(zmq.NOBLOCK)  # an int: pyzmq's enum flag costs a construction per use

PROGRESS_INTERVAL_S = 1.0
"""How often the progress callback is called while a run lasts."""


@dataclass(frozen=True, slots=True)
class BenchSpec:
    """What to run.

    Attributes:
        clients: concurrent clients (one request in flight each).
        requests: requests per client; None to run for `duration` instead.
        duration: seconds to keep issuing requests (when `requests` is None).
        op: `put` or `get`.
        value_size: bytes per value.
        keys: distinct keys cycled over.
        timeout: seconds one request may wait for its reply.
        consistency: of the gets.

    Raises:
        ValueError: a bad combination (both or neither of requests/duration, counts <= 0).
    """

    clients: int = 8
    requests: int | None = 1000
    duration: float | None = None
    op: str = "put"
    value_size: int = 256
    keys: int = 1000
    timeout: float = 6.0
    consistency: str = "linearizable"

    def __post_init__(self) -> None:
        if (self.requests is None) == (self.duration is None):
            raise ValueError("give exactly one of requests and duration")
        if self.clients < 1 or self.keys < 1 or self.value_size < 0:
            raise ValueError("clients and keys must be >= 1, value_size >= 0")
        if (self.requests is not None and self.requests < 1) or (
            self.duration is not None and self.duration <= 0
        ):
            raise ValueError("requests must be >= 1 and duration > 0")
        if self.op not in BENCH_OPS:
            raise ValueError(f"op must be one of {', '.join(BENCH_OPS)}")
        if self.timeout <= 0:
            raise ValueError("timeout must be > 0")


@dataclass(frozen=True, slots=True)
class BenchResult:
    """What a run measured.

    Attributes:
        ops: requests answered with ok.
        errors: requests that failed (error replies and timeouts).
        error_codes: failures by code (`timeout` for a missing reply).
        elapsed: seconds from the first send to the last reply.
        latencies_ms: p50, p90, p99, max and mean over the successful requests (0 if none).
    """

    spec: BenchSpec
    endpoints: tuple[str, ...]
    ops: int
    errors: int
    error_codes: dict[str, int]
    elapsed: float
    latencies_ms: dict[str, float] = field(default_factory=dict)

    @classmethod
    def of(
        cls,
        spec: BenchSpec,
        endpoints: Sequence[str],
        latencies: Sequence[float],
        errors: Counter[str],
        elapsed: float,
    ) -> BenchResult:
        """The result of a run: its ok latencies in seconds, its failures by code."""
        return cls(
            spec=spec,
            endpoints=tuple(endpoints),
            ops=len(latencies),
            errors=errors.total(),
            error_codes=dict(errors),
            elapsed=elapsed,
            latencies_ms=latency_summary(sorted(latencies)),
        )

    @property
    def ops_per_s(self) -> float:
        """Successful requests per second over the run."""
        return self.ops / self.elapsed if self.elapsed > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """The result as plain JSON-able values (the shape `zraft-client --json bench` prints)."""
        return {
            "op": self.spec.op,
            "clients": self.spec.clients,
            "requests_per_client": self.spec.requests,
            "duration_s": self.spec.duration,
            "value_size": self.spec.value_size,
            "keys": self.spec.keys,
            "endpoints": list(self.endpoints),
            "ops": self.ops,
            "errors": self.errors,
            "error_codes": dict(self.error_codes),
            "elapsed_s": round(self.elapsed, 6),
            "ops_per_s": round(self.ops_per_s, 1),
            "latency_ms": {k: round(v, 3) for k, v in self.latencies_ms.items()},
        }


@dataclass(frozen=True, slots=True)
class BenchProgress:
    """A progress report: totals so far and the rate since the previous report."""

    ops: int
    errors: int
    elapsed: float
    ops_per_s: float


@dataclass(slots=True)
class _Slot:
    """One simulated client: its socket, endpoints, session and in-flight request."""

    sock: zmq.Socket[bytes]
    rotation: Rotation  # `current` is where `sock` is connected
    session: Session
    left: int | None = None  # requests still to send (None: until the duration ends)
    sent_at: float = 0.0
    busy: bool = False


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """The nearest-rank percentile `pct` (0 < pct <= 100) of an ascending sequence (0 if empty)."""
    if not sorted_values:
        return 0.0
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def latency_summary(latencies: Sequence[float]) -> dict[str, float]:
    """p50, p90, p99, max and mean in milliseconds of ascending latencies in seconds (0s if
    there are none)."""
    return {
        "p50": percentile(latencies, 50) * 1000,
        "p90": percentile(latencies, 90) * 1000,
        "p99": percentile(latencies, 99) * 1000,
        "max": (latencies[-1] if latencies else 0.0) * 1000,
        "mean": (sum(latencies) / len(latencies) if latencies else 0.0) * 1000,
    }


class _Engine:
    """Runs one phase (prefill or measured) of a benchmark over a set of slots."""

    def __init__(
        self,
        context: zmq.Context[Any],
        endpoints: Sequence[str],
        spec: BenchSpec,
        clock: Callable[[], float],
        curve: ClientCurve | None = None,
    ) -> None:
        self._context = context
        self._curve = curve
        self._endpoints = tuple(endpoints)
        self._spec = spec
        self._clock = clock
        self._value = (b"0123456789abcdef" * (spec.value_size // 16 + 1))[: spec.value_size]
        self._keys = [f"bench-{i}".encode() for i in range(spec.keys)]
        # A get of a key is the same request every time: encoded once (the etcd load of
        # `zraft.bench.etcd` builds its requests once too).
        self._gets = [
            wire.encode_request("get", key=key, consistency=spec.consistency) for key in self._keys
        ]
        run_id = secrets.token_hex(4)
        self._poller = zmq.Poller()
        self._slots: dict[zmq.Socket[bytes], _Slot] = {}
        for i in range(spec.clients):
            rotation = Rotation(self._endpoints, start=i)  # spread round-robin
            session = Session(f"bench-{run_id}-{i}")
            slot = _Slot(self._new_socket(rotation.current), rotation, session)
            self._slots[slot.sock] = slot
        self._counter = 0  # picks the key of each request
        self.latencies: list[float] = []
        self.errors: Counter[str] = Counter()

    def _new_socket(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = self._context.socket(zmq.REQ)
        sock.linger = 0
        if self._curve is not None:
            self._curve.apply(sock, endpoint)
        sock.connect(endpoint)
        self._poller.register(sock, zmq.POLLIN)
        return sock

    def close(self) -> None:
        """Close every socket (linger 0)."""
        for sock in self._slots:
            sock.close(linger=0)
        self._slots.clear()

    def _send(self, slot: _Slot, op: str, now: float) -> None:
        index = self._counter % len(self._keys)
        self._counter += 1
        if op == "put":
            fields = slot.session.take()
            frame = wire.encode_request("put", key=self._keys[index], value=self._value, **fields)
        else:
            frame = self._gets[index]
        slot.sock.send(frame, _NOBLOCK)
        slot.sent_at = now
        slot.busy = True
        if slot.left is not None:
            slot.left -= 1

    def _replace_socket(self, slot: _Slot) -> None:
        """Lazy Pirate: a REQ socket whose reply is lost cannot send again; start afresh.

        The new socket goes to the next endpoint, so a dead node does not stall its
        clients for the rest of the run.
        """
        del self._slots[slot.sock]
        self._poller.unregister(slot.sock)
        slot.sock.close(linger=0)
        slot.sock = self._new_socket(slot.rotation.advance())
        self._slots[slot.sock] = slot

    def run(
        self,
        op: str,
        per_client: list[int] | None,
        duration: float | None,
        progress: Callable[[BenchProgress], None] | None,
    ) -> float:
        """Drive every slot until its requests are done (or `duration` ends); return elapsed."""
        clock, timeout = self._clock, self._spec.timeout
        start = clock()
        stop_at = start + duration if duration is not None else math.inf
        for slot, count in zip(self._slots.values(), per_client or [], strict=False):
            slot.left = count
        for slot in list(self._slots.values()):
            if slot.left is None or slot.left > 0:
                self._send(slot, op, start)
        next_report, last_ops, last_time = start + PROGRESS_INTERVAL_S, 0, start
        next_expiry_check = start + min(timeout, 0.1)
        last_reply: float | None = None
        busy = sum(slot.busy for slot in self._slots.values())
        while busy:
            wait = min(next_report, next_expiry_check) - clock()
            events = self._poller.poll(max(0, math.ceil(wait * 1000)))
            now = clock()
            # Stop issuing at the end of the run, or once no node has answered for two
            # timeouts: a dead cluster must end the bench, not stall it for hours.
            silent_for = now - (last_reply if last_reply is not None else start)
            issuing = now < stop_at and silent_for <= 2 * timeout
            for sock, _ in events:
                slot = self._slots[sock]
                buf = sock.recv(_NOBLOCK)
                slot.busy = False
                busy -= 1
                last_reply = now
                self._record(buf, now - slot.sent_at)
                if issuing and (slot.left is None or slot.left > 0):
                    self._send(slot, op, now)
                    busy += 1
            if now >= next_expiry_check:
                busy -= self._expire(now, op, issuing)
                next_expiry_check = now + min(timeout, 0.1)
            if now >= next_report:
                ops = len(self.latencies)
                if progress is not None:
                    rate = (ops - last_ops) / (now - last_time) if now > last_time else 0.0
                    progress(BenchProgress(ops, self.errors.total(), now - start, rate))
                next_report, last_ops, last_time = now + PROGRESS_INTERVAL_S, ops, now
        # Up to the last reply: the tail of timed-out requests is not throughput time.
        return (last_reply if last_reply is not None else clock()) - start

    def _record(self, buf: bytes, latency: float) -> None:
        try:
            raw = wire.decode_reply(buf)
        except wire.DecodeError:
            self.errors["malformed_reply"] += 1
            return
        if raw["ok"]:  # the hot path: the generator shares the CPU with what it measures
            self.latencies.append(latency)
            return
        code = Reply.from_map(raw).error_code
        self.errors[code if code is not None else "unknown"] += 1

    def _expire(self, now: float, op: str, issuing: bool) -> int:
        """Count requests older than the timeout as errors; returns how many slots went idle."""
        went_idle = 0
        for slot in list(self._slots.values()):
            if slot.busy and now - slot.sent_at > self._spec.timeout:
                self.errors["timeout"] += 1
                slot.busy = False
                self._replace_socket(slot)
                if issuing and (slot.left is None or slot.left > 0):
                    self._send(slot, op, now)
                else:
                    went_idle += 1
        return went_idle


def run_bench(
    endpoints: Sequence[str],
    spec: BenchSpec,
    *,
    progress: Callable[[BenchProgress], None] | None = None,
    context: zmq.Context[Any] | None = None,
    clock: Callable[[], float] = time.monotonic,
    curve: ClientCurve | None = None,
) -> BenchResult:
    """Run the benchmark `spec` against `endpoints` and return what it measured.

    Args:
        endpoints: client endpoints; client i uses endpoints[i % len(endpoints)].
        spec: the load.
        progress: called about every `PROGRESS_INTERVAL_S` seconds during the measured
            phase.
        context: a zmq.Context to use; by default a private one, terminated at the end.
        clock: the monotonic clock (injectable for tests).
        curve: the client's CURVE keys for a secured cluster (None: plaintext).

    Raises:
        ValueError: no endpoints.
    """
    if not endpoints:
        raise ValueError("run_bench needs at least one endpoint")
    own = context is None
    ctx: zmq.Context[Any] = zmq.Context() if context is None else context
    try:
        if spec.op == "get":
            # Prefill: every key once, spread over the clients; not measured.
            prefill = _Engine(ctx, endpoints, spec, clock, curve)
            try:
                base, extra = divmod(spec.keys, spec.clients)
                counts = [base + (i < extra) for i in range(spec.clients)]
                prefill.run("put", counts, None, None)
            finally:
                prefill.close()
        engine = _Engine(ctx, endpoints, spec, clock, curve)
        try:
            counts = None if spec.requests is None else [spec.requests] * spec.clients
            elapsed = engine.run(spec.op, counts, spec.duration, progress)
        finally:
            engine.close()
    finally:
        if own:
            ctx.term()
    return BenchResult.of(spec, endpoints, engine.latencies, engine.errors, elapsed)
