"""Leases under the nemesis: owners that keep leases alive and die, observers, and checks.

The workload
------------
`LeaseWorkload` drives, from ONE thread with ONE `zmq.Poller` (one REQ socket, one
operation at a time per logical client, spread over every node, as `tests.workload` does
for the register), two kinds of clients:

- **owners** (`o0` .. ): each runs *incarnations* one after another. An incarnation
  grants a lease (`lease_grant` with an id of its own, `LEASE_BASE * (owner + 1) + n`, and a
  TTL drawn from `ttls`, at least the cluster's minimum), puts the owner's key
  `lease/<owner>` with it (the value is the lease id, so a read names the incarnation),
  and keeps it alive every TTL/3 for a random number of keepalives. Then it either
  *dies* (records a `stop` and sends nothing more for that lease: a simulated crash) or,
  sometimes, revokes the lease; either way it reads its key (linearizable `get`) until it
  sees it gone, and starts over with a new lease. A keepalive answered `lease_not_found`
  ends the incarnation at once (the lease was lost). Some incarnations are *racing*: each
  keepalive is sent about one TTL after the last acknowledged one (between 0.1 s early and
  0.06 s late), so refreshes race the leader's expiry (correct code may lose the lease, never
  acknowledge a keepalive and then revoke it).
- **observers** read every owner key at once (`range lease/ --prefix`, linearizable) or
  one key (`get`), a few dozen times a second, until every owner is done.

Grants, puts and revokes carry a session (`client`/`seq`, one seq per operation, reused by
every attempt), so a retry is applied at most once; keepalives are idempotent. Outcomes
follow `tests.workload` (read its module doc): `ok`; `fail` (definitely not applied:
`lease_not_found`, `bad_request`, or every attempt refused before it was proposed); `info`
(unknown: no reply, `timeout`, `unavailable`). A read that never succeeds is `fail` and
observes nothing. Every time is `time.monotonic_ns()` of this process minus the run's
origin (the nemesis's too): one clock. An operation's `invoke_ns` is taken before its
first send and its `complete_ns` after its deciding reply, so the true times lie inside.

Node logs are read back with their wall-clock timestamps turned into the same clock
(`node_marks`: the offset between `time.time_ns()` and `time.monotonic_ns()` is measured
once at the start; `LeaseParams.tolerance_s` absorbs its error).

The checks (pure functions over `LeaseOp`s, `Fault`s and `NodeMark`s; `check_leases`)
----------------------------------------------------------------------------------------
Terms, per incarnation with lease L and TTL t: its *acknowledged refreshes* are the grant
(if ok) and every keepalive answered ok; `last_ack` is the latest completion among them.
An *unanswered attempt* is a keepalive attempt (or an attempt of a grant that was never
acknowledged) that got no definite answer (no reply, `timeout`, `unavailable`): it may
still take effect later, even when a retry was acknowledged (keepalives carry no
session). A node holds a request at most R (the request timeout) before giving up, but
one sent while a node was paused waits in that node's socket (or in the paused leader's,
forwarded) until the pause ends, so an attempt sent at s may refresh L until
`max(s, end of every pause going on at s) + R`. `last_refresh` is the latest of
`last_ack` and those moments; the incarnation is *doubtful* if one of them lies after
`last_ack`. Its key is *established* once the put was acknowledged (or a read showed the
key with L).

a. `early` (guarantee 1). The cluster acknowledges a keepalive only after it was invoked,
   and a lease is never revoked earlier than t after a refresh it acknowledged; so with
   `protect = max(invoke of an acknowledged refresh) + t`, nothing may show L gone before
   `protect`: no read invoked after the key was established that *completed* before
   `protect` may see the key absent, and no keepalive, put or revoke of L answered
   `lease_not_found` may complete before it. Whatever happens after the owner invoked a
   revoke is excused. (An acknowledged keepalive invoked after L was seen gone is caught
   too: its invoke raises `protect` above that read.)
b. `revoked-visible`: once a revoke was acknowledged, no read invoked later shows L.
c. `reappeared`: once a read invoked after L's key was established saw the key without L,
   no read invoked after that read completed may show L again.
d. The lifetime bound (guarantees 2 and 3), for an incarnation whose owner stopped (died,
   or a revoke that was not acknowledged) after its key was established: no read invoked
   after the bound may still show L. Two bounds, both checked:

   - `outlived-faults` (coarse, from the fault log): start from
     `D = last_refresh + t + E + M + P` (E the maximum election timeout, M the margin,
     P the commit-propagation allowance), then, until nothing changes, for each fault
     (any kind) with `start <= D` and `end + C >= last_refresh` (C the catch-up allowance:
     a node hit by it may apply the last refresh, restart, or install a snapshot, and so
     restart the lease's clock, until then), `D = max(D, end + C + t + E + M)`; for each
     `leader_elected` at `a` in `[last_refresh, D]`, `D = max(D, a + t + M)`; for each
     `node_started` or `snapshot_installed` at `s` in that range, `D = max(D,
     s + t + E + M)`. Any fault touching the window thus buys the lease a full TTL from
     its end, plus an election.
   - `outlived-leader` (tight, from who led when): leaderships come from the
     `leader_elected` marks; one ends at the next election, when its node logs leaving
     the leader role, or (minus `slack_s`) when a fault starts that hits it (kill, pause,
     a partition with it in the minority); packet loss (from its start minus `slack_s`
     to its end plus C) and transfers (start and end widened by `slack_s`) cut holes in
     it, and each stretch between holes counts on its own. The leader `l` expires L once
     its own clock for L has run out: at `c_l + t`, where `c_l` is the latest of:
     `last_refresh`; `end + C` of any fault that hit `l` (loss: every node), started by
     `last_refresh + P` and ended after `last_refresh - C` (`l` may have missed the last
     refresh and applies it on catching up; a fault that starts later finds it applied,
     and restarts the clock only through a restart or a snapshot install); `l`'s own
     restarts and snapshot installs since `last_refresh`; and its election time `a` when
     `l` was elected after `last_refresh` and either the change of leader is not
     explained by a fault on the old leader that started at least P after
     `last_refresh` (the old leader may have acknowledged the refresh without telling
     the followers it was committed, so `l` applies it when its own first entry
     commits), or L is doubtful (a late refresh may be committed by `l`'s first entry).
     A stretch `[a, b)` *qualifies* when `e = max(a, c_l + t) + M <= b`; the bound is
     the earliest such `e` (none: only the coarse bound applies). A new leader that
     restarted every lease at its full TTL (etcd's rule) breaks it whenever leadership
     moves, by a fault on the old leader, more than M after the last refresh.

   The delay from `last_ack` to the first read that saw the key gone, and to the first
   `lease_expired` in the node logs (the revocation itself, without the observers' lag),
   are reported (p50, p99, max; minus t) separately for windows with and without a
   `leader_elected` in between. A stopped incarnation whose key no read saw gone is
   `unresolved` (a harness problem: the final read after healing settles every one).
e. Node logs: every `lease_expired` (its first one over all nodes, at x) must name a
   lease of this run (`expired-unknown`), x must be at least t after the invoke of every
   acknowledged refresh invoked before it (`expired-while-kept`: the owner's keepalives
   had been failing, or it had stopped, for at least t), and no refresh invoked after x
   may have been acknowledged (`acked-after-expiry`).

`run_lease` is a whole run under the nemesis (`tests.nemesis.make_rig` and
`drive_under_faults`), used by `bin/zraft-nemesis --workload lease` and
`tests/integration/test_lease_nemesis.py`. At the end of the duration every owner stops
and waits for its key to go; after healing, the final read waits until every stopped
lease's coarse bound has passed (at most `FINAL_WAIT_S`): back-to-back faults chain the
coarse bound to about `t + E + M + C` after the last fault, so it is this read, and reads
in quiet stretches of long runs, that it judges. It leaves `ops.jsonl` (every `LeaseOp`),
`faults.jsonl`, `marks.jsonl` (the node events the checks read, on the run's clock) and
the cluster's files in its directory; `recheck` checks them again.
"""

from __future__ import annotations

import datetime
import json
import random
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import zmq

from tests import workload as wl
from tests.checkrun import write_faults
from tests.faultplan import Fault, count_faults
from tests.nemesis import FAULT_KINDS, Rig, drive_under_faults, make_rig, snapshot_counts
from zraft import wire
from zraft.client.policy import Rotation, Session
from zraft.client.reply import Reply
from zraft.net.security import ClientCurve

OK, FAIL, INFO = wl.OK, wl.FAIL, wl.INFO

PREFIX = "lease/"
"""The owners' key prefix."""

LEASE_BASE = 1_000_000
"""Lease ids are `LEASE_BASE * (owner + 1) + incarnation`: unique in a run, and they name
their owner."""

DEFINITE_FAIL_CODES = frozenset({"lease_not_found", "bad_request", "too_large", "forbidden"})
"""Answers that prove a lease op was not applied (and end it)."""

