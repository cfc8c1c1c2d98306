"""Layer 1: RaftLog (terms, matching, slicing, batching, merging, and the three marks)."""

from __future__ import annotations

import pytest

from tests.core.helpers import log_entries
from zraft.core import Entry, EntryKind, InvariantViolation, RaftLog


def make_log(
    *terms: int, snapshot_index: int = 0, snapshot_term: int = 0, commit: int | None = None
) -> RaftLog:
    """A log holding entries of `terms` after the snapshot point; commit defaults to it."""
    entries = log_entries(*terms, start=snapshot_index + 1)
    return RaftLog(
        entries,
        snapshot_index=snapshot_index,
        snapshot_term=snapshot_term,
        commit_index=snapshot_index if commit is None else commit,
    )


def sized(index: int, term: int, size: int) -> Entry:
    """An entry whose `size_bytes` is exactly `size` (16 bytes of overhead)."""
    return Entry(term, index, EntryKind.NORMAL, b"x" * (size - 16))


def terms_of(log: RaftLog) -> list[int]:
    """The terms of every entry the log holds, in index order."""
    return [e.term for e in log.slice(log.first_index, log.last_index + 1)]


# --- views -----------------------------------------------------------------------------------
def test_restored_log_must_be_contiguous() -> None:
    """A restored log with a hole is corrupt: refuse it rather than run on it."""
    entries = (Entry(1, 1, EntryKind.NORMAL, b""), Entry(1, 3, EntryKind.NORMAL, b""))
    with pytest.raises(InvariantViolation):
        RaftLog(entries)


@pytest.mark.parametrize("commit", [-1, 4])
def test_restored_commit_must_lie_within_the_log(commit: int) -> None:
    """A durable commit index beyond the durable log is a storage bug."""
    with pytest.raises(InvariantViolation):
        make_log(1, 1, 1, commit=commit)


def test_empty_log_marks() -> None:
    """An empty log starts at index 1 with every mark at 0."""
    log = RaftLog()
    assert (log.first_index, log.last_index, log.last_term) == (1, 0, 0)
    assert (log.commit_index, log.applied_index, log.stable_index) == (0, 0, 0)


@pytest.mark.parametrize(
    ("index", "expected"),
    [(3, None), (4, None), (5, 2), (6, 2), (7, 3), (8, 3), (9, None), (100, None)],
)
def test_term_at_across_the_snapshot_boundary(index: int, expected: int | None) -> None:
    """The snapshot point keeps its term; compacted and future indexes have none."""
    log = make_log(2, 3, 3, snapshot_index=5, snapshot_term=2)
    assert log.term_at(index) == expected
    assert (log.first_index, log.last_index, log.last_term) == (6, 8, 3)


def test_last_term_of_an_empty_log_after_a_snapshot_is_the_snapshot_term() -> None:
    """With nothing after the snapshot, the snapshot point is the last entry."""
    log = make_log(snapshot_index=7, snapshot_term=4)
    assert (log.last_index, log.last_term, log.term_at(7)) == (7, 4, 4)


@pytest.mark.parametrize(
    ("index", "term", "expected"),
    [
        (0, 0, True),  # the empty prefix always matches
        (1, 1, True),
        (2, 1, False),
        (2, 2, True),
        (3, 3, True),
        (3, 2, False),
        (4, 3, False),  # beyond the end
    ],
)
def test_matches(index: int, term: int, expected: bool) -> None:
    """§5.3: the consistency check passes only for an entry with that index and term."""
    assert make_log(1, 2, 3).matches(index, term) is expected


def test_entry_outside_the_log_raises_index_error() -> None:
    """Reading an entry the log does not hold is a caller bug."""
    log = make_log(1, 1, snapshot_index=2, snapshot_term=1)
    assert log.entry(3).index == 3
    for index in (2, 5):
        with pytest.raises(IndexError):
            log.entry(index)


@pytest.mark.parametrize(
    ("low", "high", "expected"),
    [
        (1, 6, [1, 2, 3, 4, 5]),
        (2, 4, [2, 3]),
        (0, 3, [1, 2]),  # clamped below
        (4, 100, [4, 5]),  # clamped above
        (3, 3, []),
        (5, 2, []),
        (6, 9, []),
    ],
)
def test_slice_is_clamped_to_the_log(low: int, high: int, expected: list[int]) -> None:
    """slice(low, high) returns what the log holds in [low, high), never raising."""
    log = make_log(1, 1, 2, 2, 3)
    assert [e.index for e in log.slice(low, high)] == expected


def test_slice_never_returns_compacted_entries() -> None:
    """Below the snapshot point there is nothing to return."""
    log = make_log(3, 3, snapshot_index=4, snapshot_term=2)
    assert [e.index for e in log.slice(1, 10)] == [5, 6]


