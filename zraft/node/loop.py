"""The node: ONE zmq.Poller loop driving the Raft core, storage, transport and state machine.

Theory of operation
-------------------
Every loop turn (`run_once`):

1. poll, with the timeout set by the next tick deadline (0 if the core has work ready);
2. drain the peer socket (decode, `raft.step`) and the client socket (decode, then
   propose, read, forward or answer), each up to a budget of frames;
3. fire at most one tick if it is due (after a stall: one tick, re-anchor, `loop_stalled`);
4. move snapshots along: send the next window of chunks to followers that need one, and
   on a tick, write the next slice of our own snapshot (`zraft.node.snapshot_maker`,
   `zraft.node.snapshot_transfer`);
5. handle one `Ready`: persist with ONE fsync, then send, then apply and answer clients,
   then `advance`. Every request that arrived this turn rides in the same append and the
   same fsync (group commit). A Ready that installs a snapshot received from the leader
   renames its verified file into place before the WAL records the reset (the order the
   storage's crash argument needs), then replaces the state machine before applying.

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

from zraft import __version__, diagnostics, wire
from zraft.config import ClusterConfig, ConfigError, NodeConfig, is_endpoint
from zraft.core import (
    ChangeKind,
    ChangeRefused,
    Entry,
    EntryKind,
    Membership,
    MembershipChange,
    Message,
    NotLeader,
    ProposalDropped,
    Raft,
    Ready,
    RestoredState,
    Role,
    SnapshotRequest,
)
from zraft.core.membership import decode_config
from zraft.diagnostics import NodeEvent
from zraft.net import security
from zraft.net.faults import FaultFile
from zraft.net.transport import (
    CLIENT_ZAP_DOMAIN,
    PEER_ZAP_DOMAIN,
    CurveKeys,
    ZmqTransport,
)
from zraft.net.zap import AuthRecord, EventLimiter, ZapHandler
from zraft.node.members import Endpoints, decode_endpoints, endpoints_from_plain
from zraft.node.pending import Bucket, Pending, PendingRequests, ReplyTo
from zraft.node.snapshot_maker import SnapshotMaker, SnapshotStats
from zraft.node.snapshot_transfer import Received, SnapshotInbox, SnapshotSender, TransferOutcome
from zraft.state.kv import KVStore, Result, SnapshotView
from zraft.storage import FileStorage, LogStorage
from zraft.storage.snapfile import LoadedSnapshot
from zraft.storage.snapstore import SnapshotStore

DRAIN_BUDGET = 256  # frames per socket per turn: big batches, bounded tick latency
STALL_THRESHOLD_TICKS = 5  # a tick this late (in tick lengths) is logged as loop_stalled
DROP_REPORT_INTERVAL_S = 1.0  # at most one peer_send_dropped event per second
BAD_FRAME_EVENTS_PER_S = 50  # per source; the rest are counted in the next one's `suppressed`
MAX_SNAPSHOT_TRANSFER_BYTES = 64 << 30  # a follower refuses a bigger incoming snapshot


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
        fault_file: TESTS ONLY: a control file naming peers to cut off (`zraft.net.faults`).
        join: start as a node outside the initial membership (`--join`): with an empty
            data dir it never campaigns, and waits for a leader to add it.
        me: this node's endpoints and data dir when the file does not name it (`--join`).
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
    ) -> None:
        me = me if me is not None else cluster.node(node_id)
        self.id = node_id
        self._join = join
        # Keys first (a bad key file must stop the start before anything is opened).
        keys = security.node_keys(cluster, node_id, me) if cluster.security == "curve" else None
        self._keys = keys
        self._endpoints = Endpoints(
            (n.id, n.peer, n.client, security.public_key_text(n) if keys else "")
            for n in cluster.nodes
        )
        own_key = keys.own.public.decode() if keys else ""
        self._endpoints.set(node_id, me.peer, me.client, own_key)
        self._cluster = cluster
        self._clock = clock
        self._bad_frame_limiters: dict[str, EventLimiter] = {}  # per `source` of bad_frame
        self._tick_s = cluster.tick_ms / 1000
        self._request_timeout_s = cluster.request_timeout_ms / 1000
        log_path = log_path or cluster.log_dir / f"{node_id}.jsonl"
        self._log = diagnostics.configure(node_id, log_path, log_level, strict=strict_events)
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
        self._snapshots = SnapshotStore(me.data_dir / "snapshots", retain=cluster.snapshot_retain)
        self._kv = KVStore()
        restored = self._restore_state(cluster)
        # The tunables are cluster-wide; a joining node need not be named in the file.
        raft_config = replace(cluster.raft_config(cluster.nodes[0].id), node_id=node_id)
        self._raft = Raft(raft_config, restored, (rng or random.Random()).randint)
        self._maker = SnapshotMaker(
            self._snapshots,
            every_entries=cluster.snapshot_entries,
            every_bytes=cluster.snapshot_bytes,
        )
        self._snapshot_waiters: list[ReplyTo] = []  # `snapshot` requests awaiting the file
        for entry in restored.entries:
            if entry.kind is EntryKind.CONFIG:
                self._learn_endpoints(entry)
        # Membership events are for changes applied from now on, not for a replay.
        self._replayed_until = restored.hard_state.commit
        self._applied_membership = restored.membership or cluster.membership
        # A node joining a cluster does not dial anyone until a member talks to it: the
        # members would refuse its key until they have added it, and libzmq never retries
        # a refused handshake.
        self._awaiting_contact = join and node_id not in self._raft.membership.members
        peers = self._reachable_peers()
        self._peer_ids = frozenset(self._endpoints.peers_of(node_id))
        self._transport = ZmqTransport(
            node_id,
            me.peer,
            me.client,
            peers,
            client_max_message_bytes=cluster.max_key_bytes + 2 * cluster.max_value_bytes + 8192,
            peer_max_message_bytes=max(8 << 20, 4 * cluster.max_value_bytes),
            curve=(
                None
                if keys is None
                else CurveKeys(
                    keys.own.public,
                    keys.own.secret,
                    {**self._endpoints.keys_of(node_id), **keys.peer_server_keys},
                )
            ),
            context=context,
        )
        self._transport.accept_from(self._peer_ids)
        self._zap: ZapHandler | None = None
        zap_socket = self._transport.zap_socket
        if keys is not None and zap_socket is not None:
            self._zap = ZapHandler(
                zap_socket,
                {PEER_ZAP_DOMAIN: "peer", CLIENT_ZAP_DOMAIN: "client"},
                keys.peer_ids_by_key,
                keys.clients_by_key,
            )
            # Members the file does not name, learned from the log or a snapshot.
            self._zap.admit_peers(
                {security.raw_key(k): i for i, k in self._endpoints.keys_of(node_id).items()}
            )
        # Separate budgets: a flood of refused connections must not hide admissions.
        self._denied_limiter = EventLimiter(clock)
        self._admitted_limiter = EventLimiter(clock)
        self._poller = zmq.Poller()
        self._transport.register(self._poller)
        self._sender = SnapshotSender(self._transport.send, clock)
        self._inbox = SnapshotInbox(
            node_id, self._snapshots, max_bytes=MAX_SNAPSHOT_TRANSFER_BYTES
        )
        self._received: Received | None = None  # a verified snapshot the core is deciding on
        # transfer_leader requests waiting to see the target lead: (request, target).
        self._transfers_waiting: list[tuple[Pending, str]] = []
        self._failed_transfers: list[str] = []  # peers to report to the core next turn
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
        self._loss = 0.0  # tests only: share of peer sends dropped (zraft.net.faults)
        self._loss_rng = random.Random()

    def _restore_state(self, cluster: ClusterConfig) -> RestoredState:
        """Rebuild from the newest valid snapshot plus the log after it (or the log alone).

        A damaged snapshot is refused (logged) and an older one used. If the newest
        snapshot is ahead of the log, or the log's entry at the snapshot index has another
        term, the log holds a history the snapshot supersedes (a crash between installing a
        received snapshot and saving its reset): the reset is saved again now.
        """
        for temp in self._snapshots.removed_temps:
            diagnostics.emit_node(
                self._log, NodeEvent.SNAPSHOT_REFUSED, path=str(temp), reason="unfinished"
            )
        began = time.perf_counter()
        loaded, refused = self._snapshots.load_newest()
        for path, reason in refused:
            diagnostics.emit_node(
                self._log, NodeEvent.SNAPSHOT_REFUSED, path=str(path), reason=reason
            )
        if loaded is None:
            restored = self._storage.load()
            return replace(restored, membership=restored.membership or self._bootstrap(cluster))
        meta = loaded.meta
        storage = self._storage
        stored_term = None
        if storage.first_index() <= meta.index <= storage.last_index():
            stored_term = storage.entries(meta.index, meta.index + 1)[0].term
        if storage.last_index() < meta.index or (
            stored_term is not None and stored_term != meta.term
        ):
            storage.save(None, (), snapshot=meta)
        restored = storage.load(after=meta.index)
        self._kv.restore_snapshot(self._view_of(loaded))
        self._learn_snapshot_endpoints(loaded)
        diagnostics.emit_node(
            self._log,
            NodeEvent.SNAPSHOT_LOADED,
            index=meta.index,
            term=meta.term,
            size_bytes=loaded.size_bytes,
            duration_ms=round((time.perf_counter() - began) * 1000, 1),
        )
        return replace(restored, snapshot=meta, membership=meta.membership)

    def _bootstrap(self, cluster: ClusterConfig) -> Membership:
        """The membership of a brand-new log: the file's nodes, or for a node joining an
        existing cluster, the others (it is not a voter until a leader makes it one)."""
        if not self._join:
            return cluster.membership
        others = frozenset(cluster.node_ids) - {self.id}
        if not others:
            raise ConfigError(
                cluster.path, None, "--join needs the file to name at least one existing member"
            )
        return Membership(voters=others)

    @staticmethod
    def _view_of(loaded: LoadedSnapshot) -> SnapshotView:
        header = loaded.header
        return SnapshotView(header.get("applied_index"), loaded.pairs, header.get("sessions"))

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
        ticked = self._fire_due_tick()
        if self._pending.parked and self._raft.leader_id is not None:
            self._retry_parked()
        self._move_snapshots(write_slice=ticked)
        self._handle_ready()
        self._maybe_start_snapshot()

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
        else:
            self._next_tick += self._tick_s
        self._expire_requests(now)
        self._transport.redial_refused(now)
        if self._transfers_waiting:
            self._settle_transfers(now)
        if self._faults is not None:
            self._apply_fault_file()
        return True

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
            if self._awaiting_contact and item.src == sender_id:
                self._awaiting_contact = False  # a member talks to us: we were added
                self._sync_peers()
            if item.src != sender_id:
                # The routing id (the connection) decides who speaks, not the payload.
                self._bad_frame("peer", sender_id, f"claims to be {item.src!r}")
            elif isinstance(item, wire.Forward):
                self._serve(item.request, ReplyTo(peer=item.src, request_id=item.request_id))
            elif isinstance(item, wire.ForwardReply):
                self._relay_forward_reply(item)
            elif item.dst != self.id:
                self._bad_frame("peer", sender_id, f"addressed to {item.dst!r}")
            elif isinstance(item, wire.SnapshotChunk):
                self._receive_chunk(item)
            elif isinstance(item, wire.SnapshotAck):
                self._report_transfer(self._sender.on_ack(item))
            else:
                self._raft.step(item)

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
        # Rate-limited per source: a member or admitted client gone mad (or a flood of
        # garbage) must not fill the disk; what is held back is counted in `suppressed`.
        limiter = self._bad_frame_limiters.get(source)
        if limiter is None:
            limiter = EventLimiter(self._clock, limit=BAD_FRAME_EVENTS_PER_S)
            self._bad_frame_limiters[source] = limiter
        suppressed = limiter.admit()
        if suppressed is None:
            return
        diagnostics.emit_node(
            self._log,
            NodeEvent.BAD_FRAME,
            source=source,
            sender=sender,
            reason=reason,
            suppressed=suppressed,
        )

    # === serving requests ======================================================================
    def _serve(self, request: wire.Request, reply_to: ReplyTo) -> None:
        """Answer, propose, read or forward one decoded request."""
        if request.op == "status":
            self._send_reply(reply_to, self._status_reply())
        elif request.kind != "local" and self.id not in self._raft.membership.members:
            # Removed (or not added yet): no leader will tell us anything; send the client
            # elsewhere at once instead of parking its request until the timeout.
            message = f"{self.id} is not a member of the cluster; ask another node"
            self._reply_error(reply_to, "unavailable", message)
        elif request.kind in ("write", "read"):
            pending = Pending(request, reply_to, self._clock() + self._request_timeout_s)
            if not self._dispatch(pending):
                self._pending.add("parked", self._take_id(), pending)
        elif request.op == "snapshot":
            self._request_snapshot(reply_to)
        elif request.op == "members":
            self._send_reply(reply_to, self._members_reply())
        else:  # membership and leadership ops: at the leader, like writes
            pending = Pending(request, reply_to, self._clock() + self._request_timeout_s)
            if not self._dispatch(pending):
                self._pending.add("parked", self._take_id(), pending)

    def _dispatch(self, pending: Pending) -> bool:
        """Start work on a write or read; False if it must wait for a leader (parked)."""
        kind = pending.request.kind
        if kind == "write":
            return self._dispatch_write(pending)
        if kind == "admin":
            return self._dispatch_admin(pending)
        return self._dispatch_read(pending)

    def _dispatch_write(self, pending: Pending) -> bool:
        request = pending.request
        try:
            term, index = self._raft.propose(wire.encode_command(request.to_command()))
        except NotLeader as exc:
            return self._forward(pending, exc.leader_hint)
        except ProposalDropped:
            return False  # a leadership transfer is under way; retry after it
        self._await_apply(pending, term, index)
        return True

    def _await_apply(self, pending: Pending, term: int, index: int) -> None:
        """Answer `pending` when the entry it proposed at (term, index) is applied."""
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

    def _dispatch_admin(self, pending: Pending) -> bool:
        """A membership or leadership op: the leader acts, others forward (or park)."""
        if self._raft.role is not Role.LEADER:
            return self._forward(pending, self._raft.leader_id)
        request = pending.request
        if request.op == "transfer_leader":
            return self._start_leader_transfer(pending)
        change = self._change_of(request)
        if isinstance(change, str):
            self._reply_error(pending.reply_to, "bad_request", change)
            return True
        previous = self._endpoints.entry(change.node_id)
        if change.kind is ChangeKind.ADD_LEARNER:
            # Reachable before the entry is even replicated: the leader must send it.
            assert request.peer is not None and request.client_endpoint is not None
            key = request.public_key or ""
            self._endpoints.set(change.node_id, request.peer, request.client_endpoint, key)
        try:
            term, index = self._raft.propose_membership(change, self._endpoints.encode())
        except (ProposalDropped, ChangeRefused) as exc:
            # Nothing was appended: forget the endpoints (and key) the request brought,
            # so a refused add never spreads in a later CONFIG entry.
            self._endpoints.restore(change.node_id, previous)
            if isinstance(exc, ProposalDropped):
                return False  # a leadership transfer is under way; retry after it
            code = {"invalid": "bad_request", "in_progress": "conflict"}.get(exc.code)
            self._reply_error(pending.reply_to, code or "unavailable", str(exc))
            return True
        if change.kind is ChangeKind.ADD_LEARNER:
            self._sync_peers()
        self._await_apply(pending, term, index)
        return True

    def _change_of(self, request: wire.Request) -> MembershipChange | str:
        """The change a request asks for, or why it is malformed."""
        node_id = request.id or ""
        if request.op == "add_member":
            peer, client = request.peer or "", request.client_endpoint or ""
            if not is_endpoint(peer) or not is_endpoint(client):
                return "add_member needs `peer` and `client_endpoint` as tcp://HOST:PORT"
            if node_id == self.id:
                return f"{node_id} is this node"
            if self._keys is not None and not security.is_public_key(request.public_key or ""):
                return "add_member needs `public_key`, the new node's Z85 key (CURVE is on)"
            return MembershipChange(
                ChangeKind.ADD_LEARNER, node_id, promote_when_caught_up=not request.learner
            )
        kind = ChangeKind.PROMOTE if request.op == "promote_member" else ChangeKind.REMOVE
        return MembershipChange(kind, node_id)

    def _start_leader_transfer(self, pending: Pending) -> bool:
        status = self._raft.status()
        target = pending.request.id
        if target is None:  # the most up-to-date other voter
            others = [(status.match_indexes.get(v, 0), v) for v in status.voters if v != self.id]
            target = max(others)[1] if others else None
        if target is None or target == self.id:
            self._send_reply(pending.reply_to, self._transfer_reply(self.id))
            return True
        try:
            self._raft.transfer_leadership(target)
        except ValueError as exc:
            self._reply_error(pending.reply_to, "bad_request", str(exc))
            return True
        self._transfers_waiting.append((pending, target))
        return True

    def _transfer_reply(self, leader: str) -> bytes:
        return wire.encode_reply(ok=True, leader=leader, extra={"transferred_to": leader})

    def _settle_transfers(self, now: float) -> None:
        """Answer transfer_leader requests whose target now leads, or whose time is up."""
        waiting, self._transfers_waiting = self._transfers_waiting, []
        for pending, target in waiting:
            if self._raft.leader_id == target:
                self._send_reply(pending.reply_to, self._transfer_reply(target))
            elif now >= pending.deadline:
                self._reply_error(
                    pending.reply_to, "timeout", f"leadership did not move to {target} in time"
                )
            else:
                self._transfers_waiting.append((pending, target))

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
        for entry in rd.entries:
            # In force once appended: reach (and admit) new members at once.
            if entry.kind is EntryKind.CONFIG and self._learn_endpoints(entry):
                self._sync_peers()
        received, self._received = self._received, None
        if rd.snapshot is not None:
            # Before the WAL's reset: a final name means a complete, durable file.
            self._install_received(rd, received)
        elif received is not None:
            received.receiver.abort()  # the core did not need it (already had it all)
        if rd.early_messages:
            # 0. A leader's appends go out first, so followers write their copies while
            # we write ours (thesis §10.2.1); the core counts us only once durable.
            self._send_messages(rd.early_messages)
        if rd.must_sync:
            # 1. Durable before anything that depends on it leaves (one fsync). A Ready
            # whose only change is the commit index skips the write: commit is a hint
            # that the next save carries and a leader re-establishes after a crash.
            self._storage.save(rd.hard_state, rd.entries, rd.snapshot)
        if rd.snapshot is not None and received is not None:
            self._adopt_snapshot_state(received)
        self._send_messages(rd.messages)  # 2.
        self._apply(rd)  # 3.
        self._raft.advance(rd)  # 4.
        self._after_role_change()

    def _send_messages(self, messages: tuple[Message, ...]) -> None:
        dropped = 0
        for msg in messages:
            if isinstance(msg, SnapshotRequest):
                self._start_transfer(msg)  # streamed in chunks, not sent as one message
                continue
            if self._loss and self._loss_rng.random() < self._loss:
                continue  # tests only: injected packet loss (zraft.net.faults)
            if not self._transport.has_peer(msg.dst):
                dropped += 1  # a member whose endpoints we have not learned (yet)
                continue
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
            self._maker.note_applied(len(entry.data))
            if entry.kind is EntryKind.NORMAL:
                result = self._kv.apply(entry.index, wire.decode_command(entry.data))
            else:
                self._kv.skip(entry.index)
                result = None
                if entry.kind is EntryKind.CONFIG:
                    self._config_applied(entry)
            pending = self._pending.writes.pop(entry.index, None)
            if pending is None:
                continue
            if pending.term != entry.term:
                self._answer_write_not_applied(pending)
            elif result is not None:
                self._answer_write(pending, result)
            elif entry.kind is EntryKind.CONFIG:
                self._send_reply(pending.reply_to, self._members_reply())
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
        if role is not Role.LEADER:
            self._sender.cancel_all()  # a new leader starts its own transfers
            if self.id not in self._raft.membership.members:
                self._release_writes_after_removal()
        if self._transfers_waiting:
            self._settle_transfers(self._clock())

    def _release_writes_after_removal(self) -> None:
        """A leader that removed itself will not hear how its last writes end: tell their
        clients now (their sessions make a retry elsewhere safe) rather than at the timeout."""
        for index in sorted(self._pending.writes):
            pending = self._pending.writes.pop(index)
            self._reply_error(
                pending.reply_to,
                "timeout",
                "this node left the cluster; the write may or may not be applied (retry it)",
            )

    # === membership ============================================================================
    def _learn_endpoints(self, entry: Entry) -> bool:
        """Take the directory a CONFIG entry carries; returns whether anything changed
        (then `_sync_peers` connects to and admits the new members)."""
        try:
            _, context = decode_config(entry.data)
            directory = decode_endpoints(context)
        except ValueError as exc:  # the core validated the membership; this is ours
            self._bad_frame("peer", self._raft.leader_id or "", f"config {entry.index}: {exc}")
            return False
        return self._endpoints.merge(directory)

    def _learn_snapshot_endpoints(self, loaded: LoadedSnapshot) -> bool:
        """Take the directory a snapshot's header carries; returns whether it changed."""
        try:
            directory = endpoints_from_plain(loaded.header.get("endpoints", {}))
        except ValueError as exc:
            self._bad_frame("peer", "", f"snapshot {loaded.meta.index}: {exc}")
            return False
        return self._endpoints.merge(directory)

    def _reachable_peers(self) -> dict[str, str]:
        """Peer id -> endpoint of every member we can talk to (with CURVE: whose key we
        know; a member added without one cannot be reached, and cannot reach us)."""
        if self._awaiting_contact:
            return {}
        peers = self._endpoints.peers_of(self.id)
        if self._keys is None:
            return peers
        keys = self._endpoints.keys_of(self.id)
        return {i: e for i, e in peers.items() if i in keys}

    def _sync_peers(self) -> None:
        peers = self._reachable_peers()
        server_keys = self._endpoints.keys_of(self.id)
        self._transport.update_peers(peers, server_keys)
        if self._zap is not None:
            self._zap.admit_peers(
                {security.raw_key(key): peer for peer, key in server_keys.items()}
            )
        self._peer_ids = frozenset(self._endpoints.peers_of(self.id))
        self._transport.accept_from(self._peer_ids)

    def _config_applied(self, entry: Entry) -> None:
        """Log who joined, was promoted or left, once a CONFIG entry is applied."""
        new, _ = decode_config(entry.data)
        old, self._applied_membership = self._applied_membership, new
        if entry.index <= self._replayed_until:
            return  # replayed at start: logged when it first happened
        for member in sorted(new.members - old.members):
            role = "voter" if member in new.voters else "learner"
            diagnostics.emit_node(
                self._log, NodeEvent.MEMBER_ADDED, member=member, index=entry.index, role=role
            )
        for member in sorted(new.voters & old.learners):
            diagnostics.emit_node(
                self._log, NodeEvent.MEMBER_ADDED, member=member, index=entry.index, role="voter"
            )
        for member in sorted(old.members - new.members):
            diagnostics.emit_node(
                self._log, NodeEvent.MEMBER_REMOVED, member=member, index=entry.index
            )

    def _members_reply(self) -> bytes:
        status = self._raft.status()
        leading = status.role is Role.LEADER
        rows = []
        for role, ids in (("voter", status.voters), ("learner", status.learners)):
            for member in ids:
                match = status.last_index if member == self.id else status.match_indexes.get(member)
                rows.append(
                    {
                        "id": member,
                        "role": role,
                        "peer": self._endpoints.peer(member),
                        "client": self._endpoints.client(member),
                        "match_index": match if leading else None,
                    }
                )
        return wire.encode_reply(
            ok=True,
            leader=status.leader,
            extra={"members": rows, "config_index": status.config_index},
        )

    # === snapshots =============================================================================
    def _move_snapshots(self, *, write_slice: bool) -> None:
        """Per turn: report failed transfers and send chunk windows; per tick, write one
        slice of our own snapshot. One slice (~1 MiB and its fdatasync, a few ms) per tick
        spreads the cost: a busy leader's requests see it in one turn of every few, not in
        every turn, and the snapshot still advances ~100 MiB/s at a 10 ms tick."""
        ended, overdue = self._sender.pump()
        for outcome in ended:
            self._report_transfer(outcome)
        failed, self._failed_transfers = self._failed_transfers, []
        for peer in failed + overdue:
            self._raft.snapshot_failed(peer)
        if write_slice:
            stats = self._maker.step()
            if stats is not None:
                self._finish_snapshot(stats)

    def _maybe_start_snapshot(self, *, force: bool = False) -> bool:
        """Start a snapshot of the applied state if one is due (or `force`d); returns
        whether one is now being written."""
        newest = self._raft.snapshot_index
        applied = self._kv.applied_index
        if self._maker.writing is not None:
            return True
        if not (force and applied > newest) and not self._maker.is_due(applied, newest):
            return False
        began = time.perf_counter()
        view = self._kv.snapshot_view()  # the one pause: a shallow copy of the state
        self._maker.start(
            self._raft.snapshot_meta(view.applied_index),
            view,
            extra_header={"endpoints": {i: list(e) for i, e in self._endpoints.as_dict().items()}},
        )
        self._maker.note_copy_ms((time.perf_counter() - began) * 1000)
        return True

    def _finish_snapshot(self, stats: SnapshotStats) -> None:
        """A snapshot of ours is durable: compact the log behind it, keep the newest few."""
        meta = stats.info.meta
        diagnostics.emit_node(
            self._log,
            NodeEvent.SNAPSHOT_SAVED,
            index=meta.index,
            term=meta.term,
            size_bytes=stats.info.size_bytes,
            pairs=stats.pairs,
            copy_ms=round(stats.copy_ms, 1),
            max_slice_ms=round(stats.max_slice_ms, 1),
            total_ms=round(stats.total_ms, 1),
        )
        # Keep `snapshot_trailing` entries in memory for followers that lag a little.
        keep_from = max(self._raft.log.snapshot_index, meta.index - self._cluster.snapshot_trailing)
        self._raft.compact(meta, keep_from)
        self._compact_storage(meta.term)
        waiters, self._snapshot_waiters = self._snapshot_waiters, []
        for reply_to in waiters:
            self._send_reply(reply_to, self._snapshot_reply(meta.index, stats.info.size_bytes))

    def _compact_storage(self, term: int) -> None:
        """Prune old snapshot files, then drop WAL segments the oldest kept one covers.

        The WAL keeps everything after the OLDEST retained snapshot, so that a damaged
        newest snapshot can fall back to an older one and still find its log.
        """
        self._snapshots.prune()
        upto = min(self._snapshots.oldest_retained_index(), self._raft.log.snapshot_index)
        before = self._storage.first_index()
        self._storage.compact(upto)
        if self._storage.first_index() != before:
            diagnostics.emit_node(
                self._log,
                NodeEvent.LOG_COMPACTED,
                index=upto,
                term=term,
                size_bytes=self._wal_bytes(),
                first_index=self._storage.first_index(),
            )

    def _request_snapshot(self, reply_to: ReplyTo) -> None:
        """The operator's `snapshot`: take one now; answer once it is durable."""
        if self._maybe_start_snapshot(force=True):
            self._snapshot_waiters.append(reply_to)
        else:  # nothing applied since the newest snapshot: it is already current
            index = self._raft.snapshot_index
            self._send_reply(reply_to, self._snapshot_reply(index, None))

    def _snapshot_reply(self, index: int, size_bytes: int | None) -> bytes:
        return wire.encode_reply(
            ok=True,
            leader=self._raft.leader_id,
            extra={"snapshot": {"index": index, "size_bytes": size_bytes}},
        )

    def _start_transfer(self, request: SnapshotRequest) -> None:
        failed = self._sender.start(request, self._snapshots.path_of(request.meta))
        if failed is not None:
            self._report_transfer(failed, defer=True)

    def _report_transfer(self, outcome: TransferOutcome | None, *, defer: bool = False) -> None:
        """Log how a transfer ended; a failure goes back to the core (next turn if
        `defer`, when the core is between ready() and advance())."""
        if outcome is None:
            return
        diagnostics.emit_node(
            self._log,
            NodeEvent.SNAPSHOT_SENT,
            peer=outcome.peer,
            index=outcome.index,
            size_bytes=outcome.size_bytes,
            duration_ms=round(outcome.duration_s * 1000, 1),
            delivered=outcome.delivered,
            reason=outcome.reason,
        )
        if outcome.delivered:
            return
        if defer:
            self._failed_transfers.append(outcome.peer)
        else:
            self._raft.snapshot_failed(outcome.peer)

    def _receive_chunk(self, chunk: wire.SnapshotChunk) -> None:
        ack, received = self._inbox.on_chunk(chunk, self._raft.term)
        if not ack.ok:
            diagnostics.emit_node(
                self._log,
                NodeEvent.SNAPSHOT_REFUSED,
                path=f"transfer from {chunk.src}",
                reason=ack.reason,
            )
        self._transport.send(chunk.src, wire.encode_snapshot_ack(ack))
        if received is not None:
            if self._received is not None:
                self._received.receiver.abort()
            self._received = received
            self._raft.step(received.request)  # decides in the next Ready

    def _install_received(self, rd: Ready, received: Received | None) -> None:
        """Give a received, verified snapshot its final name (before the WAL reset)."""
        if received is None or received.request.meta != rd.snapshot:
            # The core only installs what this node handed it: anything else is a bug.
            raise RuntimeError(f"the core installs {rd.snapshot}, which this node does not hold")
        self._maker.note_installed()  # our own older snapshot in progress is moot now
        self._snapshots.install(received.receiver)

    def _adopt_snapshot_state(self, received: Received) -> None:
        """The WAL reset is durable: replace the state machine and tidy up old files."""
        loaded = received.loaded
        self._kv.restore_snapshot(self._view_of(loaded))
        if self._learn_snapshot_endpoints(loaded):
            self._sync_peers()
        self._applied_membership = loaded.meta.membership
        diagnostics.emit_node(
            self._log,
            NodeEvent.SNAPSHOT_INSTALLED,
            index=loaded.meta.index,
            term=loaded.meta.term,
            size_bytes=loaded.size_bytes,
        )
        # Older snapshots cannot be combined with a log that restarts after this one.
        for older in self._snapshots.list():
            if older.index < loaded.meta.index:
                older.path.unlink(missing_ok=True)
        self._compact_storage(loaded.meta.term)

    def _wal_bytes(self) -> int:
        data_dir = getattr(self._storage, "data_dir", None)
        if data_dir is None:
            return 0
        return sum(p.stat().st_size for p in Path(data_dir).glob("wal-*.log"))

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
                    "learners": list(status.learners),
                    "config_index": status.config_index,
                    "pending_requests": len(self._pending),
                    "snapshot_index": status.snapshot_index,
                    "first_index": status.first_index,
                    "log_bytes": self._wal_bytes(),
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
