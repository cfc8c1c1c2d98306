"""Layer 1: the leader's per-follower progress (states, updates, back-off, inflights)."""

from __future__ import annotations

import pytest

from zraft.core.progress import Inflights, Progress, ProgressState


def make_progress(
    *,
    state: ProgressState = ProgressState.PROBE,
    match: int = 0,
    next_index: int = 1,
    max_inflight: int = 4,
) -> Progress:
    """A Progress placed in `state` with the given match and next indexes."""
    pr = Progress(next_index, max_inflight)
    pr.match_index = match
    if state is ProgressState.REPLICATE:
        pr.become_replicate()
    elif state is ProgressState.SNAPSHOT:
        pr.state = ProgressState.SNAPSHOT
    pr.next_index = next_index
    return pr


def test_new_progress_probes_from_the_given_next_index() -> None:
    """A leader starts every follower in PROBE at its own last index + 1, knowing no match."""
    pr = Progress(11, 8)
    assert (pr.state, pr.match_index, pr.next_index) == (ProgressState.PROBE, 0, 11)
    assert not pr.is_paused()
    assert len(pr.inflights) == 0


@pytest.mark.parametrize(
    ("match", "next_index", "acked", "updated", "new_match", "new_next"),
    [
        (0, 1, 5, True, 5, 6),  # first success
        (3, 4, 7, True, 7, 8),
        (3, 10, 5, True, 5, 10),  # an older in-flight append: next stays ahead
        (5, 10, 5, False, 5, 10),  # duplicate acknowledgement
        (5, 10, 2, False, 5, 10),  # stale acknowledgement never rewinds match
        (5, 6, 0, False, 5, 6),
    ],
)
def test_maybe_update(
    match: int, next_index: int, acked: int, updated: bool, new_match: int, new_next: int
) -> None:
    """A success moves match forward only, and next never falls behind match + 1."""
    pr = make_progress(match=match, next_index=next_index)
    assert pr.maybe_update(acked) is updated
    assert (pr.match_index, pr.next_index) == (new_match, new_next)


def test_maybe_update_unpauses_a_probe() -> None:
    """A successful answer to the outstanding probe lets the next append go at once."""
    pr = make_progress(next_index=3)
    pr.sent(last_index=4, entry_count=2)
    assert pr.is_paused()
    assert pr.maybe_update(4)
    assert not pr.is_paused()


@pytest.mark.parametrize("start", [ProgressState.PROBE, ProgressState.REPLICATE])
def test_state_transitions_restart_from_the_match(start: ProgressState) -> None:
    """become_probe/become_replicate restart at match + 1 and forget what was in flight."""
    pr = make_progress(state=ProgressState.REPLICATE, match=4, next_index=5)
    pr.sent(last_index=9, entry_count=5)
    assert pr.next_index == 10 and len(pr.inflights) == 1
    if start is ProgressState.PROBE:
        pr.become_probe()
    else:
        pr.become_replicate()
    assert pr.state is start
    assert pr.next_index == 5
    assert len(pr.inflights) == 0
    assert not pr.is_paused()


def test_probe_becomes_replicate() -> None:
    """PROBE -> REPLICATE once the follower's position is known; REPLICATE then streams."""
    pr = make_progress(next_index=6)
    pr.sent(last_index=6, entry_count=1)
    assert pr.is_paused()
    pr.maybe_update(6)
    pr.become_replicate()
    assert (pr.state, pr.next_index) == (ProgressState.REPLICATE, 7)
    pr.sent(last_index=8, entry_count=2)
    pr.sent(last_index=9, entry_count=1)
    assert (pr.next_index, len(pr.inflights), pr.is_paused()) == (10, 2, False)


@pytest.mark.parametrize(
    ("state", "match", "next_index", "rejected", "hint", "applied", "new_state", "new_next"),
    [
        # PROBE: only the rejection of the append being probed counts.
        (ProgressState.PROBE, 0, 11, 10, 5, True, ProgressState.PROBE, 6),
        (ProgressState.PROBE, 0, 11, 10, 9, True, ProgressState.PROBE, 10),
        (ProgressState.PROBE, 0, 11, 10, 0, True, ProgressState.PROBE, 1),
        (ProgressState.PROBE, 0, 11, 10, 50, True, ProgressState.PROBE, 10),  # bad hint
        (ProgressState.PROBE, 4, 11, 10, 4, True, ProgressState.PROBE, 5),  # never <= match
        # A hint below the match: the follower lost entries it had acknowledged.
        (ProgressState.PROBE, 4, 11, 10, 1, True, ProgressState.PROBE, 2),
        (ProgressState.PROBE, 0, 11, 8, 2, False, ProgressState.PROBE, 11),  # stale
        (ProgressState.PROBE, 0, 6, 10, 2, False, ProgressState.PROBE, 6),  # stale
        # REPLICATE: a rejection above the match falls back to PROBE ...
        (ProgressState.REPLICATE, 5, 20, 12, 8, True, ProgressState.PROBE, 9),
        (ProgressState.REPLICATE, 5, 20, 19, 30, True, ProgressState.PROBE, 19),
        (ProgressState.REPLICATE, 5, 20, 12, 6, True, ProgressState.PROBE, 7),
        # ... one for an append the follower has since accepted is stale ...
        (ProgressState.REPLICATE, 5, 20, 5, 5, False, ProgressState.REPLICATE, 20),
        (ProgressState.REPLICATE, 5, 20, 3, 7, False, ProgressState.REPLICATE, 20),
        # ... unless its hint is below the match: the follower lost acknowledged entries
        # (a disk that lied about fsync), so the match is forgotten down to the hint.
        (ProgressState.REPLICATE, 5, 20, 12, 2, True, ProgressState.PROBE, 3),
        (ProgressState.REPLICATE, 5, 20, 5, 0, True, ProgressState.PROBE, 1),
    ],
)
def test_maybe_back_off(
    state: ProgressState,
    match: int,
    next_index: int,
    rejected: int,
    hint: int,
    applied: bool,
    new_state: ProgressState,
    new_next: int,
) -> None:
    """§5.3: on rejection the leader backs next off (by the hint); stale rejections are no-ops."""
    pr = make_progress(state=state, match=match, next_index=next_index)
    assert pr.maybe_back_off(rejected, hint) is applied
    assert pr.state is new_state
    assert pr.next_index == new_next
    # A hint below the match lowers it (lost entries); nothing else moves it.
    assert pr.match_index == (min(match, hint) if applied else match)


