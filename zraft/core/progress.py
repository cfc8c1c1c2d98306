"""What a leader knows about one follower's log: match/next indexes and the send window.

States (etcd's tracker, re-thought): PROBE sends one append at a time until the follower's
log position is known; REPLICATE streams appends optimistically, up to `max_inflight`
unacknowledged messages; SNAPSHOT sends nothing but heartbeats while the driver streams a
snapshot to the follower, until the follower answers or the driver reports a failure.
"""

from __future__ import annotations

from collections import deque
from enum import Enum


class ProgressState(Enum):
    """How the leader is currently replicating to one follower."""

    PROBE = "probe"
    REPLICATE = "replicate"
    SNAPSHOT = "snapshot"


class Inflights:
    """The last index of each append sent and not yet acknowledged, oldest first."""

    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._last_indexes: deque[int] = deque()

    def add(self, last_index: int) -> None:
        """Record an append whose last entry is `last_index`."""
        self._last_indexes.append(last_index)

    def free_to(self, index: int) -> None:
        """Forget every append acknowledged by a success up to `index`."""
        while self._last_indexes and self._last_indexes[0] <= index:
            self._last_indexes.popleft()

    def reset(self) -> None:
        """Forget everything in flight."""
        self._last_indexes.clear()

    def is_full(self) -> bool:
        """Whether the window allows no more appends."""
        return len(self._last_indexes) >= self._capacity

    def __len__(self) -> int:
        return len(self._last_indexes)


class Progress:
    """The leader's view of one follower (Fig. 2 nextIndex/matchIndex, plus flow control).

    Invariant: 0 <= match_index < next_index.
    """

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match_index = 0
        self.next_index = next_index
        self.state = ProgressState.PROBE
        # In PROBE, one append is outstanding at a time; a heartbeat tick unpauses it.
        self.probe_paused = False
        self.inflights = Inflights(max_inflight)
        # Set by any message from the follower; check-quorum reads and clears it.
        self.recent_active = False
        # Highest leader round (`seq`) this follower has acknowledged, for ReadIndex.
        self.acked_seq = 0
        # In SNAPSHOT: the index of the snapshot being sent.
        self.pending_snapshot = 0

    def become_probe(self) -> None:
        """Fall back to one append per round trip from just after the known match."""
        self.state = ProgressState.PROBE
        self.next_index = self.match_index + 1
        self.probe_paused = False
        self.inflights.reset()

    def become_replicate(self) -> None:
        """Stream appends optimistically from just after the known match."""
        self.state = ProgressState.REPLICATE
        self.next_index = self.match_index + 1
        self.probe_paused = False
        self.inflights.reset()

    def become_snapshot(self, snapshot_index: int) -> None:
        """Stop appending: the follower needs the snapshot ending at `snapshot_index`."""
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = snapshot_index
        self.probe_paused = False
        self.inflights.reset()

    def maybe_update(self, index: int) -> bool:
        """Record a success up to `index`; returns whether `match_index` moved forward."""
        updated = index > self.match_index
        if updated:
            self.match_index = index
            self.probe_paused = False
        self.next_index = max(self.next_index, index + 1)
        return updated

    def maybe_back_off(self, rejected_index: int, hint: int) -> bool:
        """Handle a rejection of `prev_index == rejected_index`; returns whether it applied.

        Stale rejections (for appends the follower has since accepted, or that are not the
        one currently probed) are ignored, so reordered responses cannot rewind progress.
        A rejection whose `hint` is below `match_index` is not stale: the follower now holds
        less than it acknowledged (its disk lost entries, e.g. one that lied about fsync),
        so the match is forgotten down to the hint. That only delays later commits; the
        commit index itself never moves back.
        """
        lost_entries = hint < self.match_index
        if self.state is ProgressState.SNAPSHOT:
            # Heartbeats to a follower awaiting a snapshot are rejected until it lands;
            # the snapshot's outcome, not these, decides what happens next.
            return False
        if self.state is ProgressState.REPLICATE:
            if rejected_index <= self.match_index and not lost_entries:
                return False
        elif self.next_index - 1 != rejected_index:
            return False
        if lost_entries:
            self.match_index = hint
        self.become_probe()
        self.next_index = max(self.match_index + 1, min(rejected_index, hint + 1))
        return True

    def sent(self, last_index: int, entry_count: int) -> None:
        """Account for an append just sent whose last entry is `last_index`."""
        if self.state is ProgressState.REPLICATE:
            if entry_count:
                self.next_index = last_index + 1
                self.inflights.add(last_index)
        elif self.state is ProgressState.PROBE:
            self.probe_paused = True

    def is_paused(self) -> bool:
        """Whether the leader should hold back further appends to this follower."""
        if self.state is ProgressState.PROBE:
            return self.probe_paused
        if self.state is ProgressState.REPLICATE:
            return self.inflights.is_full()
        return True
