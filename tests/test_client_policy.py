"""Layer 1: the client's pure policy (`zraft.client.policy`), with no sockets and no clock.

Each test builds a `ClientPolicy`, starts an `Exchange` at a time given as a number, and
plays the driver: it feeds replies (decoded maps) and `NoReply` outcomes and checks the
steps that come back (`Send`, `Pause`, `Finish`, `GiveUp`). Together with the socket
tests in `tests/test_client.py` this pins the client's retry behaviour: rotation, leader
preference, endpoints known to be down or refused, the deadline and the back-off, session
seqs, and what each `Retry` policy of the op table does after each kind of outcome.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import pytest

from zraft import wire
from zraft.client import ClientAuthError, ClientTimeout
from zraft.client.policy import (
    BACKOFF_FIRST_S,
    BACKOFF_MAX_S,
    Backoff,
    ClientPolicy,
    Exchange,
    Finish,
    GiveUp,
    Links,
    NoReply,
    Pause,
    Rotation,
    Send,
    Session,
    Step,
    leader_to_ask,
    members_answer,
)
from zraft.client.reply import AUTH_HINT, Reply
from zraft.net import security
from zraft.wire import ops

A, B, C = "tcp://127.0.0.1:7201", "tcp://127.0.0.1:7202", "tcp://127.0.0.1:7203"
NODES = {"n1": A, "n2": B, "n3": C}
OK: dict[str, Any] = {"ok": True}  # names no leader: moves nothing


def error(code: str, leader: str | None = None, message: str = "no") -> dict[str, Any]:
    """A decoded error reply map."""
    return {"ok": False, "error": {"code": code, "message": message}, "leader": leader}


def policy(endpoints: Sequence[str] = (A, B, C), **kwargs: Any) -> ClientPolicy:
    """A policy with a fixed session id (no randomness) and the nodes' ids known."""
    kwargs.setdefault("client_id", "me")
    kwargs.setdefault("node_endpoints", NODES)
    return ClientPolicy(list(endpoints), **kwargs)


Outcome = Mapping[str, Any] | NoReply


def play(exchange: Exchange, outcomes: Sequence[Outcome], now: float = 0.0) -> list[Step]:
    """Drive `exchange` like a driver would, one outcome per `Send`, until it finishes.

    An outcome "no reply within ..." becomes `NoReply.timed_out` of the Send's own wait
    (as a driver words it), and time advances by that wait; by a Pause's wait; and by
    1 ms for anything else. Running out of outcomes fails the test.
    """
    steps: list[Step] = []
    queue = list(outcomes)
    while True:
        step = exchange.next_step(now)
        steps.append(step)
        if isinstance(step, Finish | GiveUp):
            return steps
        if isinstance(step, Pause):
            now += step.wait_s
            continue
        assert queue, f"the exchange wants another attempt: {steps}"
        outcome = queue.pop(0)
        if isinstance(outcome, NoReply):
            if outcome.detail.startswith("no reply"):
                outcome = NoReply.timed_out(step.wait_s)
                now += step.wait_s
            else:
                now += 0.001
            exchange.failed(outcome)
        else:
            now += 0.001
            exchange.received(outcome)


def sends(steps: Sequence[Step]) -> list[str]:
    """The endpoints of the `Send` steps, in order."""
    return [step.endpoint for step in steps if isinstance(step, Send)]


# --- endpoints: rotation and leader preference -------------------------------------------


def test_rotation_goes_round_and_starts_anywhere() -> None:
    rotation = Rotation([A, B, C], start=4)
    assert (rotation.current, rotation.position) == (B, 1)
    assert [rotation.advance() for _ in range(3)] == [C, A, B]
    assert rotation.move_to(5) == C


