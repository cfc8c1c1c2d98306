"""The node's table of requests in flight (`zraft.node.pending.PendingRequests`): what
expires, and that answered requests are let go of before their deadlines."""

from __future__ import annotations

from zraft.node.pending import Pending, PendingRequests, ReplyTo
from zraft.wire.client import Request


def pending(deadline: float) -> Pending:
    return Pending(Request.of("put", key="k", value=b"v"), ReplyTo(), deadline)


def test_only_requests_still_waiting_expire() -> None:
    table = PendingRequests()
    answered, waiting = pending(1.0), pending(1.0)
    table.add("writes", 1, answered)
    table.add("writes", 2, waiting)
    del table.writes[1]  # answered
    assert table.expire(0.5) == []
    assert table.expire(1.0) == [("writes", waiting)]
    assert not table.writes


def test_answered_requests_are_let_go_of_before_their_deadlines() -> None:
    """A leader answering thousands of writes a second must not hold each one until its
    deadline: the queue drops the answered ones at its front on every expiry pass."""
    table = PendingRequests()
    for index in range(1, 1001):
        table.add("writes", index, pending(3.0))
    for index in range(1, 1000):
        del table.writes[index]  # answered in order; the last one still waits
    assert table.expire(0.01) == []
    assert len(table._deadlines) == 1  # only the waiting one is still referenced
    first, second = pending(5.0), pending(4.0)
    table.add("reads", 1, first)  # a long wait holds the queue behind it...
    table.add("reads", 2, second)
    del table.reads[2]
    table.expire(0.02)
    assert len(table._deadlines) == 3  # ...until it is answered or expires
    del table.writes[1000]
    del table.reads[1]
    table.expire(0.03)
    assert len(table._deadlines) == 0
