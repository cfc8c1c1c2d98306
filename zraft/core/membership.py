"""Membership changes as data: the change kinds, their rules, and the CONFIG entry format.

zraft changes membership one server at a time (Raft thesis §4.1): each CONFIG entry holds
the WHOLE new membership, and every node uses the newest CONFIG entry in its log as soon
as it is appended, committed or not. Any two adjacent memberships differ by one server,
so their majorities overlap and two leaders cannot be elected in one term.

The format of a CONFIG entry's data (ASCII header, then the driver's opaque bytes)::

    zraft-config/1 <voters, comma separated> <learners, comma separated or ->\n<context>

A learner written with a trailing ``+`` (``n4+``) is to be promoted once caught up
(`Membership.promotable`); ``+`` cannot appear in an id.

The context is the driver's business (zraft puts every member's endpoints there, so a
node can reach a member the static configuration file never named). Node ids are limited
to ASCII letters, digits and ``_ . -`` (a letter or digit first) so the header needs no
escaping.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from zraft.core.types import Membership, NodeId

_MAGIC = b"zraft-config/1 "
_ID_EXTRA = frozenset("_.-")
MAX_ID_LEN = 64


class ChangeKind(StrEnum):
    """What a single-server change does."""

    ADD_LEARNER = "add_learner"  # a new node joins without a vote
    PROMOTE = "promote"  # a caught-up learner becomes a voter
    REMOVE = "remove"  # a voter or learner leaves


@dataclass(frozen=True, slots=True)
class MembershipChange:
    """One single-server change.

    Args:
        kind: what to do.
        node_id: the server it concerns.
        promote_when_caught_up: for ADD_LEARNER, let the leader promote the learner by
            itself once its log is close to the leader's (an `add_member` without
            `learner`: the new node never votes before it could help commit).
    """

    kind: ChangeKind
    node_id: NodeId
    promote_when_caught_up: bool = False


def is_valid_id(node_id: str) -> bool:
    """Whether `node_id` may be a member: 1-64 ASCII letters, digits, `_`, `.` or `-`,
    starting with a letter or digit (so `-` can mean "no learners" in the header)."""
    return (
        0 < len(node_id) <= MAX_ID_LEN
        and node_id.isascii()
        and node_id[0].isalnum()
        and all(c.isalnum() or c in _ID_EXTRA for c in node_id)
    )


def apply_change(current: Membership, change: MembershipChange) -> Membership:
    """The membership after `change`.

    Raises:
        ValueError: the change makes no sense for `current` (the message says why).
    """
    node = change.node_id
    if not is_valid_id(node):
        raise ValueError(f"invalid node id {node!r}: use 1-64 of A-Z a-z 0-9 _ . - (alnum first)")
    voters, learners = current.voters, current.learners
    if change.kind is ChangeKind.ADD_LEARNER:
        if node in current.members:
            role = "voter" if node in voters else "learner"
            raise ValueError(f"{node} is already a {role}")
        promotable = current.promotable | ({node} if change.promote_when_caught_up else set())
        return Membership(voters, learners | {node}, promotable)
    if change.kind is ChangeKind.PROMOTE:
        if node in voters:
            raise ValueError(f"{node} is already a voter")
        if node not in learners:
            raise ValueError(f"{node} is not a member; add it as a learner first")
        return Membership(voters | {node}, learners - {node}, current.promotable - {node})
    if node not in current.members:
        raise ValueError(f"{node} is not a member")
    if voters == {node}:
        raise ValueError(f"{node} is the last voter; a cluster needs one")
    return Membership(voters - {node}, learners - {node}, current.promotable - {node})


def encode_config(membership: Membership, context: bytes = b"") -> bytes:
    """The data of a CONFIG entry holding `membership` and the driver's `context`."""
    voters = ",".join(sorted(membership.voters))
    learners = ",".join(
        f"{i}+" if i in membership.promotable else i for i in sorted(membership.learners)
    )
    learners = learners or "-"
    return _MAGIC + f"{voters} {learners}\n".encode("ascii") + context


def decode_config(data: bytes) -> tuple[Membership, bytes]:
    """Parse a CONFIG entry's data into (membership, context).

    Raises:
        ValueError: `data` is not a valid CONFIG entry.
    """
    if not data.startswith(_MAGIC):
        raise ValueError("not a config entry (bad magic)")
    end = data.find(b"\n", len(_MAGIC))
    if end < 0:
        raise ValueError("config entry header is not terminated")
    try:
        header = data[len(_MAGIC) : end].decode("ascii")
    except UnicodeDecodeError:
        raise ValueError("config entry header is not ASCII") from None
    parts = header.split(" ")
    if len(parts) != 2:
        raise ValueError("config entry header needs voters and learners")
    voters = _id_set(parts[0])
    marked = [] if parts[1] == "-" else parts[1].split(",")
    learners = _id_set(",".join(i.removesuffix("+") for i in marked)) if marked else frozenset()
    promotable = frozenset(i.removesuffix("+") for i in marked if i.endswith("+"))
    try:
        return Membership(voters, learners, promotable), data[end + 1 :]
    except ValueError as exc:  # e.g. one id both voter and learner
        raise ValueError(f"bad membership in config entry: {exc}") from None


def _id_set(text: str) -> frozenset[NodeId]:
    ids = text.split(",")
    if not all(is_valid_id(i) for i in ids) or len(set(ids)) != len(ids):
        raise ValueError(f"bad node id list {text[:80]!r}")
    return frozenset(ids)
