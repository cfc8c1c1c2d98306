"""Builders for transactions (`Client.transaction`), read the way python-etcd3's are.

A compare is written as a comparison on what to look at, and each operation of a branch
with a small function; both produce the plain maps the protocol carries (DESIGN.md §2),
so a builder's output and a hand-written map are interchangeable:

    from zraft.client import txn
    client.transaction(
        compare=[txn.value("lock") == b"", txn.version("config") > 0],
        success=[txn.put_op("lock", "me", prev_kv=True), txn.range_op("config")],
        failure=[txn.range_op("lock")],
    )

Compare targets: `value`, `version`, `create_revision` (alias `create`), `mod_revision`
(alias `mod`) and `lease`, each of one key, or of every key of a range (`range_end`, or
`prefix=True`): then the compare must hold for every key in it. Comparisons: `==`, `!=`,
`<`, `>` (the four etcd knows; `<=` and `>=` raise TypeError). Against a missing key,
`version`, `create`, `mod` and `lease` compare as 0, and a `value` compare fails.

Rules it keeps: only what can be checked without the server is checked here (the shape of
each map: a bytes or str operand for `value`, an int >= 0 for the others; `prefix` or
`range_end`, not both); the server validates the rest (sizes, op limits, a key written
twice). No I/O: this module only builds values.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from zraft.wire.fields import MAX_LEASE_ID

Key = bytes | str
"""A key as the client takes it (str is sent as UTF-8)."""


class HasLeaseId(Protocol):
    """Anything that names a lease by its `id` (a `zraft.client.leases.Lease`)."""

    @property
    def id(self) -> int:
        """The lease id."""
        ...


LeaseRef = int | HasLeaseId
"""A lease as the client takes it: its id, or an object with an int `id` (a `Lease`)."""

CompareMap = dict[str, Any]
"""One compare, as `txn`'s `compare` list carries it."""

OpMap = dict[str, Any]
"""One operation of a branch, as `txn`'s `success` and `failure` lists carry it."""

__all__ = [
    "CompareMap",
    "CompareTarget",
    "HasLeaseId",
    "Key",
    "LeaseRef",
    "OpMap",
    "as_compares",
    "as_lease_id",
    "as_ops",
    "create",
    "create_revision",
    "delete_op",
    "lease",
    "mod",
    "mod_revision",
    "put_op",
    "range_op",
    "range_shape",
    "value",
    "version",
]


def range_shape(key: Key, range_end: Key | None = None, *, prefix: bool = False) -> dict[str, Any]:
    """The `key`, `range_end` and `prefix` fields of a range (defaults left out).

    Raises:
        ValueError: both `prefix` and `range_end` are given (each says where it ends).
    """
    if prefix and range_end is not None:
        raise ValueError("give prefix=True or a range_end, not both")
    fields: dict[str, Any] = {"key": key}
    if range_end is not None:
        fields["range_end"] = range_end
    if prefix:
        fields["prefix"] = True
    return fields


class CompareTarget:
    """What a compare looks at: `target` of `key` (or of every key of a range).

    Compare it with `==`, `!=`, `<` or `>` to get the compare map. Build one with the
    functions `value`, `version`, `create_revision`, `mod_revision` and `lease`.

    Args:
        target: `value`, `version`, `create`, `mod` or `lease`.
        key: the key (or the range's first key).
        range_end: the end of a range of keys, excluded (`b"\\0"`: every key from `key`).
        prefix: True for every key that starts with `key`.

    Raises:
        ValueError: an unknown target, or both `prefix` and `range_end`.
    """

    __slots__ = ("_fields", "target")
    __hash__ = None  # type: ignore[assignment]  # `==` builds a compare, not a bool

    def __init__(
        self, target: str, key: Key, range_end: Key | None = None, *, prefix: bool = False
    ) -> None:
        if target not in _TARGETS:
            raise ValueError(f"target must be one of: {', '.join(_TARGETS)}")
        self.target = target
        self._fields = range_shape(key, range_end, prefix=prefix)

    def _compare(self, result: str, operand: object) -> CompareMap:
        if self.target == "value":
            if not isinstance(operand, bytes | str):
                raise ValueError(f"a value compare needs bytes or str, got {operand!r}")
        elif type(operand) is not int or operand < 0:
            raise ValueError(f"a {self.target} compare needs an int >= 0, got {operand!r}")
        return {**self._fields, "target": self.target, "result": result, "operand": operand}

    def __eq__(self, operand: object) -> CompareMap:  # type: ignore[override]
        return self._compare("equal", operand)

    def __ne__(self, operand: object) -> CompareMap:  # type: ignore[override]
        return self._compare("not_equal", operand)

    def __lt__(self, operand: object) -> CompareMap:
        return self._compare("less", operand)

    def __gt__(self, operand: object) -> CompareMap:
        return self._compare("greater", operand)

    def __repr__(self) -> str:
        shown = ", ".join(f"{k}={v!r}" for k, v in self._fields.items())
        return f"CompareTarget({self.target!r}, {shown})"