@pytest.mark.parametrize(
    ("leader", "exclude", "changed", "current"),
    [
        ("n3", None, True, C),  # a known leader: go there
        ("n1", None, False, A),  # already there
        ("n9", None, False, A),  # unknown id: stay
        (None, None, False, A),  # no leader named
        ("n3", C, False, A),  # the leader is the endpoint that just said "not here"
        ("n4", None, False, A),  # its endpoint is not one of ours
    ],
)
def test_prefer_leader(
    leader: str | None, exclude: str | None, changed: bool, current: str
) -> None:
    rotation = Rotation([A, B, C], node_endpoints={**NODES, "n4": "tcp://10.0.0.4:7204"})
    assert rotation.prefer_leader(leader, exclude=exclude) is changed
    assert rotation.current == current
    assert "n4" not in rotation.node_endpoints


@pytest.mark.parametrize(
    ("endpoints", "node", "expected"),
    [
        ((A,), None, A),
        ((A, B), "n2", B),
        ((A, B), B, B),
        ((A, B), None, "name the node"),
        ((A, B), "n9", "unknown node 'n9' (known ids: n1, n2; or give an endpoint)"),
    ],
)
def test_endpoint_of_a_node_addressed_request(
    endpoints: tuple[str, ...], node: str | None, expected: str
) -> None:
    rotation = Rotation(endpoints, node_endpoints=NODES)
    if expected.startswith("tcp://"):
        assert rotation.endpoint_of(node) == expected
    else:
        with pytest.raises(ValueError, match=re.escape(expected)):
            rotation.endpoint_of(node)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"endpoints": ["http://example.com"]}, "bad endpoint 'http://example.com'"),
        ({"endpoints": ["ipc:///tmp/n1"]}, "bad endpoint"),
        ({"endpoints": []}, "at least one endpoint"),
        ({"timeout": 0}, "timeouts must be > 0"),
        ({"attempt_timeout": -1}, "timeouts must be > 0"),
        ({"client_id": ""}, "client_id must have 1..256"),
        ({"client_id": None}, None),  # None means "make one"
        ({"client_id": "x" * 257}, "client_id must have 1..256"),
        ({"first_seq": -1}, "first_seq must be >= 0"),
    ],
)
def test_policy_refuses_misuse(kwargs: dict[str, Any], message: str | None) -> None:
    endpoints = kwargs.pop("endpoints", [A])
    if message is None:
        assert ClientPolicy(endpoints, **kwargs).session.client_id.startswith("c-")
        return
    with pytest.raises(ValueError, match=message):
        ClientPolicy(endpoints, **kwargs)


def test_policy_takes_one_endpoint_as_a_str_and_drops_repeats() -> None:
    assert ClientPolicy(A).endpoints == (A,)
    assert ClientPolicy([A, B, A]).endpoints == (A, B)


@pytest.mark.parametrize(
    ("count", "timeout", "attempt_timeout", "expected"),
    [
        (1, 6.0, None, 6.0),  # one node: it answers `unavailable` itself in time
        (3, 6.0, None, 2.0),  # shared out over the nodes
        (20, 6.0, None, 0.5),  # but never below MIN_ATTEMPT_TIMEOUT_S
        (3, 1.0, 5.0, 1.0),  # never above the whole deadline
        (3, 6.0, 0.3, 0.3),
    ],
)
def test_attempt_timeout(
    count: int, timeout: float, attempt_timeout: float | None, expected: float
) -> None:
    endpoints = [f"tcp://127.0.0.1:{7201 + i}" for i in range(count)]
    made = ClientPolicy(endpoints, timeout=timeout, attempt_timeout=attempt_timeout)
    assert made.attempt_timeout == pytest.approx(expected)


# --- sessions -----------------------------------------------------------------------------


def test_session_peek_does_not_use_the_seq_up() -> None:
    session = Session("me", first_seq=7)
    assert session.peek() == {"client": "me", "seq": 7} == session.peek()
    assert session.take() == {"client": "me", "seq": 7}
    assert (session.take()["seq"], session.next_seq) == (8, 9)
    assert Session().client_id != Session().client_id  # random ids by default


