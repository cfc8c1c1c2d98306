"""The Raft core: a pure, deterministic consensus engine (no I/O, no clock, no randomness).

Drive it with `Raft.tick/step/propose/read_index`, then carry out each `Ready` in order:
persist, send, apply, `advance`.

The names below load their module on first use (PEP 562): a client that needs one type
from `types` does not load the whole core.
"""

from __future__ import annotations

from typing import Any

_HOMES: dict[str, str] = {
    "AppendRequest": "zraft.core.messages",
    "AppendResponse": "zraft.core.messages",
    "ChangeKind": "zraft.core.membership",
    "ChangeRefused": "zraft.core.errors",
    "Entry": "zraft.core.types",
    "EntryKind": "zraft.core.types",
    "Event": "zraft.core.events",
    "EventName": "zraft.core.events",
    "HardState": "zraft.core.types",
    "InvariantViolation": "zraft.core.errors",
    "MESSAGE_TYPES": "zraft.core.messages",
    "Membership": "zraft.core.types",
    "MembershipChange": "zraft.core.membership",
    "Message": "zraft.core.messages",
    "NodeId": "zraft.core.types",
    "NotLeader": "zraft.core.errors",
    "ProposalDropped": "zraft.core.errors",
    "REQUIRED_FIELDS": "zraft.core.events",
    "Raft": "zraft.core.raft",
    "RaftConfig": "zraft.core.types",
    "RaftError": "zraft.core.errors",
    "RaftLog": "zraft.core.log",
    "ReadIndexRequest": "zraft.core.messages",
    "ReadIndexResponse": "zraft.core.messages",
    "ReadState": "zraft.core.ready",
    "Ready": "zraft.core.ready",
    "RestoredState": "zraft.core.types",
    "Role": "zraft.core.types",
    "SnapshotMeta": "zraft.core.types",
    "SnapshotRequest": "zraft.core.messages",
    "SnapshotResponse": "zraft.core.messages",
    "Status": "zraft.core.raft",
    "TimeoutNow": "zraft.core.messages",
    "VoteRequest": "zraft.core.messages",
    "VoteResponse": "zraft.core.messages",
}
"""Each public name and the module that owns it."""

__all__ = sorted(_HOMES)


def __getattr__(name: str) -> Any:
    """Load a public name from its module on first use."""
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'zraft.core' has no attribute {name!r}")
    # The builtin, not importlib: the core imports nothing with machinery or I/O.
    value = getattr(__import__(home, fromlist=[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value
