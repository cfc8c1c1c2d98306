"""Where members can be reached: the endpoint directory a node keeps beside its membership.

The Raft core knows members by id only. To send to a member, a node needs its peer
endpoint; to point clients at it, its client endpoint; with CURVE on, its public key too:
both to connect (the key its peer ROUTER serves with) and to admit it (the ZAP handler
names a connection by its key). The static configuration file names the nodes a
brand-new cluster starts with; every membership change after that carries the directory
itself: a CONFIG entry's *context* (opaque to the core) is the whole directory,
msgpack-encoded as ``{id: [peer, client, public_key]}`` (the key as Z85 text, "" when the
cluster runs without CURVE), and a snapshot's header carries it too. So a node restarted
from its log or a snapshot, or one that joined later, knows how to reach every member
the file never mentioned.

The directory only grows or updates once a change is appended: an id once seen keeps
its last endpoints, even after the member is removed (a dealer to it is harmless; its key
is revoked, see `zraft.node.admin`). A change the leader refuses leaves nothing behind
(`restore`). Whom to send to is the core's decision, not the directory's.

Member ids are never reused (as etcd's). When the leader proposes a removal it marks the
id *retired* in the directory that entry carries (its entry gains a fourth element,
``"retired"``), and the mark stays: every later CONFIG entry and snapshot carries it, so
every replica knows the same retired ids as soon as it holds the removal. A snapshot's
header lists them (``"retired"``) beside its directory. An earlier release cannot read a
marked directory, so the leader writes marks only once every other member has said in its
`Hello` that it reads them (`RETIRED_MARKS`); until then a removal goes in unmarked, as
that release wrote it, and is retired as it applies (below). Data of an earlier release has no
marks: a removal found in its log (a CONFIG entry without a member of the one before it)
marks the id when applied, and a snapshot header without ``"retired"`` retires the
directory's ids that are not members (`retired_from_header`), which may include an id
whose addition never committed.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import msgpack

from zraft.core.membership import is_valid_id
from zraft.core.types import NodeId

MAX_ENDPOINT_LEN = 256
MAX_MEMBERS = 1024
Z85_KEY_LEN = 40

RETIRED = "retired"
"""The fourth element of a retired id's directory entry."""

RETIRED_MARKS = "retired-marks"
"""The feature a release names in its `Hello` when it reads retired marks: a leader writes
them only once every other member does (`zraft.node.upkeep`)."""

Entry = tuple[str, str, str]
"""(peer endpoint, client endpoint, Z85 public key or "")."""


class Endpoints:
    """A node's directory: member id -> (peer endpoint, client endpoint, public key)."""

    def __init__(self, initial: Iterable[tuple[NodeId, str, str, str]] = ()) -> None:
        self._by_id: dict[NodeId, Entry] = {}
        self._retired: set[NodeId] = set()
        for node_id, peer, client, key in initial:
            self._by_id[node_id] = (peer, client, key)

    @property
    def retired(self) -> frozenset[NodeId]:
        """The ids marked retired (removed from the cluster: never members again)."""
        return frozenset(self._retired)

    def retire(self, node_id: NodeId) -> bool:
        """Mark `node_id` retired; returns whether it was not marked before."""
        if node_id in self._retired:
            return False
        self._retired.add(node_id)
        return True

    def unretire(self, node_id: NodeId) -> None:
        """Undo a `retire` whose removal was refused."""
        self._retired.discard(node_id)

    def __contains__(self, node_id: object) -> bool:
        return node_id in self._by_id

    def peer(self, node_id: NodeId) -> str | None:
        """The peer endpoint of `node_id`, if known."""
        entry = self._by_id.get(node_id)
        return entry[0] if entry else None

    def client(self, node_id: NodeId) -> str | None:
        """The client endpoint of `node_id`, if known."""
        entry = self._by_id.get(node_id)
        return entry[1] if entry else None

    def public_key(self, node_id: NodeId) -> str:
        """The Z85 public key of `node_id` ("" if unknown or not used)."""
        entry = self._by_id.get(node_id)
        return entry[2] if entry else ""

    def set(self, node_id: NodeId, peer: str, client: str, public_key: str = "") -> None:
        """Record (or update) one member's endpoints and key."""
        self._by_id[node_id] = (peer, client, public_key)

    def entry(self, node_id: NodeId) -> Entry | None:
        """What is recorded for `node_id`, if anything (to `restore` it later)."""
        return self._by_id.get(node_id)

    def restore(self, node_id: NodeId, entry: Entry | None) -> None:
        """Put back what `entry` returned: undo a `set` whose change was refused."""
        if entry is None:
            self._by_id.pop(node_id, None)
        else:
            self._by_id[node_id] = entry

    def merge(self, other: Mapping[NodeId, Entry], retired: Iterable[NodeId] = ()) -> bool:
        """Take every entry of `other` and every retired mark; returns whether an entry
        changed (marks never go away)."""
        changed = False
        for node_id, endpoints in other.items():
            if self._by_id.get(node_id) != endpoints:
                self._by_id[node_id] = endpoints
                changed = True
        self._retired.update(retired)
        return changed

    def peers_of(self, own_id: NodeId) -> dict[NodeId, str]:
        """Every known peer endpoint except our own."""
        return {i: entry[0] for i, entry in self._by_id.items() if i != own_id}

    def keys_of(self, own_id: NodeId) -> dict[NodeId, bytes]:
        """Every known peer public key (Z85 bytes) except our own."""
        return {i: e[2].encode() for i, e in self._by_id.items() if i != own_id and e[2]}

    def as_dict(self) -> dict[NodeId, Entry]:
        """A copy of the whole directory."""
        return dict(self._by_id)

    def encode(self, *, marks: bool = True) -> bytes:
        """The directory as a CONFIG entry's context; without the retired `marks` when a
        member's release could not read them (the format an earlier release wrote)."""
        return msgpack.packb(  # type: ignore[no-any-return]
            {
                i: [*entry, RETIRED] if marks and i in self._retired else list(entry)
                for i, entry in sorted(self._by_id.items())
            },
            use_bin_type=True,
        )