def test_writes_take_the_next_seq_and_other_ops_none() -> None:
    made = policy(first_seq=10)
    put = made.begin("put", {"key": "k", "value": "v"}, now=0)
    get = made.begin("get", {"key": "k"}, now=0)
    cas = made.begin("cas", {"key": "k", "expected": None, "value": "v"}, now=0)
    given = made.begin("del", {"key": "k", "client": "other", "seq": 3}, now=0)
    assert (put.fields["client"], put.fields["seq"], cas.fields["seq"]) == ("me", 10, 11)
    assert "seq" not in get.fields and given.fields["seq"] == 3 and given.op == "delete"
    assert made.session.next_seq == 12
    assert wire.decode_request(put.frame).get("seq") == 10


def test_a_refused_request_uses_no_seq() -> None:
    made = policy()
    with pytest.raises(ValueError, match="unknown fields"):
        made.begin("put", {"key": "k", "value": "v", "colour": "red"}, now=0)
    with pytest.raises(ValueError, match="unknown op 'frobnicate'; known ops: add_member"):
        made.begin("frobnicate", {}, now=0)
    assert made.session.next_seq == 1


def test_a_retried_write_resends_the_same_frame_and_seq() -> None:
    made = policy()
    exchange = made.begin("put", {"key": "k", "value": "v"}, now=0)
    frame = exchange.frame
    steps = play(exchange, [NoReply.timed_out(2.0), error("unavailable"), OK])
    assert sends(steps) == [A, B, C]
    assert exchange.frame is frame and made.session.next_seq == 2
    assert isinstance(steps[-1], Finish) and steps[-1].reply.endpoint == C


# --- the retry table: what each `Retry` policy does after each outcome --------------------

RETRY = "retry elsewhere"
ANSWER = "the answer"
UNKNOWN = "outcome unknown"

OUTCOMES: dict[str, Outcome] = {
    "ok": OK,
    "not_leader": error("not_leader"),
    "unavailable": error("unavailable"),
    "timeout answer": error("timeout"),
    "conflict": error("conflict"),
    "cas_failed": error("cas_failed"),
    "not sent (down)": NoReply.unsent("not connected"),
    "not sent (refused connection)": NoReply.unsent("connection refused"),
    "handshake refused (one node)": NoReply.refused("the node refused this client's key"),
    "reply lost": NoReply.timed_out(2.0),
    "connection lost": NoReply.lost("connection lost"),
    "malformed": NoReply.malformed("not a map"),
}
LOST_OUTCOMES = ("reply lost", "connection lost", "malformed")
RETRYABLE = ("not_leader", "unavailable", "not sent (down)", "not sent (refused connection)")


def expected_decision(retry: ops.Retry, pinned: bool, outcome: str) -> str:
    """The rule table of the policy's module doc, written out."""
    if pinned:
        return ANSWER if isinstance(OUTCOMES[outcome], Mapping) else UNKNOWN
    if outcome in RETRYABLE:
        return RETRY
    if isinstance(OUTCOMES[outcome], Mapping):
        return ANSWER
    if retry in (ops.Retry.ALWAYS, ops.Retry.SESSION):
        return RETRY
    # IF_UNSENT, and NEVER through `begin`: a refused handshake at one node of several is
    # reported as an unknown outcome, as the client always did.
    return UNKNOWN


REQUESTS = [
    ("get", {"key": "k"}, False),
    ("put", {"key": "k", "value": "v"}, False),
    ("add_member", {"id": "n4", "peer": "tcp://h:1", "client_endpoint": "tcp://h:2"}, False),
    ("transfer_leader", {}, False),
    ("snapshot", {}, False),  # `request("snapshot")`: treated as IF_UNSENT
    ("snapshot", {}, True),  # `Client.snapshot(node)`: one node, once
]


