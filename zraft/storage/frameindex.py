"""`FrameIndex`: where the live entries of the write-ahead log are, compactly.

`FileStorage` keeps one of these so it can read entries back without rescanning segments.
"""

from __future__ import annotations

import bisect
from array import array


class FrameIndex:
    """Where each save frame holding live entries is, in index order: 24 bytes a frame.

    Frame i holds the live entries [firsts[i], firsts[i + 1] - 1]; the last frame's end at
    the log's last index. Entries a frame still holds past that were truncated away.
    Arrays, not objects: a node makes thousands of saves a second.
    """

    def __init__(self) -> None:
        self.seqs = array("Q")  # Invariant: non-decreasing (segments are written in order)
        self.offsets = array("Q")
        self.firsts = array("Q")  # Invariant: strictly increasing

    def __len__(self) -> int:
        return len(self.firsts)

    def append(self, seq: int, offset: int, first_index: int) -> None:
        """Record a frame whose first entry is `first_index`."""
        self.seqs.append(seq)
        self.offsets.append(offset)
        self.firsts.append(first_index)

    def truncate(self, from_index: int) -> None:
        """Forget the frames starting at or after `from_index`."""
        self._delete(slice(bisect.bisect_left(self.firsts, from_index), None))

    def drop_prefix(self, count: int) -> None:
        """Forget the first `count` frames (their segment was deleted)."""
        self._delete(slice(0, count))

    def position(self, index: int) -> int:
        """Position of the frame holding entry `index` (which must be live)."""
        return bisect.bisect_right(self.firsts, index) - 1

    def count_in(self, seq: int) -> int:
        """How many frames (a prefix, when `seq` is the oldest segment) lie in `seq`."""
        return bisect.bisect_right(self.seqs, seq)

    def _delete(self, where: slice) -> None:
        del self.seqs[where]
        del self.offsets[where]
        del self.firsts[where]
