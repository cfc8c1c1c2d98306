"""Peer messages: one frozen, slotted dataclass per kind, all one-way.

A response is just another message; the core never waits for one. Every message carries
`src`, `dst` and `term`. A heartbeat is an `AppendRequest` with no entries (as in the Raft
paper). `seq` on appends is the leader's round counter, echoed back so a ReadIndex request
knows when a quorum has confirmed the leader after the read arrived (thesis §6.4).
"""

from __future__ import annotations

from dataclasses import dataclass

from zraft.core.types import Entry, NodeId, SnapshotMeta


@dataclass(frozen=True, slots=True)
class VoteRequest:
    """RequestVote (§5.2), or a pre-vote when `prevote` (thesis §9.6).

    For a pre-vote, `term` is the term the sender would campaign in; its own term is
    unchanged. `transfer` marks an election started by TimeoutNow, which followers grant
    even while in contact with the old leader (thesis §3.10).
    """

    src: NodeId
    dst: NodeId
    term: int
    last_log_index: int
    last_log_term: int
    prevote: bool = False
    transfer: bool = False


@dataclass(frozen=True, slots=True)
class VoteResponse:
    """The answer to a VoteRequest. A granted pre-vote echoes the request's term."""

    src: NodeId
    dst: NodeId
    term: int
    granted: bool
    prevote: bool = False


@dataclass(frozen=True, slots=True)
class AppendRequest:
    """AppendEntries (§5.3); with no entries it is a heartbeat."""

    src: NodeId
    dst: NodeId
    term: int
    prev_index: int
    prev_term: int
    entries: tuple[Entry, ...]
    commit: int
    seq: int = 0


@dataclass(frozen=True, slots=True)
class AppendResponse:
    """The answer to an AppendRequest.

    On success `index` is the last index the follower now shares with the leader. On
    failure `index` is the rejected `prev_index` and `hint` the highest index that might
    match, so the leader can skip a whole conflicting term per round trip (§5.3, end).
    """

    src: NodeId
    dst: NodeId
    term: int
    success: bool
    index: int
    hint: int = 0
    seq: int = 0


@dataclass(frozen=True, slots=True)
class SnapshotRequest:
    """InstallSnapshot (§7): the follower should take the leader's snapshot `meta`.

    The core deals in snapshot metadata only; the snapshot's bytes are the driver's
    business. A leader's SnapshotRequest asks its driver to stream the snapshot file that
    `meta` names; the follower's driver steps the core with a SnapshotRequest only once
    the whole file has arrived and verified, so the core never sees a partial snapshot.
    """

    src: NodeId
    dst: NodeId
    term: int
    meta: SnapshotMeta


@dataclass(frozen=True, slots=True)
class SnapshotResponse:
    """The answer to a SnapshotRequest: the follower's log now matches up to `index`."""

    src: NodeId
    dst: NodeId
    term: int
    index: int


@dataclass(frozen=True, slots=True)
class TimeoutNow:
    """Leadership transfer: the target starts an election at once (thesis §3.10)."""

    src: NodeId
    dst: NodeId
    term: int


@dataclass(frozen=True, slots=True)
class ReadIndexRequest:
    """A follower asks the leader for a read index on behalf of its client (thesis §6.4).

    `context` is the follower's own request number, echoed back.
    """

    src: NodeId
    dst: NodeId
    term: int
    context: int


@dataclass(frozen=True, slots=True)
class ReadIndexResponse:
    """The leader's answer: reads may be served once applied up to `index`.

    `success` is False when the receiver could not act as leader; the follower's client
    is then told to retry.
    """

    src: NodeId
    dst: NodeId
    term: int
    context: int
    index: int
    success: bool


Message = (
    VoteRequest
    | VoteResponse
    | AppendRequest
    | AppendResponse
    | SnapshotRequest
    | SnapshotResponse
    | TimeoutNow
    | ReadIndexRequest
    | ReadIndexResponse
)
"""Every message kind one node sends another."""

MESSAGE_TYPES: tuple[type, ...] = (
    VoteRequest,
    VoteResponse,
    AppendRequest,
    AppendResponse,
    SnapshotRequest,
    SnapshotResponse,
    TimeoutNow,
    ReadIndexRequest,
    ReadIndexResponse,
)
"""The message classes in a fixed order; `wire` derives its tags from it."""