NOT_APPLIED_CODES = DEFINITE_FAIL_CODES | wl.NOT_PROPOSED_CODES
"""Attempt errors after which that attempt can never take effect."""

INF = 1 << 62
"""A time after every other (ns)."""

MARK_EVENTS = (
    "leader_elected",
    "role_changed",
    "node_started",
    "snapshot_installed",
    "lease_expired",
    "loop_stalled",
)
"""The node events the checks read."""

HIT_KINDS = frozenset({"kill", "kill-leader", "pause", "pause-leader", "partition", "membership"})
"""Fault kinds whose `nodes` are the nodes they hit (loss hits every node)."""

LEADER_ENDING_KINDS = frozenset({"kill", "kill-leader", "pause", "pause-leader", "partition"})
"""Fault kinds that end a leadership when they hit the leader (and explain the next one)."""


def owner_key(owner: int) -> str:
    """The key an owner attaches to its leases."""
    return f"{PREFIX}{owner}"


def lease_id(owner: int, incarnation: int) -> int:
    """The lease id of an owner's incarnation."""
    return LEASE_BASE * (owner + 1) + incarnation


def owner_of(lease: int) -> int:
    """The owner a lease id of this workload belongs to."""
    return lease // LEASE_BASE - 1


# --- the history ------------------------------------------------------------------------


@dataclass(slots=True)
class LeaseOp:
    """One operation of a lease history.

    Args:
        index: order of invocation, unique in a run.
        actor: the logical client (`o3`, `r1`, `final`).
        kind: `grant`, `put`, `keepalive`, `revoke`, `stop` (an owner stops keeping its
            lease alive: invoke = complete = that moment), `read` (the prefix) or `get`.
        owner: the owner whose lease or key it is about (None for a prefix read).
        lease, ttl: the lease (0 for reads) and its TTL.
        racing: an owner op of a racing incarnation (see the module doc).
        invoke_ns, complete_ns: ns since the run's origin (first send; deciding reply).
        outcome: `ok`, `fail` or `info` (None while in flight).
        error: the code that decided a fail/info (`no_reply`: no answer in time).
        attempts: how many attempts were sent.
        attempt_errors: the error of each attempt that did not decide the op (in order:
            attempt i's is `attempt_errors[i]`); nodes, sent_ns: each attempt's node and
            send time.
        session, seq: a grant's, put's or revoke's session.
        seen: an ok read or get: owner key -> [lease named by its value, lease it is
            attached to (None from a `get`)] for every owner key present; a key it
            covers (all of them for `read`, `lease/<owner>` for `get`) and that is
            missing here was absent.
        final: the read after healing.
    """

    index: int
    actor: str
    kind: str
    owner: int | None = None
    lease: int = 0
    ttl: int = 0
    racing: bool = False
    invoke_ns: int = 0
    complete_ns: int | None = None
    outcome: str | None = None
    error: str | None = None
    attempts: int = 0
    attempt_errors: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    sent_ns: list[int] = field(default_factory=list)
    session: str | None = None
    seq: int | None = None
    seen: dict[str, list[int | None]] | None = None
    final: bool = False

    def covers(self, key: str) -> bool:
        """Whether this read observed `key` (present or absent)."""
        if self.kind == "read":
            return True
        return self.kind == "get" and self.owner is not None and owner_key(self.owner) == key

    def lease_seen(self, key: str) -> int | None:
        """The lease an ok read saw `key` with (its value), None when absent."""
        assert self.seen is not None
        record = self.seen.get(key)
        return None if record is None else record[0]

    def to_json(self) -> str:
        """One JSON line."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> LeaseOp:
        """Parse a line written by `to_json`."""
        return cls(**json.loads(line))


def write_ops(path: Path, ops: Iterable[LeaseOp]) -> None:
    """One JSON line per operation."""
    with path.open("w") as out:
        for op in ops:
            out.write(op.to_json() + "\n")


def read_ops(path: Path) -> list[LeaseOp]:
    """Read a file written by `write_ops` (or streamed by a run, as operations completed),
    in invocation order."""
    ops = [LeaseOp.from_json(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(ops, key=lambda op: op.index)


# --- node events on the run's clock ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeMark:
    """One node event the checks read, at `at_ns` on the run's clock.

    Args:
        node: the node that logged it.
        event: one of `MARK_EVENTS`.
        at_ns: its timestamp, turned into ns since the run's origin.
        lease, keys: `lease_expired`'s fields.
        term: `leader_elected`'s and `role_changed`'s.
        old_role, new_role: `role_changed`'s.
    """

    node: str
    event: str
    at_ns: int
    lease: int = 0
    keys: int = 0
    term: int = 0
    old_role: str = ""
    new_role: str = ""


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def wall_ns(timestamp: str) -> int:
    """A node log's `timestamp` (ISO 8601, UTC, `Z`) as ns since the epoch."""
    moment = datetime.datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    return (moment - _EPOCH) // datetime.timedelta(microseconds=1) * 1000


def node_marks(
    events: Iterable[Mapping[str, Any]], wall_offset_ns: int, origin_ns: int
) -> list[NodeMark]:
    """The `MARK_EVENTS` of node logs on the run's clock, in time order.

    Args:
        events: parsed log lines (`ProcessCluster.events()`).
        wall_offset_ns: `time.time_ns() - time.monotonic_ns()`, measured in this process.
        origin_ns: the run's origin (`time.monotonic_ns()`).
    """
    marks = []
    for event in events:
        name = event.get("event")
        if name not in MARK_EVENTS or "timestamp" not in event:
            continue
        marks.append(
            NodeMark(
                node=str(event.get("node")),
                event=str(name),
                at_ns=wall_ns(event["timestamp"]) - wall_offset_ns - origin_ns,
                lease=int(event.get("lease", 0) or 0),
                keys=int(event.get("keys", 0) or 0),
                term=int(event.get("term", 0) or 0),
                old_role=str(event.get("old_role", "")),
                new_role=str(event.get("new_role", "")),
            )
        )
    marks.sort(key=lambda m: m.at_ns)
    return marks


def write_marks(path: Path, marks: Iterable[NodeMark]) -> None:
    """One JSON line per mark."""
    with path.open("w") as out:
        for mark in marks:
            out.write(json.dumps(asdict(mark), sort_keys=True) + "\n")


def read_marks(path: Path) -> list[NodeMark]:
    """Read a file written by `write_marks`."""
    return [NodeMark(**json.loads(x)) for x in path.read_text().splitlines() if x.strip()]


def read_faults(path: Path) -> list[Fault]:
    """Read a `faults.jsonl` (`tests.checkrun.write_faults`)."""
    return [Fault(**json.loads(x)) for x in path.read_text().splitlines() if x.strip()]


# --- the workload -----------------------------------------------------------------------


@dataclass(slots=True)
class _Actor:
    """A logical client: one REQ socket, one operation at a time; an owner's state too."""

    name: str
    number: int
    session: Session
    rotation: Rotation
    owner: int | None = None  # None: an observer
    socket: zmq.Socket[bytes] | None = None
    op: LeaseOp | None = None
    frame: bytes = b""
    waiting: bool = False
    attempt_timeout_ns: int = 0
    attempt_deadline: int = 0  # ns, while waiting
    op_deadline: int = 0  # ns: no new attempt after this
    wake_ns: int = 0  # ns: when the next op or retry starts, while not waiting
    maybe_applied: bool = False
    done: bool = False
    # --- an owner's incarnation
    phase: str = "grant"  # grant, put, alive, revoke, dying
    incarnation: int = 0
    lease: int = 0
    ttl: int = 0
    racing: bool = False
    keepalives_left: int = 0
    last_ack_invoke_ns: int = 0  # invoke of the last acknowledged grant or keepalive
    dying_since_ns: int = 0


