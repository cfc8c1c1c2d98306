"""Layer 1: quorum arithmetic (majority, vote tallies, commit index, has_quorum)."""

from __future__ import annotations

import pytest

from zraft.core.quorum import VoteResult, committed_index, has_quorum, majority, vote_result

THREE = ("a", "b", "c")
FOUR = ("a", "b", "c", "d")
FIVE = ("a", "b", "c", "d", "e")


@pytest.mark.parametrize(
    ("voters", "expected"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 3), (6, 4), (7, 4)]
)
def test_majority_is_more_than_half(voters: int, expected: int) -> None:
    """A majority is the smallest count strictly greater than half the voters."""
    assert majority(voters) == expected


@pytest.mark.parametrize("voters", [0, -1])
def test_majority_of_no_voters_is_an_error(voters: int) -> None:
    """A quorum of nobody is meaningless: it raises rather than returning 1."""
    with pytest.raises(ValueError):
        majority(voters)


@pytest.mark.parametrize(
    ("votes", "voters", "expected"),
    [
        ({}, ("a",), VoteResult.PENDING),
        ({"a": True}, ("a",), VoteResult.WON),
        ({"a": False}, ("a",), VoteResult.LOST),
        ({}, THREE, VoteResult.PENDING),
        ({"a": True}, THREE, VoteResult.PENDING),
        ({"a": True, "b": True}, THREE, VoteResult.WON),
        ({"a": True, "b": False}, THREE, VoteResult.PENDING),
        ({"a": False, "b": False}, THREE, VoteResult.LOST),
        ({"a": True, "b": False, "c": False}, THREE, VoteResult.LOST),
        ({"a": True, "b": True, "c": False}, THREE, VoteResult.WON),
        # Answers from non-voters (learners, strangers) never count either way.
        ({"a": True, "x": True}, THREE, VoteResult.PENDING),
        ({"a": True, "x": True, "y": True}, THREE, VoteResult.PENDING),
        ({"a": True, "x": False, "y": False}, THREE, VoteResult.PENDING),
        # Four voters need three grants; two denials already make three unreachable.
        ({"a": True, "b": True}, FOUR, VoteResult.PENDING),
        ({"a": True, "b": True, "c": True}, FOUR, VoteResult.WON),
        ({"a": True, "b": False}, FOUR, VoteResult.PENDING),
        ({"a": True, "b": False, "c": False}, FOUR, VoteResult.LOST),
        ({"a": False, "b": False}, FOUR, VoteResult.LOST),
        ({"a": True, "b": True, "c": False, "d": False}, FOUR, VoteResult.LOST),
        ({"a": True, "b": True, "c": False}, FIVE, VoteResult.PENDING),
        ({"a": True, "b": True, "c": False, "d": True}, FIVE, VoteResult.WON),
        ({"a": True, "b": False, "c": False, "d": False}, FIVE, VoteResult.LOST),
    ],
)
def test_vote_result(votes: dict[str, bool], voters: tuple[str, ...], expected: VoteResult) -> None:
    """An election is won by a majority of grants and lost once a majority is impossible."""
    assert vote_result(votes, voters) is expected


@pytest.mark.parametrize(
    ("matches", "voters", "expected"),
    [
        ({"a": 5}, ("a",), 5),
        ({}, ("a",), 0),
        ({"a": 5, "b": 3}, ("a", "b"), 3),
        ({"a": 5}, ("a", "b"), 0),
        ({"a": 5, "b": 3, "c": 1}, THREE, 3),
        ({"a": 1, "b": 3, "c": 5}, THREE, 3),
        ({"a": 5, "b": 3}, THREE, 3),
        ({"a": 5}, THREE, 0),
        ({"a": 7, "b": 7, "c": 7}, THREE, 7),
        ({"a": 5, "b": 4, "c": 3, "d": 2}, FOUR, 3),
        ({"a": 5, "b": 4, "c": 3}, FOUR, 3),
        ({"a": 5, "b": 4}, FOUR, 0),
        ({"a": 5, "b": 4, "c": 3, "d": 2, "e": 1}, FIVE, 3),
        ({"a": 9, "b": 9, "c": 9}, FIVE, 9),
        ({"a": 9, "b": 9, "c": 2}, FIVE, 2),
        ({"a": 9, "b": 9}, FIVE, 0),
        # A non-voter's match index never helps reach a quorum.
        ({"a": 5, "x": 100, "y": 100}, THREE, 0),
        ({"a": 5, "b": 5, "x": 100}, THREE, 5),
    ],
)
def test_committed_index_is_what_a_majority_stores(
    matches: dict[str, int], voters: tuple[str, ...], expected: int
) -> None:
    """The commit candidate is the highest index stored on a majority; absent voters are 0."""
    assert committed_index(matches, voters) == expected


@pytest.mark.parametrize(
    ("active", "voters", "expected"),
    [
        ({"a"}, ("a",), True),
        (set(), ("a",), False),
        ({"a"}, ("a", "b"), False),
        ({"a", "b"}, ("a", "b"), True),
        ({"a"}, THREE, False),
        ({"a", "c"}, THREE, True),
        ({"a", "x", "y"}, THREE, False),
        ({"a", "b"}, FOUR, False),
        ({"a", "b", "d"}, FOUR, True),
        ({"a", "b", "c"}, FIVE, True),
        ({"d", "e"}, FIVE, False),
    ],
)
def test_has_quorum(active: set[str], voters: tuple[str, ...], expected: bool) -> None:
    """Only voters in `active` count towards a majority of `voters`."""
    assert has_quorum(active, voters) is expected