_TARGETS = ("value", "version", "create", "mod", "lease")


def value(key: Key, range_end: Key | None = None, *, prefix: bool = False) -> CompareTarget:
    """The value of `key`: `value("k") == b"v"` (bytes or str)."""
    return CompareTarget("value", key, range_end, prefix=prefix)


def version(key: Key, range_end: Key | None = None, *, prefix: bool = False) -> CompareTarget:
    """The version of `key` (0: absent): `version("k") > 0` means "exists"."""
    return CompareTarget("version", key, range_end, prefix=prefix)


def create_revision(
    key: Key, range_end: Key | None = None, *, prefix: bool = False
) -> CompareTarget:
    """The revision that created `key` (0: absent): `create_revision("k") == 0`."""
    return CompareTarget("create", key, range_end, prefix=prefix)


def mod_revision(key: Key, range_end: Key | None = None, *, prefix: bool = False) -> CompareTarget:
    """The revision of `key`'s last change (0: absent): `mod_revision("k") < 5`."""
    return CompareTarget("mod", key, range_end, prefix=prefix)


def lease(key: Key, range_end: Key | None = None, *, prefix: bool = False) -> CompareTarget:
    """The lease of `key` (0: none, or absent): `lease("k") == 0`."""
    return CompareTarget("lease", key, range_end, prefix=prefix)


create = create_revision
"""python-etcd3's name for `create_revision`."""

mod = mod_revision
"""python-etcd3's name for `mod_revision`."""


def put_op(key: Key, value: Key, *, prev_kv: bool = False, lease: LeaseRef = 0) -> OpMap:
    """A put in a branch; with `prev_kv`, its response carries what it replaced.

    Args:
        lease: attach the key to this lease (an id or a `Lease`); 0, the default: the
            key has no lease (a put without one detaches it from its old lease).

    Raises:
        ValueError: `lease` is not a lease id (an int from 0 to 2**63-1).
    """
    op: OpMap = {"op": "put", "key": key, "value": value}
    if prev_kv:
        op["prev_kv"] = True
    lease_id = as_lease_id(lease, allow_none=True)
    if lease_id:
        op["lease"] = lease_id
    return op


def as_lease_id(lease: LeaseRef, *, allow_none: bool = False) -> int:
    """The id of `lease` (an int, or an object with an int `id`, such as a `Lease`).

    Args:
        allow_none: accept 0 (no lease: a `put`'s default).

    Raises:
        ValueError: not an int (bools are not ids) from 1 (0 with `allow_none`) to
            2**63-1.
    """
    lease_id = lease if isinstance(lease, int) else getattr(lease, "id", None)
    low = 0 if allow_none else 1
    if type(lease_id) is not int or not low <= lease_id <= MAX_LEASE_ID:
        raise ValueError(f"a lease id must be an int from {low} to 2**63-1, got {lease!r}")
    return lease_id


def range_op(
    key: Key,
    range_end: Key | None = None,
    *,
    prefix: bool = False,
    limit: int = 0,
    keys_only: bool = False,
    count_only: bool = False,
) -> OpMap:
    """A read in a branch: it sees the branch's writes before it (as in etcd).

    Args:
        key, range_end, prefix: what to read (see `Client.range`).
        limit: at most this many keys (0: no limit).
        keys_only: keys without their values.
        count_only: only how many keys match.

    Raises:
        ValueError: a negative limit, or both `prefix` and `range_end`.
    """
    if limit < 0:
        raise ValueError("limit must be >= 0")
    op: OpMap = {"op": "range", **range_shape(key, range_end, prefix=prefix)}
    for name, given in (("limit", limit), ("keys_only", keys_only), ("count_only", count_only)):
        if given:
            op[name] = given
    return op


def delete_op(
    key: Key, range_end: Key | None = None, *, prefix: bool = False, prev_kv: bool = False
) -> OpMap:
    """A delete of `key` (or of a range) in a branch; with `prev_kv`, its response
    carries what it removed.

    Raises:
        ValueError: both `prefix` and `range_end`.
    """
    op: OpMap = {"op": "delete_range", **range_shape(key, range_end, prefix=prefix)}
    if prev_kv:
        op["prev_kv"] = True
    return op


def as_compares(compares: Iterable[Mapping[str, Any]]) -> list[CompareMap]:
    """The `compare` field of a transaction: each compare as a plain map.

    Raises:
        TypeError: an entry is not a map (e.g. a `CompareTarget` never compared).
    """
    return [_as_map(c, "compare") for c in compares]


def as_ops(ops: Iterable[Mapping[str, Any]], branch: str) -> list[OpMap]:
    """The `success` or `failure` field of a transaction: each op as a plain map.

    Raises:
        TypeError: an entry is not a map.
    """
    return [_as_map(op, branch) for op in ops]


def _as_map(item: object, where: str) -> dict[str, Any]:
    if not isinstance(item, Mapping):
        raise TypeError(f"every {where} entry must be a map (a builder's result), got {item!r}")
    return dict(item)
