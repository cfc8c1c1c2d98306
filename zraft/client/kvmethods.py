"""The key-value methods of `Client`: one method per store op, python-etcd3-familiar.

`KeyValueMethods` turns each call into the fields of one request (DESIGN.md §2) and
hands it to `request`, which the driver (`zraft.client.sync.Client`) implements with its
sessions, retries and deadline; it adds nothing else. Only fields that differ from their
defaults are sent, so the frames stay small and a plain call means what it always did.

Errors the cluster answers (`cas_failed`, `compacted`, `future_revision`,
`too_many_ops`, `bad_request`, `lease_not_found`, ...) come back as a `Reply` with `ok`
False and `error_code` set, like every other op's; misuse found before anything is sent
(an unknown sort order, a negative limit, `prefix` with a `range_end`, a lease id that is
not one) raises `ValueError`.

The lease ops are here too, raw (`lease_grant`, `lease_revoke`, `lease_keepalive`,
`lease_timetolive`, `lease_leases`: one request each, a `Reply` back); the `Lease` object
with its keepalive thread is `zraft.client.leases`, made by `Client.lease`.

This module must not do I/O or decide retries: it only builds requests.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from zraft.client.reply import Reply
from zraft.client.txn import Key, LeaseRef, as_compares, as_lease_id, as_ops, range_shape
from zraft.wire.fields import CONSISTENCY_LEVELS, SORT_ORDERS, SORT_TARGETS

ALL_KEYS = b"\0"
"""`key` and `range_end` of a range of every key (etcd's convention)."""


class KeyValueMethods:
    """The store's ops as methods (mixed into `Client`, which provides `request`).

    Keys and values are bytes or str (str is sent as UTF-8); replies hold bytes. Every
    method may raise `ClientTimeout` (no usable reply within the deadline) and
    `ClientAuthError`, as `request` does.
    """

    __slots__ = ()

    def request(self, op: str, **fields: Any) -> Reply:
        """Send one request and wait for its reply (the driver implements it)."""
        raise NotImplementedError

    # --- single keys ------------------------------------------------------------------

    def put(self, key: Key, value: Key, *, prev_kv: bool = False, lease: LeaseRef = 0) -> Reply:
        """Set `key` to `value`. Returns the reply (`index` = where it was applied,
        `revision` = the revision it made).

        Args:
            prev_kv: the reply's `prev_kv` then holds what was replaced (None if the key
                was new).
            lease: attach the key to this lease (an id or a `Lease`): it is deleted when
                the lease ends. 0, the default: no lease (a put without one detaches the
                key from the lease it had). A lease that does not exist is the error
                `lease_not_found`.

        Raises:
            ValueError: `lease` is not a lease id.
        """
        lease_id = as_lease_id(lease, allow_none=True)
        flags = _flags(prev_kv=prev_kv, lease=lease_id)
        return self.request("put", key=key, value=value, **flags)

    def get(self, key: Key, consistency: str = "linearizable") -> Reply:
        """Read `key`: `reply.found` tells whether it exists, `reply.value` holds it.

        Args:
            consistency: `linearizable` (through the leader) or `serializable` (served by
                the answering node from its own state; may be stale).

        Raises:
            ValueError: an unknown consistency level.
        """
        if consistency not in CONSISTENCY_LEVELS:
            raise ValueError(f"consistency must be one of {sorted(CONSISTENCY_LEVELS)}")
        return self.request("get", key=key, consistency=consistency)

    def delete(self, key: Key, *, prev_kv: bool = False) -> Reply:
        """Remove `key` (succeeds when it is already absent): `reply.deleted` is 0 or 1.

        Args:
            prev_kv: the reply's `prev_kvs` then holds what was removed.
        """
        return self.request("delete", key=key, **_flags(prev_kv=prev_kv))

    def cas(self, key: Key, expected: Key | None, new: Key) -> Reply:
        """Set `key` to `new` only if its value is `expected` (None: only if absent).

        A mismatch is the error `cas_failed`, with the current value in `reply.value`.
        """
        return self.request("cas", key=key, expected=expected, value=new)

    # --- ranges -----------------------------------------------------------------------

    def range(
        self,
        key: Key,
        range_end: Key | None = None,
        *,
        prefix: bool = False,
        limit: int = 0,
        sort_order: str = "none",
        sort_target: str = "key",
        keys_only: bool = False,
        count_only: bool = False,
        revision: int = 0,
        serializable: bool = False,
    ) -> Reply:
        """The keys of a range, at one revision: `reply.kvs`, `reply.count`, `reply.more`.

        Args:
            key: the first key (alone, without `range_end` or `prefix`).
            range_end: the end, excluded; `b"\\0"` = every key >= `key` (with `key`
                `b"\\0"` too: every key, see `get_all`).
            prefix: every key that starts with `key` (see `get_prefix`).
            limit: at most this many key-values (0: no limit); `more` says whether some
                were left out, `count` counts them all.
            sort_order: `none` (by key, ascending), `ascend` or `descend`.
            sort_target: `key`, `version`, `create`, `mod` or `value`.
            keys_only: key-values without their values.
            count_only: no key-values, only `count`.
            revision: read the store as it was at this revision (0: now). Below the
                compact revision the answer is the error `compacted` (`reply.
                compact_revision` says the oldest readable); above the current one,
                `future_revision`.
            serializable: served by the answering node from its own state (may be
                stale), instead of linearizable through the leader.

        Raises:
            ValueError: an unknown sort order or target, a negative limit or revision,
                or both `prefix` and `range_end`.
        """
        if sort_order not in SORT_ORDERS:
            raise ValueError(f"sort_order must be one of: {', '.join(SORT_ORDERS)}")
        if sort_target not in SORT_TARGETS:
            raise ValueError(f"sort_target must be one of: {', '.join(SORT_TARGETS)}")
        if limit < 0 or revision < 0:
            raise ValueError("limit and revision must be >= 0")
        fields = range_shape(key, range_end, prefix=prefix)
        fields.update(
            _flags(
                limit=limit,
                keys_only=keys_only,
                count_only=count_only,
                revision=revision,
                serializable=serializable,
            )
        )
        if sort_order != "none":
            fields["sort_order"] = sort_order
        if sort_target != "key":
            fields["sort_target"] = sort_target
        return self.request("range", **fields)

    def get_prefix(self, prefix: Key, **options: Any) -> Reply:
        """Every key that starts with `prefix` (an empty prefix: every key).

        `options` are `range`'s (`limit`, `sort_order`, `keys_only`, `revision`, ...).
        """
        if not prefix:
            return self.get_all(**options)
        return self.range(prefix, prefix=True, **options)

    def get_all(self, **options: Any) -> Reply:
        """Every key; `options` are `range`'s (`limit`, `sort_order`, `revision`, ...)."""
        return self.range(ALL_KEYS, ALL_KEYS, **options)

    def delete_range(
        self,
        key: Key,
        range_end: Key | None = None,
        *,
        prefix: bool = False,
        prev_kv: bool = False,
    ) -> Reply:
        """Remove every key of a range (see `range` for `range_end` and `prefix`):
        `reply.deleted` says how many.

        Args:
            prev_kv: the reply's `prev_kvs` then holds what was removed.

        Raises:
            ValueError: both `prefix` and `range_end`.
        """
        fields = range_shape(key, range_end, prefix=prefix)
        return self.request("delete_range", **fields, **_flags(prev_kv=prev_kv))

    def delete_prefix(self, prefix: Key, *, prev_kv: bool = False) -> Reply:
        """Remove every key that starts with `prefix`: `reply.deleted` says how many.

        Raises:
            ValueError: an empty prefix (to remove every key, say so:
                `delete_range(b"\\0", b"\\0")`).
        """
        if not prefix:
            raise ValueError('an empty prefix; use delete_range(b"\\0", b"\\0") for every key')
        return self.delete_range(prefix, prefix=True, prev_kv=prev_kv)

    # --- transactions and compaction ----------------------------------------------------

    def transaction(
        self,
        compare: Iterable[Mapping[str, Any]] = (),
        success: Iterable[Mapping[str, Any]] = (),
        failure: Iterable[Mapping[str, Any]] = (),
    ) -> Reply:
        """If every compare holds run `success`, else `failure`; atomically, at one
        revision. `reply.succeeded` says which ran, `reply.responses` holds one answer
        per op of that branch.

        Args:
            compare: compares (`zraft.client.txn`: `value(k) == b"v"`, `version(k) > 0`,
                ...) or their maps; none: `success` runs.
            success: ops (`put_op`, `range_op`, `delete_op`) or their maps.
            failure: the same, run when a compare does not hold.

        Returns:
            The reply; errors include `too_many_ops` (a branch longer than the cluster
            allows) and `bad_request` (e.g. a key written twice in one branch).

        Raises:
            TypeError: an entry is not a map (e.g. a compare target never compared).
        """
        fields: dict[str, Any] = {}
        compares = as_compares(compare)
        if compares:
            fields["compare"] = compares
        for name, ops in (("success", success), ("failure", failure)):
            branch = as_ops(ops, name)
            if branch:
                fields[name] = branch
        return self.request("txn", **fields)

    txn = transaction

    def compact(self, revision: int) -> Reply:
        """Forget the history before `revision`: reads below it answer `compacted`.

        The reply's `compact_revision` is the new compact revision. Compacting at or
        below the current compact revision answers `compacted`; above the store's
        revision, `future_revision`.

        Raises:
            ValueError: a revision that is not an int >= 0.
        """
        if type(revision) is not int or revision < 0:
            raise ValueError("revision must be an int >= 0")
        return self.request("compact", revision=revision)

    # --- leases -----------------------------------------------------------------------

    def lease_grant(self, ttl: int, lease: int = 0) -> Reply:
        """Grant a lease of `ttl` seconds: `reply.lease` is its id, `reply.ttl` its TTL.

        Args:
            ttl: seconds the lease lives without a keepalive. The cluster refuses one
                shorter than 1.5 election timeouts (rounded up to a second) or longer
                than 9,000,000,000 (`bad_request`).
            lease: the id to give it (1 to 2**63-1); 0, the default: the cluster picks
                one. An id in use is refused (`bad_request`).

        Raises:
            ValueError: `ttl` is not an int >= 1, or `lease` is not a lease id.
        """
        if type(ttl) is not int or ttl < 1:
            raise ValueError(f"ttl must be an int >= 1 (seconds), got {ttl!r}")
        fields = _flags(lease=as_lease_id(lease, allow_none=True))
        return self.request("lease_grant", ttl=ttl, **fields)

    def lease_revoke(self, lease: LeaseRef) -> Reply:
        """End `lease` now: every key attached to it is deleted, at one revision.

        A lease that is already gone is the error `lease_not_found`.

        Raises:
            ValueError: `lease` is not a lease id.
        """
        return self.request("lease_revoke", lease=as_lease_id(lease))

    def lease_keepalive(self, lease: LeaseRef) -> Reply:
        """Restart `lease`'s clock once: `reply.remaining` (= `reply.ttl`) seconds more.

        Answered by the leader once the refresh is in the log. A lease that is gone
        (expired, revoked) is the error `lease_not_found`. To keep a lease alive, see
        `Client.lease` and `Lease.start_keepalive`.

        Raises:
            ValueError: `lease` is not a lease id.
        """
        return self.request("lease_keepalive", lease=as_lease_id(lease))

    def lease_timetolive(self, lease: LeaseRef, keys: bool = False) -> Reply:
        """`lease`'s granted `reply.ttl` and `reply.remaining` seconds (as the leader
        counts them, rounded up), and with `keys` the keys attached (`reply.keys`).

        A lease that is gone is the error `lease_not_found`.

        Raises:
            ValueError: `lease` is not a lease id.
        """
        return self.request("lease_timetolive", lease=as_lease_id(lease), **_flags(keys=keys))

    def lease_leases(self) -> Reply:
        """The id of every lease, ascending: `reply.leases`."""
        return self.request("lease_leases")


def _flags(**options: Any) -> dict[str, Any]:
    """The options that differ from their default (False or 0): the fields to send."""
    return {name: given for name, given in options.items() if given}
