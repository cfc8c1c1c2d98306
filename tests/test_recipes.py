"""The lock and election recipe's steps (`zraft.client.recipes`), driven by hand against a
fake queue: where a contender joins, that it waits on its predecessor only, and what its
guard compares."""

from __future__ import annotations

from typing import Any

import pytest

from zraft.client.recipes import (
    Ask,
    AwaitDelete,
    LockLost,
    Place,
    enqueue,
    guarded,
    queue_prefix,
    wait_turn,
)
from zraft.client.reply import Reply

PREFIX = queue_prefix("_locks/", "job")


def kv(key: bytes, create: int) -> dict[str, Any]:
    return {
        "key": key,
        "value": b"",
        "create_revision": create,
        "mod_revision": create,
        "version": 1,
        "lease": 1,
    }


def reply(revision: int = 50, **fields: Any) -> Reply:
    header = {"revision": revision, "raft_term": 1, "member": "n1"}
    return Reply.from_map({"ok": True, "header": header, **fields})


def test_names_are_checked() -> None:
    assert PREFIX == b"_locks/job/"
    for bad in ("", "a/b"):
        with pytest.raises(ValueError):
            queue_prefix("_locks/", bad)


def test_enqueue_creates_once_per_lease() -> None:
    steps = enqueue(PREFIX, 0xAB, b"v")
    ask = next(steps)
    assert isinstance(ask, Ask) and ask.op == "txn"
    key = b"_locks/job/00000000000000ab"
    assert ask.fields["compare"] == [
        {"key": key, "target": "create", "result": "equal", "operand": 0}
    ]
    assert ask.fields["success"][0] == {"op": "put", "key": key, "value": b"v", "lease": 0xAB}
    with pytest.raises(StopIteration) as done:
        steps.send(reply(revision=7, succeeded=True, responses=[{"op": "put"}]))
    assert done.value.value == Place(PREFIX, key, 7)
    # The same lease again (a retry, or re-entry): its existing key and token.
    again = enqueue(PREFIX, 0xAB)
    next(again)
    existing = {"op": "range", "kvs": [kv(key, 7)], "more": False, "count": 1}
    with pytest.raises(StopIteration) as done:
        again.send(reply(succeeded=False, responses=[existing]))
    assert done.value.value.token == 7


def test_a_waiter_waits_on_its_predecessor_only() -> None:
    mine = Place(PREFIX, PREFIX + b"c", 30)
    steps = wait_turn(mine)
    assert next(steps) == Ask("range", {"key": PREFIX, "prefix": True, "keys_only": True})
    queue = [
        kv(PREFIX + b"a", 10),
        kv(PREFIX + b"b", 20),
        kv(PREFIX + b"c", 30),
        kv(PREFIX + b"d", 40),
    ]
    step = steps.send(reply(revision=41, kvs=queue))
    assert step == AwaitDelete(PREFIX + b"b", 42)  # not a, not d
    assert next(steps) == Ask("range", {"key": PREFIX, "prefix": True, "keys_only": True})
    # b is gone but a still holds: wait on a now.
    step = steps.send(reply(revision=45, kvs=[queue[0], queue[2], queue[3]]))
    assert step == AwaitDelete(PREFIX + b"a", 46)
    next(steps)
    with pytest.raises(StopIteration) as done:
        steps.send(reply(revision=47, kvs=[queue[2], queue[3]]))
    assert done.value.value == 47  # its turn


def test_a_waiter_whose_key_is_gone_has_lost() -> None:
    steps = wait_turn(Place(PREFIX, PREFIX + b"c", 30))
    next(steps)
    with pytest.raises(LockLost):
        steps.send(reply(kvs=[kv(PREFIX + b"a", 10)]))
    # Same name, another life (re-created with a new token): lost too.
    steps = wait_turn(Place(PREFIX, PREFIX + b"c", 30))
    next(steps)
    with pytest.raises(LockLost):
        steps.send(reply(kvs=[kv(PREFIX + b"c", 35)]))


def test_a_guarded_write_holds_only_while_first_in_line() -> None:
    place = Place(PREFIX, PREFIX + b"c", 30)
    assert place.guard() == [
        {"key": PREFIX + b"c", "target": "create", "result": "equal", "operand": 30},
        {"key": PREFIX, "prefix": True, "target": "create", "result": "greater", "operand": 29},
    ]
    steps = guarded(place, [{"op": "put", "key": b"x", "value": b"1"}])
    ask = next(steps)
    assert isinstance(ask, Ask) and ask.fields["compare"] == place.guard()
    with pytest.raises(LockLost):
        steps.send(reply(succeeded=False, responses=[]))
