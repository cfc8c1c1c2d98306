"""The Raft core: a pure, deterministic consensus engine (no I/O, no clock, no randomness).

Drive it with `Raft.tick/step/propose/read_index`, then carry out each `Ready` in order:
persist, send, apply, `advance`.
"""

from zraft.core.errors import (
    ChangeRefused,
    InvariantViolation,
    NotLeader,
    ProposalDropped,
    RaftError,
)
from zraft.core.events import REQUIRED_FIELDS, Event, EventName
from zraft.core.log import RaftLog
from zraft.core.membership import ChangeKind, MembershipChange
from zraft.core.messages import (
    MESSAGE_TYPES,
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
from zraft.core.raft import Raft, Status
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

__all__ = [
    "MESSAGE_TYPES",
    "REQUIRED_FIELDS",
    "AppendRequest",
    "AppendResponse",
    "ChangeKind",
    "ChangeRefused",
    "Entry",
    "EntryKind",
    "Event",
    "EventName",
    "HardState",
    "InvariantViolation",
    "Membership",
    "MembershipChange",
    "Message",
    "NodeId",
    "NotLeader",
    "ProposalDropped",
    "Raft",
    "RaftConfig",
    "RaftError",
    "RaftLog",
    "ReadIndexRequest",
    "ReadIndexResponse",
    "ReadState",
    "Ready",
    "RestoredState",
    "Role",
    "SnapshotMeta",
    "SnapshotRequest",
    "SnapshotResponse",
    "Status",
    "TimeoutNow",
    "VoteRequest",
    "VoteResponse",
]
