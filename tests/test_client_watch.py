"""The watch cursor of the client library (`zraft.client.watch.WatchCursor`), without I/O:
what each poll asks, how a reply moves it, and what it refuses to believe."""

from __future__ import annotations

from typing import Any

import pytest

from zraft.client.reply import Reply
from zraft.client.watch import Compacted, WatchCursor, WatchError

A, B, C = "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", "tcp://127.0.0.1:3"


def kv(key: bytes, revision: int) -> dict[str, Any]:
    return {
        "key": key,
        "value": b"v",
        "create_revision": revision,
        "mod_revision": revision,
        "version": 1,
        "lease": 0,
    }


def answer(events: list[tuple[bytes, int]], after: int, **more: Any) -> Reply:
    raw = {
        "ok": True,
        "events": [{"type": "put", "kv": kv(k, r)} for k, r in events],
        "next_revision": after,
        **more,
    }
    return Reply.from_map(raw, A)


def test_polls_ask_from_the_next_revision_and_move_past_each_reply() -> None:
    cursor = WatchCursor([A, B], b"k/", prefix=True, start_revision=5, prev_kv=True, wait_s=1.5)
    assert cursor.fields() == {
        "key": b"k/",
        "prefix": True,
        "wait_ms": 1500,
        "prev_kv": True,
        "require_leader": True,
        "start_revision": 5,
    }
    events = cursor.take(answer([(b"k/a", 5), (b"k/b", 7), (b"k/c", 7)], 9))
    assert [(e.key, e.revision) for e in events] == [(b"k/a", 5), (b"k/b", 7), (b"k/c", 7)]
    assert cursor.next_revision == 9 and cursor.fields()["start_revision"] == 9
    assert cursor.take(answer([], 12)) == [] and cursor.next_revision == 12  # progress
    assert cursor.range_fields == {"key": b"k/", "prefix": True}
    with pytest.raises(RuntimeError):
        WatchCursor([A], b"k").fields()  # the start is resolved first (a linearizable read)


@pytest.mark.parametrize(
    ("events", "after"),
    [
        ([(b"a", 4)], 9),  # below the revision asked for: a repeat
        ([(b"a", 6), (b"b", 5)], 9),  # out of order
        ([(b"a", 9)], 9),  # at or above next_revision
        ([], 3),  # moving back
    ],
)
def test_a_reply_against_the_protocol_is_refused_and_moves_nothing(
    events: list[tuple[bytes, int]], after: int
) -> None:
    cursor = WatchCursor([A], b"k", start_revision=5)
    with pytest.raises(WatchError):
        cursor.take(answer(events, after))
    assert cursor.next_revision == 5


def test_unavailable_moves_to_the_next_node_and_pauses_after_a_full_round() -> None:
    cursor = WatchCursor([A, B, C], b"k", start_revision=5)
    unavailable = Reply.from_map(
        {"ok": False, "error": {"code": "unavailable", "message": "no leader"}}, A
    )
    assert cursor.take(unavailable) == [] and cursor.endpoint == B and not cursor.pause_s
    cursor.failed()
    assert cursor.endpoint == C and not cursor.pause_s
    cursor.failed()
    assert cursor.endpoint == A and cursor.pause_s > 0  # every node failed in a row
    cursor.move_to(C)
    assert cursor.endpoint == C and cursor.next_revision == 5
    with pytest.raises(ValueError):
        cursor.move_to("tcp://127.0.0.1:9")


def test_compacted_and_refusals_end_the_watch() -> None:
    cursor = WatchCursor([A], b"k", start_revision=2)
    compacted = Reply.from_map(
        {
            "ok": False,
            "error": {"code": "compacted", "message": "gone"},
            "compact_revision": 40,
        },
        A,
    )
    with pytest.raises(Compacted) as caught:
        cursor.take(compacted)
    assert (caught.value.revision, caught.value.compact_revision) == (2, 40)
    forbidden = Reply.from_map({"ok": False, "error": {"code": "forbidden", "message": "no"}}, A)
    with pytest.raises(WatchError):
        cursor.take(forbidden)


def test_bad_arguments() -> None:
    with pytest.raises(ValueError):
        WatchCursor([], b"k")
    with pytest.raises(ValueError):
        WatchCursor([A], b"k", start_revision=-1)
    with pytest.raises(ValueError):
        WatchCursor([A], b"k", wait_s=0)
    with pytest.raises(ValueError):
        WatchCursor([A], b"k", range_end=b"z", prefix=True)


def test_settle_fixes_the_start_from_the_first_read_then_takes_replies() -> None:
    cursor = WatchCursor([A, B], b"k")  # start: after a read
    header = {"revision": 10, "raft_term": 1, "member": "n1"}
    assert cursor.settle(None) == [] and cursor.endpoint == B  # no reply: next node
    refused = Reply.from_map({"ok": False, "error": {"code": "forbidden", "message": "no"}}, A)
    with pytest.raises(WatchError):
        cursor.settle(refused)
    assert cursor.settle(Reply.from_map({"ok": True, "header": header, "count": 0}, A)) == []
    assert cursor.next_revision == 11
    events = cursor.settle(answer([(b"k", 12)], 13))
    assert [e.revision for e in events] == [12] and cursor.next_revision == 13
