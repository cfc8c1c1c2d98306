"""The values of the multi-version store (`zraft.state.mvcc`): a key's record as callers
see it, what a range returns, the errors of reading at a revision, and range helpers.

Pure (floor L0): plain data, no I/O.
"""

from __future__ import annotations

from dataclasses import dataclass

SORT_TARGETS = ("key", "version", "create", "mod", "value")
"""What `range` may sort by (etcd's `sort_target`)."""

SORT_ORDERS = ("none", "ascend", "descend")
"""How `range` may sort (`none`: by key, ascending, as etcd does)."""


class Compacted(ValueError):
    """A read (or compaction) at a revision that compaction already removed."""

    def __init__(self, revision: int, compact_revision: int) -> None:
        super().__init__(
            f"revision {revision} is compacted (the compact revision is {compact_revision})"
        )
        self.compact_revision = compact_revision


class FutureRevision(ValueError):
    """A read (or compaction) at a revision the store has not reached."""

    def __init__(self, revision: int, current: int) -> None:
        super().__init__(f"revision {revision} is in the future (the current is {current})")
        self.current = current


@dataclass(frozen=True, slots=True)
class KeyValue:
    """One record of a key: a version of it, or (version 0) the tombstone of a delete."""

    key: bytes
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0

    @property
    def is_tombstone(self) -> bool:
        """Whether this record marks a delete."""
        return self.version == 0


@dataclass(frozen=True, slots=True)
class RangeResult:
    """What `range` found: `kvs` (at most `limit`), whether `more` matched, and `count`,
    how many keys matched in all, at `revision`."""

    kvs: tuple[KeyValue, ...]
    more: bool
    count: int
    revision: int


def prefix_end(prefix: bytes) -> bytes:
    """The `range_end` of every key that starts with `prefix` (`b"\\0"`: to the end)."""
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return b"\0"
    return stripped[:-1] + bytes([stripped[-1] + 1])