@pytest.mark.parametrize("outcome", list(OUTCOMES))
@pytest.mark.parametrize(
    ("op", "fields", "pinned"),
    REQUESTS,
    ids=[f"{op}{'@node' if pinned else ''}" for op, _, pinned in REQUESTS],
)
def test_retry_table(op: str, fields: dict[str, Any], pinned: bool, outcome: str) -> None:
    made = policy()
    spec = ops.lookup(op)
    assert spec is not None
    exchange = made.begin_at(B, op, fields, now=0) if pinned else made.begin(op, fields, now=0)
    first = exchange.next_step(0)
    assert isinstance(first, Send)
    result = OUTCOMES[outcome]
    if isinstance(result, NoReply):
        exchange.failed(result)
    else:
        exchange.received(result)
    step = exchange.next_step(0.01)
    decision = expected_decision(spec.retry, pinned, outcome)
    if decision == RETRY:
        assert isinstance(step, Send) and step.endpoint == B, step
    elif decision == ANSWER:
        assert isinstance(step, Finish) and step.reply.raw == result, step
    else:
        assert isinstance(step, GiveUp) and isinstance(step.error, ClientTimeout), step
        endpoint = B if pinned else A
        assert str(step.error) == (
            f"{spec.name}: {endpoint}: {exchange.attempts[-1][1]}; "
            "the outcome is unknown (not retried)"
        )
        assert step.error.attempts == exchange.attempts
    if exchange.finished:
        assert exchange.next_step(1.0) == step  # a final step repeats


@pytest.mark.parametrize(
    ("op", "fields", "expected_wait"),
    [
        ("get", {"key": "k"}, 2.0),  # may re-send: one attempt's share
        ("put", {"key": "k", "value": "v"}, 2.0),
        ("remove_member", {"id": "n2"}, 5.5),  # may not: the rest of the deadline
    ],
)
def test_each_attempt_waits_as_long_as_its_op_may(
    op: str, fields: dict[str, Any], expected_wait: float
) -> None:
    exchange = policy(timeout=6.0).begin(op, fields, now=100.0)
    assert exchange.next_step(100.5) == Send(A, expected_wait)


def test_no_attempt_outlives_the_deadline() -> None:
    exchange = policy(timeout=6.0).begin("get", {"key": "k"}, now=0.0)
    assert exchange.next_step(5.25) == Send(A, 0.75)


def test_a_node_addressed_request_waits_the_whole_timeout_at_its_node() -> None:
    made = policy(timeout=6.0)
    exchange = made.begin_at(made.endpoint_of("n3"), "snapshot", {}, now=0.0)
    assert exchange.next_step(3.0) == Send(C, 6.0)
    exchange.received(error("not_leader", leader="n1"))
    assert exchange.next_step(3.1) == Finish(Reply.from_map(error("not_leader", "n1"), C))
    assert made.rotation.current == A  # a node-addressed answer moves nothing


# --- leader preference across requests -----------------------------------------------------


def test_not_leader_sends_the_retry_and_later_requests_to_the_leader() -> None:
    made = policy()
    steps = play(made.begin("get", {"key": "k"}, now=0), [error("not_leader", "n3"), OK])
    assert sends(steps) == [A, C]
    assert sends(play(made.begin("get", {"key": "k"}, now=1), [OK])) == [C]


@pytest.mark.parametrize(
    ("first", "expected"),
    [
        (error("unavailable", leader=None), [A, B]),  # no leader known: the next node
        (error("not_leader", leader="n1"), [A, B]),  # names the node that refused
        (error("not_leader", leader="n9"), [A, B]),  # an unknown node
        (error("unavailable", leader="n3"), [A, C]),
    ],
)
def test_where_a_retryable_error_sends_the_retry(
    first: dict[str, Any], expected: list[str]
) -> None:
    assert sends(play(policy().begin("get", {"key": "k"}, now=0), [first, OK])) == expected


def test_an_answer_naming_the_leader_moves_the_next_request_there() -> None:
    made = policy()
    play(made.begin("get", {"key": "k"}, now=0), [{"ok": True, "leader": "n2"}])
    assert made.rotation.current == B


