"""The node: ONE zmq.Poller loop driving the Raft core, storage, transport and state machine.

Theory of operation
-------------------
Every loop turn (`run_once`):

1. poll, with the timeout set by the next tick deadline (0 if the core has work ready);
2. drain the peer socket (decode, `raft.step`) and the client socket (decode, then
   propose, read, forward or answer), each up to a budget of frames;
3. fire at most one tick if it is due (after a stall: one tick, re-anchor, `loop_stalled`);
4. handle one `Ready`: persist with ONE fsync, then send, then apply and answer clients,
   then `advance`. Every request that arrived this turn rides in the same append and the
   same fsync (group commit).

No threads, no sleeping, no blocking sends. Peer or client input that cannot be decoded is
logged as `bad_frame` and dropped (clients get `bad_request`). A storage failure, a broken
invariant or any other exception of our own stops the node (`fatal_error`, exit 1):
carrying on could acknowledge or vote on state that is not durable.
"""

from __future__ import annotations

import random
import signal
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from zraft import __version__, diagnostics, security, wire
from zraft.config import ClusterConfig
from zraft.core import (
    EntryKind,
    Message,
    NotLeader,
    ProposalDropped,
    Raft,
    Ready,
    Role,
)
from zraft.diagnostics import NodeEvent
from zraft.faults import FaultFile
from zraft.kv import KVStore, Result
from zraft.requests import Bucket, Pending, PendingRequests, ReplyTo
from zraft.storage import FileStorage, LogStorage
from zraft.transport import (
    CLIENT_ZAP_DOMAIN,
    PEER_ZAP_DOMAIN,
    CurveKeys,
    ZmqTransport,
)
from zraft.zap import AuthRecord, EventLimiter, ZapHandler

DRAIN_BUDGET = 256  # frames per socket per turn: big batches, bounded tick latency
STALL_THRESHOLD_TICKS = 5  # a tick this late (in tick lengths) is logged as loop_stalled
DROP_REPORT_INTERVAL_S = 1.0  # at most one peer_send_dropped event per second