class LeaseWorkload:
    """Owners keeping leases alive and dying, and observers, recording a `LeaseOp` history.

    Args:
        endpoints: node id -> client endpoint; clients start spread over them in order.
        owners: how many owners; observers: how many observers.
        ttls: the TTLs an incarnation draws from (seconds; at least the cluster's minimum).
        seed: seeds every choice.
        origin_ns: `time.monotonic_ns()` at the start of the run (shared with the nemesis).
        attempt_timeout_s: how long a grant, put or revoke attempt waits for its answer.
        op_timeout_s: no new attempt of a grant, put or revoke after this.
        read_attempt_s: how long a read attempt waits (then it tries another node).
        life: an incarnation sends between these many keepalives before it ends.
        revoke_share: the share of incarnations that end with a revoke instead of dying.
        racing_share: the share of racing incarnations (see the module doc).
        give_up_s: how long a dead owner waits to see its key gone before starting over.
        session_prefix: session ids are `<prefix>-<actor>`; unique per cluster.
        on_record: called with each operation as it completes.
        curve: the client keys of a secured cluster; None: plaintext.
    """

    def __init__(
        self,
        endpoints: Mapping[str, str],
        *,
        owners: int = 6,
        observers: int = 2,
        ttls: Sequence[int] = (2, 3),
        seed: int = 0,
        origin_ns: int | None = None,
        attempt_timeout_s: float = 2.0,
        op_timeout_s: float = 4.0,
        read_attempt_s: float = 1.0,
        life: tuple[int, int] = (1, 9),
        revoke_share: float = 0.15,
        racing_share: float = 0.2,
        give_up_s: float = 40.0,
        session_prefix: str = "l",
        on_record: Callable[[LeaseOp], None] | None = None,
        curve: ClientCurve | None = None,
    ) -> None:
        if owners < 1 or observers < 0 or not ttls or not endpoints:
            raise ValueError("need an owner, a TTL and an endpoint")
        self._node_ids = list(endpoints)
        self._endpoints = dict(endpoints)
        self._rng = random.Random(seed)
        self._origin_ns = time.monotonic_ns() if origin_ns is None else origin_ns
        self._attempt_ns = int(attempt_timeout_s * 1e9)
        self._op_ns = int(op_timeout_s * 1e9)
        self._read_attempt_ns = int(read_attempt_s * 1e9)
        self._ttls = list(ttls)
        self._life = life
        self._revoke_share = revoke_share
        self._racing_share = racing_share
        self._give_up_ns = int(give_up_s * 1e9)
        self._prefix = session_prefix
        self._on_record = on_record
        self._curve = curve
        self._running = False
        self.owners = owners
        self.records: list[LeaseOp] = []
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._poller = zmq.Poller()
        self._owners = [self._new_actor(f"o{i}", i, owner=i) for i in range(owners)]
        self._observers = [self._new_actor(f"r{i}", owners + i) for i in range(observers)]
        self._closed = False

    # --- public -------------------------------------------------------------------------

    def now_ns(self) -> int:
        """Nanoseconds since the run's origin."""
        return time.monotonic_ns() - self._origin_ns

    def run(self, duration_s: float, should_stop: Callable[[], bool] | None = None) -> None:
        """Run owners and observers for `duration_s`, then let every owner stop and wait
        (at most `give_up_s`) until it has seen its key gone; observers read until then."""
        stop_at = self.now_ns() + int(duration_s * 1e9)
        actors = [*self._owners, *self._observers]
        for actor in actors:
            actor.wake_ns = self.now_ns()

        def starting() -> bool:
            self._running = self.now_ns() < stop_at and not (should_stop and should_stop())
            return self._running

        self._loop(actors, lambda a: self._next_op(a, starting()))

    def final_read(self, timeout_s: float = 30.0) -> LeaseOp:
        """One linearizable read of every owner key after healing, retried until it
        succeeds or time runs out; part of the history (`final=True`)."""
        actor = self._new_actor("final", 10_000)
        deadline = self.now_ns() + int(timeout_s * 1e9)
        made: list[LeaseOp] = []

        def make(a: _Actor) -> LeaseOp | None:
            if made:
                return None
            op = self._new_read(a, None)
            op.final = True
            a.op_deadline = deadline
            made.append(op)
            return op

        actor.wake_ns = self.now_ns()
        try:
            self._loop([actor], make)
        finally:
            self._drop_socket(actor)
        return made[0]

    def close(self) -> None:
        """Close every socket (linger 0) and the context."""
        if self._closed:
            return
        self._closed = True
        for actor in [*self._owners, *self._observers]:
            self._drop_socket(actor)
        self._context.destroy(linger=0)

    # --- choosing operations ------------------------------------------------------------

    def _new_actor(self, name: str, start: int, owner: int | None = None) -> _Actor:
        rotation = Rotation([self._endpoints[n] for n in self._node_ids], start=start)
        return _Actor(name, start, Session(f"{self._prefix}-{name}"), rotation, owner=owner)

    def _next_op(self, actor: _Actor, starting: bool) -> LeaseOp | None:
        if actor.owner is None:
            if all(owner.done for owner in self._owners):
                return None
            if self._rng.random() < 0.2:  # keep observers spread over all nodes
                self._drop_socket(actor)
                actor.rotation.move_to(self._rng.randrange(len(self._node_ids)))
            if self._rng.random() < 0.15:
                return self._new_read(actor, self._rng.randrange(self.owners))
            return self._new_read(actor, None)
        return self._owner_op(actor, starting)

    def _owner_op(self, actor: _Actor, starting: bool) -> LeaseOp | None:
        """The next operation of an owner, by the phase of its incarnation."""
        if actor.phase == "grant":
            if not starting:
                actor.done = True
                return None
            actor.incarnation += 1
            assert actor.owner is not None
            actor.lease = lease_id(actor.owner, actor.incarnation)
            actor.ttl = self._rng.choice(self._ttls)
            actor.racing = self._rng.random() < self._racing_share
            return self._new_lease_op(actor, "lease_grant", ttl=actor.ttl, lease=actor.lease)
        if actor.phase == "put":
            fields = {"key": owner_key(actor.owner or 0), "value": str(actor.lease)}
            return self._new_lease_op(actor, "put", lease=actor.lease, **fields)
        if actor.phase == "alive":
            if starting and actor.keepalives_left > 0:
                return self._new_lease_op(actor, "lease_keepalive", lease=actor.lease)
            if starting and self._rng.random() < self._revoke_share:
                actor.phase = "revoke"
                return self._new_lease_op(actor, "lease_revoke", lease=actor.lease)
            self._stop(actor)
        if actor.phase == "dying" and self.now_ns() - actor.dying_since_ns > self._give_up_ns:
            actor.phase = "grant"  # the checks flag a key that outlived its bound
            return self._owner_op(actor, starting)
        return self._new_read(actor, actor.owner)

    def _stop(self, actor: _Actor) -> None:
        """The owner stops keeping its lease alive (a simulated crash): record it."""
        op = self._record_op(actor, "stop")
        op.complete_ns, op.outcome = op.invoke_ns, OK
        self._finish_record(op)
        actor.phase, actor.dying_since_ns = "dying", op.invoke_ns

    def _record_op(self, actor: _Actor, kind: str) -> LeaseOp:
        op = LeaseOp(index=len(self.records), actor=actor.name, kind=kind, owner=actor.owner)
        if actor.owner is not None and kind != "get":
            op.lease, op.ttl, op.racing = actor.lease, actor.ttl, actor.racing
        op.invoke_ns = self.now_ns()
        self.records.append(op)
        return op

    def _new_lease_op(self, actor: _Actor, request: str, **fields: Any) -> LeaseOp:
        kind = {"lease_grant": "grant", "lease_keepalive": "keepalive", "lease_revoke": "revoke"}
        op = self._record_op(actor, kind.get(request, request))
        if request != "lease_keepalive":
            session = actor.session.take()  # every attempt re-sends it: applied at most once
            op.session, op.seq = session["client"], session["seq"]
            fields.update(session)
            actor.attempt_timeout_ns = self._attempt_ns
            actor.op_deadline = op.invoke_ns + self._op_ns
        else:
            ttl_ns = int(actor.ttl * 1e9)
            actor.attempt_timeout_ns = max(500_000_000, ttl_ns // 3)
            actor.op_deadline = op.invoke_ns + ttl_ns
        actor.frame = wire.encode_request(request, **fields)
        actor.maybe_applied = False
        return op

    def _new_read(self, actor: _Actor, owner: int | None) -> LeaseOp:
        """A linearizable `range` over the prefix (owner None) or `get` of one owner key."""
        op = self._record_op(actor, "read" if owner is None else "get")
        op.owner = owner
        if owner is None:
            actor.frame = wire.encode_request("range", key=PREFIX, prefix=True)
        else:
            actor.frame = wire.encode_request("get", key=owner_key(owner))
        actor.attempt_timeout_ns = self._read_attempt_ns
        actor.op_deadline = op.invoke_ns + 3 * self._read_attempt_ns
        actor.maybe_applied = False
        return op

    # --- after an operation: the owner's next phase and wake time -------------------------

    def _after(self, actor: _Actor, op: LeaseOp) -> None:
        now = op.complete_ns or self.now_ns()
        think = self._rng.randrange(20_000_000, 60_000_000)
        actor.wake_ns = now + think
        if actor.owner is None or op.kind == "stop":
            return
        if op.kind == "grant":
            if op.outcome == OK:
                actor.phase, actor.wake_ns = "put", now
                actor.last_ack_invoke_ns = op.invoke_ns
            # else: a new incarnation (an indeterminate grant's lease expires on its own)
        elif op.kind == "put":
            if op.outcome == OK:
                actor.phase = "alive"
                actor.keepalives_left = self._rng.randint(*self._life)
                actor.wake_ns = max(now, self._next_keepalive_ns(actor, op))
            elif op.outcome == INFO:
                self._stop(actor)  # the key may exist: wait until it is seen gone
            else:
                actor.phase = "grant"
        elif op.kind == "keepalive":
            actor.keepalives_left -= 1
            if op.outcome == OK:
                actor.last_ack_invoke_ns = op.invoke_ns
                if actor.keepalives_left > 0:  # else it stops right after this ack
                    actor.wake_ns = max(now, self._next_keepalive_ns(actor, op))
            elif op.outcome == FAIL:
                actor.phase = "grant"  # lost: lease_not_found
        elif op.kind == "revoke":
            actor.phase, actor.dying_since_ns = "dying", op.invoke_ns
        elif op.kind == "get" and actor.phase == "dying" and op.outcome == OK:
            if op.lease_seen(owner_key(actor.owner)) != actor.lease:
                actor.phase = "grant"
            else:
                actor.wake_ns = now + 100_000_000

    def _next_keepalive_ns(self, actor: _Actor, op: LeaseOp) -> int:
        """When the next keepalive goes: TTL/3 after this one was sent, or (racing) about
        a TTL after the last acknowledged refresh was sent."""
        ttl_ns = int(actor.ttl * 1e9)
        if actor.racing:
            return actor.last_ack_invoke_ns + ttl_ns + self._rng.randrange(-100, 60) * 1_000_000
        return op.invoke_ns + ttl_ns // 3

    # --- the loop and attempts (as `tests.workload.Workload`) ---------------------------

    def _loop(self, actors: list[_Actor], next_op: Callable[[_Actor], LeaseOp | None]) -> None:
        """Serve `actors` until none has an operation in flight and `next_op` gives none."""
        active = {id(a): a for a in actors}
        while active:
            now = self.now_ns()
            for actor in list(active.values()):
                if actor.waiting and now >= actor.attempt_deadline:
                    self._attempt_failed(actor, "no_reply", maybe=True, drop_socket=True)
                if not actor.waiting and now >= actor.wake_ns:
                    if actor.op is None:
                        actor.op = next_op(actor)
                        if actor.op is None:
                            del active[id(actor)]
                            self._drop_socket(actor)
                            continue
                    self._send(actor)
            if not active:
                break
            waiting = {a.socket: a for a in active.values() if a.waiting}
            timers = [a.attempt_deadline if a.waiting else a.wake_ns for a in active.values()]
            timeout_ms = max(0, (min(timers) - self.now_ns()) // 1_000_000 + 1)
            for sock, _ in self._poller.poll(timeout_ms):
                actor = waiting.get(sock)
                if actor is None:
                    continue
                frames = sock.recv_multipart()
                actor.waiting = False
                self._handle_reply(actor, frames)

    def _socket(self, actor: _Actor) -> zmq.Socket[bytes]:
        if actor.socket is None:
            sock = self._context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            endpoint = actor.rotation.current
            if self._curve is not None:
                self._curve.apply(sock, endpoint)
            sock.connect(endpoint)
            self._poller.register(sock, zmq.POLLIN)
            actor.socket = sock
        return actor.socket

    def _drop_socket(self, actor: _Actor) -> None:
        if actor.socket is not None:
            self._poller.unregister(actor.socket)
            actor.socket.close(linger=0)
            actor.socket = None

    def _send(self, actor: _Actor) -> None:
        assert actor.op is not None
        self._socket(actor).send(actor.frame)
        actor.op.attempts += 1
        actor.op.nodes.append(self._node_ids[actor.rotation.position])
        actor.op.sent_ns.append(self.now_ns())
        actor.waiting = True
        actor.attempt_deadline = self.now_ns() + actor.attempt_timeout_ns

    def _handle_reply(self, actor: _Actor, frames: list[bytes]) -> None:
        op = actor.op
        assert op is not None
        try:
            if len(frames) != 1:
                raise wire.DecodeError("a reply is one frame")
            reply = Reply.from_map(wire.decode_reply(frames[0]))
        except wire.DecodeError:
            self._attempt_failed(actor, "malformed_reply", maybe=True, drop_socket=True)
            return
        code = reply.error_code or "unknown"
        if op.kind in ("read", "get"):
            if reply.ok and self._observed(op, reply):
                self._complete(actor, OK, None)
            else:
                self._attempt_failed(actor, code, maybe=False, drop_socket=False)
        elif reply.ok:
            self._complete(actor, OK, None)
        elif code in DEFINITE_FAIL_CODES:
            self._complete(actor, FAIL, code)
        else:
            maybe = code not in wl.NOT_PROPOSED_CODES  # `unavailable` too (tests.workload)
            self._attempt_failed(actor, code, maybe=maybe, drop_socket=False)

    @staticmethod
    def _observed(op: LeaseOp, reply: Reply) -> bool:
        """Fill `op.seen` from an ok read's reply; False if the reply is malformed."""
        if op.kind == "get":
            if reply.found is None:
                return False
            assert op.owner is not None
            value = _lease_of(reply.value) if reply.found else None
            op.seen = {} if value is None else {owner_key(op.owner): [value, None]}
            return not reply.found or value is not None
        kvs = reply.kvs
        if kvs is None or reply.more:
            return False
        seen: dict[str, list[int | None]] = {}
        for kv in kvs:
            named = _lease_of(kv.value)
            if named is None:
                return False
            seen[kv.key.decode("utf-8", "backslashreplace")] = [named, kv.lease]
        op.seen = seen
        return True

    def _attempt_failed(self, actor: _Actor, code: str, *, maybe: bool, drop_socket: bool) -> None:
        """An attempt ended without a decision: retry on the next node, or give up."""
        op = actor.op
        assert op is not None
        actor.waiting = False
        op.attempt_errors.append(code)
        if maybe and op.kind not in ("read", "get"):
            actor.maybe_applied = True
        if drop_socket:
            self._drop_socket(actor)  # a REQ socket that got no reply cannot send again
        now = self.now_ns()
        if now >= actor.op_deadline:
            self._complete(actor, INFO if actor.maybe_applied else FAIL, code)
            return
        self._drop_socket(actor)
        actor.rotation.advance()
        actor.wake_ns = now + self._rng.randrange(20_000_000, 60_000_000)

    def _complete(self, actor: _Actor, outcome: str, code: str | None) -> None:
        op = actor.op
        assert op is not None
        op.complete_ns = self.now_ns()
        op.outcome, op.error = outcome, code
        actor.op = None
        self._after(actor, op)
        self._finish_record(op)

    def _finish_record(self, op: LeaseOp) -> None:
        if self._on_record is not None:
            self._on_record(op)


def _lease_of(value: Any) -> int | None:
    """The lease id an owner key's value names, None if it is not one."""
    if isinstance(value, bytes):
        value = value.decode("utf-8", "backslashreplace")
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


# --- the checks -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LeaseParams:
    """The allowances of the lifetime bound (see the module doc).

    Args:
        election_max_s: E, the cluster's maximum election timeout.
        margin_s: M: the leader's tick, the expiry's commit, the apply, a loaded core.
        catchup_s: C: how long after a fault ends a node it hit may still restart a
            lease's clock (apply the last refresh, restart, install a snapshot).
        propagation_s: P: how long after acknowledging a refresh a leader may fail
            before every follower knows the refresh is committed.
        slack_s: a fault ends its victim's leadership this much before its recorded start.
        tolerance_s: the error of node log timestamps on the run's clock.
        request_timeout_s: R, the cluster's request timeout: how long a node may hold a
            request (parked, forwarded, waiting for its refresh) before it gives up.
    """

    election_max_s: float
    request_timeout_s: float = 1.5
    margin_s: float = 0.5
    catchup_s: float = 1.0
    propagation_s: float = 0.3
    slack_s: float = 0.1
    tolerance_s: float = 0.05


@dataclass(frozen=True, slots=True)
class LeaseAnomaly:
    """One thing a check found.

    Args:
        check: `early`, `revoked-visible`, `reappeared`, `outlived-faults`,
            `outlived-leader`, `expired-unknown`, `expired-while-kept`,
            `acked-after-expiry`, `detached`.
        lease: the lease; op: the operation that shows it (-1: a node log).
        detail: what was seen, with times in seconds since the origin.
    """

    check: str
    lease: int
    op: int
    detail: str


@dataclass(slots=True)
class Incarnation:
    """One lease of one owner, and the owner's operations on it (invocation order)."""

    owner: int
    lease: int
    ttl: int
    ops: list[LeaseOp] = field(default_factory=list)

    @property
    def key(self) -> str:
        """The owner's key."""
        return owner_key(self.owner)

    @property
    def ttl_ns(self) -> int:
        """The TTL in ns."""
        return self.ttl * 1_000_000_000

    def first(self, kind: str) -> LeaseOp | None:
        """The first operation of `kind`, if any."""
        return next((op for op in self.ops if op.kind == kind), None)

    def acked(self) -> list[LeaseOp]:
        """The acknowledged refreshes: the grant if ok, and every ok keepalive."""
        return [op for op in self.ops if op.kind in ("grant", "keepalive") and op.outcome == OK]

    def last_ack_ns(self) -> int | None:
        """When the last acknowledged refresh completed."""
        return max((op.complete_ns or 0 for op in self.acked()), default=None)

    def unanswered(self) -> list[tuple[LeaseOp, int]]:
        """`(op, send time)` of every refresh attempt that may take effect unseen: each
        keepalive attempt without a definite answer (even of an op a later attempt
        decided: keepalives carry no session), and each attempt of a grant that was not
        acknowledged."""
        found = []
        for op in self.ops:
            if op.kind not in ("grant", "keepalive") or (op.kind == "grant" and op.outcome == OK):
                continue
            for i, error in enumerate(op.attempt_errors):
                if error not in NOT_APPLIED_CODES:
                    found.append((op, op.sent_ns[i] if i < len(op.sent_ns) else op.invoke_ns))
        return found

    def established_ns(self, reads: Sequence[LeaseOp]) -> int | None:
        """When its key was surely attached: the put's ok, or the first read showing it."""
        put = self.first("put")
        times = [put.complete_ns or 0] if put is not None and put.outcome == OK else []
        times += [r.complete_ns or 0 for r in reads if r.lease_seen(self.key) == self.lease]
        return min(times, default=None)

    def stopped_ns(self) -> int | None:
        """When its owner stopped keeping it alive: a `stop`, or a revoke not acknowledged."""
        stop = self.first("stop")
        if stop is not None:
            return stop.invoke_ns
        revoke = self.first("revoke")
        if revoke is not None and revoke.outcome != OK:
            return revoke.invoke_ns
        return None


def incarnations(ops: Iterable[LeaseOp]) -> dict[int, Incarnation]:
    """lease -> its incarnation (every owner operation that names a lease)."""
    found: dict[int, Incarnation] = {}
    for op in ops:
        if op.owner is None or op.lease == 0 or op.kind in ("read", "get"):
            continue
        inc = found.get(op.lease)
        if inc is None:
            inc = found[op.lease] = Incarnation(op.owner, op.lease, op.ttl)
        inc.ops.append(op)
    return found


def reads_of(ops: Iterable[LeaseOp]) -> dict[str, list[LeaseOp]]:
    """owner key -> the ok reads and gets that observed it, by invocation."""
    by_key: dict[str, list[LeaseOp]] = defaultdict(list)
    owners = sorted({op.owner for op in ops if op.owner is not None})
    for op in ops:
        if op.kind not in ("read", "get") or op.outcome != OK or op.seen is None:
            continue
        for owner in owners:
            if op.covers(owner_key(owner)):
                by_key[owner_key(owner)].append(op)
    for reads in by_key.values():
        reads.sort(key=lambda r: r.invoke_ns)
    return dict(by_key)


def _s(ns: int | None) -> str:
    return "?" if ns is None else f"{ns / 1e9:.3f}s"


def check_early(
    incs: Mapping[int, Incarnation], reads: Mapping[str, Sequence[LeaseOp]]
) -> list[LeaseAnomaly]:
    """(a) No sign of a lease gone before `protect` (see the module doc)."""
    found: list[LeaseAnomaly] = []
    for inc in incs.values():
        acked = inc.acked()
        if not acked:
            continue
        newest = max(acked, key=lambda op: op.invoke_ns)
        protect = newest.invoke_ns + inc.ttl_ns
        revoke = inc.first("revoke")
        cutoff = INF if revoke is None else revoke.invoke_ns
        why = f"ack of #{newest.index} invoked at {_s(newest.invoke_ns)} + ttl {inc.ttl}s"
        for op in inc.ops:
            if op.error == "lease_not_found" and (op.complete_ns or INF) < protect:
                if op.kind != "revoke" and (op.complete_ns or INF) >= cutoff:
                    continue
                found.append(
                    LeaseAnomaly(
                        "early",
                        inc.lease,
                        op.index,
                        f"{op.kind} #{op.index} answered lease_not_found at "
                        f"{_s(op.complete_ns)}, before {_s(protect)} ({why})",
                    )
                )
        keyed = reads.get(inc.key, ())
        established = inc.established_ns(keyed)
        if established is None:
            continue
        for read in keyed:
            done = read.complete_ns or INF
            if read.invoke_ns <= established or done >= min(protect, cutoff):
                continue
            if read.lease_seen(inc.key) is None:
                found.append(
                    LeaseAnomaly(
                        "early",
                        inc.lease,
                        read.index,
                        f"{read.kind} #{read.index} [{_s(read.invoke_ns)}..{_s(done)}] saw "
                        f"{inc.key} absent before {_s(protect)} ({why})",
                    )
                )
    return found


def check_revoked(
    incs: Mapping[int, Incarnation], reads: Mapping[str, Sequence[LeaseOp]]
) -> list[LeaseAnomaly]:
    """(b) After an acknowledged revoke, no read shows the lease's key."""
    found = []
    for inc in incs.values():
        revoke = inc.first("revoke")
        if revoke is None or revoke.outcome != OK:
            continue
        for read in reads.get(inc.key, ()):
            if read.invoke_ns > (revoke.complete_ns or INF) and (
                read.lease_seen(inc.key) == inc.lease
            ):
                found.append(
                    LeaseAnomaly(
                        "revoked-visible",
                        inc.lease,
                        read.index,
                        f"{read.kind} #{read.index} invoked at {_s(read.invoke_ns)} saw "
                        f"{inc.key} with lease {inc.lease}, revoked (ok) at "
                        f"{_s(revoke.complete_ns)}",
                    )
                )
    return found


def check_reappeared(
    incs: Mapping[int, Incarnation], reads: Mapping[str, Sequence[LeaseOp]]
) -> list[LeaseAnomaly]:
    """(c) A lease's key seen gone never shows again; (and `detached`: a range shows the
    key attached to another lease than its value names)."""
    found = []
    for inc in incs.values():
        keyed = reads.get(inc.key, ())
        established = inc.established_ns(keyed)
        if established is None:
            continue
        gone: LeaseOp | None = None
        for read in keyed:
            shows_other = read.lease_seen(inc.key) != inc.lease
            earlier = gone is None or (read.complete_ns or INF) < (gone.complete_ns or INF)
            if read.invoke_ns > established and shows_other and earlier:
                gone = read
        if gone is None:
            continue
        for read in keyed:
            if read.invoke_ns > (gone.complete_ns or INF) and (
                read.lease_seen(inc.key) == inc.lease
            ):
                found.append(
                    LeaseAnomaly(
                        "reappeared",
                        inc.lease,
                        read.index,
                        f"{read.kind} #{read.index} invoked at {_s(read.invoke_ns)} saw "
                        f"{inc.key} with lease {inc.lease}, which {gone.kind} #{gone.index} "
                        f"had seen gone by {_s(gone.complete_ns)}",
                    )
                )
    for key, keyed in reads.items():
        for read in keyed:
            record = (read.seen or {}).get(key)
            if record is not None and record[1] is not None and record[1] != record[0]:
                found.append(
                    LeaseAnomaly(
                        "detached",
                        record[0] or 0,
                        read.index,
                        f"{read.kind} #{read.index} saw {key} (value {record[0]}) attached "
                        f"to lease {record[1]}",
                    )
                )
    return found


# --- the lifetime bound -----------------------------------------------------------------


def refresh_window(
    inc: Incarnation, faults: Sequence[Fault], params: LeaseParams
) -> tuple[int | None, bool]:
    """`(last_refresh, doubtful)` of an incarnation (module doc, terms).

    An unanswered attempt sent at s may still take effect: the node holds a request up
    to R, and a request sent to a node that was paused (or to a follower whose leader
    was) waits in its socket until the pause ends, so until `max(s, the end of every
    pause going on at s) + R`. `doubtful`: some such moment lies after the last
    acknowledgement (its refresh may even be committed by the next leader's first entry).
    """
    r_ns, slack = int(params.request_timeout_s * 1e9), int(params.slack_s * 1e9)
    last_ack = inc.last_ack_ns()
    latest = last_ack
    doubtful = False
    for _, sent in inc.unanswered():
        held = max(
            [sent]
            + [
                _end(f)
                for f in faults
                if f.kind in ("pause", "pause-leader") and f.start_ns - slack <= sent <= _end(f)
            ]
        )
        late = min(INF, held + r_ns)
        latest = late if latest is None else max(latest, late)
        doubtful = doubtful or last_ack is None or late > last_ack
    return latest, doubtful


def _hit(fault: Fault, node: str) -> bool:
    """Whether `fault` may hold `node` back (so it restarts lease clocks afterwards)."""
    if fault.kind == "loss":
        return True
    return fault.kind in HIT_KINDS and node in fault.nodes


def _end(fault: Fault) -> int:
    return INF if fault.end_ns is None else fault.end_ns


def coarse_bound(
    last_refresh: int,
    ttl_ns: int,
    faults: Sequence[Fault],
    marks: Sequence[NodeMark],
    params: LeaseParams,
) -> int:
    """The `outlived-faults` bound (module doc, d), in ns since the origin."""
    e_ns, m_ns = int(params.election_max_s * 1e9), int(params.margin_s * 1e9)
    c_ns, p_ns = int(params.catchup_s * 1e9), int(params.propagation_s * 1e9)
    bound = last_refresh + ttl_ns + e_ns + m_ns + p_ns
    changed = True
    while changed:
        changed = False
        for fault in faults:
            if fault.start_ns <= bound and _end(fault) + c_ns >= last_refresh:
                later = min(INF, _end(fault) + c_ns + ttl_ns + e_ns + m_ns)
                if later > bound:
                    bound, changed = later, True
        for mark in marks:
            if not last_refresh <= mark.at_ns <= bound:
                continue
            if mark.event == "leader_elected":
                later = mark.at_ns + ttl_ns + m_ns
            elif mark.event in ("node_started", "snapshot_installed"):
                later = mark.at_ns + ttl_ns + e_ns + m_ns
            else:
                continue
            if later > bound:
                bound, changed = later, True
    return bound


@dataclass(frozen=True, slots=True)
class Leadership:
    """A stretch of time in which one node led and could commit.

    Args:
        node: the leader.
        start_ns: its election (or the end of packet loss plus C, if elected during it).
        elected_ns: its election.
        end_ns: the next election, its stepping down, or a fault that stopped it.
        explained_ns: the start of the fault on the previous leader that explains the
            change to this one (None: not explained by a fault).
    """

    node: str
    start_ns: int
    elected_ns: int
    end_ns: int
    explained_ns: int | None


def leaderships(
    marks: Sequence[NodeMark], faults: Sequence[Fault], params: LeaseParams
) -> list[Leadership]:
    """Who led when and could commit, from the `leader_elected` and `role_changed` marks
    and the faults (module doc, d): one `Leadership` per stretch between the holes that
    packet loss and transfers cut into a leader's term."""
    slack, c_ns = int(params.slack_s * 1e9), int(params.catchup_s * 1e9)
    elected = [m for m in marks if m.event == "leader_elected"]
    holes = sorted(
        (f.start_ns - slack, min(INF, _end(f) + (c_ns if f.kind == "loss" else slack)))
        for f in faults
        if f.kind in ("loss", "transfer-leader")
    )
    found = []
    previous: NodeMark | None = None
    for i, mark in enumerate(elected):
        node = mark.node
        ends = [elected[i + 1].at_ns] if i + 1 < len(elected) else [INF]
        ends += [
            m.at_ns
            for m in marks
            if m.event == "role_changed"
            and m.node == node
            and m.old_role == "leader"
            and m.at_ns > mark.at_ns
        ]
        ends += [
            f.start_ns - slack
            for f in faults
            if f.start_ns > mark.at_ns and f.kind in LEADER_ENDING_KINDS and node in f.nodes
        ]
        explained = None
        if previous is not None:
            explaining = [
                f.start_ns
                for f in faults
                if previous.at_ns <= f.start_ns <= mark.at_ns
                and (
                    f.kind == "transfer-leader"
                    or (f.kind in LEADER_ENDING_KINDS and previous.node in f.nodes)
                )
            ]
            explained = min(explaining, default=None)
        low, end = mark.at_ns, min(ends)
        for hole_low, hole_high in holes:
            if hole_high <= low or hole_low >= end:
                continue
            if hole_low > low:
                found.append(Leadership(node, low, mark.at_ns, hole_low, explained))
            low = max(low, hole_high)
        if low < end:
            found.append(Leadership(node, low, mark.at_ns, end, explained))
        previous = mark
    return found


def clock_start(
    leader: Leadership,
    last_refresh: int,
    doubtful: bool,
    faults: Sequence[Fault],
    marks: Sequence[NodeMark],
    params: LeaseParams,
) -> int:
    """`c_l`: the latest moment `leader.node` may have (re)started the lease's clock."""
    c_ns, p_ns = int(params.catchup_s * 1e9), int(params.propagation_s * 1e9)
    tolerance = int(params.tolerance_s * 1e9)
    start = last_refresh
    for fault in faults:
        if (
            _hit(fault, leader.node)
            and fault.start_ns <= min(leader.end_ns, last_refresh + p_ns)
            and _end(fault) + c_ns >= last_refresh
        ):
            start = max(start, min(INF, _end(fault) + c_ns))
    for mark in marks:
        if (
            mark.node == leader.node
            and mark.event in ("node_started", "snapshot_installed")
            and last_refresh - tolerance <= mark.at_ns <= leader.end_ns
        ):
            start = max(start, mark.at_ns)
    if leader.elected_ns > last_refresh and (
        doubtful or leader.explained_ns is None or leader.explained_ns < last_refresh + p_ns
    ):
        start = max(start, leader.elected_ns)
    return start


def tight_bound(
    last_refresh: int,
    ttl_ns: int,
    doubtful: bool,
    leaders: Sequence[Leadership],
    faults: Sequence[Fault],
    marks: Sequence[NodeMark],
    params: LeaseParams,
) -> tuple[int, Leadership] | None:
    """The `outlived-leader` bound and the leadership that gives it, or None."""
    m_ns = int(params.margin_s * 1e9)
    best: tuple[int, Leadership] | None = None
    for leader in leaders:
        if leader.end_ns <= last_refresh or leader.start_ns >= leader.end_ns:
            continue
        clock = clock_start(leader, last_refresh, doubtful, faults, marks, params)
        expiry = max(leader.start_ns, clock + ttl_ns) + m_ns
        if expiry <= leader.end_ns and (best is None or expiry < best[0]):
            best = (expiry, leader)
    return best


@dataclass(frozen=True, slots=True)
class LeaseDelay:
    """How long a stopped owner's key outlived its last acknowledged keepalive.

    Args:
        lease, ttl: the lease.
        last_ack_ns: the completion of its last acknowledged refresh.
        gone_ns: the completion of the first read that saw the key gone.
        expired_ns: the first `lease_expired` of the lease in any node log (None: none).
        leader_change: a `leader_elected` lies between `last_ack_ns` and `gone_ns`.
        bound_ns: the bound it was held to (the tight one if any, else the coarse one).
        rule: `leader` or `faults`.
    """

    lease: int
    ttl: int
    last_ack_ns: int
    gone_ns: int
    expired_ns: int | None
    leader_change: bool
    bound_ns: int
    rule: str

    @property
    def delay_s(self) -> float:
        """From the last acknowledgement to the first absence seen."""
        return (self.gone_ns - self.last_ack_ns) / 1e9

    @property
    def overshoot_s(self) -> float:
        """`delay_s` minus the TTL."""
        return self.delay_s - self.ttl

    @property
    def expiry_overshoot_s(self) -> float | None:
        """From the last acknowledgement to the first `lease_expired`, minus the TTL."""
        if self.expired_ns is None:
            return None
        return (self.expired_ns - self.last_ack_ns) / 1e9 - self.ttl


@dataclass(slots=True)
class BoundResult:
    """What `check_bounds` found: anomalies, the delays, the unresolved incarnations."""

    anomalies: list[LeaseAnomaly] = field(default_factory=list)
    delays: list[LeaseDelay] = field(default_factory=list)
    unresolved: list[int] = field(default_factory=list)
    judged_tight: int = 0
    judged_coarse: int = 0


def check_bounds(
    incs: Mapping[int, Incarnation],
    reads: Mapping[str, Sequence[LeaseOp]],
    faults: Sequence[Fault],
    marks: Sequence[NodeMark],
    params: LeaseParams,
) -> BoundResult:
    """(d) A stopped owner's key goes within the bounds; the delays (module doc, d)."""
    result = BoundResult()
    leaders = leaderships(marks, faults, params)
    elections = [m.at_ns for m in marks if m.event == "leader_elected"]
    expired: dict[int, int] = {}
    for mark in marks:
        if mark.event == "lease_expired":
            expired.setdefault(mark.lease, mark.at_ns)
    for inc in incs.values():
        stopped = inc.stopped_ns()
        last_refresh, doubtful = refresh_window(inc, faults, params)
        keyed = reads.get(inc.key, ())
        established = inc.established_ns(keyed)
        if stopped is None or last_refresh is None or established is None:
            continue
        coarse = coarse_bound(last_refresh, inc.ttl_ns, faults, marks, params)
        tight = tight_bound(last_refresh, inc.ttl_ns, doubtful, leaders, faults, marks, params)
        if tight is None:
            result.judged_coarse += 1
        else:
            result.judged_tight += 1
        bounds = [("outlived-faults", coarse, "the fault rule")]
        if tight is not None:
            how = (
                f"leader {tight[1].node} elected {_s(tight[1].elected_ns)}, "
                f"leading until {_s(tight[1].end_ns if tight[1].end_ns < INF else None)}"
            )
            bounds.append(("outlived-leader", tight[0], how))
        for check, bound, how in bounds:
            late = [r for r in keyed if r.invoke_ns > bound and r.lease_seen(inc.key) == inc.lease]
            if late:
                read = late[0]
                result.anomalies.append(
                    LeaseAnomaly(
                        check,
                        inc.lease,
                        read.index,
                        f"{read.kind} #{read.index} invoked at {_s(read.invoke_ns)} saw "
                        f"{inc.key} with lease {inc.lease} (ttl {inc.ttl}s); owner stopped "
                        f"at {_s(stopped)}, last refresh {_s(last_refresh)}, bound "
                        f"{_s(bound)} ({how}); {len(late)} such reads",
                    )
                )
        gone = [
            r for r in keyed if r.invoke_ns > established and r.lease_seen(inc.key) != inc.lease
        ]
        if not gone:
            result.unresolved.append(inc.lease)
            continue
        first = min(gone, key=lambda r: r.complete_ns or INF)
        last_ack = inc.last_ack_ns()
        gone_ns = first.complete_ns or INF
        if last_ack is None or gone_ns < stopped:
            continue  # gone before the owner stopped: a lost lease (checked by `early`)
        change = any(last_ack <= at <= gone_ns for at in elections)
        bound, rule = (coarse, "faults") if tight is None else (tight[0], "leader")
        result.delays.append(
            LeaseDelay(
                inc.lease,
                inc.ttl,
                last_ack,
                gone_ns,
                expired.get(inc.lease),
                change,
                bound,
                rule,
            )
        )
    return result


def check_expiries(
    incs: Mapping[int, Incarnation], marks: Sequence[NodeMark], params: LeaseParams
) -> list[LeaseAnomaly]:
    """(e) Every `lease_expired` in the node logs is legitimate (module doc, e)."""
    tolerance = int(params.tolerance_s * 1e9)
    first: dict[int, NodeMark] = {}
    for mark in marks:
        if mark.event == "lease_expired" and mark.lease not in first:
            first[mark.lease] = mark
    found = []
    for lease, mark in sorted(first.items()):
        inc = incs.get(lease)
        if inc is None:
            found.append(
                LeaseAnomaly(
                    "expired-unknown",
                    lease,
                    -1,
                    f"{mark.node} expired lease {lease} at {_s(mark.at_ns)}: not a lease "
                    "of this run",
                )
            )
            continue
        at = mark.at_ns
        for op in inc.acked():
            if op.invoke_ns <= at + tolerance and at + tolerance < op.invoke_ns + inc.ttl_ns:
                found.append(
                    LeaseAnomaly(
                        "expired-while-kept",
                        lease,
                        op.index,
                        f"{mark.node} expired lease {lease} at {_s(at)}, less than its ttl "
                        f"{inc.ttl}s after acknowledged {op.kind} #{op.index} was invoked "
                        f"at {_s(op.invoke_ns)}",
                    )
                )
            elif op.invoke_ns > at + tolerance:
                found.append(
                    LeaseAnomaly(
                        "acked-after-expiry",
                        lease,
                        op.index,
                        f"{op.kind} #{op.index} invoked at {_s(op.invoke_ns)} was "
                        f"acknowledged, but {mark.node} had expired lease {lease} at {_s(at)}",
                    )
                )
    return found


@dataclass(slots=True)
class LeaseCheck:
    """Everything `check_leases` found."""

    anomalies: list[LeaseAnomaly]
    bounds: BoundResult
    incarnations: dict[int, Incarnation]


def check_leases(
    ops: Sequence[LeaseOp],
    faults: Sequence[Fault],
    marks: Sequence[NodeMark],
    params: LeaseParams,
) -> LeaseCheck:
    """Run every check of the module doc on a history."""
    incs = incarnations(ops)
    reads = reads_of(ops)
    bounds = check_bounds(incs, reads, faults, marks, params)
    anomalies = [
        *check_early(incs, reads),
        *check_revoked(incs, reads),
        *check_reappeared(incs, reads),
        *bounds.anomalies,
        *check_expiries(incs, marks, params),
    ]
    return LeaseCheck(anomalies, bounds, incs)


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of `values` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(fraction * len(ordered) + 0.5) - 1))
    return ordered[rank]