def decode_endpoints(data: bytes) -> tuple[dict[NodeId, Entry], frozenset[NodeId]]:
    """Parse a CONFIG entry's context into the directory and its retired ids; an empty
    context is an empty directory.

    Raises:
        ValueError: `data` is not a valid directory.
    """
    if not data:
        return {}, frozenset()
    try:
        raw = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            max_map_len=MAX_MEMBERS,
            max_array_len=4,
            max_str_len=MAX_ENDPOINT_LEN,
            max_bin_len=0,
        )
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as exc:
        raise ValueError(f"not a member directory: {exc}") from exc
    return directory_from_plain(raw)


def endpoints_from_plain(raw: Any) -> dict[NodeId, Entry]:
    """Validate ``{id: [peer, client, public_key]}`` (as msgpack decodes it)."""
    return directory_from_plain(raw)[0]


def directory_from_plain(raw: Any) -> tuple[dict[NodeId, Entry], frozenset[NodeId]]:
    """Validate ``{id: [peer, client, public_key(, "retired")]}`` (as msgpack decodes it):
    the directory and the ids marked retired.

    Raises:
        ValueError: the shape or a value is wrong.
    """
    if type(raw) is not dict:
        raise ValueError("a member directory must be a map")
    out: dict[NodeId, Entry] = {}
    retired: set[NodeId] = set()
    for node_id, entry in raw.items():
        if type(node_id) is not str or not is_valid_id(node_id):
            raise ValueError(f"bad member id {node_id!r}")
        if type(entry) is list and len(entry) == 4 and entry[3] == RETIRED:
            retired.add(node_id)
            entry = entry[:3]
        if (
            type(entry) is not list
            or len(entry) != 3
            or not all(type(e) is str and 0 < len(e) <= MAX_ENDPOINT_LEN for e in entry[:2])
            or type(entry[2]) is not str
            or len(entry[2]) not in (0, Z85_KEY_LEN)
        ):
            raise ValueError(f"member {node_id}: expected [peer, client, public key]")
        out[node_id] = (entry[0], entry[1], entry[2])
    return out, frozenset(retired)


def retired_from_header(
    header: dict[str, Any], members: Iterable[NodeId]
) -> frozenset[NodeId] | str:
    """The retired ids a snapshot header records, or why they cannot be read.

    A header without ``"retired"`` (written by an earlier release) retires every id its
    directory names that is not a member.
    """
    members = frozenset(members)
    if "retired" not in header:
        directory = header.get("endpoints")
        known = frozenset(directory) if type(directory) is dict else frozenset()
        return frozenset(i for i in known if type(i) is str) - members
    raw = header["retired"]
    if (
        type(raw) is not list
        or len(raw) > MAX_MEMBERS
        or not all(type(i) is str and is_valid_id(i) for i in raw)
    ):
        return f"the snapshot's retired ids are not a list of at most {MAX_MEMBERS} node ids"
    return frozenset(raw) - members
