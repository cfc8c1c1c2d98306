"""Jepsen's bank workload on zraft's transactions, and the checks of its history.

The workload
------------
`N` accounts, keys `bank/0` .. `bank/{N-1}`, hold integer balances written as decimal
strings. One transaction creates them all (`init`: every account's `mod` must be 0, i.e.
absent; the success branch puts every balance, `total` in all), before the nemesis starts.
Then `BankWorkload` drives several logical clients from ONE thread with ONE `zmq.Poller`
(one REQ socket, one session, one operation at a time each, spread over every node, as
`tests.workload.Workload` does for the register) doing:

- **transfers**: a `txn` that reads nothing: it compares the `mod` (mod_revision) of two
  accounts with what this client last saw them at, and on success puts both new balances
  (a random amount, at most the source's balance, so no balance goes negative). A client
  knows balances from its last read of every account and from its own successful
  transfers; after a failed compare, or a transfer whose outcome is unknown, it reads
  again before its next transfer.
- **reads**: one `range` over the `bank/` prefix, returning every account at ONE revision
  (`header.revision`). Linearizable by default; some are `serializable` (served by the
  node asked, possibly stale), some read at a past revision (`revision = R`, R a revision
  this client saw): those check the store's history, snapshots and InstallSnapshot
  included.

Outcomes follow `tests.workload` (read its module doc: which error codes prove "not
applied"): a transfer carries a session, every attempt re-sends the same frame (same
`seq`), so the node applies it at most once and answers a retry with the first answer.
`ok` = applied (succeeded, with the revision it made, `header.revision`); `fail` = not
applied: its compare failed (`compare_failed`: the one application evaluated it false),
a definite error, or every attempt was refused before being proposed; `info` = unknown
(a timeout, a lost reply, `unavailable` unless `trust_unavailable`): it may have been
applied, at a revision nobody told us. A read that never succeeds did nothing (`fail`);
`compacted` and `future_revision` answers are kept as `fail` with their code.

The checks (pure functions over `BankOp` lists; `check_bank` runs them all)
--------------------------------------------------------------------------
Facts they rely on: the bank is the only writer, so every revision above the init's
(`r0`) was made by exactly one applied transfer; an `ok` transfer made exactly the
revision its reply names, and wrote both accounts there; a `fail` transfer wrote nothing;
an `info` transfer wrote both of its accounts at ONE unknown revision, or nothing. An
*observation* is what an operation says the accounts held at revision R: an ok read
(R = its `revision` field, or its `header.revision` when reading now), and an ok transfer
made at r (its compares held at r - 1: both accounts had the mods it expected, with the
balances the client knew at those mods).

a. `check_invariant` (the bank invariant): every ok read at or after `r0` sees exactly the
   N accounts (`count` N, no `more`), integer balances, none negative, summing to `total`.
b. `check_range_at_revision`: each account's record (balance v, mod m) in an observation
   at R must be the state that the writes at revisions <= R produce. Let K be the latest
   *known* write (init or ok transfer) to the account at a revision <= R:
   - `mod-above-revision`: m > R;
   - `missed-write`: m < rev(K), or a read shows no record at all: it misses K
     (`split-transfer` when K's other account shows K's revision in the same
     observation: K's two puts were seen apart);
   - `wrong-value`: m = rev(K) but v is not what K wrote;
   - `foreign-write`: m is the revision of a known write that did not write the account;
   - `unexplained-write`: m > rev(K) and unknown: only an `info` transfer T can have made
     it, and one must fit every record seen at m: T writes v to the account, was invoked
     before the observation completed, and for both its accounts c, the mod it expected
     lies in [the latest known write to c before m, m), the first known write to c after
     m expected a mod >= m, and in the same observation c shows a mod >= m (equal only
     with T's balance). An account whose last known write <= R was superseded is thus
     accepted only if an indeterminate transfer can have superseded it;
   - `info-matching`: the unknown revisions must get DISTINCT info transfers (each
     applied at most once, one command per revision): a bipartite matching must exist;
   - `not-yet-invoked`: a read at R reflects a known write invoked after it completed;
   - `record-identity` and `version`: (account, mod) always shows the same balance,
     version and create_revision; versions grow with mods by at least the known writes
     in between; create_revision is r0 (accounts are never deleted);
   - `history-order` / `same-revision`: per account, across observations ordered by R,
     mods never go back, and a record in force at R1 <= R2 that is still shown at R2 was
     shown at R1 too: two reads at the same revision are equal;
   - `duplicate-revision`: two ok transfers name the same revision;
   - `revision-accounting`: every revision in (r0, R] is an applied transfer, so R - r0
     <= (known ok transfers in (r0, R]) + (info transfers invoked before it completed);
   - `stale-revision` (real time, so per client too): a linearizable read reflects a
     revision at least that of any ok operation completed before it was invoked, and an
     ok transfer makes a revision above it; `future-revision`: a linearizable read at a
     revision acknowledged before it began was answered `future_revision`.
c. `check_final`: after healing, a final linearizable read exists (`final-missing`), its
   revision is at least every ok operation's (`final-behind`) and every ok transfer's
   writes are visible in it or superseded by later ones (`lost-transfer`); the rules
   of (a) and (b) apply to it like to any read, so it equals the state after the last
   write.

`run_bank` is a whole run under the nemesis (`tests.nemesis.make_rig` and
`drive_under_faults`: the same cluster, faults and snapshot settings as the register
run), used by `bin/zraft-nemesis --workload bank` and `tests/integration/test_bank.py`.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
import time
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zmq

from tests import workload as wl
from tests.checkrun import write_faults
from tests.faultplan import Fault, count_faults
from tests.nemesis import (
    FAULT_KINDS,
    Rig,
    drive_under_faults,
    make_rig,
    overlapping_faults,
    snapshot_counts,
)
from tests.procs import ProcessCluster
from zraft import wire
from zraft.client.policy import RETRYABLE_ERRORS, Rotation, Session
from zraft.client.reply import Reply
from zraft.net.security import ClientCurve

OK, FAIL, INFO = wl.OK, wl.FAIL, wl.INFO

PREFIX = "bank/"
"""The accounts' key prefix."""

TXN_FAIL_CODES = wl.DEFINITE_FAIL_CODES | {"too_many_ops", "no_space", "forbidden"}
"""Error answers that prove a transaction was not applied (it is refused as a whole)."""

READ_FAIL_CODES = frozenset({"compacted", "future_revision"})
"""Definite answers to a read at a past revision: recorded as they are, never retried."""


def account_keys(accounts: int) -> list[str]:
    """The keys of `accounts` accounts."""
    return [f"{PREFIX}{i}" for i in range(accounts)]


