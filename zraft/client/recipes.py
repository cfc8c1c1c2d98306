"""Locks and elections as steps without I/O, shared by the sync and the asyncio drivers.

The recipe is etcd's (its `concurrency` package), made safe by construction:

- A contender holds a **lease** (kept alive by its driver) and puts ONE key under the
  lock's prefix, `<prefix><lease id in hex>`, attached to the lease, in a transaction that
  creates it only if absent (so a retry, or the same lease locking again, finds its own
  key). Its `create_revision` is its place in the queue and its **fencing token**: every
  acquisition creates a new key, at a revision above every earlier one.
- It holds the lock when no key under the prefix was created before its own. Otherwise it
  waits for the deletion of its **predecessor** only (the key created last before its
  own), so a release wakes one waiter, not all; then it looks again (the predecessor may
  have died while others still wait before it).
- A **guarded** write is a transaction whose compares say the holder still holds: its key
  exists with its token as `create_revision`, and every key under the prefix was created
  at or after it (no one is before it in the queue). A holder whose lease expired (its key
  deleted with it) can no longer write: its guarded writes fail, whatever its clock says.
  The protected resource, if it is not zraft, should check the fencing token itself.

The steps are generators: they yield `Ask` (a request to make) or `AwaitDelete` (wait until
a key is deleted, watching from a revision), receive the `Reply` of an `Ask`, and return
their result. `drive` (sync) and `drive_async` run them. This module makes no request and
keeps no clock.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from zraft.client.reply import ClientError, KeyValue, Reply

LOCK_PREFIX = "_locks/"
"""Where `Client.lock` keeps each lock's queue: `_locks/<name>/<lease id>`."""

ELECTION_PREFIX = "_elections/"
"""Where elections keep their candidates: `_elections/<name>/<lease id>`."""


class LockLost(ClientError):
    """The lock (or leadership) is not held any more: its lease expired or was revoked,
    or a guarded write found its key gone or preceded."""


class LockTimeout(ClientError):
    """The lock was not acquired within the time given (the attempt left the queue)."""


@dataclass(frozen=True, slots=True)
class Ask:
    """A step: make this request and send its reply back in."""

    op: str
    fields: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AwaitDelete:
    """A step: wait until `key` is deleted (watching from revision `after`), then go on."""

    key: bytes
    after: int


@dataclass(frozen=True, slots=True)
class Place:
    """A contender's place in a queue: its key and its fencing token."""

    prefix: bytes
    key: bytes
    token: int

    def guard(self) -> list[dict[str, Any]]:
        """The compares that hold exactly while this contender holds the lock."""
        return [
            {"key": self.key, "target": "create", "result": "equal", "operand": self.token},
            {
                "key": self.prefix,
                "prefix": True,
                "target": "create",
                "result": "greater",
                "operand": self.token - 1,
            },
        ]


Steps = Generator[Ask | AwaitDelete, Reply | None, Any]


def queue_prefix(base: str, name: str) -> bytes:
    """The prefix of lock or election `name` (no `/` allowed in it, nor an empty name)."""
    if not name or "/" in name:
        raise ValueError(f"a lock or election name must be non-empty without '/', got {name!r}")
    return f"{base}{name}/".encode()


def _checked(reply: Reply | None, what: str) -> Reply:
    if reply is None or not reply.ok:
        code = None if reply is None else reply.error_code
        message = None if reply is None else reply.error_message
        raise ClientError(f"{what}: {code}: {message}")
    return reply


def enqueue(prefix: bytes, lease: int, value: bytes = b"") -> Steps:
    """Put this contender's key (once per lease); returns its `Place`."""
    key = prefix + f"{lease:016x}".encode()
    reply = yield Ask(
        "txn",
        {
            "compare": [{"key": key, "target": "create", "result": "equal", "operand": 0}],
            "success": [{"op": "put", "key": key, "value": value, "lease": lease}],
            "failure": [{"op": "range", "key": key}],
        },
    )
    reply = _checked(reply, "joining the queue")
    if reply.succeeded:
        assert reply.header is not None
        return Place(prefix, key, reply.header.revision)
    responses = reply.responses or ()
    kvs = responses[0].kvs if responses else None
    if not kvs:
        raise LockLost("joining the queue: the key vanished (the lease ended?)")
    return Place(prefix, key, kvs[0].create_revision)


def wait_turn(place: Place) -> Steps:
    """Wait until no key of the queue is older than this contender's; returns the
    revision at which it was seen to hold.

    Raises:
        LockLost: its own key is gone (its lease ended).
    """
    while True:
        reply = yield Ask("range", {"key": place.prefix, "prefix": True, "keys_only": True})
        reply = _checked(reply, "reading the queue")
        kvs = reply.kvs or ()
        if not any(kv.key == place.key and kv.create_revision == place.token for kv in kvs):
            raise LockLost(f"{place.key!r} is gone: its lease ended before the turn came")
        earlier = [kv for kv in kvs if kv.create_revision < place.token]
        assert reply.header is not None
        if not earlier:
            return reply.header.revision
        predecessor = max(earlier, key=lambda kv: kv.create_revision)
        yield AwaitDelete(predecessor.key, reply.header.revision + 1)


def leave(place: Place) -> Steps:
    """Delete this contender's key (release, resign, or give up waiting)."""
    reply = yield Ask("delete", {"key": place.key})
    _checked(reply, "leaving the queue")


def guarded(place: Place, success: list[dict[str, Any]]) -> Steps:
    """Run `success` only while holding; returns the reply.

    Raises:
        LockLost: the lock is not held any more (nothing was written).
    """
    reply = yield Ask("txn", {"compare": place.guard(), "success": success})
    reply = _checked(reply, "a guarded write")
    if not reply.succeeded:
        raise LockLost(f"{place.key!r} does not hold the lock any more: nothing was written")
    return reply


def first_in(prefix: bytes) -> Steps:
    """The oldest key of a queue (an election's leader) or None, and the revision read."""
    reply = yield Ask(
        "range",
        {
            "key": prefix,
            "prefix": True,
            "sort_target": "create",
            "sort_order": "ascend",
            "limit": 1,
        },
    )
    reply = _checked(reply, "reading the leader")
    kvs: tuple[KeyValue, ...] = reply.kvs or ()
    assert reply.header is not None
    return (kvs[0] if kvs else None), reply.header.revision