def delay_stats(delays: Iterable[LeaseDelay]) -> dict[str, dict[str, float]]:
    """`stable` / `leader change` -> count, p50, p99 and max (s) of: the delay from the
    last ack to the first read that saw the key gone (`seen_*`), the same minus the TTL
    (`over_*`), and the delay to the first `lease_expired` minus the TTL (`expiry_over_*`:
    the revocation itself, without the observers' lag)."""
    groups: dict[str, list[LeaseDelay]] = {"stable": [], "leader change": []}
    for delay in delays:
        groups["leader change" if delay.leader_change else "stable"].append(delay)
    stats = {}
    for name, group in groups.items():
        series = {
            "seen": [d.delay_s for d in group],
            "over": [d.overshoot_s for d in group],
            "expiry_over": [x for d in group if (x := d.expiry_overshoot_s) is not None],
        }
        row: dict[str, float] = {"count": len(group)}
        for label, values in series.items():
            row[f"{label}_p50"] = round(percentile(values, 0.5), 3)
            row[f"{label}_p99"] = round(percentile(values, 0.99), 3)
            row[f"{label}_max"] = round(max(values, default=0.0), 3)
        stats[name] = row
    return stats


# --- a whole run ------------------------------------------------------------------------


def endings(incs: Iterable[Incarnation]) -> dict[str, int]:
    """How incarnations ended: died, revoked, lost, failed (no key), running."""
    counts: Counter[str] = Counter()
    for inc in incs:
        put, revoke = inc.first("put"), inc.first("revoke")
        if inc.first("stop") is not None:
            counts["died"] += 1
        elif revoke is not None:
            counts["revoked"] += 1
        elif any(op.error == "lease_not_found" for op in inc.ops):
            counts["lost"] += 1
        elif put is None or put.outcome != OK:
            counts["no key"] += 1
        else:
            counts["other"] += 1
    return dict(counts)