@dataclass(slots=True)
class BankOp:
    """One operation of a bank history.

    Args:
        index: order of invocation, unique in a run.
        process: the logical client.
        kind: `init`, `transfer` or `read`.
        invoke_ns, complete_ns: ns since the run's origin (first send; deciding reply).
        outcome: `ok`, `fail` or `info` (None while in flight).
        error: the code that decided a fail/info (`compare_failed`: a compare failed).
        attempts, attempt_errors, nodes: one entry per attempt (as `wl.OpRecord`).
        session, seq: the session of a write.
        expected: init/transfer: account -> the mod its compare requires (0: absent).
        before: transfer: account -> the balance the client knew at that mod.
        writes: init/transfer: account -> the balance it puts.
        succeeded: a txn's `succeeded` (None: no such answer).
        serializable: a read served by the node asked.
        at_revision: a read at a past revision (0: now).
        revision: `header.revision` of the deciding answer (a read: the node's current
            revision; an applied txn: the revision it made).
        kvs: an ok read: account -> [balance text, mod, version, create].
        count, more: an ok read's `count` and `more`.
        compact_revision: a `compacted` answer's.
        final: the final read after healing.
    """

    index: int
    process: int
    kind: str
    invoke_ns: int = 0
    complete_ns: int | None = None
    outcome: str | None = None
    error: str | None = None
    attempts: int = 0
    attempt_errors: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    session: str | None = None
    seq: int | None = None
    expected: dict[str, int] = field(default_factory=dict)
    before: dict[str, int] = field(default_factory=dict)
    writes: dict[str, int] = field(default_factory=dict)
    succeeded: bool | None = None
    serializable: bool = False
    at_revision: int = 0
    revision: int | None = None
    kvs: dict[str, list[Any]] | None = None
    count: int | None = None
    more: bool | None = None
    compact_revision: int | None = None
    final: bool = False

    @property
    def label(self) -> str:
        """The kind, reads split by mode: `read`, `read-serializable`, `read-at`."""
        if self.kind != "read":
            return self.kind
        if self.at_revision:
            return "read-at"
        return "read-serializable" if self.serializable else "read"

    @property
    def read_revision(self) -> int | None:
        """The revision an ok read reflects (`at_revision`, else its header's)."""
        return self.at_revision or self.revision

    @property
    def is_applied(self) -> bool:
        """An init or transfer known to be applied (ok and succeeded)."""
        return self.kind != "read" and self.outcome == OK and bool(self.succeeded)

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> BankOp:
        """Parse a line written by `to_json`."""
        return cls(**json.loads(line))


def write_ops(path: Path, ops: Iterable[BankOp]) -> None:
    """One JSON line per operation."""
    with path.open("w") as out:
        for op in ops:
            out.write(op.to_json() + "\n")


def read_ops(path: Path) -> list[BankOp]:
    """Read a file written by `write_ops` (or streamed by `run_bank`)."""
    return [BankOp.from_json(line) for line in path.read_text().splitlines() if line.strip()]


# --- the workload -------------------------------------------------------------------------


@dataclass(slots=True)
class _Client:
    """A logical client: one REQ socket, one session, one operation at a time."""

    number: int
    session: Session
    rotation: Rotation
    socket: zmq.Socket[bytes] | None = None
    op: BankOp | None = None
    frame: bytes = b""
    waiting: bool = False
    attempt_deadline: int = 0  # ns, while waiting
    op_deadline: int = 0  # ns: no new attempt after this
    wake_ns: int = 0  # ns: when the next op or retry starts, while not waiting
    maybe_applied: bool = False  # an attempt of the current write is indeterminate
    known: dict[str, tuple[int, int]] = field(default_factory=dict)  # account -> (balance, mod)
    fresh: bool = False  # whether `known` is worth a transfer
    max_seen: int = 0  # the highest revision this client was told of
    script: list[Callable[[_Client], BankOp]] = field(default_factory=list)