@pytest.mark.parametrize(
    ("low", "max_entries", "max_bytes", "expected"),
    [
        (1, 10, 10_000, [1, 2, 3, 4, 5]),
        (1, 2, 10_000, [1, 2]),  # entry bound
        (4, 10, 10_000, [4, 5]),
        (6, 10, 10_000, []),  # nothing left
        (1, 10, 200, [1, 2]),  # byte bound: 100 + 100 fit, the third does not
        (1, 10, 199, [1]),
        (1, 10, 1, [1]),  # one entry moves even if alone it is too big
        (3, 10, 100, [3]),  # the oversize entry at 3 moves alone
        (3, 10, 10_000, [3, 4, 5]),
        (4, 10, 150, [4, 5]),
    ],
)
def test_batch_from_respects_entry_and_byte_bounds(
    low: int, max_entries: int, max_bytes: int, expected: list[int]
) -> None:
    """A batch is bounded by count and bytes, but at least one entry always moves."""
    entries = (sized(1, 1, 100), sized(2, 1, 100), sized(3, 1, 5000), sized(4, 1, 70))
    entries += (sized(5, 1, 80),)
    log = RaftLog(entries)
    assert [e.index for e in log.batch_from(low, max_entries, max_bytes)] == expected


@pytest.mark.parametrize(
    ("last_log_index", "last_log_term", "expected"),
    [
        (3, 2, True),  # identical
        (4, 2, True),  # same term, longer
        (2, 2, False),  # same term, shorter
        (1, 3, True),  # higher last term wins even when shorter
        (9, 1, False),  # lower last term loses even when longer
        (0, 0, False),
    ],
)
def test_is_up_to_date(last_log_index: int, last_log_term: int, expected: bool) -> None:
    """§5.4.1: compare last terms first, then lengths."""
    assert make_log(1, 2, 2).is_up_to_date(last_log_index, last_log_term) is expected


def test_empty_log_is_behind_nobody() -> None:
    """Any candidate log, even an empty one, is at least as up to date as an empty log."""
    assert RaftLog().is_up_to_date(0, 0)


@pytest.mark.parametrize(
    ("terms", "commit", "prev_index", "expected"),
    [
        ((1, 1, 1), 0, 5, 3),  # our log is too short: probe from our end
        ((1, 1, 1), 0, 4, 3),
        ((), 0, 7, 0),
        ((1, 2, 2, 2, 2), 0, 5, 1),  # skip the whole conflicting term-2 run
        ((1, 2, 2, 2, 2), 0, 3, 1),
        ((1, 1, 2, 3, 3), 0, 5, 3),
        ((1, 1, 2, 3, 3), 0, 3, 2),
        ((2, 2, 2), 0, 3, 0),  # the run reaches the start
        ((1, 2, 2, 2, 2), 3, 5, 3),  # never below the commit index ...
        ((1, 2, 2, 2, 2), 4, 5, 4),
        ((3, 3, 3, 3), 2, 4, 2),  # ... which surely matches
    ],
)
def test_conflict_hint(terms: tuple[int, ...], commit: int, prev_index: int, expected: int) -> None:
    """§5.3 (end): the hint skips the conflicting term's run, but not below commit."""
    log = make_log(*terms, commit=commit)
    assert log.conflict_hint(prev_index, 99) == expected


# --- merging entries from a leader -----------------------------------------------------------
def test_append_from_leader_duplicates_do_not_truncate() -> None:
    """A duplicated or reordered append must not cut entries the log already holds."""
    log = make_log(1, 1, 2, 2, 2)
    assert log.append_from_leader(log_entries(1, 2, start=2)) is None
    assert terms_of(log) == [1, 1, 2, 2, 2]
    assert log.unstable_entries() == ()


def test_append_from_leader_extends_past_matching_entries() -> None:
    """Entries already present are kept; only the new tail is appended (and is unstable)."""
    log = make_log(1, 1)
    assert log.append_from_leader(log_entries(1, 2, 2, start=2)) is None
    assert terms_of(log) == [1, 1, 2, 2]
    assert [e.index for e in log.unstable_entries()] == [3, 4]


def test_append_from_leader_truncates_at_the_first_conflict() -> None:
    """§5.3: delete the conflicting entry and all after it, then append the leader's."""
    log = make_log(1, 1, 2, 2, 2, commit=1)
    truncated = log.append_from_leader(log_entries(1, 3, start=2))
    assert truncated == 3
    assert terms_of(log) == [1, 1, 3]
    assert log.stable_index == 2  # storage must rewrite from index 3
    assert [(e.index, e.term) for e in log.unstable_entries()] == [(3, 3)]