@dataclass(slots=True)
class LeaseReport:
    """Everything a lease run found; `exit_code` says what the runner returns."""

    seed: int
    nodes: int
    owners: int
    observers: int
    ttls: tuple[int, ...]
    duration_s: float
    directory: Path
    ops_path: Path
    params: LeaseParams
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    endings: dict[str, int] = field(default_factory=dict)
    anomalies: list[LeaseAnomaly] = field(default_factory=list)
    delays: list[LeaseDelay] = field(default_factory=list)
    unresolved: list[int] = field(default_factory=list)
    judged: dict[str, int] = field(default_factory=dict)
    expired_events: int = 0
    expired_leases: int = 0
    elections: int = 0
    loop_stalls: int = 0
    safety: str | None = None
    snapshots: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)
    check_s: float = 0.0

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

    def anomaly_counts(self) -> dict[str, int]:
        """check -> how many anomalies it found."""
        return dict(Counter(anomaly.check for anomaly in self.anomalies))

    def summary(self) -> str:
        """A human-readable summary of the run."""
        lines = [
            f"zraft lease nemesis: seed={self.seed} nodes={self.nodes} owners={self.owners} "
            f"observers={self.observers} ttls={list(self.ttls)} duration={self.duration_s:g}s",
            f"directory: {self.directory}",
            f"history:   {self.ops_path}",
            "operations (kind: outcome counts):",
        ]
        for kind in sorted(self.outcomes):
            counts = ", ".join(f"{o}={n}" for o, n in sorted(self.outcomes[kind].items()))
            lines.append(f"  {kind:9s} {counts}")
        lines.append(
            "incarnations: " + ", ".join(f"{k}={n}" for k, n in sorted(self.endings.items()))
        )
        counts = count_faults(self.faults, FAULT_KINDS)
        lines.append("faults: " + (", ".join(f"{k}={n}" for k, n in counts.items()) or "none"))
        lines.append(
            f"node logs: lease_expired={self.expired_events} ({self.expired_leases} leases), "
            f"leader_elected={self.elections}, loop_stalled={self.loop_stalls}"
        )
        lines.append(
            f"bounds judged: leader rule={self.judged.get('leader', 0)}, "
            f"fault rule only={self.judged.get('faults', 0)}; unresolved={len(self.unresolved)}"
        )
        for name, row in delay_stats(self.delays).items():
            lines.append(
                f"  {name} (n={row['count']}): last ack -> seen gone p50={row['seen_p50']}s "
                f"p99={row['seen_p99']}s max={row['seen_max']}s; minus ttl p50="
                f"{row['over_p50']}s p99={row['over_p99']}s max={row['over_max']}s; "
                f"lease_expired minus ttl p50={row['expiry_over_p50']}s "
                f"p99={row['expiry_over_p99']}s max={row['expiry_over_max']}s"
            )
        by_check = ", ".join(f"{c}={n}" for c, n in sorted(self.anomaly_counts().items()))
        lines.append(f"anomalies: {len(self.anomalies)}" + (f" ({by_check})" if by_check else ""))
        shown: Counter[str] = Counter()
        for anomaly in self.anomalies:
            shown[anomaly.check] += 1
            if shown[anomaly.check] <= 5:
                lines.append(f"  [{anomaly.check}] {anomaly.detail}")
        lines.append(f"checked in {self.check_s:.1f}s")
        lines.append(f"election safety: {'ok' if self.safety is None else self.safety}")
        lines.extend(f"harness error: {error}" for error in self.errors)
        lines.append("result: " + ("OK" if self.ok else f"FAILED (exit {self.exit_code})"))
        return "\n".join(lines)