class BankWorkload:
    """Concurrent bank clients against a cluster, recording a `BankOp` history.

    Args:
        endpoints: node id -> client endpoint; clients start spread over them in order.
        accounts: how many accounts; total: the sum of their balances.
        clients: concurrent logical clients.
        seed: seeds every choice (ops, accounts, amounts, think times, nodes, retries).
        origin_ns: `time.monotonic_ns()` at the start of the run (shared with the nemesis).
        attempt_timeout_s, op_timeout_s, max_attempts, think_s, trust_unavailable,
            session_prefix, curve: as `tests.workload.Workload`'s.
        transfer_share: the share of transfers among operations (when the client's
            knowledge is fresh; otherwise it reads first).
        serializable_share: the share of serializable reads among reads of the present.
        past_share: the share of reads at a past revision among operations.
        on_record: called with each operation as it completes.
    """

    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        accounts: int = 5,
        total: int = 500,
        clients: int = 5,
        seed: int = 0,
        origin_ns: int | None = None,
        attempt_timeout_s: float = 2.0,
        op_timeout_s: float = 5.0,
        max_attempts: int = 0,
        think_s: tuple[float, float] = (0.0, 0.01),
        transfer_share: float = 0.5,
        serializable_share: float = 0.2,
        past_share: float = 0.1,
        session_prefix: str = "b",
        trust_unavailable: bool = False,
        on_record: Callable[[BankOp], None] | None = None,
        curve: ClientCurve | None = None,
    ) -> None:
        if clients < 1 or accounts < 2 or total < 0 or not endpoints:
            raise ValueError("need a client, two accounts, a total >= 0 and an endpoint")
        self._node_ids = list(endpoints)
        self._endpoints = dict(endpoints)
        self._rng = random.Random(seed)
        self._origin_ns = time.monotonic_ns() if origin_ns is None else origin_ns
        self._attempt_timeout_ns = int(attempt_timeout_s * 1e9)
        self._op_timeout_ns = int(op_timeout_s * 1e9)
        self._max_attempts = max_attempts
        self._think_ns = (int(think_s[0] * 1e9), int(think_s[1] * 1e9))
        self._shares = (transfer_share, serializable_share, past_share)
        self._trust_unavailable = trust_unavailable
        self._on_record = on_record
        self._curve = curve
        self._prefix = session_prefix
        self.accounts = account_keys(accounts)
        self.total = total
        self.init_revision: int | None = None
        self.records: list[BankOp] = []
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._poller = zmq.Poller()
        self._clients = [self._new_client(i, i) for i in range(clients)]
        self._closed = False

    # --- public -------------------------------------------------------------------------

    def now_ns(self) -> int:
        """Nanoseconds since the run's origin."""
        return time.monotonic_ns() - self._origin_ns

    def initialise(self, timeout_s: float = 30.0) -> BankOp:
        """Create every account in one transaction, retried (same session) until decided.

        Returns:
            The init operation; the bank is usable only if it is ok and succeeded
            (`init_revision` is then set).
        """
        op = self._scripted(lambda client: self._new_init(client), timeout_s)
        if op.is_applied:
            self.init_revision = op.revision
        return op

    def run(self, duration_s: float, should_stop: Callable[[], bool] | None = None) -> None:
        """Run random transfers and reads for `duration_s`; in-flight operations finish.

        Raises:
            RuntimeError: `initialise` did not succeed.
        """
        if self.init_revision is None:
            raise RuntimeError("the accounts were not created")
        stop_at = self.now_ns() + int(duration_s * 1e9)
        for client in self._clients:
            client.wake_ns = self.now_ns()

        def starting() -> bool:
            return self.now_ns() < stop_at and not (should_stop is not None and should_stop())

        self._loop(self._clients, lambda c: self._random_op(c) if starting() else None)

    def final_read(self, timeout_s: float = 30.0) -> BankOp:
        """One linearizable read of every account after healing, retried until it succeeds
        or time runs out; it is part of the history (`final=True`)."""

        def make(client: _Client) -> BankOp:
            op = self._new_read(client)
            op.final = True
            return op

        return self._scripted(make, timeout_s)

    def close(self) -> None:
        """Close every socket (linger 0) and the context."""
        if self._closed:
            return
        self._closed = True
        for client in self._clients:
            self._drop_socket(client)
        self._context.destroy(linger=0)

    # --- choosing operations ------------------------------------------------------------

    def _new_client(self, number: int, start: int, prefix: str | None = None) -> _Client:
        rotation = Rotation([self._endpoints[n] for n in self._node_ids], start=start)
        return _Client(number, Session(f"{prefix or self._prefix}-c{number}"), rotation)

    def _scripted(self, make: Callable[[_Client], BankOp], timeout_s: float) -> BankOp:
        """Run one operation on a fresh client that tries every node in turn."""
        number = len(self._clients) + 1000 + len(self.records)
        client = self._new_client(number, 0, prefix=f"{self._prefix}-s")
        client.script = [make]
        client.wake_ns = self.now_ns()
        saved = self._op_timeout_ns, self._max_attempts
        self._op_timeout_ns, self._max_attempts = int(timeout_s * 1e9), 0
        try:
            self._loop([client], lambda c: c.script.pop(0)(c) if c.script else None)
        finally:
            self._op_timeout_ns, self._max_attempts = saved
            self._drop_socket(client)
        return self.records[-1]

    def _random_op(self, client: _Client) -> BankOp:
        if self._rng.random() < 0.2:  # keep clients spread over all nodes
            self._drop_socket(client)
            client.rotation.move_to(self._rng.randrange(len(self._node_ids)))
        transfer_share, serializable_share, past_share = self._shares
        draw = self._rng.random()
        if draw < past_share and client.max_seen:
            low = self.init_revision or 1
            return self._new_read(client, at=self._rng.randint(low, max(low, client.max_seen)))
        if draw < past_share + transfer_share and client.fresh:
            transfer = self._new_transfer(client)
            if transfer is not None:
                return transfer
        return self._new_read(client, serializable=self._rng.random() < serializable_share)

    def _new_op(self, client: _Client, kind: str) -> BankOp:
        op = BankOp(index=len(self.records), process=client.number, kind=kind)
        self.records.append(op)
        client.maybe_applied = False
        op.invoke_ns = self.now_ns()
        client.op_deadline = op.invoke_ns + self._op_timeout_ns
        return op

    def _new_read(self, client: _Client, *, serializable: bool = False, at: int = 0) -> BankOp:
        op = self._new_op(client, "read")
        op.serializable, op.at_revision = serializable, at
        fields: dict[str, Any] = {"key": PREFIX, "prefix": True}
        if serializable:
            fields["serializable"] = True
        if at:
            fields["revision"] = at
        client.frame = wire.encode_request("range", **fields)
        return op

    def _new_init(self, client: _Client) -> BankOp:
        share, rest = divmod(self.total, len(self.accounts))
        balances = {a: share + (i < rest) for i, a in enumerate(self.accounts)}
        return self._new_txn(client, "init", dict.fromkeys(self.accounts, 0), {}, balances)

    def _new_transfer(self, client: _Client) -> BankOp | None:
        """A transfer between two accounts the client knows, from one with money."""
        sources = sorted(a for a, (balance, _) in client.known.items() if balance > 0)
        if not sources or len(client.known) < 2:
            return None
        source = self._rng.choice(sources)
        target = self._rng.choice(sorted(a for a in client.known if a != source))
        (from_balance, from_mod), (to_balance, to_mod) = client.known[source], client.known[target]
        amount = self._rng.randint(1, from_balance)
        return self._new_txn(
            client,
            "transfer",
            {source: from_mod, target: to_mod},
            {source: from_balance, target: to_balance},
            {source: from_balance - amount, target: to_balance + amount},
        )

    def _new_txn(
        self,
        client: _Client,
        kind: str,
        expected: dict[str, int],
        before: dict[str, int],
        writes: dict[str, int],
    ) -> BankOp:
        op = self._new_op(client, kind)
        op.expected, op.before, op.writes = expected, before, writes
        # One seq per operation: every attempt re-sends this frame (applied at most once).
        session = client.session.take()
        op.session, op.seq = session["client"], session["seq"]
        compare = [
            {"key": a, "target": "mod", "result": "equal", "operand": m}
            for a, m in expected.items()
        ]
        success = [{"op": "put", "key": a, "value": str(v)} for a, v in writes.items()]
        client.frame = wire.encode_request("txn", compare=compare, success=success, **session)
        return op

    # --- the loop and attempts (as `tests.workload.Workload`) ---------------------------

    def _loop(self, clients: list[_Client], next_op: Callable[[_Client], BankOp | None]) -> None:
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
        self._socket(client).send(client.frame)
        client.op.attempts += 1
        client.op.nodes.append(self._node_ids[client.rotation.position])
        client.waiting = True
        client.attempt_deadline = self.now_ns() + self._attempt_timeout_ns

    def _handle_reply(self, client: _Client, frames: list[bytes]) -> None:
        assert client.op is not None
        try:
            if len(frames) != 1:
                raise wire.DecodeError("a reply is one frame")
            reply = Reply.from_map(wire.decode_reply(frames[0]))
        except wire.DecodeError:
            self._attempt_failed(client, "malformed_reply", maybe=True, drop_socket=True)
            return
        if client.op.kind == "read":
            self._read_answered(client, reply)
        else:
            self._txn_answered(client, reply)

    def _txn_answered(self, client: _Client, reply: Reply) -> None:
        op = client.op
        assert op is not None
        if reply.ok:
            if reply.succeeded is None or reply.revision is None:
                self._attempt_failed(client, "malformed_reply", maybe=True, drop_socket=False)
                return
            op.succeeded, op.revision = reply.succeeded, reply.revision
            if reply.succeeded:
                self._complete(client, OK, None)
            else:  # the one application evaluated the compare false: nothing written
                self._complete(client, FAIL, "compare_failed")
            return
        code = reply.error_code or "unknown"
        if code in TXN_FAIL_CODES:
            self._complete(client, FAIL, code)
            return
        maybe = not self._proves_not_applied(code)
        self._attempt_failed(client, code, maybe=maybe, drop_socket=False)

    def _read_answered(self, client: _Client, reply: Reply) -> None:
        op = client.op
        assert op is not None
        code = reply.error_code or "unknown"
        if reply.ok:
            kvs = reply.kvs
            if kvs is None or reply.revision is None:
                self._attempt_failed(client, "malformed_reply", maybe=False, drop_socket=False)
                return
            op.revision, op.count, op.more = reply.revision, reply.count, reply.more
            op.kvs = {
                kv.key.decode("utf-8", "backslashreplace"): [
                    kv.value.decode("utf-8", "backslashreplace"),
                    kv.mod_revision,
                    kv.version,
                    kv.create_revision,
                ]
                for kv in kvs
            }
            self._complete(client, OK, None)
        elif code in READ_FAIL_CODES:
            op.revision, op.compact_revision = reply.revision, reply.compact_revision
            self._complete(client, FAIL, code)
        else:
            self._attempt_failed(client, code, maybe=False, drop_socket=False)

    def _proves_not_applied(self, code: str) -> bool:
        """Whether an error answer proves the attempt did not take effect (see the
        `tests.workload` module doc: `unavailable` only with `trust_unavailable`)."""
        if code not in RETRYABLE_ERRORS:
            return False
        return code in wl.NOT_PROPOSED_CODES or self._trust_unavailable

    def _attempt_failed(
        self, client: _Client, code: str, *, maybe: bool, drop_socket: bool
    ) -> None:
        """An attempt ended without a decision: retry on the next node, or give up."""
        op = client.op
        assert op is not None
        client.waiting = False
        op.attempt_errors.append(code)
        if maybe and op.kind != "read":
            client.maybe_applied = True
        if drop_socket:
            self._drop_socket(client)  # a REQ socket that got no reply cannot send again
        now = self.now_ns()
        if now >= client.op_deadline or 0 < self._max_attempts <= op.attempts:
            self._complete(client, INFO if client.maybe_applied else FAIL, code)
            return
        self._drop_socket(client)
        client.rotation.advance()
        # A seeded pause (not the client's back-off): a seed keeps its schedule.
        client.wake_ns = now + self._rng.randrange(20_000_000, 60_000_000)

    def _complete(self, client: _Client, outcome: str, code: str | None) -> None:
        op = client.op
        assert op is not None
        op.complete_ns = self.now_ns()
        op.outcome = outcome
        op.error = code
        self._learn(client, op)
        client.op = None
        low, high = self._think_ns
        client.wake_ns = op.complete_ns + (self._rng.randrange(low, high) if high > low else low)
        if self._on_record is not None:
            self._on_record(op)

    def _learn(self, client: _Client, op: BankOp) -> None:
        """What the client now knows of the balances (for its next transfer)."""
        if op.outcome == OK and op.revision is not None:
            client.max_seen = max(client.max_seen, op.revision)
        if op.kind == "read":
            if op.outcome == OK and not op.at_revision and op.kvs is not None:
                known = {a: (_balance(kv[0]), kv[1]) for a, kv in op.kvs.items()}
                client.known = {a: (b, m) for a, (b, m) in known.items() if b is not None}
                client.fresh = len(client.known) >= 2
        elif op.is_applied and op.revision is not None:
            for account, balance in op.writes.items():
                client.known[account] = (balance, op.revision)
        else:
            client.fresh = False  # a failed compare or an unknown outcome: read again