class Node:
    """One zraft node: owns its sockets, storage, Raft core and key-value state machine.

    Args:
        cluster: the loaded cluster configuration.
        node_id: which node of `cluster` this is.
        log_path: where the JSON event log goes (default: the config's log dir).
        log_level: `info` in production; `debug` adds per-message events.
        clock: a monotonic clock in seconds (injected for tests).
        rng: the source of election timeout randomness (injected for tests).
        storage: a storage to use instead of a `FileStorage` in the node's data dir.
        strict_events: raise on an event outside the vocabulary (tests).
        fault_file: TESTS ONLY: a control file naming peers to cut off (`zraft.faults`).
    """

    def __init__(
        self,
        cluster: ClusterConfig,
        node_id: str,
        *,
        log_path: Path | None = None,
        log_level: str = "info",
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        storage: LogStorage | None = None,
        strict_events: bool = False,
        context: zmq.Context[Any] | None = None,
        fault_file: Path | None = None,
    ) -> None:
        me = cluster.node(node_id)
        self.id = node_id
        self._cluster = cluster
        self._clock = clock
        self._tick_s = cluster.tick_ms / 1000
        self._request_timeout_s = cluster.request_timeout_ms / 1000
        self._log = diagnostics.configure(
            node_id, log_path or cluster.log_path(node_id), log_level, strict=strict_events
        )
        self._storage = storage if storage is not None else FileStorage(me.data_dir)
        repair = self._storage.tail_repair
        if repair is not None:
            diagnostics.emit_node(
                self._log,
                NodeEvent.LOG_TAIL_REPAIRED,
                dropped_bytes=repair.dropped_bytes,
                last_index=repair.last_index,
            )
        restored = self._storage.load()
        if restored.membership is None:
            restored = replace(restored, membership=cluster.membership)
        self._raft = Raft(cluster.raft_config(node_id), restored, (rng or random.Random()).randint)
        self._kv = KVStore()
        self._peer_ids = frozenset(cluster.peer_ids(node_id))
        keys = security.node_keys(cluster, node_id) if cluster.security == "curve" else None
        self._transport = ZmqTransport(
            node_id,
            me.peer,
            me.client,
            {p.id: p.peer for p in cluster.nodes if p.id != node_id},
            client_max_message_bytes=cluster.max_key_bytes + 2 * cluster.max_value_bytes + 8192,
            peer_max_message_bytes=max(8 << 20, 4 * cluster.max_value_bytes),
            curve=(
                None
                if keys is None
                else CurveKeys(keys.own.public, keys.own.secret, keys.peer_server_keys)
            ),
            context=context,
        )
        self._zap: ZapHandler | None = None
        zap_socket = self._transport.zap_socket
        if keys is not None and zap_socket is not None:
            self._zap = ZapHandler(
                zap_socket,
                {PEER_ZAP_DOMAIN: "peer", CLIENT_ZAP_DOMAIN: "client"},
                keys.peer_ids_by_key,
                keys.clients_by_key,
            )
        # Separate budgets: a flood of refused connections must not hide admissions.
        self._denied_limiter = EventLimiter(clock)
        self._admitted_limiter = EventLimiter(clock)
        self._poller = zmq.Poller()
        self._transport.register(self._poller)
        self._pending = PendingRequests()
        self._next_id = 1  # read contexts, forward ids and park ids; never reused
        self._next_tick = clock() + self._tick_s
        self._last_drop_report = 0.0
        self._drops_unreported = 0
        self._stopping = False
        self._stop_reason = "signal"
        self._last_role = self._raft.role
        self._last_leader = self._raft.leader_id
        self._faults = FaultFile(fault_file, self._peer_ids) if fault_file else None
        self._loss = 0.0  # tests only: share of peer sends dropped (zraft.faults)
        self._loss_rng = random.Random()

    # === lifecycle =============================================================================
    def run(self) -> int:
        """Run the loop until a signal or a fatal error; returns the process exit code."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        self.announce_start()
        code = 0
        try:
            while not self._stopping:
                self.run_once(self._poll_timeout_ms())
        except Exception as exc:  # the loop's outermost boundary: log, then fail-stop
            self._stop_reason = "fatal"
            diagnostics.emit_node(
                self._log,
                NodeEvent.FATAL_ERROR,
                kind=type(exc).__name__,
                exception="".join(traceback.format_exception(exc)),
            )
            code = 1
        finally:
            self.close()
        return code

    def announce_start(self) -> None:
        """Emit `node_started` (after storage is restored, before the first poll)."""
        diagnostics.emit_node(
            self._log,
            NodeEvent.NODE_STARTED,
            peers=sorted(self._peer_ids),
            term=self._raft.term,
            last_index=self._raft.last_index,
            commit_index=self._raft.commit_index,
            version=__version__,
        )
        if self._cluster.security == "none":
            diagnostics.emit_node(
                self._log, NodeEvent.SECURITY_DISABLED, config=str(self._cluster.path)
            )

    def stop(self) -> None:
        """Ask the loop to exit after the current turn."""
        self._stopping = True

    def close(self) -> None:
        """Emit `node_stopping` and release sockets, storage and the log file."""
        diagnostics.emit_node(self._log, NodeEvent.NODE_STOPPING, reason=self._stop_reason)
        self._transport.close()
        self._storage.close()
        diagnostics.close(self._log)

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self._stopping = True

    @property
    def raft(self) -> Raft:
        """The Raft core (read-only use: status, tests)."""
        return self._raft

    @property
    def kv(self) -> KVStore:
        """The state machine (read-only use: tests)."""
        return self._kv

    # === one turn ==============================================================================
    def run_once(self, timeout_ms: int) -> None:
        """Poll once, process what arrived, fire a due tick, and handle one Ready."""
        events = dict(self._poller.poll(timeout_ms))
        if self._zap is not None and events.get(self._zap.socket):
            # First, so handshakes waiting on us finish as early as possible.
            for record in self._zap.handle():
                self._log_auth(record)
        peers_ready, clients_ready = self._transport.readable(events)
        if peers_ready:
            self._drain_peers()
        if clients_ready:
            self._drain_clients()
        self._report_bad_inputs()
        self._fire_due_tick()
        if self._pending.parked and self._raft.leader_id is not None:
            self._retry_parked()
        self._handle_ready()

    def _poll_timeout_ms(self) -> int:
        if self._raft.has_ready():
            return 0
        return max(0, int((self._next_tick - self._clock()) * 1000) + 1)

    def _fire_due_tick(self) -> None:
        now = self._clock()
        if now < self._next_tick:
            return
        lag = now - self._next_tick
        self._raft.tick()
        if lag > self._tick_s:
            # Fire ONE tick and re-anchor: a burst of catch-up ticks after a stall (a slow
            # fsync, a paused process) would start elections nobody needs.
            self._next_tick = now + self._tick_s
            if lag > STALL_THRESHOLD_TICKS * self._tick_s:
                diagnostics.emit_node(
                    self._log, NodeEvent.LOOP_STALLED, lag_ms=round(lag * 1000, 1)
                )
        else:
            self._next_tick += self._tick_s
        self._expire_requests(now)
        if self._faults is not None:
            self._apply_fault_file()

    def _apply_fault_file(self) -> None:
        assert self._faults is not None
        change = self._faults.poll()
        if isinstance(change, str):
            self._bad_frame("test", "fault_file", change)
        elif change is not None:
            self._transport.set_blocked_peers(change.block)
            self._loss = change.loss

    # === input =================================================================================
    def _drain_peers(self) -> None:
        for sender, frame in self._transport.recv_peers(DRAIN_BUDGET):
            sender_id = sender.decode("utf-8", "replace")
            try:
                item = wire.decode_peer_frame(
                    frame,
                    peers=self._peer_ids,
                    max_key=self._cluster.max_key_bytes,
                    max_value=self._cluster.max_value_bytes,
                )
            except wire.DecodeError as exc:
                self._bad_frame("peer", sender_id, exc.reason)
                continue
            if item.src != sender_id:
                # The routing id (the connection) decides who speaks, not the payload.
                self._bad_frame("peer", sender_id, f"claims to be {item.src!r}")
            elif isinstance(item, wire.Forward):
                self._serve(item.request, ReplyTo(peer=item.src, request_id=item.request_id))
            elif isinstance(item, wire.ForwardReply):
                self._relay_forward_reply(item)
            elif item.dst == self.id:
                self._raft.step(item)
            else:
                self._bad_frame("peer", sender_id, f"addressed to {item.dst!r}")

    def _log_auth(self, record: AuthRecord) -> None:
        limiter = self._admitted_limiter if record.admitted else self._denied_limiter
        suppressed = limiter.admit()
        if suppressed is None:
            return  # over the rate limit: counted, reported with the next event
        common = {
            "source": record.source,
            "address": record.address,
            "key": record.key,
            "mechanism": record.mechanism,
            "suppressed": suppressed,
        }
        if record.admitted:
            diagnostics.emit_node(self._log, NodeEvent.AUTH_ADMITTED, user=record.user, **common)
        else:
            diagnostics.emit_node(self._log, NodeEvent.AUTH_DENIED, reason=record.reason, **common)

    def _drain_clients(self) -> None:
        for incoming in self._transport.recv_client_requests(DRAIN_BUDGET):
            envelope, body, role = incoming.envelope, incoming.body, incoming.user
            reply_to = ReplyTo(envelope=tuple(envelope))
            try:
                request = wire.decode_request(
                    body,
                    max_key=self._cluster.max_key_bytes,
                    max_value=self._cluster.max_value_bytes,
                )
            except wire.TooLarge as exc:
                self._reply_error(reply_to, "too_large", exc.reason)
                continue
            except wire.DecodeError as exc:
                self._bad_frame("client", envelope[0].hex() if envelope else "", exc.reason)
                self._reply_error(reply_to, "bad_request", exc.reason)
                continue
            if role is not None and not security.role_allows(role, request.kind):
                # The role comes from the ZAP handler (the key), never from the request.
                # Forwarded requests skip this: the node that took them checked it.
                self._reply_error(
                    reply_to,
                    "forbidden",
                    f"op {request.op!r} needs a {security.required_role(request.kind)!r} "
                    f"key; this client's key has role {role!r}",
                )
                continue
            self._serve(request, reply_to)

    def _report_bad_inputs(self) -> None:
        for bad in self._transport.take_bad_inputs():
            sender = (
                bad.sender.decode("utf-8", "replace") if bad.source == "peer" else bad.sender.hex()
            )
            self._bad_frame(bad.source, sender, str(bad.reason))
            if bad.envelope is not None:
                self._reply_error(ReplyTo(envelope=bad.envelope), "bad_request", str(bad.reason))

    def _bad_frame(self, source: str, sender: str, reason: str) -> None:
        diagnostics.emit_node(
            self._log, NodeEvent.BAD_FRAME, source=source, sender=sender, reason=reason
        )

    # === serving requests ======================================================================
    def _serve(self, request: wire.Request, reply_to: ReplyTo) -> None:
        """Answer, propose, read or forward one decoded request."""
        if request.op == "status":
            self._send_reply(reply_to, self._status_reply())
        elif request.kind in ("write", "read"):
            pending = Pending(request, reply_to, self._clock() + self._request_timeout_s)
            if not self._dispatch(pending):
                self._pending.add("parked", self._take_id(), pending)
        else:
            # TODO(#6): membership and leadership ops; TODO(#5): snapshot.
            self._reply_error(reply_to, "bad_request", f"op {request.op!r} is not supported yet")

    def _dispatch(self, pending: Pending) -> bool:
        """Start work on a write or read; False if it must wait for a leader (parked)."""
        if pending.request.kind == "write":
            return self._dispatch_write(pending)
        return self._dispatch_read(pending)

    def _dispatch_write(self, pending: Pending) -> bool:
        request = pending.request
        try:
            term, index = self._raft.propose(wire.encode_command(request.to_command()))
        except NotLeader as exc:
            return self._forward(pending, exc.leader_hint)
        except ProposalDropped:
            return False  # a leadership transfer is under way; retry after it
        pending.term = term
        displaced = self._pending.writes.get(index)
        if displaced is not None:
            # A write proposed here in an earlier term is gone from OUR log, but a copy on
            # another node may still be committed by a later leader (Figure 8): its
            # outcome is unknown, not "not applied". Its session makes a retry safe.
            self._reply_error(
                displaced.reply_to,
                "timeout",
                "leadership changed; the write may or may not be applied (retry it)",
            )
        self._pending.add("writes", index, pending)
        return True

    def _dispatch_read(self, pending: Pending) -> bool:
        request = pending.request
        if request.consistency == "serializable":
            self._answer_read(pending)  # served locally; may be stale by design
            return True
        context = self._take_id()
        try:
            self._raft.read_index(context)  # a follower asks its leader (thesis §6.4)
        except NotLeader:
            return False
        self._pending.add("reads", context, pending)
        return True

    def _forward(self, pending: Pending, leader: str | None) -> bool:
        """Send a write to the leader; False if there is none to send to right now."""
        if pending.reply_to.is_forwarded:
            # Never forward twice (no loops): the follower relays this to its client,
            # whose retry finds the new leader.
            self._reply_error(pending.reply_to, "not_leader", "this node is no longer the leader")
            return True
        if leader is None or leader == self.id:
            return False
        forward_id = self._take_id()
        frame = wire.encode_forward(self.id, forward_id, pending.request)
        if not self._transport.send(leader, frame):
            return False  # not sent at all (no connection): safe to try again
        self._pending.add("forwarded", forward_id, pending)
        return True

    def _retry_parked(self) -> None:
        for park_id, pending in self._pending.take_parked():
            if self._raft.leader_id is None or not self._dispatch(pending):
                self._pending.repark(park_id, pending)

    def _relay_forward_reply(self, item: wire.ForwardReply) -> None:
        pending = self._pending.forwarded.pop(item.request_id, None)
        if pending is None:
            return  # already timed out
        try:
            wire.decode_reply(item.reply)
        except wire.DecodeError as exc:
            self._bad_frame("peer", item.src, f"forward reply: {exc.reason}")
            self._reply_error(pending.reply_to, "internal", "the leader sent a malformed reply")
            return
        self._send_reply(pending.reply_to, item.reply)

    def _expire_requests(self, now: float) -> None:
        for bucket, pending in self._pending.expire(now):
            self._answer_expired(bucket, pending)

    def _answer_expired(self, bucket: Bucket, pending: Pending) -> None:
        if bucket == "parked":
            self._reply_error(
                pending.reply_to, "unavailable", "no leader within the request timeout"
            )
        else:
            what = "the write may or may not be applied" if bucket != "reads" else "read"
            self._reply_error(pending.reply_to, "timeout", f"request timed out; {what}")

    # === the Ready =============================================================================
    def _handle_ready(self) -> None:
        if not self._raft.has_ready():
            return
        rd = self._raft.ready()
        for event in rd.events:
            diagnostics.emit(self._log, event)
        if rd.early_messages:
            # 0. A leader's appends go out first, so followers write their copies while
            # we write ours (thesis §10.2.1); the core counts us only once durable.
            self._send_messages(rd.early_messages)
        if rd.must_sync:
            # 1. Durable before anything that depends on it leaves (one fsync). A Ready
            # whose only change is the commit index skips the write: commit is a hint
            # that the next save carries and a leader re-establishes after a crash.
            self._storage.save(rd.hard_state, rd.entries)
        self._send_messages(rd.messages)  # 2.
        self._apply(rd)  # 3.
        self._raft.advance(rd)  # 4.
        self._after_role_change()

    def _send_messages(self, messages: tuple[Message, ...]) -> None:
        dropped = 0
        for msg in messages:
            if self._loss and self._loss_rng.random() < self._loss:
                continue  # tests only: injected packet loss (zraft.faults)
            if not self._transport.send(msg.dst, wire.encode_message(msg)):
                dropped += 1  # queue full or peer absent: Raft retries by design
        if dropped:
            self._drops_unreported += dropped
        if not self._drops_unreported:
            return
        now = self._clock()
        if now - self._last_drop_report >= DROP_REPORT_INTERVAL_S:
            diagnostics.emit_node(
                self._log, NodeEvent.PEER_SEND_DROPPED, count=self._drops_unreported
            )
            self._drops_unreported = 0
            self._last_drop_report = now

    def _apply(self, rd: Ready) -> None:
        for entry in rd.committed:
            if entry.kind is EntryKind.NORMAL:
                result = self._kv.apply(entry.index, wire.decode_command(entry.data))
            else:
                self._kv.skip(entry.index)
                result = None
            pending = self._pending.writes.pop(entry.index, None)
            if pending is None:
                continue
            if result is not None and pending.term == entry.term:
                self._answer_write(pending, result)
            else:
                self._answer_write_not_applied(pending)
        for read_state in rd.read_states:
            if read_state.index is None:
                pending = self._pending.reads.pop(read_state.context, None)
                if pending is not None:  # leadership changed: ask again (reads are safe)
                    self._pending.add("parked", self._take_id(), pending)
            else:
                self._pending.wait_for_apply(read_state.context, read_state.index)
        for pending in self._pending.reads_ready(self._kv.applied_index):
            self._answer_read(pending)

    def _after_role_change(self) -> None:
        role, leader = self._raft.role, self._raft.leader_id
        if role is self._last_role and leader == self._last_leader:
            return
        self._last_role, self._last_leader = role, leader
        if leader is not None and self._pending.parked:
            self._retry_parked()

    # === replies ===============================================================================
    def _answer_read(self, pending: Pending) -> None:
        value = self._kv.get(pending.request.key or b"")
        body = wire.encode_reply(
            ok=True, value=value, found=value is not None, leader=self._raft.leader_id
        )
        self._send_reply(pending.reply_to, body)

    def _answer_write(self, pending: Pending, result: Result) -> None:
        self._send_reply(pending.reply_to, wire.encode_result_reply(result, leader=self.id))

    def _answer_write_not_applied(self, pending: Pending) -> None:
        self._reply_error(
            pending.reply_to,
            "unavailable",
            "leadership changed before the write committed; it was not applied",
        )

    def _reply_error(self, reply_to: ReplyTo, code: str, message: str) -> None:
        self._send_reply(
            reply_to,
            wire.encode_reply(ok=False, error=code, message=message, leader=self._raft.leader_id),
        )

    def _send_reply(self, reply_to: ReplyTo, body: bytes) -> None:
        if reply_to.envelope is not None:
            self._transport.reply(reply_to.envelope, body)
        elif reply_to.peer is not None:
            frame = wire.encode_forward_reply(self.id, reply_to.request_id, body)
            self._transport.send(reply_to.peer, frame)

    def _status_reply(self) -> bytes:
        status = self._raft.status()
        return wire.encode_reply(
            ok=True,
            leader=status.leader,
            extra={
                "status": {
                    "id": status.id,
                    "role": str(status.role),
                    "term": status.term,
                    "leader": status.leader,
                    "commit_index": status.commit_index,
                    "applied_index": status.applied_index,
                    "last_index": status.last_index,
                    "voters": list(status.voters),
                    "pending_requests": len(self._pending),
                }
            },
        )

    # === helpers ===============================================================================
    def _take_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def is_leader(self) -> bool:
        """Whether this node currently leads."""
        return self._raft.role is Role.LEADER
