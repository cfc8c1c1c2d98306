"""RaftLog: the in-memory log after the snapshot point, with commit/applied/stable marks.

Theory of operation
-------------------
Entries live in a list holding indexes ``snapshot_index + 1 .. last_index``. Three marks
move over it:

- ``stable_index``: entries up to here are durable. Entries after it are handed out by
  `unstable_entries()` for the next Ready; storage truncates its own copy from the first
  entry it is given, so a conflict truncation simply lowers ``stable_index``.
- ``commit_index``: known committed (§5.3). Never decreases; never past ``last_index``.
- ``applied_index``: handed to the state machine. Never past ``commit_index``.

Invariant: snapshot_index <= applied_index <= commit_index <= last_index, and
stable_index <= last_index. A committed entry is never truncated (§5.4, Leader
Completeness); an attempt raises InvariantViolation, because it means a safety bug.
"""

from __future__ import annotations

from zraft.core.errors import InvariantViolation
from zraft.core.types import Entry


class RaftLog:
    """The replicated log of one node (Fig. 2 `log[]`, `commitIndex`, `lastApplied`)."""

    def __init__(
        self,
        entries: tuple[Entry, ...] = (),
        *,
        snapshot_index: int = 0,
        snapshot_term: int = 0,
        commit_index: int = 0,
    ) -> None:
        for offset, entry in enumerate(entries):
            if entry.index != snapshot_index + 1 + offset:
                raise InvariantViolation(f"restored log is not contiguous at {entry.index}")
        self._entries: list[Entry] = list(entries)
        self.snapshot_index = snapshot_index
        self.snapshot_term = snapshot_term
        self.stable_index = self.last_index  # restored entries are durable
        if not snapshot_index <= commit_index <= self.last_index:
            raise InvariantViolation(
                f"restored commit {commit_index} outside [{snapshot_index}, {self.last_index}]"
            )
        self.commit_index = commit_index
        self.applied_index = snapshot_index

    # --- views -----------------------------------------------------------------------------
    @property
    def first_index(self) -> int:
        """The first index held in memory (one past the snapshot)."""
        return self.snapshot_index + 1

    @property
    def last_index(self) -> int:
        """The index of the last entry, or the snapshot index if the log is empty."""
        return self.snapshot_index + len(self._entries)

    @property
    def last_term(self) -> int:
        """The term of the last entry (or of the snapshot)."""
        return self._entries[-1].term if self._entries else self.snapshot_term

    def term_at(self, index: int) -> int | None:
        """The term of the entry at `index`; None if compacted away or beyond the end."""
        if index == self.snapshot_index:
            return self.snapshot_term
        if self.snapshot_index < index <= self.last_index:
            return self._entries[index - self.snapshot_index - 1].term
        return None

    def matches(self, index: int, term: int) -> bool:
        """The AppendEntries consistency check: is there an entry (index, term)? (§5.3)"""
        return self.term_at(index) == term

    def entry(self, index: int) -> Entry:
        """The entry at `index` (must be held in memory)."""
        if not self.snapshot_index < index <= self.last_index:
            raise IndexError(f"index {index} not in log [{self.first_index}, {self.last_index}]")
        return self._entries[index - self.snapshot_index - 1]

    def slice(self, low: int, high: int) -> tuple[Entry, ...]:
        """Entries with low <= index < high, clamped to what the log holds."""
        low = max(low, self.first_index)
        high = min(high, self.last_index + 1)
        if low >= high:
            return ()
        base = self.snapshot_index + 1
        return tuple(self._entries[low - base : high - base])

    def batch_from(self, low: int, max_entries: int, max_bytes: int) -> tuple[Entry, ...]:
        """Up to `max_entries` entries from `low` whose sizes sum to at most `max_bytes`.

        At least one entry is returned when any exists, so one huge entry still moves.
        """
        batch: list[Entry] = []
        size = 0
        for entry in self.slice(low, low + max_entries):
            size += entry.size_bytes
            if batch and size > max_bytes:
                break
            batch.append(entry)
        return tuple(batch)

    def is_up_to_date(self, last_log_index: int, last_log_term: int) -> bool:
        """Whether a candidate's log is at least as up-to-date as ours (§5.4.1)."""
        if last_log_term != self.last_term:
            return last_log_term > self.last_term
        return last_log_index >= self.last_index

    def conflict_hint(self, prev_index: int, prev_term: int) -> int:
        """Where a leader should probe next after our log failed its check at `prev_index`.

        If our log is too short, our last index. Otherwise skip back over every entry of
        the conflicting term, since none of them can match (§5.3, the optimisation at the
        end of the section), but never below the commit index, which surely matches.
        """
        if prev_index > self.last_index:
            return self.last_index
        conflict_term = self.term_at(prev_index)
        index = prev_index - 1
        while index > self.commit_index and self.term_at(index) == conflict_term:
            index -= 1
        del prev_term  # the leader's term is not needed: our own terms decide the skip
        return max(index, self.commit_index)

    def unstable_entries(self) -> tuple[Entry, ...]:
        """Entries not yet handed to storage."""
        return self.slice(self.stable_index + 1, self.last_index + 1)

    # --- mutations -------------------------------------------------------------------------
    def append(self, entry: Entry) -> None:
        """Append one entry at the end (the leader's own proposals)."""
        if entry.index != self.last_index + 1:
            raise InvariantViolation(f"append at {entry.index}, expected {self.last_index + 1}")
        self._entries.append(entry)

    def append_from_leader(self, entries: tuple[Entry, ...]) -> int | None:
        """Merge entries that follow a matched prev entry (§5.3 rules 3 and 4).

        Entries already present with the same term are kept (a reordered or duplicated
        append must not truncate anything). At the first conflict the suffix is deleted
        and the rest appended.

        Returns:
            The index from which an existing suffix was deleted, or None if nothing was.

        Raises:
            InvariantViolation: the conflict is at or below the commit index.
        """
        truncated_from: int | None = None
        for position, entry in enumerate(entries):
            if entry.index <= self.snapshot_index:
                continue  # covered by the snapshot, hence committed and matching
            existing_term = self.term_at(entry.index)
            if existing_term == entry.term:
                continue
            if existing_term is not None:
                if entry.index <= self.commit_index:
                    raise InvariantViolation(
                        f"conflict at committed index {entry.index} (commit {self.commit_index})"
                    )
                del self._entries[entry.index - self.snapshot_index - 1 :]
                truncated_from = entry.index
                self.stable_index = min(self.stable_index, entry.index - 1)
            elif entry.index != self.last_index + 1:
                raise InvariantViolation(f"gap before {entry.index} (last {self.last_index})")
            self._entries.extend(entries[position:])
            return truncated_from
        return truncated_from

    def commit_to(self, index: int) -> bool:
        """Move the commit index forward to `index`; returns whether it moved."""
        if index <= self.commit_index:
            return False
        if index > self.last_index:
            raise InvariantViolation(f"commit {index} beyond last index {self.last_index}")
        self.commit_index = index
        return True

    def committed_unapplied(self) -> tuple[Entry, ...]:
        """Committed entries not yet handed to the state machine, in order."""
        return self.slice(self.applied_index + 1, self.commit_index + 1)

    def applied_to(self, index: int) -> None:
        """Record that the state machine has applied everything up to `index`."""
        if not self.applied_index <= index <= self.commit_index:
            raise InvariantViolation(
                f"applied {index} outside [{self.applied_index}, {self.commit_index}]"
            )
        self.applied_index = index

    def compact_to(self, index: int) -> None:
        """Drop the entries up to `index`: a snapshot covers them (§7).

        Only applied entries may go (a snapshot is taken of the applied state), and the
        term of `index` is kept as the new snapshot point so the consistency check of the
        next append still works.

        Raises:
            InvariantViolation: `index` is not in [snapshot_index, applied_index].
        """
        if not self.snapshot_index <= index <= self.applied_index:
            raise InvariantViolation(
                f"compact to {index} outside [{self.snapshot_index}, {self.applied_index}]"
            )
        term = self.term_at(index)
        assert term is not None  # index is within [snapshot_index, last_index]
        del self._entries[: index - self.snapshot_index]
        self.snapshot_index = index
        self.snapshot_term = term

    def restore(self, index: int, term: int) -> None:
        """Replace the whole log by a snapshot ending at (index, term) (§7, InstallSnapshot).

        Everything held is discarded: the snapshot is committed, the log we had is not
        known to match it. The caller persists the snapshot with the next Ready, so the
        new snapshot point counts as stable; commit and applied move up to it.

        Raises:
            InvariantViolation: the snapshot does not reach past the commit index (a
                committed prefix is never replaced by a shorter one).
        """
        if index <= self.commit_index:
            raise InvariantViolation(f"restore to {index} at or below commit {self.commit_index}")
        self._entries = []
        self.snapshot_index = index
        self.snapshot_term = term
        self.stable_index = index
        self.commit_index = index
        self.applied_index = index

    def stable_to(self, index: int, term: int) -> None:
        """Record that entries up to (index, term) are durable.

        Ignored when the entry at `index` has since been replaced (a different term), so a
        late acknowledgement cannot mark newer, unsaved entries as durable.
        """
        if index > self.stable_index and self.term_at(index) == term:
            self.stable_index = index
