"""Failover of real node processes: no quorum, a paused (SIGSTOP) leader.

Split votes are legal here, so elections are not counted exactly: the tests assert
safety (at most one leader per term, terms never decrease on a node, no stale read) and
bounded liveness (every request is answered within a bound, a new leader appears within
a bounded wait). A node paused with SIGSTOP is always resumed before it is killed (the
cluster's finalizer does it too).
"""

from __future__ import annotations

import signal
import time
from typing import Any

from tests import logscan
from tests.procs import TRANSIENT_ERRORS, ClusterFactory

NO_QUORUM_CODES = frozenset({"unavailable", "timeout"})


def test_lone_node_answers_within_bound_then_recovers(make_cluster: ClusterFactory) -> None:
    """Without a quorum, a request is answered `unavailable`/`timeout`, never left hanging.

    With the leader and one follower killed, a put, a linearizable get and a delete sent
    to the lone survivor are each answered with `unavailable` or `timeout` before twice
    the request timeout (bounded liveness, not a speed goal). A `serializable` get is still
    served from local state. Pre-vote keeps the lone node's term where it was. After the
    killed nodes restart, writes succeed again and earlier data is intact.
    """
    request_timeout_s = 1.5
    cluster = make_cluster(3, request_timeout_ms=int(request_timeout_s * 1000))
    cluster.start_all()
    leader = cluster.wait_leader()
    assert cluster.request_until_ok(leader, "put", key="before", value="v0")["ok"]
    lone = next(n for n in cluster.ids if n != leader)
    logscan.wait_for(
        lambda: cluster.status(lone)["applied_index"] >= cluster.status(leader)["commit_index"],
        timeout=5,
        describe=cluster.describe,
    )
    term_before = cluster.status(lone)["term"]

    for node_id in cluster.ids:
        if node_id != lone:
            cluster.kill(node_id, signal.SIGKILL)

    bound_s = 2 * request_timeout_s
    attempts: list[tuple[str, dict[str, Any]]] = [
        ("put", {"key": "during", "value": "lost?"}),
        ("get", {"key": "before"}),
        ("delete", {"key": "before"}),
    ]
    for op, fields in attempts:
        started = time.monotonic()
        reply = cluster.request(lone, op, timeout=bound_s, **fields)  # NoReply = it hung
        elapsed = time.monotonic() - started
        assert not reply["ok"], f"{op} succeeded without a quorum: {reply}"
        assert reply["error"]["code"] in NO_QUORUM_CODES, reply
        print(f"no quorum: {op} answered {reply['error']['code']} after {elapsed:.2f}s")

    local = cluster.request(lone, "get", key="before", consistency="serializable")
    assert local["ok"] and local["value"] == b"v0", local
    assert cluster.status(lone)["term"] == term_before  # pre-vote: no term inflation

    cluster.start_all([n for n in cluster.ids if n != lone])
    assert cluster.request_until_ok(lone, "put", key="after", value="v1")["ok"]
    for node_id in cluster.ids:
        got = cluster.request_until_ok(node_id, "get", key="before")
        # The delete above was answered "timeout": it may or may not have been applied.
        assert got["value"] in (b"v0", None), got
        got = cluster.request_until_ok(node_id, "get", key="after")
        assert got["value"] == b"v1", got
    cluster.assert_safety()


def test_paused_leader_steps_down_and_serves_no_stale_read(make_cluster: ClusterFactory) -> None:
    """A leader paused past the election timeout loses leadership and never serves stale data.

    The leader is SIGSTOPped for longer than twice the maximum election timeout; the
    others elect a leader in a higher term, and a new value is written through it. A
    linearizable get is queued to the old leader while it is still stopped, so it is read
    in the same first turn as the burst of stale peer traffic after SIGCONT: it must
    return the new value or a retryable error, never the old value. The old leader then
    reports `follower` in the new term within a bounded wait, a linearizable get through
    it returns the new value, and a write through it succeeds.
    """
    cluster = make_cluster(3)
    cluster.start_all()
    old = cluster.wait_leader()
    old_term = cluster.status(old)["term"]
    assert cluster.request(old, "put", key="k", value="old value")["ok"]

    paused_at = time.monotonic()
    cluster.pause(old)
    others = [n for n in cluster.ids if n != old]
    new = cluster.wait_leader(others, min_term=old_term)
    new_term = cluster.status(new)["term"]
    written = cluster.request(new, "put", key="k", value="new value")
    assert written["ok"], written

    pause_s = 2 * cluster.election_timeout_ms[1] / 1000 + 0.2
    remaining = pause_s - (time.monotonic() - paused_at)
    if remaining > 0:
        time.sleep(remaining)  # the fault's length is part of the scenario, not a wait

    cluster.send_request(old, "get", key="k")  # read by the old leader's first turn
    cluster.resume(old)
    first = cluster.receive_reply(old, timeout=2 * cluster.request_timeout_ms / 1000)
    print(f"first read through the resumed old leader: {first}")
    if first["ok"]:
        assert first["value"] == b"new value", f"stale read from the old leader: {first}"
    else:
        assert first["error"]["code"] in TRANSIENT_ERRORS, first

    def stepped_down() -> dict[str, Any] | None:
        status = cluster.status(old)
        return status if status["role"] == "follower" and status["term"] >= new_term else None

    logscan.wait_for(stepped_down, timeout=5, describe=cluster.describe)
    got = cluster.request(old, "get", key="k")
    assert got["ok"] and got["value"] == b"new value", got
    assert cluster.request(old, "put", key="k2", value="via old")["ok"]
    cluster.assert_safety()
