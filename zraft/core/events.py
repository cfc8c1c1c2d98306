"""The core's event vocabulary: events are data the core returns in `Ready.events`.

The names and fields are a contract (DESIGN.md §3): the simulator, pytest and `jq` all count
the same names. Each event is emitted exactly when its docstring row says, never otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class EventName(StrEnum):
    """Events the core emits. Node-level events live in `zraft.diagnostics`."""

    ROLE_CHANGED = "role_changed"  # exactly once per real role change
    TERM_CHANGED = "term_changed"  # the term increases
    ELECTION_STARTED = "election_started"  # a (pre-)candidate asks for votes
    VOTE_GRANTED = "vote_granted"  # this node grants a (pre-)vote
    VOTE_DENIED = "vote_denied"  # a (pre-)vote is refused (debug)
    LEADER_ELECTED = "leader_elected"  # the winner, once per term it wins
    LEADER_CHANGED = "leader_changed"  # this node's view of the leader changes
    LOG_TRUNCATED = "log_truncated"  # a follower deletes a conflicting suffix
    COMMIT_ADVANCED = "commit_advanced"  # the commit index moves forward (debug)


REQUIRED_FIELDS: dict[EventName, frozenset[str]] = {
    EventName.ROLE_CHANGED: frozenset({"term", "old_role", "new_role", "leader"}),
    EventName.TERM_CHANGED: frozenset({"old_term", "new_term", "reason"}),
    EventName.ELECTION_STARTED: frozenset({"term", "prevote", "last_log_index", "last_log_term"}),
    EventName.VOTE_GRANTED: frozenset({"term", "candidate", "prevote"}),
    EventName.VOTE_DENIED: frozenset({"term", "candidate", "prevote", "reason"}),
    EventName.LEADER_ELECTED: frozenset({"term", "votes", "voters"}),
    EventName.LEADER_CHANGED: frozenset({"term", "leader"}),
    EventName.LOG_TRUNCATED: frozenset({"from_index", "term"}),
    EventName.COMMIT_ADVANCED: frozenset({"term", "commit_index"}),
}
"""The fields each event carries, no more and no fewer."""

TERM_CHANGE_REASONS = frozenset({"election", "message"})
VOTE_DENIAL_REASONS = frozenset(
    {"already_voted", "log_behind", "leader_alive", "stale_term", "not_voter"}
)


@dataclass(frozen=True, slots=True)
class Event:
    """One event: a name from the vocabulary and its fields (JSON-friendly values)."""

    name: EventName
    fields: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        expected = REQUIRED_FIELDS[self.name]
        if set(self.fields) != expected:
            raise ValueError(
                f"event {self.name} needs fields {sorted(expected)}, got {sorted(self.fields)}"
            )
