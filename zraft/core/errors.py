"""The core's exceptions. Local misuse raises; remote input never does (it becomes events)."""

from __future__ import annotations

from zraft.core.types import NodeId


class RaftError(Exception):
    """Base class of every error the core raises."""


class NotLeader(RaftError):
    """A leader-only request reached a node that is not the leader.

    Attributes:
        leader_hint: the leader this node believes in, or None if it knows of none.
    """

    def __init__(self, leader_hint: NodeId | None) -> None:
        super().__init__(f"not the leader (leader hint: {leader_hint})")
        self.leader_hint = leader_hint


class ProposalDropped(RaftError):
    """The leader cannot take proposals right now (a leadership transfer is under way)."""


class InvariantViolation(RaftError):
    """A Raft safety invariant is broken: a bug. The node must stop (fail-stop)."""


class ChangeRefused(RaftError):
    """A membership change cannot be made now; the message says why and what to do.

    Attributes:
        code: `invalid` (the change makes no sense: unknown member, last voter),
            `in_progress` (another change is not committed yet: one at a time), or
            `not_ready` (retry later: a learner still catching up, or a new leader that
            has not committed an entry of its term).
    """

    def __init__(self, message: str, *, code: str) -> None:
        super().__init__(message)
        self.code = code

    @property
    def retryable(self) -> bool:
        """Whether the same change may succeed later."""
        return self.code != "invalid"
