"""What the lease commands do to the store and the lease table, and the replies they give.

Deterministic and pure like `execute`: the same store, table and entry give the same
state and reply on every replica. A lease's clock is not here (`zraft.node.leases`); the
functions return `LeaseEvent`s so the node can start, restart or stop one.

- `grant`: a new lease (a named id must be free: `bad_request` otherwise). No revision.
- `revoke`: the lease goes, and every key attached to it is deleted, in key order, at
  one revision (none if it had no keys). An unknown lease: `lease_not_found`.
- `refresh`: the keepalives of one leader turn: each named lease that still exists is
  marked refreshed at this entry's index.
- `expire`: each named lease whose `refreshed_index` is still the one the leader saw is
  revoked (one revision per lease that had keys); a lease refreshed since stays.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from zraft.state.execute import Fields, Reply, lease_not_found
from zraft.state.leases import LeaseTable
from zraft.state.mvcc import MVCCStore


@dataclass(frozen=True, slots=True)
class LeaseEvent:
    """A lease's clock must (re)start (`ttl` set: granted, refreshed, or restored) or
    stop (`ttl` None: revoked or expired; `expired` says which, `keys` how many went)."""

    lease: int
    ttl: int | None
    expired: bool = False
    keys: int = 0


def grant(
    store: MVCCStore, leases: LeaseTable, fields: Fields, index: int
) -> tuple[Reply, LeaseEvent | None]:
    """Serve `lease_grant`."""
    wanted, ttl = fields.get("lease", 0), fields["ttl"]
    if wanted and wanted in leases:
        message = f"lease {wanted} already exists"
        return {"ok": False, "error": "bad_request", "message": message, "index": index}, None
    lease_id = wanted or leases.new_id(index)
    leases.grant(lease_id, ttl, index)
    reply = {
        "ok": True,
        "revision": store.revision,
        "index": index,
        "extra": {"lease": lease_id, "ttl": ttl},
    }
    return reply, LeaseEvent(lease_id, ttl)


def revoke(
    store: MVCCStore, leases: LeaseTable, lease_id: int, index: int, *, expired: bool = False
) -> tuple[Reply, LeaseEvent | None]:
    """Serve `lease_revoke` (or an expiry): delete the lease's keys at one revision."""
    lease = leases.remove(lease_id)
    if lease is None:
        reply = lease_not_found(lease_id, store.revision)
        reply["index"] = index
        return reply, None
    if lease.keys:
        change = store.write()
        for key in sorted(lease.keys):
            change.delete_range(key)
        change.finish()
    reply = {"ok": True, "revision": store.revision, "index": index}
    return reply, LeaseEvent(lease_id, None, expired, len(lease.keys))


def refresh(leases: LeaseTable, ids: tuple[int, ...], index: int) -> list[LeaseEvent]:
    """Apply a refresh entry: the leases that still exist start their TTL again."""
    events = []
    for lease_id in ids:
        if leases.refresh(lease_id, index):
            lease = leases.get(lease_id)
            assert lease is not None
            events.append(LeaseEvent(lease_id, lease.ttl))
    return events


def expire(
    store: MVCCStore, leases: LeaseTable, items: tuple[tuple[int, int], ...], index: int
) -> list[LeaseEvent]:
    """Apply an expiry entry: revoke each lease not refreshed since the leader looked."""
    events = []
    for lease_id, refreshed in items:
        lease = leases.get(lease_id)
        if lease is None or lease.refreshed_index != refreshed:
            continue  # gone already, or a keepalive was logged after the leader looked
        _, event = revoke(store, leases, lease_id, index, expired=True)
        if event is not None:
            events.append(event)
    return events


def time_to_live(leases: LeaseTable, lease_id: int, with_keys: bool) -> dict[str, Any] | None:
    """The replicated half of `lease_timetolive` (the node adds `remaining`), or None."""
    lease = leases.get(lease_id)
    if lease is None:
        return None
    answer: dict[str, Any] = {"lease": lease_id, "ttl": lease.ttl}
    if with_keys:
        answer["keys"] = sorted(lease.keys)
    return answer
