"""A concurrent client workload against a real cluster, recording a history of operations.

`Workload` drives N logical clients from ONE thread with ONE `zmq.Poller`: each client owns
one REQ socket, its own session id and a sequence number, and runs one operation at a time
(random `get`/`put`/`cas`/`delete` on a small key set). Clients are spread over every node's
client endpoint. Every operation becomes an `OpRecord` with its invocation time, completion
time and outcome, in the vocabulary of a Jepsen-style history:

- `ok`: the cluster said it happened (a `get` with the value it saw);
- `fail`: it certainly did not take effect;
- `info`: indeterminate: it may or may not have taken effect, at any time after its
  invocation (the checker must consider both).

How replies are classified (reasoning checked against `zraft/node.py`):

- Writes carry `client`/`seq`. A retry of an operation reuses its seq, so the kv session
  applies the operation at most once however many attempts reach the log (a stale seq is
  refused with `bad_request`, a duplicate answered with the first result). An operation
  therefore stays ONE history entry across its attempts, and the first reply that is
  definite decides it.
- `cas_failed`, `bad_request`, `too_large`: definite, not applied (`fail`). A failed cas
  also reports the value it saw (`OpRecord.current`), kept for inspection only.
- `not_leader`: the node answers it only to a request another node *forwarded* to it and
  that it will not propose (`Node._forward` with `is_forwarded`); the forwarding node
  relays it. Nothing was proposed: this attempt did not apply, try again.
- `unavailable`: two sources. `_answer_expired` for the `parked` bucket ("no leader within
  the request timeout"): a parked request was never proposed nor forwarded (forwarded
  requests expire as `timeout`), so nothing applied. `_answer_write_not_applied`: (a) in
  `_apply`, the entry committed at the write's index has another term; an index holds one
  committed entry forever, so the write's entry can never commit: sound. (b) in
  `_dispatch_write`, a newer-term proposal lands on the index of an older pending write;
  that only proves the old entry is not in *this* leader's log now. An uncommitted entry
  of an older term that survives on other nodes can still be committed by a later leader
  (Raft Figure 8): with 5 nodes a schedule exists where the "not applied" write is applied
  after all. The two cases share one message, so by default `unavailable` counts as
  INDETERMINATE for the attempt (the safe choice: the checker may still apply the write).
  `trust_unavailable=True` treats it as definite, to test the README's claim.
- `timeout`, `internal`, an unknown code, a malformed reply, or no reply within the
  attempt timeout (the REQ socket is then closed and a new one made): indeterminate.
- An operation that runs out of time after all attempts is `fail` if every attempt was
  definitely not applied, else `info`.
- A `get` that never succeeds has no effect on the state: it is recorded with outcome
  `fail` and left out of the history given to the checker.

What comes from the client library's policy (`zraft.client.policy`), so the workload and
`zraft.client.Client` agree: each logical client's `Session` (its id and the seq of each
write, reused by every attempt of it), its `Rotation` over the nodes (the next node after
a failed attempt), replies read as `Reply`, and which error codes mean "not done here"
(`RETRYABLE_ERRORS`). What stays its own, on purpose: the history classification above
(finer than the client's "return or retry"), an attempt limit, no leader preference (the
clients stay spread over the nodes), and a seeded random pause of 20-60 ms before each
retry instead of the client's back-off, so a seed keeps giving the same schedule.

Times are `time.monotonic_ns()` minus an origin shared with the nemesis (one process, one
clock), so operations and faults line up.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zmq

from zraft import wire
from zraft.client.policy import RETRYABLE_ERRORS, Rotation, Session
from zraft.client.reply import Reply
from zraft.net.security import ClientCurve
from zraft.testing.history import HistoryRecorder, Op, Outcome

OK = "ok"
FAIL = "fail"
INFO = "info"

WRITE_KINDS = frozenset({"put", "cas", "delete"})
DEFINITE_FAIL_CODES = frozenset({"cas_failed", "bad_request", "too_large"})
NOT_PROPOSED_CODES = frozenset({"not_leader"})
DEFAULT_MIX: Mapping[str, float] = {"get": 0.4, "put": 0.3, "cas": 0.2, "delete": 0.1}


@dataclass(slots=True)
class OpRecord:
    """One operation of the history, as invoked and as it completed.

    Args:
        index: the order of invocation (0, 1, ...), unique in a run.
        process: the logical client that ran it (one operation at a time per process).
        kind: `get`, `put`, `cas` or `delete`.
        key: the key.
        value: `put`/`cas`: the value written (unique per run); `get`: the value read
            (None = absent), filled in when it completes ok.
        expected: `cas` only: the value it expected (None = the key must be absent).
        invoke_ns: when the first attempt was sent (ns since the run's origin).
        complete_ns: when the deciding reply arrived, or when the client gave up (`info`).
        outcome: `ok`, `fail` or `info`; None while in flight.
        error: the error code that decided a `fail` or `info` (`no_reply` for a
            client-side timeout), None for `ok`.
        attempts: how many times the request was sent.
        attempt_errors: the error code of each attempt that did not decide the operation.
        nodes: the node of each attempt.
        session: the client session id; `seq` its sequence number (writes only).
        current: a failed cas: the current value the leader saw.
        final: whether this is one of the final reads after healing.
        op_id: the id of the same operation in the `HistoryRecorder` (`Op.id`).
    """

    index: int
    process: int
    kind: str
    key: str
    value: str | None = None
    expected: str | None = None
    invoke_ns: int = 0
    complete_ns: int | None = None
    outcome: str | None = None
    error: str | None = None
    attempts: int = 0
    attempt_errors: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    session: str | None = None
    seq: int | None = None
    current: str | None = None
    final: bool = False
    op_id: int = -1

    @property
    def is_write(self) -> bool:
        """Whether the operation may change the state (put, cas, delete)."""
        return self.kind in WRITE_KINDS

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> OpRecord:
        """Parse a line written by `to_json`."""
        return cls(**json.loads(line))


def _text(value: Any) -> str | None:
    """A reply value as str (values are UTF-8 written by this workload), None stays None."""
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return str(value)


@dataclass(slots=True)
class _Client:
    """A logical client: one REQ socket, one session, one operation at a time."""

    number: int
    session: Session
    rotation: Rotation  # `current` is the node of the socket and of the next attempt
    socket: zmq.Socket[bytes] | None = None
    op: OpRecord | None = None
    frame: bytes = b""
    waiting: bool = False  # a request is out on `socket`
    attempt_deadline: int = 0  # ns, while waiting
    op_deadline: int = 0  # ns: no new attempt after this
    wake_ns: int = 0  # ns: when the next op or retry starts, while not waiting
    maybe_applied: bool = False  # some attempt of the current write is indeterminate
    script: list[tuple[str, str]] = field(default_factory=list)  # scripted (kind, key)


class Workload:
    """N concurrent clients issuing random operations to a cluster, recording a history.

    Args:
        endpoints: node id -> client endpoint; clients start spread over them in order.
        clients: how many concurrent logical clients.
        keys: how many keys (`k0` .. `k{keys-1}`).
        seed: seeds the choice of operations, keys, think times and nodes.
        origin_ns: `time.monotonic_ns()` at the start of the run (shared with the nemesis).
        attempt_timeout_s: wait this long for a reply before giving the attempt up; should
            exceed the cluster's request timeout, so a live node answers first.
        op_timeout_s: no new attempt of an operation starts after this.
        max_attempts: at most this many attempts per operation (0: until `op_timeout_s`);
            1 gives a history without retries, where every doubtful write is `info`.
        think_s: a uniform random pause between one client's operations (min, max).
        mix: operation kind -> weight.
        session_prefix: session ids are `<prefix>-c<number>`; unique per cluster.
        trust_unavailable: count `unavailable` as "not applied" (see the module doc).
        on_record: called with each operation as it completes (e.g. to stream to a file).
        curve: the client keys of a secured cluster (`ProcessCluster.curve`); None: plaintext.
    """

    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        clients: int = 5,
        keys: int = 5,
        seed: int = 0,
        origin_ns: int | None = None,
        attempt_timeout_s: float = 2.0,
        op_timeout_s: float = 5.0,
        max_attempts: int = 0,
        think_s: tuple[float, float] = (0.0, 0.01),
        mix: Mapping[str, float] = DEFAULT_MIX,
        session_prefix: str = "w",
        trust_unavailable: bool = False,
        on_record: Callable[[OpRecord], None] | None = None,
        curve: ClientCurve | None = None,
    ) -> None:
        if clients < 1 or keys < 1 or not endpoints:
            raise ValueError("need at least one client, one key and one endpoint")
        self._node_ids = list(endpoints)
        self._endpoints = dict(endpoints)
        self._rng = random.Random(seed)
        self._origin_ns = time.monotonic_ns() if origin_ns is None else origin_ns
        self._attempt_timeout_ns = int(attempt_timeout_s * 1e9)
        self._op_timeout_ns = int(op_timeout_s * 1e9)
        self._max_attempts = max_attempts
        self._think_ns = (int(think_s[0] * 1e9), int(think_s[1] * 1e9))
        self._kinds = list(mix)
        self._weights = [mix[k] for k in self._kinds]
        self._trust_unavailable = trust_unavailable
        self._on_record = on_record
        self._curve = curve  # the client keys of a secured cluster (None: plaintext)
        self.keys = [f"k{i}" for i in range(keys)]
        self.records: list[OpRecord] = []
        # The checker's view of the same operations; times in seconds since the origin.
        self.recorder = HistoryRecorder(clock=lambda: self.now_ns() / 1e9)
        # The last value each key was seen to hold; a cas usually expects it.
        self._last_seen: dict[str, str | None] = dict.fromkeys(self.keys)
        self._written: dict[str, list[str]] = {key: [] for key in self.keys}
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._poller = zmq.Poller()
        self._clients = [self._new_client(i, f"{session_prefix}-c{i}", i) for i in range(clients)]
        self._closed = False

    # --- public -------------------------------------------------------------------------

    def now_ns(self) -> int:
        """Nanoseconds since the run's origin."""
        return time.monotonic_ns() - self._origin_ns

    def run(self, duration_s: float, should_stop: Callable[[], bool] | None = None) -> None:
        """Run random operations for `duration_s`, then let in-flight operations finish.

        No operation starts after the duration (or after `should_stop()` turns true); the
        ones in flight run until they are decided or out of attempts, which is bounded by
        `op_timeout_s + attempt_timeout_s`.
        """
        stop_at = self.now_ns() + int(duration_s * 1e9)
        for client in self._clients:
            client.wake_ns = self.now_ns()

        def starting() -> bool:
            return self.now_ns() < stop_at and not (should_stop is not None and should_stop())

        self._loop(self._clients, lambda c: self._random_op(c) if starting() else None)

    def final_reads(self, timeout_s: float = 30.0) -> dict[str, str | None]:
        """Read every key (linearizable), retrying until each read succeeds or time runs out.

        The reads go into the history (`final=True`) like any other operation, so the
        checker validates them too; they are issued one at a time by one extra client that
        tries every node in turn.

        Returns:
            key -> value for every key whose read succeeded.
        """
        number = len(self._clients) + 1000
        reader = self._new_client(number, f"final-{number}", 0)
        reader.script = [("get", key) for key in self.keys]
        reader.wake_ns = self.now_ns()
        saved = self._op_timeout_ns, self._max_attempts
        self._op_timeout_ns, self._max_attempts = int(timeout_s * 1e9), 0
        try:
            self._loop([reader], self._scripted_op)
        finally:
            self._op_timeout_ns, self._max_attempts = saved
            self._drop_socket(reader)
        return {
            op.key: op.value
            for op in self.records
            if op.final and op.outcome == OK and op.kind == "get"
        }

    def close(self) -> None:
        """Close every socket (linger 0) and the context."""
        if self._closed:
            return
        self._closed = True
        for client in self._clients:
            self._drop_socket(client)
        self._context.destroy(linger=0)

    def _new_client(self, number: int, session_id: str, start: int) -> _Client:
        """Logical client `number`, first at node `start` (modulo the nodes)."""
        rotation = Rotation([self._endpoints[node_id] for node_id in self._node_ids], start=start)
        return _Client(number, Session(session_id), rotation)

    # --- the loop -----------------------------------------------------------------------

    def _loop(self, clients: list[_Client], next_op: Callable[[_Client], OpRecord | None]) -> None:
        """Serve `clients` until none has an operation in flight and `next_op` gives none."""
        active = {id(c): c for c in clients}
        while active:
            now = self.now_ns()
            for client in list(active.values()):
                if client.waiting and now >= client.attempt_deadline:
                    self._attempt_failed(client, "no_reply", maybe=True, drop_socket=True)
                if not client.waiting and now >= client.wake_ns:
                    if client.op is None:
                        client.op = next_op(client)
                        if client.op is None:
                            del active[id(client)]
                            continue
                    self._send(client)
            if not active:
                break
            waiting = {c.socket: c for c in active.values() if c.waiting}
            timers = [c.attempt_deadline if c.waiting else c.wake_ns for c in active.values()]
            timeout_ms = max(0, (min(timers) - self.now_ns()) // 1_000_000 + 1)
            for sock, _ in self._poller.poll(timeout_ms):
                client = waiting.get(sock)
                if client is None:
                    continue
                frames = sock.recv_multipart()
                client.waiting = False
                self._handle_reply(client, frames)

    def _random_op(self, client: _Client) -> OpRecord:
        kind = self._rng.choices(self._kinds, self._weights)[0]
        key = self._rng.choice(self.keys)
        if self._rng.random() < 0.2:  # keep clients spread over all nodes
            self._drop_socket(client)
            client.rotation.move_to(self._rng.randrange(len(self._node_ids)))
        return self._new_op(client, kind, key)

    def _scripted_op(self, client: _Client) -> OpRecord | None:
        if not client.script:
            return None
        kind, key = client.script.pop(0)
        op = self._new_op(client, kind, key)
        op.final = True
        return op

    def _new_op(self, client: _Client, kind: str, key: str) -> OpRecord:
        op = OpRecord(index=len(self.records), process=client.number, kind=kind, key=key)
        self.records.append(op)
        fields: dict[str, Any] = {"key": key}
        if kind in WRITE_KINDS:
            # One seq per operation: every attempt re-sends this frame, so the session
            # applies it at most once.
            session = client.session.take()
            op.session, op.seq = session["client"], session["seq"]
            fields.update(session)
        if kind in ("put", "cas"):
            op.value = f"{op.session}:{op.seq}"  # unique: a read names its write
            fields["value"] = op.value
        if kind == "cas":
            op.expected = self._pick_expected(key)
            fields["expected"] = op.expected
        client.frame = wire.encode_request(kind, **fields)
        client.maybe_applied = False
        op.invoke_ns = self.now_ns()
        op.op_id = self.recorder.invoke(
            client.number,
            kind,
            key,
            value=None if op.value is None else op.value.encode(),
            expected=None if op.expected is None else op.expected.encode(),
            at=op.invoke_ns / 1e9,
        )
        client.op_deadline = op.invoke_ns + self._op_timeout_ns
        return op

    def _pick_expected(self, key: str) -> str | None:
        """Usually the value last seen (so a cas often succeeds), sometimes an older one."""
        if self._rng.random() < 0.8 or not self._written[key]:
            return self._last_seen[key]
        return self._rng.choice([*self._written[key][-5:], None])

    # --- attempts -----------------------------------------------------------------------

    def _socket(self, client: _Client) -> zmq.Socket[bytes]:
        if client.socket is None:
            sock = self._context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            endpoint = client.rotation.current
            if self._curve is not None:
                self._curve.apply(sock, endpoint)
            sock.connect(endpoint)
            self._poller.register(sock, zmq.POLLIN)
            client.socket = sock
        return client.socket

    def _drop_socket(self, client: _Client) -> None:
        if client.socket is not None:
            self._poller.unregister(client.socket)
            client.socket.close(linger=0)
            client.socket = None

    def _send(self, client: _Client) -> None:
        assert client.op is not None
        sock = self._socket(client)
        sock.send(client.frame)
        client.op.attempts += 1
        client.op.nodes.append(self._node_ids[client.rotation.position])
        client.waiting = True
        client.attempt_deadline = self.now_ns() + self._attempt_timeout_ns

    def _handle_reply(self, client: _Client, frames: list[bytes]) -> None:
        op = client.op
        assert op is not None
        try:
            if len(frames) != 1:
                raise wire.DecodeError("a reply is one frame")
            reply = Reply.from_map(wire.decode_reply(frames[0]))
        except wire.DecodeError:
            self._attempt_failed(client, "malformed_reply", maybe=True, drop_socket=True)
            return
        if reply.ok:
            if op.kind == "get":
                op.value = _text(reply.raw.get("value"))
            self._complete(client, OK, None)
            return
        code = reply.error_code if reply.error_code is not None else "unknown"
        if code in DEFINITE_FAIL_CODES:
            if code == "cas_failed":
                op.current = _text(reply.raw.get("value"))
                self._last_seen[op.key] = op.current
            self._complete(client, FAIL, code)
        else:
            maybe = not self._proves_not_applied(code)
            self._attempt_failed(client, code, maybe=maybe, drop_socket=False)

    def _proves_not_applied(self, code: str) -> bool:
        """Whether an error answer proves that this attempt did not take effect.

        The client policy retries every `RETRYABLE_ERRORS` code elsewhere ("not done
        here"), which a session makes safe. The checker needs more: `unavailable` may hide
        a write that a later leader still commits (see the module doc), so it counts as
        not applied only with `trust_unavailable`.
        """
        if code not in RETRYABLE_ERRORS:
            return False
        return code in NOT_PROPOSED_CODES or self._trust_unavailable

    def _attempt_failed(
        self, client: _Client, code: str, *, maybe: bool, drop_socket: bool
    ) -> None:
        """An attempt ended without a decision: retry on the next node, or give up."""
        op = client.op
        assert op is not None
        client.waiting = False
        op.attempt_errors.append(code)
        if maybe and op.is_write:
            client.maybe_applied = True
        if drop_socket:
            self._drop_socket(client)  # a REQ socket that got no reply cannot send again
        now = self.now_ns()
        if now >= client.op_deadline or 0 < self._max_attempts <= op.attempts:
            self._complete(client, INFO if client.maybe_applied else FAIL, code)
            return
        # Another node may have a leader; moving on also spreads load after a fault.
        self._drop_socket(client)
        client.rotation.advance()
        # A seeded random pause, not the client's back-off: the draw keeps a seed's
        # schedule (and so its history) what it always was.
        client.wake_ns = now + self._rng.randrange(20_000_000, 60_000_000)

    def _complete(self, client: _Client, outcome: str, code: str | None) -> None:
        op = client.op
        assert op is not None
        op.complete_ns = self.now_ns()
        op.outcome = outcome
        op.error = code
        if outcome == OK:
            if op.kind == "get" or op.kind in ("put", "cas"):
                self._last_seen[op.key] = op.value
            elif op.kind == "delete":
                self._last_seen[op.key] = None
        if op.kind in ("put", "cas") and op.value is not None:
            self._written[op.key].append(op.value)
        self._record_completion(op)
        client.op = None
        low, high = self._think_ns
        client.wake_ns = op.complete_ns + (self._rng.randrange(low, high) if high > low else low)
        if self._on_record is not None:
            self._on_record(op)

    def _record_completion(self, op: OpRecord) -> None:
        """Tell the recorder how `op` ended (see `zraft.testing.history.Op`)."""
        result: bytes | None = None
        found: bool | None = None
        if op.kind == "get" and op.outcome == OK:
            result = None if op.value is None else op.value.encode()
            found = op.value is not None
        elif op.error == "cas_failed":
            # The kv answers a failed cas with the current value, None when absent.
            result = None if op.current is None else op.current.encode()
            found = op.current is not None
        self.recorder.complete(
            op.op_id,
            op.outcome or INFO,
            result=result,
            found=found,
            error=op.error if op.outcome == FAIL else None,
            at=(op.complete_ns or 0) / 1e9,
        )

    def history(self) -> list[Op]:
        """The recorded history for the checker: every write, and every get that returned.

        A get that failed or got no answer did nothing, so it is left out.
        """
        return [
            op for op in self.recorder.history() if op.kind != "get" or op.outcome is Outcome.OK
        ]


# --- reading a history back and judging it ----------------------------------------------


def write_history(path: Path, records: Iterable[OpRecord]) -> None:
    """Write one JSON line per operation."""
    with path.open("w") as out:
        for op in records:
            out.write(op.to_json() + "\n")


def read_history(path: Path) -> list[OpRecord]:
    """Read a file written by `write_history`."""
    return [OpRecord.from_json(line) for line in path.read_text().splitlines() if line.strip()]


@dataclass(frozen=True, slots=True)
class LostWrite:
    """An acknowledged write that the final state contradicts.

    `write` completed ok, yet the key's final value comes from writes (`sources`) that all
    completed before `write` was even invoked: `write` must have been applied after them,
    so the final value cannot be theirs. `sources` is empty when the final value is the
    initial state (absent, never deleted).
    """

    key: str
    final: str | None
    write: OpRecord
    sources: tuple[OpRecord, ...]


def lost_writes(records: Sequence[OpRecord], final: Mapping[str, str | None]) -> list[LostWrite]:
    """Acknowledged writes lost according to the final reads (see `LostWrite`).

    Only keys with a final read count. For a final value v, the possible sources are the
    put/cas operations that wrote v (ok or info); for an absent key, the deletes (ok or
    info) and the initial state. An `info` source may have been applied at any time up to
    the end, so it excuses every write; an ok source excuses writes invoked before it
    completed.
    """
    lost: list[LostWrite] = []
    history = [op for op in records if not op.final]
    for key, value in final.items():
        writes = [op for op in history if op.key == key and op.is_write]
        if value is None:
            sources = [op for op in writes if op.kind == "delete" and op.outcome in (OK, INFO)]
        else:
            sources = [
                op
                for op in writes
                if op.kind in ("put", "cas") and op.value == value and op.outcome in (OK, INFO)
            ]
        if any(op.outcome == INFO for op in sources):
            continue
        latest_source_end = max((op.complete_ns or 0 for op in sources), default=-1)
        for op in writes:
            if op.outcome != OK or op in sources:
                continue
            if op.invoke_ns > latest_source_end:
                lost.append(LostWrite(key, value, op, tuple(sources)))
    return lost


def outcome_counts(records: Iterable[OpRecord]) -> dict[str, dict[str, int]]:
    """kind -> outcome -> count (final reads included)."""
    counts: dict[str, dict[str, int]] = {}
    for op in records:
        per_kind = counts.setdefault(op.kind, {})
        outcome = op.outcome or "pending"
        per_kind[outcome] = per_kind.get(outcome, 0) + 1
    return counts