def _balance(text: Any) -> int | None:
    """A balance as written by the bank (a decimal int), or None if it is not one."""
    if not isinstance(text, str) or not text.lstrip("-").isdigit():
        return None
    return int(text)


# --- the checks ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BankAnomaly:
    """One violation found in a bank history.

    Attributes:
        check: the rule broken (the names in the module doc).
        op: the index of the operation it is about (-1: no single one).
        detail: what was seen, and why it cannot be.
        revision: the revision involved, when there is one.
    """

    check: str
    op: int
    detail: str
    revision: int | None = None


@dataclass(frozen=True, slots=True)
class _Record:
    balance: int | None
    mod: int
    version: int | None
    create: int | None


@dataclass(frozen=True, slots=True)
class _Observation:
    """What one operation says every account it shows held at `revision`."""

    op: BankOp
    revision: int
    records: dict[str, _Record]
    full: bool  # a read of every account (not a transfer's view of its two)

    @property
    def done_ns(self) -> int:
        return self.op.complete_ns or 0


def observations(ops: Iterable[BankOp]) -> list[_Observation]:
    """Every ok read, and every applied transfer's view of its two accounts at r - 1."""
    found = []
    for op in ops:
        if op.kind == "read" and op.outcome == OK and op.kvs is not None:
            revision = op.read_revision
            if revision is None:
                continue
            records = {a: _Record(_balance(kv[0]), kv[1], kv[2], kv[3]) for a, kv in op.kvs.items()}
            found.append(_Observation(op, revision, records, True))
        elif op.kind == "transfer" and op.is_applied and op.revision is not None:
            records = {
                a: _Record(op.before.get(a), mod, None, None) for a, mod in op.expected.items()
            }
            found.append(_Observation(op, op.revision - 1, records, False))
    return found


class _Writes:
    """The known writes (init and ok transfers) indexed by revision and by account, and
    the indeterminate transfers."""

    def __init__(self, ops: Sequence[BankOp]) -> None:
        applied = sorted(
            (op for op in ops if op.is_applied and op.revision is not None),
            key=lambda op: (op.revision, op.index),
        )
        self.init = next((op for op in applied if op.kind == "init"), None)
        self.r0 = self.init.revision if self.init is not None else None
        self.by_revision: dict[int, BankOp] = {}
        for op in applied:
            self.by_revision.setdefault(op.revision or 0, op)
        self.applied = applied
        self.transfer_revisions = sorted(
            op.revision or 0 for op in applied if op.kind == "transfer"
        )
        self._per_account: dict[str, tuple[list[int], list[BankOp]]] = {}
        for op in self.by_revision.values():
            for account in op.writes:
                revs, writers = self._per_account.setdefault(account, ([], []))
                revs.append(op.revision or 0)
                writers.append(op)
        self.info = [op for op in ops if op.kind == "transfer" and op.outcome == INFO]
        self.info_invokes = sorted(op.invoke_ns for op in self.info)
        self.info_by_account: dict[str, list[BankOp]] = {}
        for op in self.info:
            for account in op.writes:
                self.info_by_account.setdefault(account, []).append(op)

    def latest(self, account: str, revision: int) -> BankOp | None:
        """The latest known write to `account` at a revision <= `revision`."""
        revs, writers = self._per_account.get(account, ([], []))
        position = bisect.bisect_right(revs, revision)
        return writers[position - 1] if position else None

    def following(self, account: str, revision: int) -> BankOp | None:
        """The first known write to `account` at a revision > `revision`."""
        revs, writers = self._per_account.get(account, ([], []))
        position = bisect.bisect_right(revs, revision)
        return writers[position] if position < len(revs) else None

    def writes_between(self, account: str, low: int, high: int) -> int:
        """How many known writes to `account` have a revision in (low, high]."""
        revs, _ = self._per_account.get(account, ([], []))
        return bisect.bisect_right(revs, high) - bisect.bisect_right(revs, low)