def test_append_from_leader_conflict_lowers_stable_below_unstable_tail() -> None:
    """A conflict inside the not-yet-durable tail lowers stable_index only if needed."""
    log = make_log(1, 1)
    log.append_from_leader(log_entries(2, 2, 2, start=3))
    assert log.stable_index == 2
    assert log.append_from_leader(log_entries(3, start=4)) == 4
    assert log.stable_index == 2
    assert [(e.index, e.term) for e in log.unstable_entries()] == [(3, 2), (4, 3)]


@pytest.mark.parametrize("conflict_at", [2, 3])
def test_append_from_leader_conflict_at_or_below_commit_raises(conflict_at: int) -> None:
    """§5.4: a committed entry is never replaced; trying is a safety bug."""
    log = make_log(1, 1, 1, 1, commit=3)
    with pytest.raises(InvariantViolation):
        log.append_from_leader(log_entries(9, start=conflict_at))


def test_append_from_leader_gap_raises() -> None:
    """Entries that do not follow the log (a hole) must never be accepted."""
    log = make_log(1, 1)
    with pytest.raises(InvariantViolation):
        log.append_from_leader(log_entries(1, start=4))
    assert log.last_index == 2


def test_append_from_leader_skips_entries_covered_by_the_snapshot() -> None:
    """Entries at or below the snapshot point are committed and already applied."""
    log = make_log(2, snapshot_index=3, snapshot_term=1)
    assert log.append_from_leader(log_entries(1, 1, 2, 2, start=2)) is None
    assert [(e.index, e.term) for e in log.slice(1, 10)] == [(4, 2), (5, 2)]


def test_append_own_must_follow_the_last_entry() -> None:
    """The leader's own appends are strictly contiguous."""
    log = make_log(1)
    log.append(Entry(1, 2, EntryKind.NORMAL, b""))
    with pytest.raises(InvariantViolation):
        log.append(Entry(1, 4, EntryKind.NORMAL, b""))


# --- the marks -------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("target", "moved", "commit"),
    [(3, True, 3), (5, True, 5), (2, False, 2), (1, False, 2)],
)
def test_commit_to_is_monotonic(target: int, moved: bool, commit: int) -> None:
    """The commit index never decreases; lower targets are ignored."""
    log = make_log(1, 1, 1, 1, 1, commit=2)
    assert log.commit_to(target) is moved
    assert log.commit_index == commit


def test_commit_to_beyond_the_log_raises() -> None:
    """Committing entries one does not hold is a bug."""
    log = make_log(1, 1)
    with pytest.raises(InvariantViolation):
        log.commit_to(3)
    assert log.commit_index == 0


@pytest.mark.parametrize(("applied", "ok"), [(1, True), (3, True), (0, False), (4, False)])
def test_applied_to_bounds(applied: int, ok: bool) -> None:
    """applied moves within [applied, commit] only."""
    log = make_log(1, 1, 1, 1, commit=3)
    log.applied_to(1)
    if ok:
        log.applied_to(applied)
        assert log.applied_index == applied
    else:
        with pytest.raises(InvariantViolation):
            log.applied_to(applied)
        assert log.applied_index == 1


def test_committed_unapplied_is_the_gap_between_applied_and_commit() -> None:
    """Entries are handed to the state machine once, in order."""
    log = make_log(1, 1, 1, 1, 1, commit=4)
    assert [e.index for e in log.committed_unapplied()] == [1, 2, 3, 4]
    log.applied_to(2)
    assert [e.index for e in log.committed_unapplied()] == [3, 4]
    log.applied_to(4)
    assert log.committed_unapplied() == ()


def test_stable_to_marks_durable_entries() -> None:
    """Acknowledged entries leave the unstable set."""
    log = make_log(1)
    log.append(Entry(1, 2, EntryKind.NORMAL, b""))
    log.append(Entry(1, 3, EntryKind.NORMAL, b""))
    assert [e.index for e in log.unstable_entries()] == [2, 3]
    log.stable_to(2, 1)
    assert [e.index for e in log.unstable_entries()] == [3]
    log.stable_to(1, 1)  # older acknowledgements never lower it
    assert log.stable_index == 2


def test_stable_to_ignores_entries_replaced_since() -> None:
    """A late acknowledgement for a replaced entry must not mark its successor durable."""
    log = make_log(1, commit=1)
    log.append_from_leader(log_entries(2, 2, start=2))  # handed to storage as (3, term 2)
    assert log.append_from_leader(log_entries(3, start=3)) == 3
    log.stable_to(3, 2)
    assert log.stable_index == 1
    assert [(e.index, e.term) for e in log.unstable_entries()] == [(2, 2), (3, 3)]
    log.stable_to(5, 3)  # beyond the end: ignored too
    assert log.stable_index == 1
    log.stable_to(3, 3)
    assert log.unstable_entries() == ()
