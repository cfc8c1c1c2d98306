"""Leases as replicated state: which leases exist, their TTLs, and the keys attached.

Pure (floor L0 like `mvcc`): no clock. Time is the node's business (`zraft.node.leases`):
a lease's *deadline* lives only in each node's memory, derived from the log position where
the lease was last granted or refreshed (`refreshed_index`), so a replica never needs
another machine's clock. What is replicated here:

- `Lease`: `id`, granted `ttl` (seconds), the keys attached, and `refreshed_index`, the
  log index of the entry that last granted or refreshed it. An expiry entry names the
  `refreshed_index` it saw; if the lease was refreshed since, the expiry is stale and
  does nothing (so a keepalive acknowledged just before an expiry was proposed is never
  undone by it).
- Ids: a grant may name one (> 0, not in use); otherwise the lease gets the grant
  entry's index, or the smallest id above every id in use if that is taken: the same
  on every replica.
- The attached keys are not stored twice in snapshots: `restore` rebuilds them from the
  store's records (each live key knows its lease).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

MAX_LEASE_ID = (1 << 63) - 1
"""The largest lease id (etcd's ids are int64)."""


@dataclass(slots=True)
class Lease:
    """One lease (see the module doc)."""

    id: int
    ttl: int
    refreshed_index: int
    keys: set[bytes] = field(default_factory=set)


class LeaseTable:
    """Every lease of the store, by id."""

    def __init__(self) -> None:
        self._leases: dict[int, Lease] = {}

    def __len__(self) -> int:
        return len(self._leases)

    def __contains__(self, lease_id: object) -> bool:
        return lease_id in self._leases

    def get(self, lease_id: int) -> Lease | None:
        """The lease `lease_id`, or None."""
        return self._leases.get(lease_id)

    def ids(self) -> list[int]:
        """Every lease id, ascending."""
        return sorted(self._leases)

    def new_id(self, index: int) -> int:
        """The id a grant at log `index` without an id of its own gets."""
        if index not in self._leases:
            return index
        return max(self._leases) + 1

    def grant(self, lease_id: int, ttl: int, index: int) -> Lease:
        """Create lease `lease_id` (the caller checked that it is free)."""
        lease = Lease(lease_id, ttl, index)
        self._leases[lease_id] = lease
        return lease

    def refresh(self, lease_id: int, index: int) -> bool:
        """Mark `lease_id` refreshed at `index`; False if there is no such lease."""
        lease = self._leases.get(lease_id)
        if lease is None:
            return False
        lease.refreshed_index = index
        return True

    def remove(self, lease_id: int) -> Lease | None:
        """Forget lease `lease_id` (its keys are the caller's to delete)."""
        return self._leases.pop(lease_id, None)

    def attach(self, key: bytes, old: int, new: int) -> None:
        """`key` moved from lease `old` to lease `new` (0: none)."""
        if old == new:
            return
        if old:
            held = self._leases.get(old)
            if held is not None:
                held.keys.discard(key)
        if new:
            self._leases[new].keys.add(key)

    def export(self) -> list[list[int]]:
        """``[[id, ttl, refreshed_index], ...]`` ascending by id (keys come from the store)."""
        return [
            [lease.id, lease.ttl, lease.refreshed_index]
            for _, lease in sorted(self._leases.items())
        ]

    @classmethod
    def restore(cls, rows: Any, attached: Iterable[tuple[bytes, int]]) -> LeaseTable:
        """A table from `export`'s rows and the store's `(key, lease)` of every live key
        with a lease.

        Raises:
            ValueError: the rows are not a valid export, or a key names a missing lease.
        """
        table = cls()
        try:
            for lease_id, ttl, refreshed in rows:
                if not all(type(n) is int and n > 0 for n in (lease_id, ttl)):
                    raise ValueError(f"bad lease {lease_id!r}")
                if type(refreshed) is not int or refreshed < 0 or lease_id in table._leases:
                    raise ValueError(f"bad lease {lease_id!r}")
                table._leases[lease_id] = Lease(lease_id, ttl, refreshed)
        except TypeError as exc:
            raise ValueError(f"not a lease table: {exc!r}") from exc
        for key, lease_id in attached:
            lease = table._leases.get(lease_id)
            if lease is None:
                raise ValueError(f"key {key!r} is attached to lease {lease_id}, which is gone")
            lease.keys.add(key)
        return table
