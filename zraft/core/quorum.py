"""Quorum arithmetic: majorities, vote tallies and the commit index of a voter set.

Pure functions over plain values; the only place that knows what "a majority" means, so
joint consensus (issue 6) can later combine two of them.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from enum import Enum

from zraft.core.types import NodeId


class VoteResult(Enum):
    """Outcome of an election so far."""

    PENDING = "pending"
    WON = "won"
    LOST = "lost"


def majority(voter_count: int) -> int:
    """The smallest number of voters that is more than half of `voter_count`."""
    if voter_count < 1:
        raise ValueError("a quorum needs at least one voter")
    return voter_count // 2 + 1


def vote_result(votes: Mapping[NodeId, bool], voters: Collection[NodeId]) -> VoteResult:
    """Tally `votes` (voter -> granted) over `voters`; answers from non-voters are ignored.

    WON once a majority granted; LOST once a majority can no longer be reached.
    """
    granted = sum(1 for v in voters if votes.get(v) is True)
    denied = sum(1 for v in voters if votes.get(v) is False)
    need = majority(len(voters))
    if granted >= need:
        return VoteResult.WON
    if denied > len(voters) - need:
        return VoteResult.LOST
    return VoteResult.PENDING


def committed_index(match_indexes: Mapping[NodeId, int], voters: Collection[NodeId]) -> int:
    """The highest index stored on a majority of `voters` (a missing voter counts as 0).

    The caller still has to check that the entry at that index is of the current term
    before committing it (§5.4.2).
    """
    ordered = sorted((match_indexes.get(v, 0) for v in voters), reverse=True)
    return ordered[majority(len(voters)) - 1]


def has_quorum(active: Collection[NodeId], voters: Collection[NodeId]) -> bool:
    """Whether the voters in `active` form a majority of `voters`."""
    return sum(1 for v in voters if v in active) >= majority(len(voters))
