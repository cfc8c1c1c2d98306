"""Serving client requests: from a decoded request to its one reply.

`RequestServer` takes every request a node receives (from a client, or forwarded by a
follower), checks the caller's role against the op's declaration, and dispatches on the
op's route (`zraft.wire.ops.Route`):

- `LOCAL` and `NODE` ops go to the handler the node registered for them;
- `LOG` ops become a state machine command proposed to the Raft core (a follower forwards
  the request to its leader instead), answered when the entry is applied;
- `READ` ops wait for a ReadIndex point, then for the state machine to reach it (a
  `serializable` read is served at once);
- `LEADER` ops go to their handler on the leader, and are forwarded everywhere else;
- `LONG_POLL` ops go to their handler where they arrive (it holds them: watches).

While a request is in flight it waits in `PendingRequests` (written, read, forwarded, or
parked while no leader is known); every one is answered by its deadline at the latest.
This module never touches sockets directly: it replies through a `ReplySink`, so it can
be driven without sockets (`zraft.net.inmem`). It must not decide what an op means: the
op table says how to route it, its handler or the state machine what it does.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from zraft.core import Entry, NotLeader, ProposalDropped, Raft, ReadState, Role
from zraft.net.transport import BadInput, ClientRequest
from zraft.node.metrics import NO_METRICS, NoMetrics
from zraft.node.pending import Bucket, Pending, PendingRequests, ReplyTo
from zraft.node.reports import Reporter
from zraft.node.trace import NO_TRACE, NoTrace
from zraft.state.machine import Refused, ReplyFields, StateMachine
from zraft.wire.client import Request, decode_reply, decode_request, encode_reply
from zraft.wire.codec import DecodeError, TooLarge
from zraft.wire.fields import TooManyOps
from zraft.wire.ops import OPS, Limits, Route, role_allows
from zraft.wire.peer import ForwardReply, encode_forward, encode_forward_reply

Handler = Callable[[Pending], bool]
"""Serves one request of a `LOCAL`, `NODE` or `LEADER` op. Returns False when it cannot
start yet (no leader, a transfer under way): the request is parked and tried again."""

HANDLED_ROUTES = frozenset({Route.LOCAL, Route.NODE, Route.LEADER, Route.LONG_POLL})
"""Routes whose ops need a registered `Handler` (the others are the state machine's)."""

# Enum members as plain names: every request is routed, and a module global is read
# several times faster than an enum member in Python 3.11.
_LOCAL, _LOG, _READ, _LEADER = Route.LOCAL, Route.LOG, Route.READ, Route.LEADER


class ReplySink(Protocol):
    """Where replies go: a client envelope on the client socket, or a peer (forwards)."""

    def reply(self, envelope: tuple[bytes, ...], body: bytes) -> bool:
        """Send `body` to the client behind `envelope`."""
        ...

    def send(self, peer_id: str, frame: bytes) -> bool:
        """Send one peer frame."""
        ...


def missing_handlers(handlers: Mapping[str, Handler], machine: StateMachine) -> list[str]:
    """Every declared op that nothing would serve: no handler for its route, or a
    command or read the state machine does not know. Empty when all is well."""
    missing = []
    for name, spec in OPS.items():
        if spec.route in HANDLED_ROUTES:
            served = name in handlers
        elif spec.route is Route.LOG:
            served = name in machine.commands
        else:
            served = name in machine.reads
        if not served:
            missing.append(f"{name} ({spec.route})")
    return missing


class RequestServer:
    """Every client request a node is working on, from arrival to reply.

    Args:
        node_id: this node's id (the `leader` of the replies it gives as leader).
        raft: the core: proposals, read indexes, leader and membership.
        machine: the state machine: write commands and reads.
        sink: where replies and forwards go.
        limits: request size limits.
        request_timeout_s: every request is answered within this.
        clock: a monotonic clock in seconds.
        reporter: for `bad_frame`.
        before_write: called before a client write is proposed (the node's own entries
            that must precede it: `zraft.node.upkeep`); True when a model entry of this
            term precedes the write (see `StateMachine.command`).
        raise_alarm: called with the alarm a refused write asks the cluster to raise.
        metrics: counts answers, forwards and failed proposals (`zraft.node.metrics`).
        trace: notes when writes were accepted, proposed and answered (`zraft.node.trace`).
    """

    def __init__(
        self,
        node_id: str,
        raft: Raft,
        machine: StateMachine,
        sink: ReplySink,
        *,
        limits: Limits,
        request_timeout_s: float,
        clock: Callable[[], float],
        reporter: Reporter,
        before_write: Callable[[], bool] = lambda: False,
        raise_alarm: Callable[[str], None] = lambda alarm: None,
        metrics: NoMetrics = NO_METRICS,
        trace: NoTrace = NO_TRACE,
    ) -> None:
        self._id = node_id
        self._raft = raft
        self._machine = machine
        self._sink = sink
        self._limits = limits
        self._timeout_s = request_timeout_s
        self._clock = clock
        self._reporter = reporter
        self._before_write = before_write
        self._raise_alarm = raise_alarm
        self._metrics = metrics
        self._trace = trace
        self._handlers: dict[str, Handler] = {}
        self.pending = PendingRequests()
        self._next_id = 1  # read contexts, forward ids and park ids; never reused

    def register(self, *handlers: Mapping[str, Handler]) -> None:
        """Take the node's handlers (one map per collaborator); every declared op must
        then be served.

        Raises:
            RuntimeError: an op would be served by nothing (the node must not start).
        """
        for more in handlers:
            self._handlers.update(more)
        missing = missing_handlers(self._handlers, self._machine)
        if missing:
            raise RuntimeError(f"no handler for the declared ops: {', '.join(missing)}")

    def take_id(self) -> int:
        """A fresh id for a read context, a forward or a parked request."""
        self._next_id += 1
        return self._next_id

    # --- input ------------------------------------------------------------------------

    def accept(self, incoming: Iterable[ClientRequest]) -> None:
        """Decode, check and serve requests read from the client socket."""
        now = self._clock()
        for request in incoming:
            envelope, role = request.envelope, request.user
            reply_to = ReplyTo(envelope=tuple(envelope), started=now)
            try:
                decoded = decode_request(
                    request.body,
                    max_key=self._limits.max_key,
                    max_value=self._limits.max_value,
                    max_ops=self._limits.max_ops,
                )
            except TooLarge as exc:
                self.reply_error(reply_to, "too_large", exc.reason)
                continue
            except TooManyOps as exc:
                self.reply_error(reply_to, "too_many_ops", exc.reason)
                continue
            except DecodeError as exc:
                sender = envelope[0].hex() if envelope else ""
                self._reporter.bad_frame("client", sender, exc.reason)
                self.reply_error(reply_to, "bad_request", exc.reason)
                continue
            spec = decoded.spec
            reply_to = ReplyTo(envelope=reply_to.envelope, op=decoded.op, started=now)
            if role is not None and not role_allows(role, spec):
                # The role comes from the ZAP handler (the key), never from the request.
                # Forwarded requests skip this: the node that took them checked it.
                self.reply_error(
                    reply_to,
                    "forbidden",
                    f"op {decoded.op!r} needs a {spec.role!r} key; this client's key has "
                    f"role {role!r}",
                )
                continue
            self.serve(decoded, reply_to)

    def refuse_bad_inputs(self, bad_inputs: Iterable[BadInput]) -> None:
        """Report malformed messages the transport dropped; answer a client that waits."""
        for bad in bad_inputs:
            sender = (
                bad.sender.decode("utf-8", "replace") if bad.source == "peer" else bad.sender.hex()
            )
            self._reporter.bad_frame(bad.source, sender, str(bad.reason))
            if bad.envelope is not None:
                reply_to = ReplyTo(envelope=bad.envelope, started=self._clock())
                self.reply_error(reply_to, "bad_request", str(bad.reason))

    # --- dispatch ---------------------------------------------------------------------

    def serve(self, request: Request, reply_to: ReplyTo) -> None:
        """Answer, propose, read, forward or park one decoded request."""
        if request.spec.route is not _LOCAL and self._id not in self._raft.membership.members:
            # Removed (or not added yet): no leader will tell us anything; send the client
            # elsewhere at once instead of parking its request until the timeout.
            message = f"{self._id} is not a member of the cluster; ask another node"
            self.reply_error(reply_to, "unavailable", message)
            return
        pending = Pending(request, reply_to, self._clock() + self._timeout_s)
        if not self._dispatch(pending):
            self.pending.add("parked", self.take_id(), pending)

    def _dispatch(self, pending: Pending) -> bool:
        """Start work on a request; False if it must wait for a leader (parked)."""
        request = pending.request
        route = request.spec.route
        if route is _LOG:
            return self._propose(pending)
        if route is _READ:
            return self._read(pending)
        if route is _LEADER and self._raft.role is not Role.LEADER:
            return self.forward(pending, self._raft.leader_id)
        return self._handlers[request.op](pending)

    def _propose(self, pending: Pending) -> bool:
        if self._raft.role is not Role.LEADER:
            # The leader judges a write (its quota, its state): a follower only forwards.
            return self.forward(pending, self._raft.leader_id)
        upgrading = self._before_write()
        try:
            data = self._machine.command(pending.request, upgrading=upgrading)
        except Refused as exc:
            if exc.alarm is not None:
                self._raise_alarm(exc.alarm)
            self.reply_error(pending.reply_to, exc.code, exc.message)
            return True
        try:
            term, index = self._raft.propose(data)
        except NotLeader as exc:
            return self.forward(pending, exc.leader_hint)
        except ProposalDropped:
            return False  # a leadership transfer is under way; retry after it
        self._trace.proposed(index, pending.reply_to.started)
        self.await_apply(pending, term, index)
        return True

    def await_apply(self, pending: Pending, term: int, index: int) -> None:
        """Answer `pending` when the entry it proposed at (term, index) is applied."""
        pending.term = term
        displaced = self.pending.writes.get(index)
        if displaced is not None:
            # A write proposed here in an earlier term is gone from OUR log, but a copy on
            # another node may still be committed by a later leader (Figure 8): its
            # outcome is unknown, not "not applied". Its session makes a retry safe.
            self._metrics.proposal_failed()
            self.reply_error(
                displaced.reply_to,
                "timeout",
                "leadership changed; the write may or may not be applied (retry it)",
            )
        self.pending.add("writes", index, pending)

    def _read(self, pending: Pending) -> bool:
        fields = pending.request.fields
        if fields.get("consistency") == "serializable" or fields.get("serializable"):
            self._answer_read(pending)  # served locally; may be stale by design
            return True
        context = self.take_id()
        try:
            self._raft.read_index(context)  # a follower asks its leader (thesis §6.4)
        except NotLeader:
            return False
        self.pending.add("reads", context, pending)
        return True

    def forward(self, pending: Pending, leader: str | None) -> bool:
        """Send a request to the leader; False if there is none to send to right now."""
        if pending.reply_to.is_forwarded:
            # Never forward twice (no loops): the follower relays this to its client,
            # whose retry finds the new leader.
            self.reply_error(pending.reply_to, "not_leader", "this node is no longer the leader")
            return True
        if leader is None or leader == self._id:
            return False
        forward_id = self.take_id()
        if not self._sink.send(leader, encode_forward(self._id, forward_id, pending.request)):
            return False  # not sent at all (no connection): safe to try again
        self.pending.add("forwarded", forward_id, pending)
        self._metrics.forwarded()
        return True

    def relay(self, item: ForwardReply) -> None:
        """The leader answered a request we forwarded: pass its reply on unchanged."""
        pending = self.pending.forwarded.pop(item.request_id, None)
        if pending is None:
            return  # already timed out
        try:
            relayed = decode_reply(item.reply)
        except DecodeError as exc:
            self._reporter.bad_frame("peer", item.src, f"forward reply: {exc.reason}")
            self.reply_error(pending.reply_to, "internal", "the leader sent a malformed reply")
            return
        error = relayed.get("error")
        self.send_reply(pending.reply_to, item.reply, error["code"] if error else "ok")

    def retry_parked(self) -> None:
        """Dispatch parked requests again (a leader is known now)."""
        for park_id, pending in self.pending.take_parked():
            if self._raft.leader_id is None or not self._dispatch(pending):
                self.pending.repark(park_id, pending)

    @property
    def has_parked(self) -> bool:
        """Whether any request waits for a leader."""
        return bool(self.pending.parked)

    # --- completion -------------------------------------------------------------------

    def awaits(self, index: int) -> bool:
        """Whether a request waits for the entry at `index` to be applied."""
        return index in self.pending.writes

    def complete_write(self, entry: Entry, fields: ReplyFields | None) -> None:
        """The entry at `entry.index` was applied with these reply fields (None: it had
        no command, or its reply is the handler's): answer whoever proposed it."""
        pending = self.pending.writes.pop(entry.index, None)
        if pending is None:
            return
        if pending.term != entry.term or fields is None:
            self._metrics.proposal_failed()
            self.reply_error(
                pending.reply_to,
                "unavailable",
                "leadership changed before the write committed; it was not applied",
            )
            return
        self.reply(pending, fields, leader=self._id)
        self._trace.replied(entry.index)

    def release_reads(self, read_states: Iterable[ReadState]) -> None:
        """Take the ReadIndex points the core released, and answer every read whose
        point the state machine has reached."""
        for read_state in read_states:
            if read_state.index is None:
                pending = self.pending.reads.pop(read_state.context, None)
                if pending is not None:  # leadership changed: ask again (reads are safe)
                    self.pending.add("parked", self.take_id(), pending)
            else:
                self.pending.wait_for_apply(read_state.context, read_state.index)
        for pending in self.pending.reads_ready(self._machine.applied_index):
            self._answer_read(pending)

    def _answer_read(self, pending: Pending) -> None:
        request = pending.request
        fields = self._machine.read(request)
        body = self._encode(request.op, fields, self._raft.leader_id)
        self.send_reply(pending.reply_to, body, fields.get("error") or "ok")

    def expire(self, now: float) -> None:
        """Answer every request whose deadline has passed."""
        for bucket, pending in self.pending.expire(now):
            self._answer_expired(bucket, pending)

    def _answer_expired(self, bucket: Bucket, pending: Pending) -> None:
        if bucket == "parked":
            self.reply_error(
                pending.reply_to, "unavailable", "no leader within the request timeout"
            )
        else:
            if bucket == "writes":
                self._metrics.proposal_failed()
            what = "the write may or may not be applied" if bucket != "reads" else "read"
            self.reply_error(pending.reply_to, "timeout", f"request timed out; {what}")

    def release_writes_after_removal(self) -> None:
        """A leader that removed itself will not hear how its last writes end: tell their
        clients now (their sessions make a retry elsewhere safe) rather than at the timeout."""
        for index in sorted(self.pending.writes):
            pending = self.pending.writes.pop(index)
            self._metrics.proposal_failed()
            self.reply_error(
                pending.reply_to,
                "timeout",
                "this node left the cluster; the write may or may not be applied (retry it)",
            )

    # --- replies ----------------------------------------------------------------------

    def reply(self, pending: Pending, fields: Mapping[str, Any], leader: str | None = None) -> None:
        """Answer `pending` with reply fields. The `leader` they name wins; else `leader`,
        else the leader this node knows."""
        op = pending.request.op
        if "leader" in fields:
            body = encode_reply(op=op, **fields)
        else:
            body = self._encode(op, fields, leader or self._raft.leader_id)
        self.send_reply(pending.reply_to, body, fields.get("error") or "ok")

    def encode(self, op: str, fields: Mapping[str, Any]) -> bytes:
        """The reply `reply` would send for these fields (to send it to many: watches)."""
        return self._encode(op, fields, self._raft.leader_id)

    def _encode(self, op: str, fields: Mapping[str, Any], leader: str | None) -> bytes:
        """A reply from the machine's fields: its `revision` becomes the `header`."""
        revision = fields.get("revision")
        if revision is None:
            return encode_reply(op=op, leader=leader, **fields)
        header = {"revision": revision, "raft_term": self._raft.term, "member": self._id}
        rest = dict(fields)  # C speed; the machine's fields may be kept by a session
        del rest["revision"]
        return encode_reply(op=op, leader=leader, header=header, **rest)

    def reply_error(self, reply_to: ReplyTo, code: str, message: str) -> None:
        """Answer with error `code`."""
        body = encode_reply(ok=False, error=code, message=message, leader=self._raft.leader_id)
        self.send_reply(reply_to, body, code)

    def send_reply(self, reply_to: ReplyTo, body: bytes, outcome: str = "ok") -> None:
        """Send an encoded reply to a client (counted under `outcome`: `ok` or an error
        code), or back to the follower that forwarded it."""
        if reply_to.envelope is not None:
            self._sink.reply(reply_to.envelope, body)
            if self._metrics.enabled:
                self._metrics.answered(reply_to, outcome, self._clock())
        elif reply_to.peer is not None:
            self._sink.send(
                reply_to.peer, encode_forward_reply(self._id, reply_to.request_id, body)
            )

    def __len__(self) -> int:
        return len(self.pending)

    def status(self) -> dict[str, int]:
        """The `status` fields about requests in flight here."""
        return {
            "pending_requests": len(self.pending),
            "proposals_pending": len(self.pending.writes),
            "forwarded_pending": len(self.pending.forwarded),
        }