def test_a_failed_attempt_moves_the_next_request_on() -> None:
    made = policy()
    play(made.begin("get", {"key": "k"}, now=0), [NoReply.lost("connection lost"), OK])
    assert made.rotation.current == B  # the request ended where it succeeded


# --- deadline and back-off ------------------------------------------------------------------


def test_backoff_doubles_to_its_maximum() -> None:
    backoff = Backoff()
    pauses = [backoff.next() for _ in range(6)]
    assert pauses == [BACKOFF_FIRST_S, 0.1, 0.2, 0.4, BACKOFF_MAX_S, BACKOFF_MAX_S]
    backoff.reset()
    assert backoff.next() == BACKOFF_FIRST_S


def test_rounds_of_retryable_errors_back_off_until_the_deadline() -> None:
    """Two nodes say "not here" in turn: a pause after each round, doubling; at the
    deadline the last error is the answer."""
    exchange = policy([A, B], timeout=1.0).begin("put", {"key": "k", "value": "v"}, now=0)
    steps = play(exchange, [error("unavailable", message=f"try {i}") for i in range(40)])
    pauses = [step.wait_s for step in steps if isinstance(step, Pause)]
    assert pauses[:4] == [0.05, 0.1, 0.2, 0.4]
    assert sum(pauses) <= 1.0  # the last pause is cut to the deadline
    between = [type(s).__name__ for s in steps[:7]]
    assert between == ["Send", "Send", "Pause", "Send", "Send", "Pause", "Send"]
    final = steps[-1]
    assert isinstance(final, Finish) and final.reply.error_code == "unavailable"
    assert final.reply.error_message == f"try {len(sends(steps)) - 1}"


def test_lost_replies_of_a_retryable_op_need_no_backoff() -> None:
    """The attempt itself waited: no pause, the next endpoint at once, until the
    deadline; then `ClientTimeout` naming every endpoint and the last outcome of each."""
    exchange = policy([A, B], timeout=1.0, attempt_timeout=0.3).begin("get", {"key": "k"}, 0)
    steps = play(exchange, [NoReply.timed_out(0.3)] * 10)
    assert not [step for step in steps if isinstance(step, Pause)]
    assert sends(steps) == [A, B, A, B]
    final = steps[-1]
    assert isinstance(final, GiveUp) and isinstance(final.error, ClientTimeout)
    assert str(final.error) == (
        f"get: no node answered within 1 s ({A}, {B}); is the cluster running and "
        f"reachable? Last outcome per node: {A}: no reply within 0.3 s; "
        f"{B}: no reply within 0.1 s"
    )
    assert final.error.endpoints == (A, B) and final.error.timeout == 1.0


def test_unsent_admin_attempts_are_paced_like_errors() -> None:
    exchange = policy([A, B], timeout=5.0).begin("promote_member", {"id": "n2"}, now=0)
    steps = play(exchange, [NoReply.unsent("not connected"), NoReply.unsent("x"), OK])
    assert [type(s).__name__ for s in steps] == ["Send", "Send", "Pause", "Send", "Finish"]


def test_a_deadline_with_no_attempt_at_all_times_out() -> None:
    exchange = policy(timeout=1.0).begin("status", {}, now=0)
    step = exchange.next_step(2.0)
    assert isinstance(step, GiveUp) and "Last outcome per node: none" in str(step.error)


# --- endpoints known to be down or refused ------------------------------------------------


def test_links_say_when_not_to_send() -> None:
    links = Links()
    assert links.before_send(A, [A, B]) is None
    links.lost(A)
    assert links.before_send(A, [A, B]) == NoReply.unsent("not connected")
    links.lost(B)
    assert links.before_send(A, [A, B]) is None  # all down: nowhere better, try anyway
    links.refused(B, "the node refused this client's key")
    assert links.before_send(B, [A, B]) == NoReply.refused("the node refused this client's key")
    links.forget(B)
    assert links.before_send(B, [A, B]) is None and not links.is_down(B)