def test_back_off_unpauses_the_probe() -> None:
    """A rejected probe lets the leader send the next probe at once."""
    pr = make_progress(next_index=11)
    pr.sent(last_index=10, entry_count=0)
    assert pr.is_paused()
    assert pr.maybe_back_off(10, 4)
    assert not pr.is_paused()


def test_stale_back_off_keeps_the_probe_paused() -> None:
    """A stale rejection does not unpause: the current probe is still outstanding."""
    pr = make_progress(next_index=11)
    pr.sent(last_index=10, entry_count=0)
    assert not pr.maybe_back_off(7, 4)
    assert pr.is_paused()


def test_replicate_back_off_clears_the_inflights() -> None:
    """Falling back to PROBE forgets the pipelined appends; they will be re-sent."""
    pr = make_progress(state=ProgressState.REPLICATE, match=2, next_index=3, max_inflight=2)
    pr.sent(last_index=4, entry_count=2)
    pr.sent(last_index=6, entry_count=2)
    assert pr.is_paused()
    assert pr.maybe_back_off(4, 2)
    assert len(pr.inflights) == 0
    assert not pr.is_paused()


@pytest.mark.parametrize(
    ("capacity", "added", "freed_to", "left", "full"),
    [
        (3, [2, 4, 6], None, 3, True),
        (3, [2, 4], None, 2, False),
        (3, [2, 4, 6], 1, 3, True),
        (3, [2, 4, 6], 2, 2, False),
        (3, [2, 4, 6], 5, 1, False),
        (3, [2, 4, 6], 6, 0, False),
        (3, [2, 4, 6], 100, 0, False),
        (1, [7], None, 1, True),
        (1, [7], 7, 0, False),
    ],
)
def test_inflights_window(
    capacity: int, added: list[int], freed_to: int | None, left: int, full: bool
) -> None:
    """The window fills with one slot per append and frees every append acknowledged."""
    inflights = Inflights(capacity)
    for last_index in added:
        inflights.add(last_index)
    if freed_to is not None:
        inflights.free_to(freed_to)
    assert len(inflights) == left
    assert inflights.is_full() is full


def test_inflights_reset_empties_the_window() -> None:
    """reset() forgets everything in flight."""
    inflights = Inflights(2)
    inflights.add(3)
    inflights.add(5)
    inflights.reset()
    assert len(inflights) == 0 and not inflights.is_full()


def test_sent_in_replicate_fills_the_window_and_pauses_when_full() -> None:
    """Pipelining: appends go out without waiting until max_inflight are unacknowledged."""
    pr = make_progress(state=ProgressState.REPLICATE, match=0, next_index=1, max_inflight=3)
    for last_index in (2, 4, 6):
        assert not pr.is_paused()
        pr.sent(last_index=last_index, entry_count=2)
    assert pr.is_paused()
    assert pr.next_index == 7
    pr.inflights.free_to(2)
    assert not pr.is_paused()


def test_sent_heartbeat_in_replicate_takes_no_slot() -> None:
    """An append without entries (heartbeat) neither moves next nor fills the window."""
    pr = make_progress(state=ProgressState.REPLICATE, match=3, next_index=4, max_inflight=1)
    pr.sent(last_index=3, entry_count=0)
    assert (pr.next_index, len(pr.inflights), pr.is_paused()) == (4, 0, False)


@pytest.mark.parametrize(
    ("state", "paused_probe", "full", "expected"),
    [
        (ProgressState.PROBE, False, False, False),
        (ProgressState.PROBE, True, False, True),
        (ProgressState.REPLICATE, False, False, False),
        (ProgressState.REPLICATE, False, True, True),
        (ProgressState.SNAPSHOT, False, False, True),
    ],
)
def test_is_paused(state: ProgressState, paused_probe: bool, full: bool, expected: bool) -> None:
    """PROBE pauses after each send; REPLICATE when the window is full; SNAPSHOT always."""
    pr = make_progress(state=state, next_index=1, max_inflight=1)
    pr.probe_paused = paused_probe
    if full:
        pr.inflights.add(1)
    assert pr.is_paused() is expected
