"""Value types shared by the whole core: ids, roles, entries, hard state, configuration.

Everything here is an immutable value. Mutable state lives in `Raft`, `RaftLog` and
`Progress` only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

NodeId = str
"""A node's id, e.g. ``"n1"``. Used as the ZeroMQ routing id (``.encode()``)."""


class Role(StrEnum):
    """The role a node plays in its current term (§5.1, thesis §9.6 for pre-candidate)."""

    FOLLOWER = "follower"
    PRE_CANDIDATE = "pre_candidate"
    CANDIDATE = "candidate"
    LEADER = "leader"


class EntryKind(IntEnum):
    """What a log entry carries. The values are part of the wire and disk format."""

    NORMAL = 0  # an encoded state machine command, opaque to the core
    NOOP = 1  # the entry a new leader appends to commit its term (§5.4.2, §8)
    CONFIG = 2  # a new membership (`zraft.core.membership`), in force once appended


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry. `data` is opaque to the core (an encoded kv command)."""

    term: int
    index: int
    kind: EntryKind
    data: bytes

    @property
    def size_bytes(self) -> int:
        """Approximate wire size, used to bound batches."""
        return len(self.data) + 16


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before any message that depends on it is sent (§5.1, Fig. 2).

    `commit` is persisted too so a restarted node can re-apply without waiting for a leader;
    it is only a hint (commit is volatile in the paper) and never ahead of the durable log.
    """

    term: int = 0
    voted_for: NodeId | None = None
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Membership:
    """The cluster's members as data, so membership changes (issue 6) can replace it.

    `promotable` are the learners added to vote (`add_member` without `learner`): the
    leader, whichever node it is by then, promotes each once its log has caught up. It is
    part of the membership, so the intent survives leader changes.

    Invariant: `voters` and `learners` are disjoint, `voters` is not empty, and
    `promotable` is a subset of `learners`.
    """

    voters: frozenset[NodeId]
    learners: frozenset[NodeId] = frozenset()
    promotable: frozenset[NodeId] = frozenset()

    def __post_init__(self) -> None:
        if not self.voters:
            raise ValueError("a membership needs at least one voter")
        if self.voters & self.learners:
            raise ValueError(
                f"ids are both voter and learner: {sorted(self.voters & self.learners)}"
            )
        if not self.promotable <= self.learners:
            raise ValueError(
                f"ids to promote are not learners: {sorted(self.promotable - self.learners)}"
            )

    @property
    def members(self) -> frozenset[NodeId]:
        """Voters and learners: everyone a leader replicates to."""
        return self.voters | self.learners


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot ends and the membership at that point (snapshots: issue 5)."""

    index: int
    term: int
    membership: Membership


@dataclass(frozen=True, slots=True)
class RestoredState:
    """What storage hands the core at start-up.

    Args:
        hard_state: the last durable term, vote and commit.
        entries: the durable log after `snapshot` (or from index 1), contiguous.
        membership: the membership in force (from the bootstrap config, a snapshot, or the log).
        snapshot: the newest snapshot's metadata, or None if the log starts at index 1.
    """

    hard_state: HardState = field(default_factory=HardState)
    entries: tuple[Entry, ...] = ()
    membership: Membership | None = None
    snapshot: SnapshotMeta | None = None


@dataclass(frozen=True, slots=True)
class RaftConfig:
    """Tunables of one Raft instance, in logical ticks. Validated on construction.

    Args:
        node_id: this node's id.
        election_ticks_min, election_ticks_max: the election timeout is drawn uniformly
            from this inclusive range each time it is reset (§5.2). `election_ticks_min`
            is also the check-quorum period and the leader lease followers honour.
        heartbeat_ticks: a leader sends heartbeats this often; must be well below
            `election_ticks_min` (§5.6: broadcastTime << electionTimeout).
        pre_vote: run a pre-vote round before a real election (thesis §9.6).
        check_quorum: a leader that has not heard from a quorum within
            `election_ticks_min` steps down, and followers in contact with a leader
            refuse (pre-)votes (thesis §6.2, §9.6).
        max_inflight: appends in flight per follower while replicating (pipelining).
        max_batch_entries, max_batch_bytes: bounds on one AppendRequest.
        max_promotion_lag: a learner is promoted to voter only once its log is at most
            this many entries behind the leader's (thesis §4.2.1: a new voter that cannot
            yet help commit would cost availability).
    """

    node_id: NodeId
    election_ticks_min: int = 10
    election_ticks_max: int = 20
    heartbeat_ticks: int = 1
    pre_vote: bool = True
    check_quorum: bool = True
    max_inflight: int = 256
    max_batch_entries: int = 1024
    max_batch_bytes: int = 1 << 20
    max_promotion_lag: int = 100

    def __post_init__(self) -> None:
        if not self.node_id:
            raise ValueError("node_id must be a non-empty string")
        if self.heartbeat_ticks < 1:
            raise ValueError("heartbeat_ticks must be >= 1")
        if self.election_ticks_min <= self.heartbeat_ticks:
            raise ValueError("election_ticks_min must be greater than heartbeat_ticks")
        if self.election_ticks_max < self.election_ticks_min:
            raise ValueError("election_ticks_max must be >= election_ticks_min")
        if self.max_inflight < 1 or self.max_batch_entries < 1 or self.max_batch_bytes < 1:
            raise ValueError("max_inflight, max_batch_entries and max_batch_bytes must be >= 1")
        if self.max_promotion_lag < 0:
            raise ValueError("max_promotion_lag must be >= 0")