def outcome_counts(ops: Iterable[LeaseOp]) -> dict[str, dict[str, int]]:
    """kind -> outcome (with the deciding error) -> count."""
    counts: dict[str, dict[str, int]] = {}
    for op in ops:
        kind = "final" if op.final else op.kind
        outcome = op.outcome or "pending"
        if op.error in DEFINITE_FAIL_CODES:
            outcome = f"{outcome}:{op.error}"
        per = counts.setdefault(kind, {})
        per[outcome] = per.get(outcome, 0) + 1
    return counts


def run_lease(
    directory: Path,
    *,
    seed: int,
    duration_s: float,
    nodes: int = 3,
    owners: int = 6,
    observers: int = 2,
    ttls: Sequence[int] = (2, 3),
    faults: Iterable[str] = FAULT_KINDS,
    request_timeout_ms: int = 1500,
    margin_s: float = 0.5,
    progress: Callable[[str], None] | None = None,
    nemesis_options: dict[str, Any] | None = None,
    cluster_options: dict[str, int] | None = None,
    workload_options: dict[str, Any] | None = None,
) -> LeaseReport:
    """Run the lease workload under the nemesis, heal, read every key, check.

    Args: as `tests.nemesis.run_nemesis`'s, with `owners`, `observers`, `ttls`, the
        bound's `margin_s` and more `LeaseWorkload` keyword arguments.

    Returns:
        The report; the run's files are in `directory` (see the module doc).
    """
    say = progress or (lambda _line: None)
    directory.mkdir(parents=True, exist_ok=True)
    rig = make_rig(
        directory,
        seed=seed,
        nodes=nodes,
        faults=faults,
        request_timeout_ms=request_timeout_ms,
        nemesis_options=nemesis_options,
        cluster_options=cluster_options,
    )
    wall_offset_ns = time.time_ns() - time.monotonic_ns()
    params = LeaseParams(
        rig.cluster.election_timeout_ms[1] / 1000,
        request_timeout_s=request_timeout_ms / 1000,
        margin_s=margin_s,
    )
    report = LeaseReport(
        seed,
        nodes,
        owners,
        observers,
        tuple(ttls),
        duration_s,
        directory,
        directory / "ops.jsonl",
        params,
    )
    (directory / "params.json").write_text(
        json.dumps({**asdict(params), "wall_offset_ns": wall_offset_ns}) + "\n"
    )
    stream = report.ops_path.open("w")

    def record(op: LeaseOp) -> None:
        stream.write(op.to_json() + "\n")

    load = LeaseWorkload(
        rig.cluster.client_endpoints,
        owners=owners,
        observers=observers,
        ttls=ttls,
        seed=seed,
        origin_ns=rig.origin_ns,
        attempt_timeout_s=request_timeout_ms / 1000 + 0.5,
        op_timeout_s=2 * request_timeout_ms / 1000 + 1.0,
        on_record=record,
        curve=rig.cluster.curve,
        **(workload_options or {}),
    )
    try:
        _drive_lease(rig, load, report, wall_offset_ns, say)
        stream.close()
        _judge_lease(rig, load, report, wall_offset_ns, say)
        return report
    finally:
        stream.close()
        try:
            rig.nemesis.stop()
        finally:
            load.close()
            rig.cluster.close()