def check_invariant(
    ops: Iterable[BankOp], accounts: Sequence[str], total: int
) -> list[BankAnomaly]:
    """(a) Every ok read at or after the init sees exactly the accounts, with integer,
    non-negative balances summing to `total`; a read before the init sees none."""
    ops = list(ops)
    r0 = _Writes(ops).r0
    expected = set(accounts)
    found = []
    for op in ops:
        if op.kind != "read" or op.outcome != OK or op.kvs is None:
            continue
        at = op.read_revision or 0
        if r0 is not None and at < r0:
            if op.kvs:
                found.append(BankAnomaly("accounts", op.index, f"accounts at {at} < r0", at))
            continue
        if set(op.kvs) != expected or op.count != len(expected) or op.more:
            shown = sorted(op.kvs)
            detail = f"read at {at} shows {shown} (count {op.count}, more {op.more})"
            found.append(BankAnomaly("accounts", op.index, detail, at))
        balances = {a: _balance(kv[0]) for a, kv in op.kvs.items()}
        bad = {a: op.kvs[a][0] for a, b in balances.items() if b is None or b < 0}
        if bad:
            found.append(BankAnomaly("negative", op.index, f"read at {at}: balances {bad}", at))
            continue
        total_seen = sum(b for b in balances.values() if b is not None)
        if set(op.kvs) == expected and total_seen != total:
            detail = f"read at {at}: balances {balances} sum to {total_seen}, not {total}"
            found.append(BankAnomaly("sum", op.index, detail, at))
    return found


def check_range_at_revision(ops: Sequence[BankOp]) -> list[BankAnomaly]:
    """(b) Every observation equals the state the writes at revisions <= its own make,
    and revisions behave (see the module doc for each rule)."""
    writes = _Writes(ops)
    if writes.r0 is None:
        return [BankAnomaly("init", -1, "no applied init: nothing can be checked")]
    seen = observations(ops)
    found = _check_records(writes, seen)
    found += _check_unknown_revisions(writes, seen)
    found += _check_invoked(writes, seen)
    found += _check_identity(writes, seen)
    found += _check_history_order(seen)
    found += _check_accounting(writes, ops)
    found += _check_real_time(ops)
    return found


def _check_records(writes: _Writes, seen: Sequence[_Observation]) -> list[BankAnomaly]:
    """Each record against the latest known write to its account at <= R."""
    found = []
    accounts = sorted(writes.init.writes) if writes.init is not None else []
    for obs in seen:
        for account, record in obs.records.items():
            problem = _record_problem(writes, obs, account, record)
            if problem is not None:
                check, detail = problem
                found.append(BankAnomaly(check, obs.op.index, detail, obs.revision))
        for account in accounts if obs.full else ():
            last = writes.latest(account, obs.revision)
            if account not in obs.records and last is not None:
                detail = (
                    f"{_what(obs)} at {obs.revision} shows no {account}, which op #{last.index} "
                    f"wrote at {last.revision}"
                )
                found.append(BankAnomaly("missed-write", obs.op.index, detail, obs.revision))
    return found


def _record_problem(
    writes: _Writes, obs: _Observation, account: str, record: _Record
) -> tuple[str, str] | None:
    at, mod = obs.revision, record.mod
    what = f"{_what(obs)} at {at} shows {account}={record.balance} mod {mod}"
    if mod > at:
        return "mod-above-revision", f"{what}: a write after {at}"
    last = writes.latest(account, at)
    if last is None:
        return "missed-write", f"{what}: no known write made it by {at}"
    last_rev = last.revision or 0
    if mod < last_rev:
        other = next((a for a in last.writes if a != account), None)
        shown = obs.records.get(other) if other is not None else None
        check = "split-transfer" if shown is not None and shown.mod == last_rev else "missed-write"
        return check, f"{what}, missing op #{last.index} that wrote {account} at {last_rev}" + (
            f" (whose put to {other} it shows at {last_rev})" if check == "split-transfer" else ""
        )
    if mod == last_rev and record.balance != last.writes[account]:
        detail = f"{what}: op #{last.index} wrote {last.writes[account]} there"
        return "wrong-value", detail
    foreign = writes.by_revision.get(mod)
    if mod > last_rev and foreign is not None:
        return "foreign-write", f"{what}: revision {mod} is op #{foreign.index}, not a write to it"
    return None


def _what(obs: _Observation) -> str:
    op = obs.op
    name = "final read" if op.final else (op.label if obs.full else "transfer's compare")
    return f"op #{op.index} ({name})"


def _candidates(writes: _Writes, obs: _Observation, account: str, record: _Record) -> set[int]:
    """The info transfers that can have written `record` of `account` (see the doc)."""
    mod = record.mod
    fits = set()
    for op in writes.info_by_account.get(account, ()):
        if op.writes[account] != record.balance or op.invoke_ns >= obs.done_ns:
            continue
        if all(_fits_at(writes, obs, op, other, mod) for other in op.writes):
            fits.add(op.index)
    return fits


def _fits_at(writes: _Writes, obs: _Observation, op: BankOp, account: str, mod: int) -> bool:
    """Whether info transfer `op`, applied at `mod`, agrees on `account` with the known
    writes around `mod` and with `obs`."""
    expected = op.expected[account]
    before = writes.latest(account, mod - 1)
    if expected >= mod or (before is not None and expected < (before.revision or 0)):
        return False
    after = writes.following(account, mod)
    if after is not None and after.expected.get(account, mod) < mod:
        return False
    shown = obs.records.get(account)
    if shown is None:
        return True
    return shown.mod > mod or (shown.mod == mod and shown.balance == op.writes[account])


def _check_unknown_revisions(writes: _Writes, seen: Sequence[_Observation]) -> list[BankAnomaly]:
    """Records at revisions no known write made: explained by distinct info transfers."""
    r0 = writes.r0 or 0
    candidates: dict[int, set[int]] = {}
    found = []
    for obs in seen:
        for account, record in obs.records.items():
            mod = record.mod
            if mod <= r0 or mod > obs.revision or mod in writes.by_revision:
                continue
            last = writes.latest(account, obs.revision)
            if last is not None and mod < (last.revision or 0):
                continue  # already a missed write
            fits = _candidates(writes, obs, account, record)
            before = candidates.get(mod)
            candidates[mod] = fits if before is None else before & fits
            if not candidates[mod] and (before is None or before):  # once per revision
                what = f"{_what(obs)} at {obs.revision} shows {account}={record.balance}"
                detail = f"{what} mod {mod}: no indeterminate transfer can have written it"
                if before:
                    detail += f" (consistently with the other records at {mod})"
                found.append(BankAnomaly("unexplained-write", obs.op.index, detail, mod))
    unmatched = _unmatched({m: sorted(c) for m, c in candidates.items() if c})
    if unmatched:
        detail = f"revisions {unmatched} need distinct indeterminate transfers; there are not"
        found.append(BankAnomaly("info-matching", -1, detail + " enough that fit"))
    return found