@pytest.mark.parametrize(
    ("events", "expected"),
    [
        ([], None),
        (["connected"], None),
        (["lost"], NoReply.unsent("connection refused")),  # never connected: still queued
        (["connected", "lost"], NoReply.lost("connection lost")),
        (["connected", "lost", "connected"], None),
        (["refused"], NoReply.refused("why")),
    ],
)
def test_a_connection_change_while_waiting(events: list[str], expected: NoReply | None) -> None:
    links = Links()
    for event in events:
        if event == "refused":
            links.refused(A, "why")
        else:
            getattr(links, event)(A)
    assert links.while_waiting(A) == expected


def test_down_endpoints_are_skipped_through_the_policy() -> None:
    made = policy([A, B])
    made.links.lost(A)
    assert made.before_send(A) == NoReply.unsent("not connected")
    assert made.before_send(B) is None
    made.links.connected(A)
    assert made.before_send(A) is None and made.while_waiting(A) is None


def test_every_endpoint_refusing_is_an_auth_error() -> None:
    exchange = policy([A, B]).begin("get", {"key": "k"}, now=0)
    steps = play(exchange, [NoReply.refused("bad key"), NoReply.refused("wrong server key")])
    final = steps[-1]
    assert isinstance(final, GiveUp) and isinstance(final.error, ClientAuthError)
    assert final.error.refusals == ((A, "bad key"), (B, "wrong server key"))
    assert str(final.error) == (
        f"get: authentication failed at every node ({A}: bad key; {B}: wrong server key); "
        + AUTH_HINT
    )
    assert security.ENV_CLIENT_KEY in AUTH_HINT


def test_one_endpoint_refusing_makes_an_admin_op_an_auth_error_at_once() -> None:
    exchange = policy([A]).begin("remove_member", {"id": "n2"}, now=0)
    final = play(exchange, [NoReply.refused("bad key")])[-1]
    assert isinstance(final, GiveUp) and isinstance(final.error, ClientAuthError)


@pytest.mark.parametrize(
    ("outcome", "text"),
    [
        (NoReply.unsent("not connected"), "not sent: not connected"),
        (NoReply.refused("bad key"), "refused: bad key"),
        (NoReply.timed_out(0.25), "no reply within 0.2 s"),
        (NoReply.malformed("not a map"), "malformed reply (not a map)"),
        (NoReply.lost("connection lost"), "connection lost"),
    ],
)
def test_outcome_texts(outcome: NoReply, text: str) -> None:
    assert outcome.text == text


# --- the driver contract and `members` --------------------------------------------------


def test_an_attempt_must_be_reported_before_the_next_step() -> None:
    exchange = policy().begin("get", {"key": "k"}, now=0)
    with pytest.raises(RuntimeError, match="no attempt is in flight"):
        exchange.received(OK)
    exchange.next_step(0)
    with pytest.raises(RuntimeError, match="report the attempt"):
        exchange.next_step(0)


def _members(leader: str, match_index: int | None, client: str = C) -> Reply:
    row = {"id": leader, "role": "voter", "client": client, "match_index": match_index}
    return Reply.from_map({"ok": True, "leader": leader, "members": [row]}, A)


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        (_members("n3", None), C),  # a follower's answer: ask the leader
        (_members("n3", 7), None),  # the leader's own answer already
        (_members("n3", None, client="not an endpoint"), None),
        (Reply.from_map({"ok": True, "leader": None, "members": []}), None),
        (Reply.from_map(error("unavailable", "n3")), None),
    ],
)
def test_leader_to_ask(reply: Reply, expected: str | None) -> None:
    assert leader_to_ask(reply) == expected


def test_members_answer_prefers_a_leader_that_still_leads() -> None:
    first = _members("n3", None)
    assert members_answer(first, _members("n3", 5)).members == _members("n3", 5).members
    assert members_answer(first, _members("n2", 5)) is first
    assert members_answer(first, Reply.from_map(error("unavailable"))) is first