def _drive_lease(
    rig: Rig,
    load: LeaseWorkload,
    report: LeaseReport,
    wall_offset_ns: int,
    say: Callable[[str], None],
) -> None:
    """Run under faults (owners stop and wait for their keys at the end), heal, wait
    until every stopped lease's coarse bound has passed (at most `FINAL_WAIT_S`), read."""
    drive_under_faults(
        rig,
        lambda should_stop: load.run(report.duration_s, should_stop=should_stop),
        clients=report.owners + report.observers,
        duration_s=report.duration_s,
        errors=report.errors,
        say=say,
    )
    marks = node_marks(rig.cluster.events(), wall_offset_ns, rig.origin_ns)
    settled = settle_ns(load.records, rig.nemesis.faults, marks, report.params)
    wait_s = min(FINAL_WAIT_S, max(0.0, (settled - load.now_ns()) / 1e9 + 0.1))
    say(f"waiting {wait_s:.1f}s for the last bound, then reading every owner key")
    time.sleep(wait_s)
    final = load.final_read(timeout_s=30)
    if final.outcome != OK:
        report.errors.append(f"the final read failed: {final.error}")


def _judge_lease(
    rig: Rig,
    load: LeaseWorkload,
    report: LeaseReport,
    wall_offset_ns: int,
    say: Callable[[str], None],
) -> None:
    """Fill the report: outcomes, faults, node marks, safety, the lease checks."""
    cluster = rig.cluster
    report.outcomes = outcome_counts(load.records)
    report.faults = list(rig.nemesis.faults)
    write_faults(report.directory / "faults.jsonl", report.faults)
    try:
        cluster.assert_safety()
    except AssertionError as exc:
        report.safety = str(exc).splitlines()[0]
    events = cluster.events()
    report.snapshots = snapshot_counts(events)
    marks = node_marks(events, wall_offset_ns, rig.origin_ns)
    write_marks(report.directory / "marks.jsonl", marks)
    say(f"checking {len(load.records)} operations")
    _fill(report, load.records, report.faults, marks)