def _unmatched(candidates: Mapping[int, Sequence[int]]) -> list[int]:
    """The revisions left without a distinct candidate by a maximum matching (Kuhn)."""
    owner: dict[int, int] = {}

    def assign(revision: int, visited: set[int]) -> bool:
        for candidate in candidates[revision]:
            if candidate in visited:
                continue
            visited.add(candidate)
            if candidate not in owner or assign(owner[candidate], visited):
                owner[candidate] = revision
                return True
        return False

    return [revision for revision in sorted(candidates) if not assign(revision, set())]


def _check_invoked(writes: _Writes, seen: Sequence[_Observation]) -> list[BankAnomaly]:
    """A read at R reflects no known write invoked after the read completed."""
    revisions = [op.revision or 0 for op in writes.applied]
    latest_invoke: list[int] = []
    running = -1
    for op in writes.applied:
        running = max(running, op.invoke_ns)
        latest_invoke.append(running)
    found = []
    for obs in seen:
        position = bisect.bisect_right(revisions, obs.revision)
        if position and latest_invoke[position - 1] > obs.done_ns:
            late = next(op for op in writes.applied if op.invoke_ns == latest_invoke[position - 1])
            detail = (
                f"{_what(obs)} at {obs.revision} (done at {obs.done_ns / 1e9:.3f}s) reflects "
                f"op #{late.index} (revision {late.revision}), invoked at "
                f"{late.invoke_ns / 1e9:.3f}s"
            )
            found.append(BankAnomaly("not-yet-invoked", obs.op.index, detail, obs.revision))
    return found


def _check_identity(writes: _Writes, seen: Sequence[_Observation]) -> list[BankAnomaly]:
    """(account, mod) always shows one balance, version and create; versions grow."""
    found = []
    first: dict[tuple[str, int], tuple[_Record, BankOp]] = {}
    r0 = writes.r0 or 0
    for obs in seen:
        for account, record in obs.records.items():
            key = (account, record.mod)
            earlier = first.setdefault(key, (record, obs.op))
            old = earlier[0]
            differs = old.balance != record.balance or any(
                a is not None and b is not None and a != b
                for a, b in ((old.version, record.version), (old.create, record.create))
            )
            if differs:
                detail = (
                    f"{account} mod {record.mod}: op #{earlier[1].index} shows {old}, "
                    f"{_what(obs)} shows {record}"
                )
                found.append(BankAnomaly("record-identity", obs.op.index, detail, record.mod))
            if record.create is not None and record.create != r0:
                detail = f"{_what(obs)}: {account} create_revision {record.create}, not r0 {r0}"
                found.append(BankAnomaly("version", obs.op.index, detail, record.mod))
    found += _check_versions(writes, first)
    return found


def _check_versions(
    writes: _Writes, first: Mapping[tuple[str, int], tuple[_Record, BankOp]]
) -> list[BankAnomaly]:
    found = []
    r0 = writes.r0 or 0
    by_account: dict[str, list[tuple[int, int, BankOp]]] = {}
    for (account, mod), (record, op) in first.items():
        if record.version is not None and r0 <= mod:
            by_account.setdefault(account, []).append((mod, record.version, op))
    for account, rows in by_account.items():
        rows.sort(key=lambda row: row[0])
        previous = (r0, 1)
        for mod, version, op in rows:
            low_mod, low_version = previous
            steps = writes.writes_between(account, low_mod, mod)
            if (mod == r0 and version != 1) or (mod > low_mod and version < low_version + steps):
                detail = (
                    f"{account} version {version} at mod {mod}, after version {low_version} "
                    f"at {low_mod} and {steps} known writes in between"
                )
                found.append(BankAnomaly("version", op.index, detail, mod))
            previous = (mod, version)
    return found


def _check_history_order(seen: Sequence[_Observation]) -> list[BankAnomaly]:
    """Per account, by revision: mods never go back; a record in force at R1 <= R2 and
    still shown at R2 was shown at R1 (so two reads at one revision are equal)."""
    found = []
    per_account: dict[str, list[tuple[int, int, _Observation]]] = {}
    for obs in seen:
        for account, record in obs.records.items():
            if record.mod <= obs.revision:
                per_account.setdefault(account, []).append((obs.revision, record.mod, obs))
    for account, rows in per_account.items():
        rows.sort(key=lambda row: (row[0], row[1]))
        for (at1, mod1, obs1), (at2, mod2, obs2) in itertools.pairwise(rows):
            if mod1 <= mod2 and (mod2 > at1 or mod1 == mod2):
                continue
            check = "same-revision" if at1 == at2 else "history-order"
            detail = (
                f"{account}: {_what(obs1)} at {at1} shows mod {mod1}, "
                f"{_what(obs2)} at {at2} shows mod {mod2}"
            )
            found.append(BankAnomaly(check, obs2.op.index, detail, at2))
    return found


def _check_accounting(writes: _Writes, ops: Sequence[BankOp]) -> list[BankAnomaly]:
    """One command per revision: no two ok transfers share one, and the revisions up to
    any answer's are covered by known transfers and indeterminate ones."""
    found = []
    r0 = writes.r0 or 0
    claimed: dict[int, BankOp] = {}
    for op in writes.applied:
        other = claimed.setdefault(op.revision or 0, op)
        if other is not op:
            detail = f"ops #{other.index} and #{op.index} both made revision {op.revision}"
            found.append(BankAnomaly("duplicate-revision", op.index, detail, op.revision))
    known = writes.transfer_revisions
    for op in ops:
        at = op.read_revision if op.kind == "read" else answered_revision(op)
        if answered_revision(op) is None or at is None or at <= r0:
            continue
        covered = bisect.bisect_right(known, at) - bisect.bisect_right(known, r0)
        maybe = bisect.bisect_left(writes.info_invokes, op.complete_ns or 0)
        if at - r0 > covered + maybe:
            detail = (
                f"op #{op.index} ({op.label}) answered at revision {at}: {at - r0} revisions "
                f"after r0 {r0}, but only {covered} known and {maybe} indeterminate transfers"
            )
            found.append(BankAnomaly("revision-accounting", op.index, detail, at))
    return found


