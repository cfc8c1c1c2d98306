"""The node: ONE poll loop driving the Raft core, storage, transport and state machine.

`Node` drives; its collaborators serve. It owns the loop and the order of work in it, and
hands everything else to one module each: client requests to `serving.RequestServer`,
membership, leadership and the member directory to `admin.Admin`, snapshots to
`snapshots.NodeSnapshots`, rate-limited reports to `reports.Reporter`; the state
machine's meaning stays behind `zraft.state.machine.StateMachine`.

Theory of operation
-------------------
Every loop turn (`run_once`):

1. poll the transport (its one `zmq.Poller`), with the timeout set by the next tick
   deadline (0 if the core has work ready); answer ZAP requests first;
2. drain the peer socket (decode, `raft.step`, or hand forwards and snapshot frames to
   their owners) and the client socket (to the request server), each up to a budget;
3. fire at most one tick if it is due (after a stall: one tick, re-anchor, `loop_stalled`);
4. move snapshots along (chunk windows to followers; on a tick, a slice of our own);
5. handle one `Ready`, top to bottom in `_handle_ready`: persist with ONE fsync, then
   send, then apply and answer clients, then `advance`. Every request that arrived this
   turn rides in the same append and the same fsync (group commit). A Ready that
   installs a snapshot received from the leader renames its verified file into place
   before the WAL records the reset (the order the storage's crash argument needs), then
   replaces the state machine before applying.

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
from functools import partial
from pathlib import Path
from types import FrameType
from typing import Any

import zmq

from zraft import __version__, diagnostics
from zraft.config import ClusterConfig, NodeConfig
from zraft.core import (
    AppendResponse,
    EntryKind,
    Raft,
    Ready,
    Role,
)
from zraft.diagnostics import NodeEvent
from zraft.net import security
from zraft.net.base import TransportError
from zraft.node import identity
from zraft.node.admin import Admin, learn_config_endpoints, learn_snapshot_endpoints
from zraft.node.assembly import TransportFactory, bootstrap_membership, connect, machine_for
from zraft.node.leases import LeaseKeeper
from zraft.node.members import RETIRED_MARKS, Endpoints
from zraft.node.metrics import NO_METRICS, NodeMetrics
from zraft.node.observe import observer
from zraft.node.outbox import Outbox
from zraft.node.pending import ReplyTo
from zraft.node.reports import Reporter
from zraft.node.serving import RequestServer
from zraft.node.snapshots import NodeSnapshots, restore_state
from zraft.node.trace import NO_TRACE, WriteTrace
from zraft.node.upkeep import Upkeep
from zraft.node.watches import WatchHub
from zraft.state.machine import KVMachine
from zraft.storage import FileStorage, LogStorage
from zraft.storage.snapstore import SnapshotStore
from zraft.wire.codec import DecodeError
from zraft.wire.ops import Limits
from zraft.wire.peer import (
    Forward,
    ForwardReply,
    Hello,
    SnapshotAck,
    SnapshotChunk,
    decode_peer_frame,
)

DRAIN_BUDGET = 256  # frames per socket per turn: big batches, bounded tick latency
STALL_THRESHOLD_TICKS = 5  # a tick this late (in tick lengths) is logged as loop_stalled


class Node:
    """One zraft node: owns its loop, and the collaborators that do the work.

    Args:
        cluster: the loaded cluster configuration.
        node_id: which node of `cluster` this is.
        log_path: where the JSON event log goes (default: the config's log dir).
        log_level: `info` in production; `debug` adds per-message events.
        clock: a monotonic clock in seconds (injected for tests).
        rng: the source of election timeout randomness (injected for tests).
        storage: a storage to use instead of a `FileStorage` in the node's data dir.
        strict_events: raise on an event outside the vocabulary (tests).
        context: the zmq context of the node's sockets (default: its own).
        fault_file: TESTS ONLY: a control file naming peers to cut off (`zraft.net.faults`).
        join: start as a node outside the initial membership (`--join`): with an empty
            data dir it never campaigns, and waits for a leader to add it.
        me: this node's endpoints and data dir when the file does not name it (`--join`).
        transport: TESTS ONLY: builds the transport instead of ZeroMQ sockets (for
            `zraft.net.inmem`; the cluster must run with `security = "none"`).
        trace_path: note when each write passed each stage, written here at the end
            (`--trace-writes`, `zraft.node.trace`).
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
        join: bool = False,
        me: NodeConfig | None = None,
        transport: TransportFactory | None = None,
        trace_path: Path | None = None,
    ) -> None:
        me = me if me is not None else cluster.node(node_id)
        self.id = node_id
        self._cluster = cluster
        self._clock = clock
        # Keys first (a bad key file must stop the start before anything is opened).
        keys = security.node_keys(cluster, node_id, me) if cluster.security == "curve" else None
        endpoints = Endpoints(
            (n.id, n.peer, n.client, security.public_key_text(n) if keys else "")
            for n in cluster.nodes
        )
        endpoints.set(node_id, me.peer, me.client, keys.own.public.decode() if keys else "")
        self._tick_s = cluster.tick_ms / 1000
        log_path = log_path or cluster.log_dir / f"{node_id}.jsonl"
        self._log = diagnostics.configure(node_id, log_path, log_level, strict=strict_events)
        # Counted only when served (`metrics` in the node's table): else hooks that do nothing.
        self._metrics = NodeMetrics() if me.metrics else NO_METRICS
        self._trace = WriteTrace(node_id, trace_path) if trace_path else NO_TRACE
        self._reporter = Reporter(self._log, clock, self._metrics)
        # The WAL first: it takes the data dir's lock, which covers the snapshot dir too.
        self._storage = (
            storage
            if storage is not None
            else FileStorage(me.data_dir, segment_bytes=cluster.wal_segment_bytes)
        )
        repair = self._storage.tail_repair
        if repair is not None:
            diagnostics.emit_node(
                self._log,
                NodeEvent.LOG_TAIL_REPAIRED,
                dropped_bytes=repair.dropped_bytes,
                last_index=repair.last_index,
            )
        store = SnapshotStore(me.data_dir / "snapshots", retain=cluster.snapshot_retain)
        self._machine = machine_for(cluster)
        restored, loaded = restore_state(self._storage, store, self._machine, self._log)
        if loaded is not None:
            learn_snapshot_endpoints(endpoints, loaded.header, loaded.meta)
        else:
            restored = replace(
                restored,
                membership=restored.membership or bootstrap_membership(cluster, node_id, join),
            )
        # The tunables are cluster-wide; a joining node need not be named in the file.
        raft_config = replace(cluster.raft_config(cluster.nodes[0].id), node_id=node_id)
        self._raft = Raft(raft_config, restored, (rng or random.Random()).randint)
        for entry in restored.entries:
            if entry.kind is EntryKind.CONFIG:
                learn_config_endpoints(endpoints, entry)
        awaiting_contact = join and node_id not in self._raft.membership.members
        self._context = None  # made here when metrics need one (else the transport's own)
        if me.metrics and transport is None and context is None:
            context = self._context = zmq.Context()
        joining = join and not self._storage.last_index() and loaded is None
        cluster_id = identity.establish(me.data_dir, cluster.name, joining=joining)
        self._identity = identity.Identity(me.data_dir, cluster_id)
        self._transport, zap = connect(
            cluster,
            me,
            keys,
            endpoints,
            awaiting_contact=awaiting_contact,
            context=context,
            fault_file=fault_file,
            transport=transport,
            report=lambda reason: self._reporter.bad_frame("test", "fault_file", reason),
            cluster_id=cluster_id,
        )
        self._zap = zap
        self._upkeep = Upkeep(
            node_id,
            self._raft,
            self._machine,
            self._transport.send,
            # Members with a connection (a joining node has none until contacted).
            lambda: [p for p in self._admin.member_peers() if self._transport.has_peer(p)],
            clock=clock,
            compaction_mode=cluster.auto_compaction_mode,
            retention=cluster.auto_compaction_retention,
        )
        self._server = RequestServer(
            node_id,
            self._raft,
            self._machine,
            self._transport,
            limits=Limits(cluster.max_key_bytes, cluster.max_value_bytes, cluster.max_txn_ops),
            request_timeout_s=cluster.request_timeout_ms / 1000,
            clock=clock,
            reporter=self._reporter,
            metrics=self._metrics,
            trace=self._trace,
            before_write=self._upkeep.before_write,
            raise_alarm=self._upkeep.raise_alarm,
        )
        self._leases = LeaseKeeper(
            self._raft,
            self._machine,
            self._server,
            clock=clock,
            log=self._log,
            request_timeout_s=cluster.request_timeout_ms / 1000,
        )
        self._watches = WatchHub(self._raft, self._machine, self._server, clock=clock)
        self._snapshots = NodeSnapshots(
            node_id,
            self._raft,
            self._machine,
            self._storage,
            store,
            send=self._transport.send,
            server=self._server,
            log=self._log,
            clock=clock,
            every_entries=cluster.snapshot_entries,
            every_bytes=cluster.snapshot_bytes,
            trailing=cluster.snapshot_trailing,
            header_fields=lambda: self._admin.snapshot_header(),
            metrics=self._metrics,
        )
        self._outbox = Outbox(
            self._transport,
            self._snapshots.start_transfer,
            self._reporter,
            self._metrics,
            self._trace,
        )
        self._admin = Admin(
            node_id,
            self._raft,
            endpoints,
            self._transport,
            zap=zap,
            server=self._server,
            reporter=self._reporter,
            log=self._log,
            clock=clock,
            awaiting_contact=awaiting_contact,
            replayed_until=restored.hard_state.commit,
            applied_membership=restored.membership or cluster.membership,
            applied_from_log=loaded is not None or (not join and not restored.entries),
            marks_readable=partial(self._upkeep.members_read, RETIRED_MARKS),
            status_extras=lambda: {
                **self._server.status(),
                "watches": len(self._watches),
                "log_bytes": self._snapshots.wal_bytes(),
                **self._machine.status(),
            },
        )
        try:
            parts = (self._admin, self._snapshots, self._leases, self._watches)
            self._server.register(*(part.handlers() for part in parts))
            self._observer = observer(
                context, me.metrics, node_id, self._metrics, self._admin.status_view, clock
            )
        except (RuntimeError, TransportError):
            self._transport.close()  # a node that cannot serve its ops must not start
            self._close_context()
            self._storage.close()
            diagnostics.close(self._log)
            raise
        self._next_tick = clock() + self._tick_s
        self._stopping = False
        self._stop_reason = "signal"
        self._last_role = self._raft.role
        self._last_leader = self._raft.leader_id

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
            peers=sorted(self._admin.peer_ids),
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
        if self._observer is not None:
            self._observer.close()  # its socket, before a context can be terminated
        self._transport.close()
        self._close_context()
        self._storage.close()
        self._trace.close()
        diagnostics.close(self._log)

    def _close_context(self) -> None:
        if self._context is not None:
            self._context.term()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        del signum, frame
        self._stopping = True

    @property
    def raft(self) -> Raft:
        """The Raft core (read-only use: status, tests)."""
        return self._raft

    @property
    def machine(self) -> KVMachine:
        """The state machine (read-only use: tests)."""
        return self._machine

    def is_leader(self) -> bool:
        """Whether this node currently leads."""
        return self._raft.role is Role.LEADER

    # === one turn ==============================================================================
    def run_once(self, timeout_ms: int) -> None:
        """Poll once, process what arrived, fire a due tick, and handle one Ready."""
        ready = self._transport.poll(timeout_ms)
        began = time.perf_counter()
        if ready.zap and self._zap is not None:
            # First, so handshakes waiting on us finish as early as possible.
            for record in self._zap.handle():
                self._reporter.auth(record)
        if ready.peers:
            self._drain_peers()
        if ready.clients:
            self._server.accept(self._transport.recv_client_requests(DRAIN_BUDGET))
        self._server.refuse_bad_inputs(self._transport.take_bad_inputs())
        ticked = self._fire_due_tick()
        if self._server.has_parked and self._raft.leader_id is not None:
            self._server.retry_parked()
        self._snapshots.move(write_slice=ticked)
        self._leases.flush()  # this turn's keepalives: one refresh entry
        self._handle_ready()
        self._snapshots.maybe_start()
        self._metrics.turn(time.perf_counter() - began)

    def _poll_timeout_ms(self) -> int:
        if self._raft.has_ready():
            return 0
        return max(0, int((self._next_tick - self._clock()) * 1000) + 1)

    def _fire_due_tick(self) -> bool:
        """Fire one tick if it is due; returns whether one fired."""
        now = self._clock()
        if now < self._next_tick:
            return False
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
                self._metrics.loop_stalled()
        else:
            self._next_tick += self._tick_s
        self._server.expire(now)
        for peer in self._transport.on_tick(now):  # its link broke: if it led, it may be dead
            self._raft.leader_unreachable(peer)
        self._upkeep.on_tick(now)
        self._leases.on_tick(now)
        self._watches.on_tick(now)
        self._identity.learn(self._transport)  # a joiner, once a member spoke: off the frame path
        if self._observer is not None:
            self._observer.on_tick(now)  # scrapes and probes: answered within a tick
        if self._admin.has_transfers:
            self._admin.settle_transfers()
        return True

    def _drain_peers(self) -> None:
        metrics = self._metrics
        for sender, frame in self._transport.recv_peers(DRAIN_BUDGET):
            sender_id = sender.decode("utf-8", "replace")
            try:
                item = decode_peer_frame(
                    frame,
                    peers=self._admin.peer_ids,
                    max_key=self._cluster.max_key_bytes,
                    max_value=self._cluster.max_value_bytes,
                )
            except DecodeError as exc:
                self._reporter.bad_frame("peer", sender_id, exc.reason)
                continue
            if item.src != sender_id:
                # The routing id (the connection) decides who speaks, not the payload.
                self._reporter.bad_frame("peer", sender_id, f"claims to be {item.src!r}")
                continue
            if not self._admin.heard_from(sender_id):  # False: removed from the cluster
                continue
            if isinstance(item, Forward):
                self._server.serve(item.request, ReplyTo(peer=item.src, request_id=item.request_id))
            elif isinstance(item, ForwardReply):
                self._server.relay(item)
            elif item.dst != self.id:
                self._reporter.bad_frame("peer", sender_id, f"addressed to {item.dst!r}")
            elif isinstance(item, SnapshotChunk):
                self._snapshots.receive_chunk(item)
            elif isinstance(item, SnapshotAck):
                self._snapshots.on_ack(item)
            elif isinstance(item, Hello):
                self._upkeep.heard(item)
            else:
                if metrics.enabled and type(item) is AppendResponse:
                    metrics.heartbeat_answered(item.src, item.seq, time.perf_counter())
                self._trace.received(item)
                self._raft.step(item)

    # === the Ready =============================================================================
    def _handle_ready(self) -> None:
        if not self._raft.has_ready():
            return
        rd = self._raft.ready()
        for event in rd.events:
            diagnostics.emit(self._log, event)
        for entry in rd.entries:
            if entry.kind is EntryKind.CONFIG:
                self._admin.config_appended(entry)  # in force once appended
        received = self._snapshots.take_received(rd)  # renamed into place before the reset
        if rd.early_messages:
            # 0. A leader's appends go out first, so followers write their copies while
            # we write ours (thesis §10.2.1); the core counts us only once durable.
            self._outbox.send(rd.early_messages)
        if rd.must_sync:
            # 1. Durable before anything that depends on it leaves (one fsync). A Ready that
            # only moves the commit index skips the write: the next save carries commit.
            began = time.perf_counter()
            self._storage.save(rd.hard_state, rd.entries, rd.snapshot)
            self._metrics.fsync(time.perf_counter() - began)
            self._trace.persisted(rd.entries)
        if received is not None:
            loaded = self._snapshots.adopt(received)  # the reset is durable: new state
            self._admin.snapshot_adopted(loaded.header, loaded.meta)
        self._outbox.send(rd.messages)  # 2.
        self._apply(rd)  # 3.
        self._raft.advance(rd)  # 4.
        self._after_role_change()

    def _apply(self, rd: Ready) -> None:
        self._trace.committed(rd.committed)
        for entry in rd.committed:
            self._snapshots.note_applied(len(entry.data))
            fields = self._machine.apply(entry)
            self._leases.applied(entry)
            if entry.kind is EntryKind.CONFIG:
                self._admin.config_applied(entry)
                if self._server.awaits(entry.index):
                    fields = self._admin.members_fields()  # a change's answer
            self._server.complete_write(entry, fields)
        self._server.release_reads(rd.read_states)
        self._watches.applied()  # after the reads: a write's readers before its watchers

    def _after_role_change(self) -> None:
        role, leader = self._raft.role, self._raft.leader_id
        if role is self._last_role and leader == self._last_leader:
            return
        if leader is not None and leader != self._last_leader:
            self._metrics.leader_changed()
        self._last_role, self._last_leader = role, leader
        if leader is not None and self._server.has_parked:
            self._server.retry_parked()
        if role is not Role.LEADER:
            self._snapshots.cancel_transfers()  # a new leader starts its own transfers
            if self.id not in self._raft.membership.members:
                self._server.release_writes_after_removal()
        if self._admin.has_transfers:
            self._admin.settle_transfers()
