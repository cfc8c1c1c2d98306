"""Raft consensus for one node, as a pure, deterministic state machine.

Theory of operation
-------------------
Inputs are method calls: `tick()` (one logical clock tick), `step(msg)` (a message from a
peer), `propose(data)`, `read_index(context)`, `campaign()` and `transfer_leadership(id)`.
Nothing is done directly: every effect is queued and handed out by `ready()`: hard state
and entries to persist, messages to send, committed entries to apply, released reads and
events. The driver persists, then sends, then applies, then calls `advance(ready)`.

`step` first applies the term rules common to every role (Fig. 2 "Rules for Servers: All
Servers", plus the pre-vote and leader-lease exceptions of thesis §9.6), then dispatches to
`_step_leader`, `_step_candidate` or `_step_follower`. Roles change only inside
`_become_<role>`, the one place `role_changed` is emitted.

Batching: `propose` only appends to the leader's log. Appends to followers are built when
`ready()` is called, so every proposal made during one loop turn travels in one
AppendRequest per follower and one fsync (group commit).

Durability: messages leave only after the Ready that produced them is durable, including
the leader's own new entries. The leader counts itself towards a commit quorum only up to
its *stable* index, so sending appends before the leader's own fsync completes would
also be safe; the node does not do that yet (documented in the README).

Snapshots (§7): the driver writes a snapshot of its state machine at an applied index
(`snapshot_meta` names it), then calls `compact`, which drops log entries the snapshot
covers. A leader whose follower needs compacted entries switches that follower to the
SNAPSHOT state and emits a `SnapshotRequest` carrying only the metadata: the driver streams
the file and reports a failed transfer with `snapshot_failed`. A follower is stepped with a
`SnapshotRequest` only once its driver holds the whole, verified file; if the snapshot is
news to it, its log is replaced and the next Ready carries `snapshot` for the driver to
install before applying anything after it.

Membership (thesis §4.1, single-server changes): `propose_membership` appends a CONFIG
entry holding the whole new membership; every node uses the newest CONFIG entry in its
log from the moment it is appended (a truncated one is forgotten again). The leader refuses
a change while an earlier one is uncommitted, and before it has committed an entry of its
own term (the correction to the single-server algorithm published after the thesis:
without it, two changes decided by different leaders could leave disjoint majorities).
A learner is promoted only once close to the leader's log. A leader that removed itself
keeps managing the cluster without counting itself until the change commits, then hands
over with TimeoutNow and steps down (§4.2.2).

Reads (thesis §6.4): `read_index` records the commit index, bumps the leader's round
counter `seq` and broadcasts heartbeats carrying it; the read is released once a quorum has
echoed a round at least that recent. A leader that has not yet committed an entry of its
own term holds reads back until it has. A follower forwards the request to its leader.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from zraft.core import quorum
from zraft.core.errors import ChangeRefused, InvariantViolation, NotLeader, ProposalDropped
from zraft.core.events import Event, EventName
from zraft.core.log import RaftLog
from zraft.core.membership import (
    ChangeKind,
    MembershipChange,
    apply_change,
    decode_config,
    encode_config,
)
from zraft.core.messages import (
    AppendRequest,
    AppendResponse,
    Message,
    ReadIndexRequest,
    ReadIndexResponse,
    SnapshotRequest,
    SnapshotResponse,
    TimeoutNow,
    VoteRequest,
    VoteResponse,
)
from zraft.core.progress import Progress, ProgressState
from zraft.core.ready import ReadState, Ready
from zraft.core.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    NodeId,
    RaftConfig,
    RestoredState,
    Role,
    SnapshotMeta,
)


@dataclass(frozen=True, slots=True)
class Status:
    """A read-only snapshot of one node's Raft state, for `status` requests and tests."""

    id: NodeId
    role: Role
    term: int
    leader: NodeId | None
    commit_index: int
    applied_index: int
    last_index: int
    voters: tuple[NodeId, ...]
    match_indexes: dict[NodeId, int] = field(default_factory=dict)
    learners: tuple[NodeId, ...] = ()
    config_index: int = 0  # the index of the membership in force (0: bootstrap)
    snapshot_index: int = 0  # the newest snapshot's last index (0: none yet)
    first_index: int = 1  # the first entry still held in the log


@dataclass(slots=True)
class _PendingRead:
    """A ReadIndex request waiting for a quorum to confirm the leader's round `seq`."""

    origin: NodeId
    context: int
    index: int
    seq: int