def _check_real_time(ops: Sequence[BankOp]) -> list[BankAnomaly]:
    """Linearizable reads and applied transfers never reflect a revision below one
    acknowledged before they were invoked (real-time order, hence per client too)."""
    done = sorted(
        (op.complete_ns or 0, answered)
        for op in ops
        if (answered := answered_revision(op)) is not None
    )
    found = []
    position, floor = 0, 0
    for op in sorted(ops, key=lambda op: op.invoke_ns):
        while position < len(done) and done[position][0] < op.invoke_ns:
            floor = max(floor, done[position][1])
            position += 1
        problem = _real_time_problem(op, floor)
        if problem is not None:
            check, detail = problem
            found.append(BankAnomaly(check, op.index, detail, op.revision))
    return found


def answered_revision(op: BankOp) -> int | None:
    """The store revision a decided answer reported (`header.revision`): every ok
    operation's, and a failed compare's (the revision it was evaluated at); else None."""
    if op.outcome == OK or op.error == "compare_failed":
        return op.revision
    return None


def _real_time_problem(op: BankOp, floor: int) -> tuple[str, str] | None:
    what = f"op #{op.index} ({op.label})"
    if op.kind == "read" and not op.serializable:
        if op.outcome == OK and (op.revision or 0) < floor:
            return "stale-revision", f"{what} at revision {op.revision}: {floor} was acked before"
        if op.error == "future_revision" and op.at_revision <= floor:
            return "future-revision", f"{what} at {op.at_revision}: {floor} was acked before"
    elif op.kind == "transfer" and answered_revision(op) is not None:
        assert op.revision is not None
        if op.succeeded and op.revision <= floor:
            return "stale-revision", f"{what} made revision {op.revision} <= acked {floor}"
        if not op.succeeded and op.revision < floor:
            return "stale-revision", f"{what} answered at {op.revision} < acked {floor}"
    return None


def check_final(ops: Sequence[BankOp]) -> list[BankAnomaly]:
    """(c) The final read exists, reflects every ok operation, and loses no transfer."""
    final = [op for op in ops if op.final and op.outcome == OK and op.kvs is not None]
    if not final:
        return [BankAnomaly("final-missing", -1, "no final read succeeded")]
    last = final[-1]
    at = last.revision or 0
    found = []
    highest = max(
        (op for op in ops if answered_revision(op) is not None and not op.final),
        key=lambda op: op.revision or 0,
        default=None,
    )
    if highest is not None and (highest.revision or 0) > at:
        detail = f"final read at {at}, but op #{highest.index} was answered at {highest.revision}"
        found.append(BankAnomaly("final-behind", last.index, detail, at))
    kvs = last.kvs or {}
    for op in ops:
        if op.kind != "transfer" or not op.is_applied:
            continue
        for account, balance in op.writes.items():
            shown = kvs.get(account)
            mod = shown[1] if shown is not None else -1
            if mod < (op.revision or 0) or (mod == op.revision and _balance(shown[0]) != balance):
                detail = (
                    f"op #{op.index} wrote {account}={balance} at {op.revision}; the final "
                    f"read at {at} shows {shown}"
                )
                found.append(BankAnomaly("lost-transfer", op.index, detail, op.revision))
    return found


def check_bank(ops: Sequence[BankOp], accounts: Sequence[str], total: int) -> list[BankAnomaly]:
    """Every check: (a) the invariant, (b) range-at-revision, (c) the final state."""
    return check_invariant(ops, accounts, total) + check_range_at_revision(ops) + check_final(ops)


def bank_shape(ops: Sequence[BankOp]) -> tuple[list[str], int]:
    """The accounts and total of a recorded history (from its init operation)."""
    init = next((op for op in ops if op.kind == "init"), None)
    if init is None:
        raise ValueError("the history has no init operation")
    return sorted(init.writes, key=lambda a: int(a.removeprefix(PREFIX))), sum(init.writes.values())


# --- a whole run --------------------------------------------------------------------------


@dataclass(slots=True)
class BankReport:
    """Everything a bank run found; `exit_code` says what the runner returns."""

    seed: int
    nodes: int
    clients: int
    accounts: int
    total: int
    duration_s: float
    directory: Path
    ops_path: Path
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    init_revision: int | None = None
    final_revision: int | None = None
    final: dict[str, str] = field(default_factory=dict)
    anomalies: list[BankAnomaly] = field(default_factory=list)
    safety: str | None = None
    snapshots: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    checked_ops: int = 0
    check_s: float = 0.0
    near: dict[int, tuple[str, ...]] = field(default_factory=dict)  # op -> faults around it

    @property
    def fault_counts(self) -> dict[str, int]:
        """kind -> how many were injected."""
        return dict(Counter(fault.kind for fault in self.faults))

    @property
    def ok(self) -> bool:
        """No anomaly, no safety violation, no harness error."""
        return not (self.anomalies or self.safety or self.errors)

    @property
    def exit_code(self) -> int:
        """0 clean; 1 the product misbehaved; 2 the run itself could not be completed."""
        if self.anomalies or self.safety:
            return 1
        return 2 if self.errors else 0

    def ok_count(self) -> int:
        """How many operations completed ok (init and final read excluded)."""
        return sum(
            per.get(OK, 0) for kind, per in self.outcomes.items() if kind not in ("init", "final")
        )

    def anomaly_counts(self) -> dict[str, int]:
        """check -> how many anomalies it found."""
        return dict(Counter(anomaly.check for anomaly in self.anomalies))

    def summary(self) -> str:
        """A human-readable summary of the run."""
        lines = [
            f"zraft bank nemesis: seed={self.seed} nodes={self.nodes} clients={self.clients} "
            f"accounts={self.accounts} total={self.total} duration={self.duration_s:g}s",
            f"directory: {self.directory}",
            f"history:   {self.ops_path}",
            "operations (kind: outcome counts):",
        ]
        for kind in sorted(self.outcomes):
            counts = ", ".join(f"{o}={n}" for o, n in sorted(self.outcomes[kind].items()))
            lines.append(f"  {kind:17s} {counts}")
        counts = count_faults(self.faults, FAULT_KINDS)
        lines.append("faults: " + (", ".join(f"{k}={n}" for k, n in counts.items()) or "none"))
        snaps = self.snapshots
        if snaps:
            lines.append(
                f"snapshots: saved={snaps.get('snapshot_saved', 0)} "
                f"installed={snaps.get('snapshot_installed', 0)} "
                f"log compactions={snaps.get('log_compacted', 0)}"
            )
        lines.append(f"revisions: init {self.init_revision}, final {self.final_revision}")
        lines.append(f"final balances: {self.final}")
        lines.append(f"checked {self.checked_ops} operations in {self.check_s:.1f}s")
        by_check = ", ".join(f"{c}={n}" for c, n in sorted(self.anomaly_counts().items()))
        lines.append(f"anomalies: {len(self.anomalies)}" + (f" ({by_check})" if by_check else ""))
        for anomaly in shown_anomalies(self.anomalies):
            lines.append(f"  [{anomaly.check}] {anomaly.detail}")
            lines.extend(f"    during {text}" for text in self.near.get(anomaly.op, ()))
        lines.append(f"election safety: {'ok' if self.safety is None else self.safety}")
        lines.extend(f"harness error: {error}" for error in self.errors)
        lines.append("result: " + ("OK" if self.ok else f"FAILED (exit {self.exit_code})"))
        return "\n".join(lines)