def _fill(
    report: LeaseReport, ops: Sequence[LeaseOp], faults: Sequence[Fault], marks: Sequence[NodeMark]
) -> None:
    """The checks' results into `report`."""
    started = time.monotonic()
    result = check_leases(ops, faults, marks, report.params)
    report.check_s = time.monotonic() - started
    report.anomalies = result.anomalies
    report.delays = result.bounds.delays
    report.unresolved = result.bounds.unresolved
    report.judged = {"leader": result.bounds.judged_tight, "faults": result.bounds.judged_coarse}
    report.endings = endings(result.incarnations.values())
    expired = [m for m in marks if m.event == "lease_expired"]
    report.expired_events = len(expired)
    report.expired_leases = len({m.lease for m in expired})
    report.elections = sum(1 for m in marks if m.event == "leader_elected")
    report.loop_stalls = sum(1 for m in marks if m.event == "loop_stalled")
    if report.unresolved:
        report.errors.append(
            f"{len(report.unresolved)} stopped incarnations were never seen gone: "
            f"{report.unresolved[:10]}"
        )


FINAL_WAIT_S = 15.0
"""The longest wait before the final read for the bounds of stopped leases to pass."""


def settle_ns(
    ops: Sequence[LeaseOp], faults: Sequence[Fault], marks: Sequence[NodeMark], params: LeaseParams
) -> int:
    """The latest coarse bound of a stopped incarnation (0: none): a read after it must
    find every stopped owner's key gone."""
    latest = 0
    reads = reads_of(ops)
    for inc in incarnations(ops).values():
        last_refresh, _ = refresh_window(inc, faults, params)
        if inc.stopped_ns() is None or last_refresh is None:
            continue
        if inc.established_ns(reads.get(inc.key, ())) is None:
            continue
        latest = max(latest, coarse_bound(last_refresh, inc.ttl_ns, faults, marks, params))
    return latest


def summary_json(report: LeaseReport) -> dict[str, Any]:
    """The report as plain JSON values (written next to the history as summary.json)."""
    return {
        "workload": "lease",
        "seed": report.seed,
        "nodes": report.nodes,
        "owners": report.owners,
        "observers": report.observers,
        "ttls": list(report.ttls),
        "duration_s": report.duration_s,
        "params": asdict(report.params),
        "outcomes": report.outcomes,
        "faults": report.fault_counts,
        "incarnations": report.endings,
        "expired_events": report.expired_events,
        "expired_leases": report.expired_leases,
        "elections": report.elections,
        "loop_stalls": report.loop_stalls,
        "judged": report.judged,
        "unresolved": report.unresolved,
        "delays": delay_stats(report.delays),
        "anomalies": [asdict(a) for a in report.anomalies],
        "anomaly_counts": report.anomaly_counts(),
        "safety": report.safety,
        "snapshots": report.snapshots,
        "errors": report.errors,
        "check_s": round(report.check_s, 3),
        "exit_code": report.exit_code,
    }


def recheck(directory: Path, margin_s: float | None = None) -> LeaseReport:
    """Check a saved run again (`ops.jsonl`, `faults.jsonl`, `marks.jsonl`, `params.json`)."""
    saved = json.loads((directory / "params.json").read_text())
    saved.pop("wall_offset_ns", None)
    if margin_s is not None:
        saved["margin_s"] = margin_s
    params = LeaseParams(**saved)
    ops = read_ops(directory / "ops.jsonl")
    owners = len({op.owner for op in ops if op.owner is not None})
    report = LeaseReport(0, 0, owners, 0, (), 0.0, directory, directory / "ops.jsonl", params)
    report.outcomes = outcome_counts(ops)
    report.faults = read_faults(directory / "faults.jsonl")
    _fill(report, ops, report.faults, read_marks(directory / "marks.jsonl"))
    return report