class Raft:
    """Raft consensus for one node, as a pure state machine.

    Feed it inputs (tick, step, propose, read_index, campaign, transfer_leadership). Then
    collect `ready()`, make it durable, send its messages, apply its committed entries, and
    call `advance()`. It performs no I/O and reads no clock; all randomness comes from
    `rand_int(low, high)`, which must return an int in [low, high].
    """

    def __init__(
        self,
        config: RaftConfig,
        restored: RestoredState,
        rand_int: Callable[[int, int], int],
    ) -> None:
        if restored.membership is None:
            raise ValueError("restored state needs a membership (the bootstrap configuration)")
        self.config = config
        self.id: NodeId = config.node_id
        self._rand_int = rand_int
        self.membership: Membership = restored.membership
        snapshot = restored.snapshot
        hard_state = restored.hard_state
        snapshot_index = snapshot.index if snapshot else 0
        # The persisted commit is a hint written lazily; a snapshot is committed by definition.
        commit = min(max(hard_state.commit, snapshot_index), snapshot_index + len(restored.entries))
        self.log = RaftLog(
            restored.entries,
            snapshot_index=snapshot_index,
            snapshot_term=snapshot.term if snapshot else 0,
            commit_index=commit,
        )
        self._snapshot: SnapshotMeta | None = snapshot  # the newest durable snapshot
        self._snapshot_to_install: SnapshotMeta | None = None  # follower: for the next Ready
        # (index, membership) from which each known membership is in force, oldest first:
        # the bootstrap or snapshot one, then one per CONFIG entry in the log.
        self._memberships: list[tuple[int, Membership]] = [(snapshot_index, self.membership)]
        self._config_context = b""  # the driver's context of the newest CONFIG entry
        # Leader: removed members still sent appends until they acknowledge a round (seq)
        # sent after their removal committed, or a timeout: peer -> (seq, index, ticks).
        self._departing: dict[NodeId, tuple[int, int, int]] = {}
        self.term = hard_state.term
        self.voted_for: NodeId | None = hard_state.voted_for
        self.role = Role.FOLLOWER
        self.leader_id: NodeId | None = None
        self._durable_hard_state = hard_state
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._randomized_timeout = config.election_ticks_max
        self._reset_randomized_timeout()
        self._votes: dict[NodeId, bool] = {}
        self._progress: dict[NodeId, Progress] = {}
        self._messages: list[Message] = []
        self._events: list[Event] = []
        self._read_states: list[ReadState] = []
        self._broadcast_pending = False  # leader: appends to build at the next ready()
        self._seq = 0  # leader: the current heartbeat round, echoed by followers
        self._read_round_pending = False  # leader: reads wait for a fresh round
        self._pending_reads: list[_PendingRead] = []
        self._reads_before_commit: list[tuple[NodeId, int]] = []
        self._forwarded_reads: dict[int, NodeId] = {}  # follower: context -> leader asked
        self._transfer_target: NodeId | None = None
        self._outstanding: Ready | None = None  # handed out by ready(), not yet advanced
        for entry in restored.entries:
            if entry.kind is EntryKind.CONFIG:
                self._adopt_config(entry)  # the newest CONFIG entry in the log rules

    # === inputs ================================================================================
    def tick(self) -> None:
        """Advance the logical clock by one tick."""
        self._check_not_outstanding()
        if self.role is Role.LEADER:
            self._tick_heartbeat()
        else:
            self._tick_election()

    def leader_unreachable(self, peer: NodeId) -> None:
        """The driver saw its link to `peer` break (a process that dies closes its
        connections at once). If `peer` is our leader, stop waiting out the fixed part of
        the election timeout (campaign when its random part has passed) and stop
        vouching for the leader (grant pre-votes): a dead leader is then replaced in tens
        of milliseconds instead of a whole timeout. Only liveness can change: a leader
        that is alive keeps the other followers, which refuse the pre-vote, and elections
        are as safe as ever. Anything else is ignored."""
        self._check_not_outstanding()
        if self.role is Role.FOLLOWER and peer == self.leader_id:
            self._election_elapsed = max(self._election_elapsed, self.config.election_ticks_min)

    def step(self, msg: Message) -> None:
        """Process one message from a peer.

        Never raises on anything a peer may send; raises InvariantViolation only on the
        driver's misuse (input between `ready()` and `advance()`).
        """
        self._check_not_outstanding()
        if msg.dst != self.id or msg.src == self.id:
            return
        if msg.term > self.term:
            if not self._step_higher_term(msg):
                return
        elif msg.term < self.term:
            self._step_lower_term(msg)
            return
        if isinstance(msg, VoteRequest):
            self._handle_vote_request(msg)
        elif self.role is Role.LEADER:
            self._step_leader(msg)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(msg)
        else:
            self._step_follower(msg)

    def propose(self, data: bytes) -> tuple[int, int]:
        """Append a command to the leader's log; returns its (term, index).

        Raises:
            NotLeader: this node is not the leader (carries the leader hint).
            ProposalDropped: a leadership transfer is under way (thesis §3.10).
        """
        self._check_not_outstanding()
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self._transfer_target is not None:
            raise ProposalDropped("leadership transfer in progress")
        return self._append_own(EntryKind.NORMAL, data)

    def read_index(self, context: int) -> None:
        """Ask for a linearizable read point; the answer is a `ReadState` in a later Ready.

        `context` is the caller's own request number, echoed in the ReadState. A follower
        forwards the request to the leader it knows.

        Raises:
            NotLeader: no leader is known (leader hint None).
        """
        self._check_not_outstanding()
        if self.role is Role.LEADER:
            self._leader_read(self.id, context)
        elif self.leader_id is not None:
            self._forwarded_reads[context] = self.leader_id
            self._send(ReadIndexRequest(self.id, self.leader_id, self.term, context))
        else:
            raise NotLeader(None)

    def campaign(self) -> None:
        """Start an election now (with pre-vote if enabled); ignored by leaders and learners."""
        self._check_not_outstanding()
        if self.role is not Role.LEADER and self._is_promotable():
            self._start_election(transfer=False)

    def propose_membership(self, change: MembershipChange, context: bytes = b"") -> tuple[int, int]:
        """Append a CONFIG entry making one single-server change; returns its (term, index).

        `context` is stored in the entry for the driver (zraft: every member's endpoints).

        Raises:
            NotLeader: this node is not the leader.
            ProposalDropped: a leadership transfer is under way.
            ChangeRefused: the change is invalid, or cannot be made yet (see `retryable`).
        """
        self._check_not_outstanding()
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if self._transfer_target is not None:
            raise ProposalDropped("leadership transfer in progress")
        self._check_change_allowed()
        try:
            new = apply_change(self.membership, change)
        except ValueError as exc:
            raise ChangeRefused(str(exc), code="invalid") from exc
        if change.kind is ChangeKind.PROMOTE and not self._caught_up(change.node_id):
            lag = self.log.last_index - self._progress[change.node_id].match_index
            raise ChangeRefused(
                f"learner {change.node_id} is {lag} entries behind the leader; it can be "
                f"promoted within {self.config.max_promotion_lag} (retry when caught up)",
                code="not_ready",
            )
        return self._append_config(new, context)

    def transfer_leadership(self, target: NodeId) -> None:
        """Hand leadership to `target` (thesis §3.10); proposals are refused meanwhile.

        The target is brought up to date, then sent TimeoutNow. The transfer is abandoned
        if it has not completed within an election timeout.

        Raises:
            NotLeader: this node is not the leader.
            ValueError: `target` is not a voter.
        """
        self._check_not_outstanding()
        if self.role is not Role.LEADER:
            raise NotLeader(self.leader_id)
        if target not in self.membership.voters:
            raise ValueError(f"{target!r} is not a voter")
        if target == self.id:
            return
        self._transfer_target = target
        self._election_elapsed = 0
        if self._progress[target].match_index == self.log.last_index:
            self._send(TimeoutNow(self.id, target, self.term))
        else:
            self._maybe_send_append(target)

    def snapshot_meta(self, index: int) -> SnapshotMeta:
        """Metadata for a snapshot of the state machine as applied up to `index`.

        The driver writes it into the snapshot file before calling `compact`.

        Raises:
            ValueError: `index` is not in [first_index - 1, applied_index].
        """
        if not self.log.snapshot_index <= index <= self.log.applied_index:
            raise ValueError(
                f"no snapshot at {index}: the log holds "
                f"[{self.log.snapshot_index}, {self.log.applied_index}] applied"
            )
        term = self.log.term_at(index)
        assert term is not None  # within the log or its snapshot point
        return SnapshotMeta(index, term, self._membership_at(index))

    def compact(self, snapshot: SnapshotMeta, compact_to: int) -> None:
        """Record that `snapshot` is durable and drop the log up to `compact_to` (§7).

        `compact_to` may stay below the snapshot: entries kept after it let a slightly
        lagging follower catch up by appends instead of a whole snapshot. Compacting to
        or below the current first index is a no-op.

        Raises:
            ValueError: the snapshot is not of this log's applied state, or `compact_to`
                is beyond the newest snapshot.
        """
        self._check_not_outstanding()
        if snapshot.index > self.log.applied_index:
            raise ValueError(f"snapshot {snapshot.index} is beyond applied {self.applied_index}")
        known_term = self.log.term_at(snapshot.index)
        if known_term is not None and known_term != snapshot.term:
            raise ValueError(f"snapshot term {snapshot.term} differs from the log's {known_term}")
        if self._snapshot is None or snapshot.index > self._snapshot.index:
            self._snapshot = snapshot
        if compact_to > self._snapshot.index:
            raise ValueError(f"compact to {compact_to} beyond snapshot {self._snapshot.index}")
        if compact_to > self.log.snapshot_index:
            self.log.compact_to(compact_to)
            # Keep the membership in force at the new first index, and all later ones.
            while len(self._memberships) > 1 and self._memberships[1][0] <= compact_to:
                del self._memberships[0]

    def snapshot_failed(self, peer: NodeId) -> None:
        """The driver could not deliver a snapshot to `peer`: probe it again (etcd's
        ReportSnapshot). Ignored unless this leader is sending `peer` a snapshot."""
        self._check_not_outstanding()
        pr = self._progress.get(peer) if self.role is Role.LEADER else None
        if pr is not None and pr.state is ProgressState.SNAPSHOT:
            pr.become_probe()

    # === outputs ===============================================================================
    def has_ready(self) -> bool:
        """Whether `ready()` would hand out any work."""
        if self._outstanding is not None:
            return True
        return bool(
            self._broadcast_pending
            or self._snapshot_to_install is not None
            or self._read_round_pending
            or self._messages
            or self._events
            or self._read_states
            or self.log.stable_index < self.log.last_index
            or self.log.applied_index < self.log.commit_index
            or self._hard_state() != self._durable_hard_state
        )

    def ready(self) -> Ready:
        """Collect the work to do now (see `Ready` for the order). Call `advance` after it.

        Calling it again before `advance` returns the same Ready.
        """
        if self._outstanding is not None:
            return self._outstanding
        self._flush_leader_sends()
        hard_state = self._hard_state()
        changed = hard_state != self._durable_hard_state
        durable = self._durable_hard_state
        entries = self.log.unstable_entries()
        vote_changed = hard_state.term != durable.term or hard_state.voted_for != durable.voted_for
        messages, early = self._split_early_messages(vote_changed)
        snapshot = self._snapshot_to_install
        rd = Ready(
            hard_state=hard_state if changed else None,
            entries=entries,
            snapshot=snapshot,
            messages=messages,
            early_messages=early,
            committed=self.log.committed_unapplied(),
            read_states=tuple(self._read_states),
            events=tuple(self._events),
            must_sync=bool(entries) or vote_changed or snapshot is not None,
        )
        self._messages.clear()
        self._events.clear()
        self._read_states.clear()
        self._outstanding = rd
        return rd

    def _split_early_messages(
        self, vote_changed: bool
    ) -> tuple[tuple[Message, ...], tuple[Message, ...]]:
        """(messages, early_messages): a leader's appends may leave before its own fsync.

        Only while the term and vote are already durable: an append carries the term, and a
        term nobody has persisted must not reach a peer.
        """
        if self.role is not Role.LEADER or vote_changed:
            return tuple(self._messages), ()
        early = tuple(m for m in self._messages if isinstance(m, AppendRequest))
        if not early:
            return tuple(self._messages), ()
        rest = tuple(m for m in self._messages if not isinstance(m, AppendRequest))
        return rest, early

    def advance(self, rd: Ready) -> None:
        """Acknowledge that everything in `rd` was persisted, sent and applied.

        Raises:
            InvariantViolation: `rd` is not the Ready last handed out.
        """
        if rd is not self._outstanding:
            raise InvariantViolation("advance() takes the Ready that ready() handed out")
        self._outstanding = None
        if rd.snapshot is not None and rd.snapshot == self._snapshot_to_install:
            self._snapshot_to_install = None
        if rd.hard_state is not None:
            self._durable_hard_state = rd.hard_state
        if rd.entries:
            last = rd.entries[-1]
            self.log.stable_to(last.index, last.term)
        if rd.committed:
            self.log.applied_to(rd.committed[-1].index)
        if self.role is Role.LEADER:
            # The leader's own durable index is part of the quorum (§5.3 "replicated it
            # on a majority": our own copy counts only once it is stable).
            self._maybe_commit()

    # === read-only views =======================================================================
    @property
    def commit_index(self) -> int:
        """The highest index known to be committed."""
        return self.log.commit_index

    @property
    def applied_index(self) -> int:
        """The highest index handed to the state machine."""
        return self.log.applied_index

    @property
    def last_index(self) -> int:
        """The index of the last log entry."""
        return self.log.last_index

    @property
    def snapshot_index(self) -> int:
        """The last index of the newest snapshot (0 if there is none)."""
        return self._snapshot.index if self._snapshot else 0

    @property
    def transfer_target(self) -> NodeId | None:
        """The node leadership is being handed to, if a transfer is under way."""
        return self._transfer_target

    def status(self) -> Status:
        """A read-only view of this node's state."""
        return Status(
            id=self.id,
            role=self.role,
            term=self.term,
            leader=self.leader_id,
            commit_index=self.log.commit_index,
            applied_index=self.log.applied_index,
            last_index=self.log.last_index,
            voters=tuple(sorted(self.membership.voters)),
            match_indexes={p: pr.match_index for p, pr in self._progress.items()},
            snapshot_index=self._snapshot.index if self._snapshot else 0,
            first_index=self.log.first_index,
            learners=tuple(sorted(self.membership.learners)),
            config_index=self._memberships[-1][0],
        )

    def check_invariants(self) -> None:
        """Check this node's own invariants; raises InvariantViolation on a bug."""
        log = self.log
        if not log.snapshot_index <= log.applied_index <= log.commit_index <= log.last_index:
            raise InvariantViolation(
                f"{self.id}: applied {log.applied_index} commit {log.commit_index} "
                f"last {log.last_index} out of order"
            )
        if log.stable_index > log.last_index:
            raise InvariantViolation(f"{self.id}: stable index beyond the log")
        if self.role in (Role.LEADER, Role.CANDIDATE) and self.voted_for != self.id:
            raise InvariantViolation(f"{self.id}: {self.role} has not voted for itself")
        if self.role is Role.LEADER:
            if self.leader_id != self.id:
                raise InvariantViolation(f"{self.id}: leader does not know it leads")
            missing = self.membership.members - {self.id} - set(self._progress)
            if missing:
                raise InvariantViolation(f"{self.id}: no progress for members {sorted(missing)}")
            for peer, pr in self._progress.items():
                if not 0 <= pr.match_index < pr.next_index or pr.match_index > log.last_index:
                    raise InvariantViolation(
                        f"{self.id}: progress of {peer} match {pr.match_index} "
                        f"next {pr.next_index} last {log.last_index}"
                    )

    # === term rules ============================================================================
    def _step_higher_term(self, msg: Message) -> bool:
        """Apply the rules for a message from a higher term; returns whether to go on."""
        if isinstance(msg, VoteRequest):
            if self._in_leader_lease() and not msg.transfer:
                # Thesis §9.6: a node in contact with a live leader ignores (pre-)votes, so
                # a partitioned node rejoining cannot depose a healthy leader.
                self._deny_vote(msg, "leader_alive", respond=False)
                return False
            if msg.prevote:
                return True  # a pre-vote never changes our term
        if isinstance(msg, VoteResponse) and msg.prevote and msg.granted:
            return True  # a granted pre-vote echoes the term we would campaign in
        leader = msg.src if isinstance(msg, AppendRequest | SnapshotRequest) else None
        self._become_follower(msg.term, leader, reason="message")
        return True

    def _step_lower_term(self, msg: Message) -> None:
        """Answer a stale message where an answer helps the sender catch up, else drop it."""
        if isinstance(msg, AppendRequest) and (self.config.check_quorum or self.config.pre_vote):
            # A leader from an older term learns ours and steps down. Without this, a node
            # whose term rose during a partition could never rejoin: with pre-vote and
            # check-quorum its vote requests are ignored (etcd does the same).
            self._send(AppendResponse(self.id, msg.src, self.term, False, msg.prev_index))
        elif isinstance(msg, VoteRequest):
            self._deny_vote(msg, "stale_term", respond=True)
        elif isinstance(msg, ReadIndexRequest):
            self._send(ReadIndexResponse(self.id, msg.src, self.term, msg.context, 0, False))

    def _in_leader_lease(self) -> bool:
        """Whether we heard from a live leader within the minimum election timeout."""
        return (
            self.config.check_quorum
            and self.leader_id is not None
            and self._election_elapsed < self.config.election_ticks_min
        )

    # === votes =================================================================================
    def _handle_vote_request(self, msg: VoteRequest) -> None:
        """Grant or refuse a (pre-)vote (§5.2, §5.4.1; thesis §9.6)."""
        if msg.prevote:
            can_vote = msg.term > self.term or self.voted_for == msg.src
            refusal = "stale_term"  # a pre-vote must be for a term above ours
        else:
            can_vote = self.voted_for == msg.src or (
                self.voted_for is None and self.leader_id is None
            )
            refusal = "already_voted" if self.voted_for is not None else "leader_alive"
        if not can_vote:
            self._deny_vote(msg, refusal, respond=True)
        elif not self.log.is_up_to_date(msg.last_log_index, msg.last_log_term):
            self._deny_vote(msg, "log_behind", respond=True)
        else:
            self._grant_vote(msg)

    def _grant_vote(self, msg: VoteRequest) -> None:
        if not msg.prevote:
            self.voted_for = msg.src
            self._election_elapsed = 0
        self._emit(EventName.VOTE_GRANTED, term=msg.term, candidate=msg.src, prevote=msg.prevote)
        self._send(VoteResponse(self.id, msg.src, msg.term, True, msg.prevote))

    def _deny_vote(self, msg: VoteRequest, reason: str, *, respond: bool) -> None:
        self._emit(
            EventName.VOTE_DENIED,
            term=msg.term,
            candidate=msg.src,
            prevote=msg.prevote,
            reason=reason,
        )
        if respond:
            self._send(VoteResponse(self.id, msg.src, self.term, False, msg.prevote))

    # === role dispatch =========================================================================
    def _step_leader(self, msg: Message) -> None:
        if isinstance(msg, AppendResponse):
            self._handle_append_response(msg)
        elif isinstance(msg, SnapshotResponse):
            self._handle_snapshot_response(msg)
        elif isinstance(msg, ReadIndexRequest):
            self._leader_read(msg.src, msg.context)
        # Other kinds are stale or misdirected at a leader: a same-term AppendRequest would
        # mean two leaders in one term, which a peer cannot make us believe; drop it.

    def _step_candidate(self, msg: Message) -> None:
        if isinstance(msg, VoteResponse):
            self._handle_vote_response(msg)
        elif isinstance(msg, AppendRequest | SnapshotRequest):
            # §5.2: an AppendEntries from a leader of our term means we lost.
            self._become_follower(msg.term, msg.src, reason="message")
            self._step_follower(msg)
        elif isinstance(msg, ReadIndexRequest):
            self._send(ReadIndexResponse(self.id, msg.src, self.term, msg.context, 0, False))
        elif isinstance(msg, ReadIndexResponse):
            self._handle_read_index_response(msg)

    def _step_follower(self, msg: Message) -> None:
        if isinstance(msg, AppendRequest):
            self._election_elapsed = 0
            self._set_leader(msg.src)
            self._handle_append_request(msg)
        elif isinstance(msg, SnapshotRequest):
            self._election_elapsed = 0
            self._set_leader(msg.src)
            self._handle_snapshot_request(msg)
        elif isinstance(msg, TimeoutNow):
            if msg.src == self.leader_id and self._is_promotable():
                self._start_election(transfer=True)
        elif isinstance(msg, ReadIndexRequest):
            self._send(ReadIndexResponse(self.id, msg.src, self.term, msg.context, 0, False))
        elif isinstance(msg, ReadIndexResponse):
            self._handle_read_index_response(msg)

    # === elections =============================================================================
    def _tick_election(self) -> None:
        self._election_elapsed += 1
        if self._is_promotable() and self._election_elapsed >= self._randomized_timeout:
            self._start_election(transfer=False)

    def _tick_heartbeat(self) -> None:
        self._heartbeat_elapsed += 1
        self._election_elapsed += 1
        if self._election_elapsed >= self.config.election_ticks_min:
            self._election_elapsed = 0
            if self.config.check_quorum and not self._quorum_recently_active():
                self._become_follower(self.term, None, reason="message")
                return
            self._transfer_target = None  # a transfer that took an election timeout failed
        if self._heartbeat_elapsed >= self.config.heartbeat_ticks:
            self._heartbeat_elapsed = 0
            self._broadcast_heartbeat()
        for peer, (seq, index, ticks) in list(self._departing.items()):
            if ticks <= 1:
                self._drop_departed(peer)  # unreachable: stop trying
            else:
                self._departing[peer] = (seq, index, ticks - 1)

    def _drop_departed(self, peer: NodeId) -> None:
        del self._departing[peer]
        if peer not in self.membership.members:
            self._progress.pop(peer, None)

    def _quorum_recently_active(self) -> bool:
        """Check-quorum: did a majority answer us during the last election timeout?"""
        active = {self.id}
        for peer, pr in self._progress.items():
            if pr.recent_active:
                active.add(peer)
            pr.recent_active = False
        return quorum.has_quorum(active, self.membership.voters)

    def _is_promotable(self) -> bool:
        """Whether this node may campaign: it is a voter, or its own removal is not yet
        committed. The latter matters for liveness: a leader that appended its removal
        and restarted may hold the only copy of the newest entries, and no one else can be
        elected without it. Elected by a majority of the new membership (which overlaps
        every majority of the old one), it commits the removal and then steps down."""
        if self.id in self.membership.voters:
            return True
        config_index = self._memberships[-1][0]
        return (
            len(self._memberships) > 1
            and config_index > self.log.commit_index
            and self.id in self._memberships[-2][1].voters
        )

    def _start_election(self, *, transfer: bool) -> None:
        if self.config.pre_vote and not transfer:
            self._become_pre_candidate()
            self._request_votes(term=self.term + 1, prevote=True, transfer=False)
        else:
            self._become_candidate()
            self._request_votes(term=self.term, prevote=False, transfer=transfer)

    def _request_votes(self, *, term: int, prevote: bool, transfer: bool) -> None:
        self._emit(
            EventName.ELECTION_STARTED,
            term=term,
            prevote=prevote,
            last_log_index=self.log.last_index,
            last_log_term=self.log.last_term,
        )
        self._votes = {self.id: True}
        for peer in sorted(self.membership.voters - {self.id}):
            self._send(
                VoteRequest(
                    self.id,
                    peer,
                    term,
                    self.log.last_index,
                    self.log.last_term,
                    prevote,
                    transfer,
                )
            )
        self._check_election_result()

    def _handle_vote_response(self, msg: VoteResponse) -> None:
        expected_prevote = self.role is Role.PRE_CANDIDATE
        if msg.prevote != expected_prevote:
            return  # a late answer from an earlier phase
        if msg.prevote and msg.granted and msg.term != self.term + 1:
            return  # a grant for a pre-vote round we are no longer in
        self._votes.setdefault(msg.src, msg.granted)
        self._check_election_result()

    def _check_election_result(self) -> None:
        result = quorum.vote_result(self._votes, self.membership.voters)
        if result is quorum.VoteResult.WON:
            if self.role is Role.PRE_CANDIDATE:
                self._campaign_for_real()
            else:
                self._become_leader()
        elif result is quorum.VoteResult.LOST:
            self._become_follower(self.term, None, reason="message")

    def _campaign_for_real(self) -> None:
        self._become_candidate()
        self._request_votes(term=self.term, prevote=False, transfer=False)

    # === role transitions ======================================================================
    def _become_follower(self, term: int, leader: NodeId | None, *, reason: str) -> None:
        self._reset(term, reason)
        self._set_leader(leader)
        self._change_role(Role.FOLLOWER)

    def _become_pre_candidate(self) -> None:
        # The term stays: a pre-candidate only asks whether it *could* win (thesis §9.6).
        self._abandon_leadership()
        self._votes = {}
        self._election_elapsed = 0
        self._reset_randomized_timeout()
        self._set_leader(None)
        self._change_role(Role.PRE_CANDIDATE)

    def _become_candidate(self) -> None:
        self._reset(self.term + 1, "election")
        self.voted_for = self.id
        self._set_leader(None)
        self._change_role(Role.CANDIDATE)

    def _become_leader(self) -> None:
        self._abandon_leadership()
        self._set_leader(self.id)
        self._change_role(Role.LEADER)
        self._progress = {}
        self._track_members()
        self._heartbeat_elapsed = 0
        self._election_elapsed = 0
        self._seq = 0
        votes = sum(1 for v in self.membership.voters if self._votes.get(v))
        self._emit(
            EventName.LEADER_ELECTED,
            term=self.term,
            votes=votes,
            voters=len(self.membership.voters),
        )
        # §5.4.2 / §8: commit an entry of our own term so earlier entries commit with it
        # and reads can be served.
        self._append_own(EntryKind.NOOP, b"")

    def _reset(self, term: int, reason: str) -> None:
        """Common to every transition: adopt `term` and restart the election clock."""
        if term > self.term:
            self._emit(EventName.TERM_CHANGED, old_term=self.term, new_term=term, reason=reason)
            self.term = term
            self.voted_for = None
        self._abandon_leadership()
        self._votes = {}
        self._election_elapsed = 0
        self._heartbeat_elapsed = 0
        self._reset_randomized_timeout()

    def _abandon_leadership(self) -> None:
        """Drop leader-only state; reads still waiting fail so their clients can retry."""
        for read in self._pending_reads:
            self._fail_read(read.origin, read.context)
        for origin, context in self._reads_before_commit:
            self._fail_read(origin, context)
        self._pending_reads = []
        self._reads_before_commit = []
        self._read_round_pending = False
        self._broadcast_pending = False
        self._progress = {}
        self._transfer_target = None
        self._departing = {}

    def _change_role(self, new_role: Role) -> None:
        if new_role is not self.role:
            self._emit(
                EventName.ROLE_CHANGED,
                term=self.term,
                old_role=str(self.role),
                new_role=str(new_role),
                leader=self.leader_id,
            )
            self.role = new_role

    def _set_leader(self, leader: NodeId | None) -> None:
        if leader == self.leader_id:
            return
        self.leader_id = leader
        self._emit(EventName.LEADER_CHANGED, term=self.term, leader=leader)
        # Reads forwarded to a leader we no longer follow will never be answered.
        for context, asked in list(self._forwarded_reads.items()):
            if asked != leader:
                del self._forwarded_reads[context]
                self._read_states.append(ReadState(context, None))

    def _reset_randomized_timeout(self) -> None:
        self._randomized_timeout = self._rand_int(
            self.config.election_ticks_min, self.config.election_ticks_max
        )

    # === replication: leader ===================================================================
    def _append_own(self, kind: EntryKind, data: bytes) -> tuple[int, int]:
        index = self.log.last_index + 1
        self.log.append(Entry(self.term, index, kind, data))
        self._broadcast_pending = True
        if len(self.membership.voters) == 1:
            self._maybe_commit()
        return self.term, index

    def _flush_leader_sends(self) -> None:
        """Build the appends and heartbeats that proposals and reads asked for."""
        if self.role is not Role.LEADER:
            return
        if self._read_round_pending:
            self._read_round_pending = False
            self._broadcast_heartbeat()
        if self._broadcast_pending:
            # New entries, or a new commit index the followers should learn (etcd's
            # bcastAppend): one append per follower for everything this turn produced.
            self._broadcast_pending = False
            for peer in self._progress:
                self._maybe_send_append(peer, send_empty=True)

    def _broadcast_heartbeat(self) -> None:
        for peer, pr in self._progress.items():
            if pr.state is ProgressState.PROBE:
                pr.probe_paused = False  # retry a probe that may have been lost
                self._maybe_send_append(peer, send_empty=True)
            else:
                self._send_append(peer, self._heartbeat_prev(pr), ())
        self._release_reads()  # a single-voter cluster confirms reads by itself

    def _maybe_send_append(self, peer: NodeId, *, send_empty: bool = False) -> bool:
        """Send `peer` the next batch it lacks, unless flow control holds it back.

        With `send_empty`, an append without entries still goes out: it carries a new
        commit index (or serves as a probe). Returns whether a message was sent.
        """
        pr = self._progress[peer]
        if pr.is_paused():
            return False
        if pr.next_index <= self.log.snapshot_index:
            self._send_snapshot(peer, pr)
            return True
        entries = self.log.batch_from(
            pr.next_index, self.config.max_batch_entries, self.config.max_batch_bytes
        )
        if not entries and not send_empty:
            return False
        self._send_append(peer, pr.next_index - 1, entries)
        pr.sent(entries[-1].index if entries else pr.next_index - 1, len(entries))
        return True

    def _send_append(self, peer: NodeId, prev_index: int, entries: tuple[Entry, ...]) -> None:
        prev_term = self.log.term_at(prev_index)
        if prev_term is None:
            # Callers check the snapshot point first (a compacted prev means a snapshot).
            raise InvariantViolation(
                f"no term for index {prev_index} (first {self.log.first_index})"
            )
        self._send(
            AppendRequest(
                self.id,
                peer,
                self.term,
                prev_index,
                prev_term,
                entries,
                self.log.commit_index,
                self._seq,
            )
        )

    def _handle_append_response(self, msg: AppendResponse) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return  # not a member we replicate to
        pr.recent_active = True
        if msg.seq > pr.acked_seq:
            pr.acked_seq = min(msg.seq, self._seq)
            self._release_reads()
        if not msg.success:
            if msg.index > self.log.last_index:
                return  # rejects an append we never sent: a forged or corrupt answer
            if pr.maybe_back_off(msg.index, msg.hint):
                self._maybe_send_append(msg.src)
            return
        if msg.index > self.log.last_index:
            return  # claims entries we never had: a forged or corrupt answer
        if pr.maybe_update(msg.index):
            if pr.state is ProgressState.PROBE:
                pr.become_replicate()
            self._maybe_commit()
            if self._progress.get(msg.src) is not pr:
                return  # the commit finished a change that removed it, or us
        if pr.state is ProgressState.SNAPSHOT and pr.match_index >= pr.pending_snapshot:
            pr.become_replicate()  # it caught up another way (or the answer to it was lost)
        pr.inflights.free_to(msg.index)
        if msg.src in self.membership.promotable:
            self._maybe_auto_promote()
        departing = self._departing.get(msg.src)
        if departing is not None:
            seq, config_index, _ = departing
            if pr.acked_seq >= seq and pr.match_index >= config_index:
                self._drop_departed(msg.src)  # it holds its removal, and knows it committed
                return
        if self._transfer_target == msg.src and pr.match_index == self.log.last_index:
            self._send(TimeoutNow(self.id, msg.src, self.term))
        # Each send either advances next_index or pauses the probe, so this ends.
        while self._maybe_send_append(msg.src):
            pass

    def _heartbeat_prev(self, pr: Progress) -> int:
        """The prev index of a heartbeat: where appends would continue, if still held.

        If that point was compacted away, the snapshot point instead: a follower that
        lacks it rejects the heartbeat, which sends it into probing and then a snapshot.
        """
        prev = pr.next_index - 1
        return prev if self.log.term_at(prev) is not None else self.log.snapshot_index

    def _send_snapshot(self, peer: NodeId, pr: Progress) -> None:
        """Ask the driver to send `peer` our newest snapshot (its next entry is compacted)."""
        snapshot = self._snapshot
        if snapshot is None or snapshot.index < self.log.snapshot_index:
            raise InvariantViolation(
                f"log compacted to {self.log.snapshot_index} without a snapshot"
            )
        pr.become_snapshot(snapshot.index)
        self._send(SnapshotRequest(self.id, peer, self.term, snapshot))

    def _handle_snapshot_response(self, msg: SnapshotResponse) -> None:
        pr = self._progress.get(msg.src)
        if pr is None:
            return
        pr.recent_active = True
        if msg.index > self.log.last_index:
            return  # claims entries we never had: a forged or corrupt answer
        if pr.maybe_update(msg.index):
            self._maybe_commit()
            if self._progress.get(msg.src) is not pr:
                return  # the commit finished a change that removed it, or us
        if pr.state is ProgressState.SNAPSHOT:
            pr.become_probe()  # from just after the snapshot: appends take over
        while self._maybe_send_append(msg.src):
            pass

    def _maybe_commit(self) -> bool:
        """Advance the commit index to what a quorum stores, if of our term (§5.4.2)."""
        matches = {peer: pr.match_index for peer, pr in self._progress.items()}
        matches[self.id] = self.log.stable_index
        index = quorum.committed_index(matches, self.membership.voters)
        if index <= self.log.commit_index or self.log.term_at(index) != self.term:
            return False
        self.log.commit_to(index)
        self._emit(EventName.COMMIT_ADVANCED, term=self.term, commit_index=index)
        self._broadcast_pending = True
        if self._memberships[-1][0] <= index:
            self._config_committed()
            if self.role is not Role.LEADER:
                return True
        if self._reads_before_commit:
            waiting, self._reads_before_commit = self._reads_before_commit, []
            for origin, context in waiting:
                self._leader_read(origin, context)
        return True

    # === replication: follower =================================================================
    def _handle_append_request(self, msg: AppendRequest) -> None:
        prev_index, prev_term, entries = msg.prev_index, msg.prev_term, msg.entries
        commit = self.log.commit_index
        if prev_index < commit:
            # Everything up to our commit index matches any leader's log (§5.4); skip it.
            entries = tuple(e for e in entries if e.index > commit)
            if prev_index + len(msg.entries) <= commit:
                self._send(AppendResponse(self.id, msg.src, self.term, True, commit, 0, msg.seq))
                return
            prev_index, prev_term = commit, self.log.term_at(commit) or 0
        if not self.log.matches(prev_index, prev_term):
            hint = self.log.conflict_hint(prev_index, prev_term)
            self._send(
                AppendResponse(self.id, msg.src, self.term, False, prev_index, hint, msg.seq)
            )
            return
        truncated_from = self.log.append_from_leader(entries)
        if truncated_from is not None:
            self._emit(EventName.LOG_TRUNCATED, from_index=truncated_from, term=self.term)
            self._forget_configs_from(truncated_from)
        for entry in entries:
            if entry.kind is EntryKind.CONFIG and entry.index > self._memberships[-1][0]:
                self._adopt_config(entry)
        last_new = prev_index + len(entries)
        if self.log.commit_to(min(msg.commit, last_new)):
            self._emit(
                EventName.COMMIT_ADVANCED, term=self.term, commit_index=self.log.commit_index
            )
        self._send(AppendResponse(self.id, msg.src, self.term, True, last_new, 0, msg.seq))

    def _handle_snapshot_request(self, msg: SnapshotRequest) -> None:
        """Take the leader's snapshot if it is news to us (§7 InstallSnapshot rules 6-8)."""
        meta = msg.meta
        if meta.index <= self.log.commit_index:
            # We already hold everything it covers (a duplicate or a slow transfer).
            self._send(SnapshotResponse(self.id, msg.src, self.term, self.log.commit_index))
            return
        if self.log.matches(meta.index, meta.term):
            # Rule 6: our log holds the snapshot's last entry; keep what follows it.
            self.log.commit_to(meta.index)
            self._emit(EventName.COMMIT_ADVANCED, term=self.term, commit_index=meta.index)
        else:
            # Rule 7: discard the whole log and take the snapshot's state.
            self.log.restore(meta.index, meta.term)
            self.membership = meta.membership
            self._memberships = [(meta.index, meta.membership)]
            self._config_context = b""
            self._snapshot = meta
            self._snapshot_to_install = meta
        self._send(SnapshotResponse(self.id, msg.src, self.term, meta.index))

    # === membership ============================================================================
    def _check_change_allowed(self) -> None:
        config_index = self._memberships[-1][0]
        if config_index > self.log.commit_index:
            raise ChangeRefused(
                f"the membership change at index {config_index} is not committed yet; "
                "one change at a time (retry when it is)",
                code="in_progress",
            )
        if self.log.term_at(self.log.commit_index) != self.term:
            raise ChangeRefused(
                "the new leader has not committed an entry of its term yet (retry shortly)",
                code="not_ready",
            )

    def _caught_up(self, learner: NodeId) -> bool:
        pr = self._progress.get(learner)
        lag = self.config.max_promotion_lag
        return pr is not None and pr.match_index >= self.log.last_index - lag

    def _append_config(self, new: Membership, context: bytes) -> tuple[int, int]:
        index = self.log.last_index + 1
        data = encode_config(new, context)
        # In force from the moment it is appended: before `_append_own`, so a
        # single-voter leader counts the entry itself under the new membership.
        self._set_membership(index, new, context)
        return self._append_own(EntryKind.CONFIG, data)

    def _adopt_config(self, entry: Entry) -> None:
        """Use the membership of a CONFIG entry just appended (or restored)."""
        try:
            membership, context = decode_config(entry.data)
        except ValueError as exc:
            # Peers' entries are validated by the wire decoder; ours are our own.
            raise InvariantViolation(f"undecodable config entry {entry.index}: {exc}") from exc
        self._set_membership(entry.index, membership, context)

    def _set_membership(self, index: int, membership: Membership, context: bytes) -> None:
        self._memberships.append((index, membership))
        self.membership = membership
        self._config_context = context
        if self.role is Role.LEADER:
            self._track_members()

    def _forget_configs_from(self, index: int) -> None:
        """A truncation removed CONFIG entries from `index` on: the previous one rules."""
        while len(self._memberships) > 1 and self._memberships[-1][0] >= index:
            self._memberships.pop()
        self.membership = self._memberships[-1][1]

    def _track_members(self) -> None:
        """Leader: replicate to every member. Removed members stay until the change commits
        (so they learn of their removal and stop campaigning)."""
        for peer in sorted(self.membership.members - {self.id} - set(self._progress)):
            pr = Progress(self.log.last_index + 1, self.config.max_inflight)
            pr.recent_active = True  # a new member gets a full check-quorum period
            self._progress[peer] = pr

    def _config_committed(self) -> None:
        """Leader: the newest membership is committed. Removed members get one more
        round, so they learn the commit and stop campaigning; we step down if we are no
        longer a voter (thesis §4.2.2)."""
        config_index = self._memberships[-1][0]
        members, departing = self.membership.members, self._departing
        removed = [p for p in self._progress if p not in members and p not in departing]
        if removed:
            self._seq += 1  # the round that carries the new commit index to them
            for peer in removed:
                self._departing[peer] = (self._seq, config_index, self.config.election_ticks_max)
        if self.id not in self.membership.voters:
            self._hand_over_and_step_down()
            return
        self._maybe_auto_promote()

    def _hand_over_and_step_down(self) -> None:
        candidates = [
            (pr.match_index, peer)
            for peer, pr in self._progress.items()
            if peer in self.membership.voters
        ]
        if candidates:
            match, target = max(candidates)
            if match == self.log.last_index:
                self._send(TimeoutNow(self.id, target, self.term))
        self._become_follower(self.term, None, reason="message")

    def _maybe_auto_promote(self) -> None:
        """Leader: promote a learner added with `promote_when_caught_up` once it is. The
        intent is in the membership (`promotable`), so any later leader carries it out."""
        for learner in sorted(self.membership.promotable):
            if self._caught_up(learner) and self._transfer_target is None:
                try:
                    self._check_change_allowed()
                except ChangeRefused:
                    return  # another change first; tried again on the next ack or commit
                promoted = apply_change(
                    self.membership, MembershipChange(ChangeKind.PROMOTE, learner)
                )
                self._append_config(promoted, self._config_context)
                return

    def _membership_at(self, index: int) -> Membership:
        """The membership in force at log index `index`."""
        for start, membership in reversed(self._memberships):
            if start <= index:
                return membership
        return self._memberships[0][1]

    # === reads =================================================================================
    def _leader_read(self, origin: NodeId, context: int) -> None:
        if self.log.term_at(self.log.commit_index) != self.term:
            # Thesis §6.4 step 1: until an entry of this term commits, our commit index
            # may be behind the true one.
            self._reads_before_commit.append((origin, context))
            return
        if not self._read_round_pending:
            # One new heartbeat round serves every read that arrives before it goes out.
            self._read_round_pending = True
            self._seq += 1
        self._pending_reads.append(_PendingRead(origin, context, self.log.commit_index, self._seq))
        self._release_reads()  # a single voter confirms by itself

    def _release_reads(self) -> None:
        voters = self.membership.voters
        while self._pending_reads:
            read = self._pending_reads[0]
            confirmed = {self.id} | {
                peer for peer, pr in self._progress.items() if pr.acked_seq >= read.seq
            }
            if not quorum.has_quorum(confirmed, voters):
                return
            self._pending_reads.pop(0)
            if read.origin == self.id:
                self._read_states.append(ReadState(read.context, read.index))
            else:
                self._send(
                    ReadIndexResponse(
                        self.id, read.origin, self.term, read.context, read.index, True
                    )
                )

    def _fail_read(self, origin: NodeId, context: int) -> None:
        if origin == self.id:
            self._read_states.append(ReadState(context, None))
        else:
            self._send(ReadIndexResponse(self.id, origin, self.term, context, 0, False))

    def _handle_read_index_response(self, msg: ReadIndexResponse) -> None:
        if self._forwarded_reads.pop(msg.context, None) is None:
            return  # unknown or already failed
        self._read_states.append(ReadState(msg.context, msg.index if msg.success else None))

    def _check_not_outstanding(self) -> None:
        if self._outstanding is not None:
            # The driver must finish a Ready (persist, send, apply, advance) before feeding
            # new input: otherwise outputs of the new input could escape unpersisted.
            raise InvariantViolation("input between ready() and advance()")

    # === plumbing ==============================================================================
    def _hard_state(self) -> HardState:
        return HardState(self.term, self.voted_for, self.log.commit_index)

    def _send(self, msg: Message) -> None:
        self._messages.append(msg)

    def _emit(self, name: EventName, **fields: Any) -> None:
        self._events.append(Event(name, fields))