def shown_anomalies(anomalies: Iterable[BankAnomaly], per_check: int = 5) -> list[BankAnomaly]:
    """The first `per_check` anomalies of each check (what a summary lists)."""
    seen: Counter[str] = Counter()
    shown = []
    for anomaly in anomalies:
        seen[anomaly.check] += 1
        if seen[anomaly.check] <= per_check:
            shown.append(anomaly)
    return shown


def outcome_counts(ops: Iterable[BankOp]) -> dict[str, dict[str, int]]:
    """label -> outcome -> count (the final read as `final`; compare failures apart)."""
    counts: dict[str, dict[str, int]] = {}
    for op in ops:
        label = "final" if op.final else op.label
        outcome = op.outcome or "pending"
        if op.error in ("compare_failed", "compacted", "future_revision"):
            outcome = f"{outcome}:{op.error}"
        per = counts.setdefault(label, {})
        per[outcome] = per.get(outcome, 0) + 1
    return counts


def run_bank(
    directory: Path,
    *,
    seed: int,
    duration_s: float,
    nodes: int = 3,
    clients: int = 5,
    accounts: int = 5,
    total: int = 500,
    faults: Iterable[str] = FAULT_KINDS,
    request_timeout_ms: int = 1500,
    max_attempts: int = 0,
    trust_unavailable: bool = False,
    progress: Callable[[str], None] | None = None,
    nemesis_options: dict[str, Any] | None = None,
    cluster_options: dict[str, int] | None = None,
) -> BankReport:
    """Create the accounts, run the bank under the nemesis, heal, read, check.

    Args: as `tests.nemesis.run_nemesis`'s, with `accounts` and `total` for the bank.

    Returns:
        The report; it leaves `ops.jsonl` (every `BankOp`) and `faults.jsonl` in
        `directory`, and the cluster's files in `directory/cluster`.
    """
    say = progress or (lambda _line: None)
    directory.mkdir(parents=True, exist_ok=True)
    report = BankReport(
        seed, nodes, clients, accounts, total, duration_s, directory, directory / "ops.jsonl"
    )
    rig = make_rig(
        directory,
        seed=seed,
        nodes=nodes,
        faults=faults,
        request_timeout_ms=request_timeout_ms,
        nemesis_options=nemesis_options,
        cluster_options=cluster_options,
    )
    stream = report.ops_path.open("w")

    def record(op: BankOp) -> None:
        stream.write(op.to_json() + "\n")

    load = BankWorkload(
        rig.cluster.client_endpoints,
        accounts=accounts,
        total=total,
        clients=clients,
        seed=seed,
        origin_ns=rig.origin_ns,
        attempt_timeout_s=request_timeout_ms / 1000 + 0.5,
        op_timeout_s=2 * request_timeout_ms / 1000 + 1.0,
        max_attempts=max_attempts,
        trust_unavailable=trust_unavailable,
        on_record=record,
        curve=rig.cluster.curve,
    )
    try:
        _drive_bank(rig, load, report, say)
        stream.close()
        _judge_bank(rig.cluster, load, rig.nemesis.faults, report, say)
        return report
    finally:
        stream.close()
        try:
            rig.nemesis.stop()
        finally:
            load.close()
            rig.cluster.close()


def _drive_bank(
    rig: Rig, load: BankWorkload, report: BankReport, say: Callable[[str], None]
) -> None:
    """Create the accounts, run under faults, heal, and read every account once more."""

    def setup() -> None:
        init = load.initialise(timeout_s=30)
        report.init_revision = load.init_revision
        if load.init_revision is None:
            report.errors.append(f"the accounts could not be created: {init}")

    def run(should_stop: Callable[[], bool]) -> None:
        if load.init_revision is not None:
            load.run(report.duration_s, should_stop=should_stop)

    drive_under_faults(
        rig,
        run,
        clients=report.clients,
        duration_s=report.duration_s,
        errors=report.errors,
        say=say,
        setup=setup,
    )
    if load.init_revision is None:
        return
    say("reading every account")
    final = load.final_read(timeout_s=30)
    if final.outcome != OK or final.kvs is None:
        report.errors.append(f"the final read failed: {final.error}")
        return
    report.final_revision = final.revision
    report.final = {a: kv[0] for a, kv in sorted(final.kvs.items())}


def _judge_bank(
    cluster: ProcessCluster,
    load: BankWorkload,
    faults: Sequence[Fault],
    report: BankReport,
    say: Callable[[str], None],
) -> None:
    """Fill the report: outcomes, faults, election safety, snapshots, the bank checks."""
    ops = load.records
    report.outcomes = outcome_counts(ops)
    report.faults = list(faults)
    write_faults(report.directory / "faults.jsonl", report.faults)
    try:
        cluster.assert_safety()
    except AssertionError as exc:
        report.safety = str(exc).splitlines()[0]
    report.snapshots = snapshot_counts(cluster.events())
    if load.init_revision is None:
        return
    say(f"checking {len(ops)} operations")
    started = time.monotonic()
    report.anomalies = check_bank(ops, load.accounts, load.total)
    report.check_s = time.monotonic() - started
    report.checked_ops = len(ops)
    for anomaly in shown_anomalies(report.anomalies):
        if 0 <= anomaly.op < len(ops):
            op = ops[anomaly.op]
            window = (op.invoke_ns / 1e9, (op.complete_ns or op.invoke_ns) / 1e9)
            report.near[anomaly.op] = overlapping_faults(report.faults, window)


def summary_json(report: BankReport) -> dict[str, Any]:
    """The report as plain JSON values (written next to the history as summary.json)."""
    return {
        "workload": "bank",
        "seed": report.seed,
        "nodes": report.nodes,
        "clients": report.clients,
        "accounts": report.accounts,
        "total": report.total,
        "duration_s": report.duration_s,
        "outcomes": report.outcomes,
        "faults": report.fault_counts,
        "init_revision": report.init_revision,
        "final_revision": report.final_revision,
        "final": report.final,
        "anomalies": [asdict(a) for a in report.anomalies],
        "anomaly_counts": report.anomaly_counts(),
        "safety": report.safety,
        "snapshots": report.snapshots,
        "errors": report.errors,
        "checked_ops": report.checked_ops,
        "check_s": round(report.check_s, 3),
        "exit_code": report.exit_code,
    }


def recheck(directory: Path) -> list[BankAnomaly]:
    """Check a saved run's `ops.jsonl` again (e.g. after a checker change)."""
    ops = read_ops(directory / "ops.jsonl")
    accounts, total = bank_shape(ops)
    return check_bank(ops, accounts, total)
