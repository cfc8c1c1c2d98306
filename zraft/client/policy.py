"""The client's decisions without the I/O: where a request goes, how long it may wait, and
what each attempt's outcome means (sans-I/O, in the spirit of h11).

A driver (the ZeroMQ `Client` in `sync`; later an asyncio one) owns sockets, polling and
the clock. It asks a `ClientPolicy` for an `Exchange` per request and then does what the
exchange says, reporting back what happened, until the exchange finishes:

    exchange = policy.begin("put", {"key": k, "value": v}, now=clock())
    while True:
        step = exchange.next_step(clock())
        if isinstance(step, Send):      # send exchange.frame there, wait up to step.wait_s
            ...                         # then exchange.received(reply_map)
                                        #   or exchange.failed(NoReply...)
        elif isinstance(step, Pause):   # wait step.wait_s (a poll, never a sleep)
        elif isinstance(step, Finish):  # return step.reply
        else:                           # GiveUp: raise step.error

This module owns (the endpoint pieces live in `zraft.client.endpoints`, re-exported here):

- **the endpoint list and the rotation** (`Rotation`): requests start where the previous
  one ended; a failed attempt moves on to the next endpoint; an error reply that names a
  leader whose endpoint is known sends the next attempt (and later requests) there;
- **what is known about each connection** (`Links`, fed by the driver's socket monitors):
  an endpoint whose connection is lost is not sent to (unless all are), one whose
  security handshake was refused is reported as such;
- **the deadline and each attempt's wait**, and the back-off between rounds of retryable
  error replies (`Backoff`: 0.05 s doubling to 0.5 s, once every endpoint said "not here");
- **sessions** (`Session`): the `client` id and the `seq` of each new write; a retry
  re-sends the same frame, so it reuses the seq;
- **the classification of an outcome**: done (a reply to return), retry elsewhere, or
  give up (`ClientTimeout`, `ClientAuthError`, or "the outcome is unknown, not retried").

The retry rules come from the op table (`zraft.wire.ops`, `OpSpec.retry`):

| `Retry`   | answer `unavailable`/`not_leader` | never sent (down) | sent, reply lost  |
|-----------|-----------------------------------|-------------------|-------------------|
| ALWAYS    | elsewhere (*)                     | elsewhere         | elsewhere         |
| SESSION   | elsewhere (*), same `seq`         | elsewhere         | elsewhere         |
| IF_UNSENT | elsewhere (*)                     | elsewhere (*)     | give up: unknown  |
| NEVER     | as IF_UNSENT through `begin`; through `begin_at`: one attempt, whatever |

(*) counts toward the back-off: once as many of these as there are endpoints have
piled up since the last pause, the exchange pauses before its next attempt. Retries go on
until the deadline; then the last retryable answer is returned, or `ClientTimeout` raised
if there was none. Every other reply, success or error, is the answer. A refused
handshake counts as "sent, no reply" for IF_UNSENT ops (as the client always did), except
that once every endpoint refused, the answer is `ClientAuthError` whatever the op. Ops
that may re-send after a lost reply wait at most `attempt_timeout` per attempt; the
others wait for the rest of the deadline, since moving on early would leave their outcome
unknown needlessly.

Rules it keeps: no zmq, no clock, no sockets, no sleeping. Time comes in as numbers (any
monotonic clock, in seconds), so every decision can be replayed in a unit test. The one
impure default is a random session id when none is given (pass `client_id` to avoid it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from zraft import wire
from zraft.client.endpoints import (
    Failure,
    Links,
    NoReply,
    Rotation,
    check_endpoint,
    endpoint_list,
)
from zraft.client.reply import (
    ClientError,
    Reply,
    auth_error,
    timeout_error,
    unknown_outcome_error,
)
from zraft.config import is_endpoint
from zraft.wire import ops

__all__ = [
    "BACKOFF_FIRST_S",
    "BACKOFF_MAX_S",
    "DEFAULT_TIMEOUT_S",
    "MIN_ATTEMPT_TIMEOUT_S",
    "RESEND_AFTER_LOST_REPLY",
    "RETRYABLE_ERRORS",
    "Backoff",
    "ClientPolicy",
    "Exchange",
    "Failure",
    "Finish",
    "GiveUp",
    "Links",
    "NoReply",
    "Pause",
    "Rotation",
    "Send",
    "Session",
    "Step",
    "check_endpoint",
    "endpoint_list",
    "leader_to_ask",
    "members_answer",
]

DEFAULT_TIMEOUT_S = 6.0
"""Default overall deadline of a request: a little above the server's default request
timeout (5 s), so the server's own `unavailable`/`timeout` answer normally arrives first."""

MIN_ATTEMPT_TIMEOUT_S = 0.5
"""Lower bound of the default per-attempt timeout with several endpoints."""

RETRYABLE_ERRORS = frozenset({"unavailable", "not_leader"})
"""Error codes that mean "not done here, try elsewhere"; retried until the deadline."""

RESEND_AFTER_LOST_REPLY = frozenset({ops.Retry.ALWAYS, ops.Retry.SESSION})
"""The retry policies whose requests may be sent again after a reply was lost."""

BACKOFF_FIRST_S = 0.05
"""The first pause after every endpoint answered with a retryable error."""

BACKOFF_MAX_S = 0.5
"""The longest such pause (each one doubles the previous)."""


# --- sessions and back-off (rotation and connections: `zraft.client.endpoints`) -------


class Session:
    """A client session: the `client` id its writes carry and the `seq` of the next one.

    The node's session table applies a `(client, seq)` pair at most once, so a write
    re-sent with its own seq is safe. Two live sessions must never share an id.

    Args:
        client_id: the id; default a random `c-<16 hex digits>`.
        first_seq: the seq of the first write (a reused id must continue above its last).

    Raises:
        ValueError: an id of a bad length, or a negative seq.
    """

    def __init__(self, client_id: str | None = None, first_seq: int = 1) -> None:
        if client_id is not None and not 0 < len(client_id) <= wire.MAX_CLIENT_ID_LEN:
            raise ValueError(f"client_id must have 1..{wire.MAX_CLIENT_ID_LEN} characters")
        if first_seq < 0:
            raise ValueError("first_seq must be >= 0")
        # The only randomness here, and no decision depends on it: a unique id is what
        # keeps two clients' seqs apart in the node's session table.
        self._client_id = client_id or f"c-{os.urandom(8).hex()}"
        self._next_seq = first_seq

    @property
    def client_id(self) -> str:
        """The session id."""
        return self._client_id

    @property
    def next_seq(self) -> int:
        """The seq the next new write will carry."""
        return self._next_seq

    def peek(self) -> dict[str, Any]:
        """The session fields (`client`, `seq`) of the next new write; the seq stays unused."""
        return {"client": self._client_id, "seq": self._next_seq}

    def take(self) -> dict[str, Any]:
        """The session fields of a new write; its seq is used up."""
        fields = self.peek()
        self._next_seq += 1
        return fields


class Backoff:
    """Pauses that double from `first` up to `maximum` (seconds)."""

    def __init__(self, first: float = BACKOFF_FIRST_S, maximum: float = BACKOFF_MAX_S) -> None:
        self._first = first
        self._maximum = maximum
        self._next = first

    def next(self) -> float:
        """The pause to make now; the following one will be twice as long (up to the max)."""
        pause = self._next
        self._next = min(self._next * 2, self._maximum)
        return pause

    def reset(self) -> None:
        """Start again from `first`."""
        self._next = self._first


# --- the steps an exchange asks its driver to take --------------------------------------


@dataclass(frozen=True, slots=True)
class Send:
    """Send the exchange's frame to `endpoint` and wait up to `wait_s` for its reply."""

    endpoint: str
    wait_s: float


@dataclass(frozen=True, slots=True)
class Pause:
    """Wait `wait_s` seconds (a poll with a timeout, never a sleep), then ask again."""

    wait_s: float


@dataclass(frozen=True, slots=True)
class Finish:
    """The request is answered: return `reply`."""

    reply: Reply


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The request failed: raise `error`."""

    error: ClientError


Step = Send | Pause | Finish | GiveUp
"""What `Exchange.next_step` asks the driver to do."""


# --- one request ------------------------------------------------------------------------


class Exchange:
    """One request from its first attempt to its answer: a state machine, no I/O.

    Made by `ClientPolicy.begin` (any endpoint, retried by the op's `Retry` policy) or
    `ClientPolicy.begin_at` (one attempt at one endpoint). Call `next_step` with the
    current time; after a `Send`, report exactly one of `received` or `failed` before the
    next `next_step`. `Finish` and `GiveUp` are final: `next_step` repeats them.

    Attributes:
        op: the canonical op name.
        fields: the request's fields, session fields included.
        frame: the encoded request; every attempt sends these same bytes (a retried write
            keeps its seq).
        deadline: when the request gives up, on the clock `now` comes from.
    """

    def __init__(
        self,
        policy: ClientPolicy,
        spec: ops.OpSpec,
        fields: dict[str, Any],
        frame: bytes,
        now: float,
        pinned: str | None = None,
    ) -> None:
        self.op = spec.name
        self.fields = fields
        self.frame = frame
        self.deadline = now + policy.timeout
        self._policy = policy
        self._pinned = pinned  # node-addressed: this endpoint, once
        self._resend_lost = pinned is None and spec.retry in RESEND_AFTER_LOST_REPLY
        self._attempts: list[tuple[str, str]] = []
        self._last_error: Reply | None = None  # the latest retryable error reply
        self._error_streak = 0  # consecutive "not here" outcomes, for the back-off
        self._refused: dict[str, str] = {}  # endpoints whose handshake failed, this request
        self._backoff = Backoff()
        self._in_flight: str | None = None  # the endpoint of the Send not yet reported
        self._pause_due = False
        self._end: Finish | GiveUp | None = None

    @property
    def attempts(self) -> tuple[tuple[str, str], ...]:
        """`(endpoint, outcome)` of every attempt that did not answer the request."""
        return tuple(self._attempts)

    @property
    def finished(self) -> bool:
        """Whether the next step is `Finish` or `GiveUp`."""
        return self._end is not None

    def next_step(self, now: float) -> Step:
        """What the driver should do next, at time `now`.

        Raises:
            RuntimeError: the outcome of the previous `Send` was not reported.
        """
        if self._in_flight is not None:
            raise RuntimeError(f"report the attempt at {self._in_flight} first")
        if self._end is not None:
            return self._end
        if self._pause_due:
            # Every node said "not here": wait a little so an election can finish instead
            # of spinning on fast error replies.
            self._pause_due = False
            self._error_streak = 0
            wait = min(self._backoff.next(), self.deadline - now)
            if wait > 0:
                return Pause(wait)
        if self._pinned is not None:
            self._in_flight = self._pinned
            return Send(self._pinned, self._policy.timeout)
        remaining = self.deadline - now
        if remaining <= 0:
            if self._last_error is not None:
                self._end = Finish(self._last_error)
            else:
                policy = self._policy
                error = timeout_error(self.op, policy.timeout, policy.endpoints, self._attempts)
                self._end = GiveUp(error)
            return self._end
        endpoint = self._policy.rotation.current
        # An op that may not be re-sent gets the whole rest of the deadline: moving on
        # after a partial wait would leave its outcome unknown needlessly.
        wait = min(remaining, self._policy.attempt_timeout) if self._resend_lost else remaining
        self._in_flight = endpoint
        return Send(endpoint, wait)

    def received(self, raw: Mapping[str, Any]) -> Reply:
        """The attempt got this decoded reply map; returns it as a `Reply`."""
        endpoint = self._reported()
        reply = Reply.from_map(raw, endpoint)
        rotation = self._policy.rotation
        if self._pinned is not None:
            self._end = Finish(reply)  # a node-addressed op: whatever the node says
        elif reply.error_code not in RETRYABLE_ERRORS:
            rotation.prefer_leader(reply.leader)
            self._end = Finish(reply)
        else:
            self._attempts.append((endpoint, f"{reply.error_code}: {reply.error_message}"))
            self._last_error = reply
            self._error_streak += 1
            if not rotation.prefer_leader(reply.leader, exclude=endpoint):
                rotation.advance()
            self._pause_due = self._error_streak >= len(rotation.endpoints)
        return reply

    def failed(self, outcome: NoReply) -> None:
        """The attempt ended without a usable reply, as `outcome` says."""
        endpoint = self._reported()
        self._attempts.append((endpoint, outcome.text))
        policy = self._policy
        if self._pinned is not None:
            self._end = GiveUp(self._unknown(endpoint, outcome))
            return
        if outcome.failure is Failure.REFUSED:
            self._refused[endpoint] = outcome.detail
            if self._refused.keys() >= set(policy.endpoints):
                refusals = [(ep, self._refused[ep]) for ep in policy.endpoints]
                self._end = GiveUp(auth_error(self.op, refusals))
                return
        if not self._resend_lost and outcome.failure is not Failure.UNSENT:
            self._end = GiveUp(self._unknown(endpoint, outcome))
            return
        policy.rotation.advance()
        if self._resend_lost:
            return  # the attempt itself waited; no back-off needed
        self._error_streak += 1  # never sent (refused at once): pace it like an error
        self._pause_due = self._error_streak >= len(policy.endpoints)

    def _reported(self) -> str:
        endpoint = self._in_flight
        if endpoint is None:
            raise RuntimeError("no attempt is in flight")
        self._in_flight = None
        return endpoint

    def _unknown(self, endpoint: str, outcome: NoReply) -> ClientError:
        return unknown_outcome_error(
            self.op, endpoint, outcome.text, self._policy.timeout, self._attempts
        )


# --- the client's policy ----------------------------------------------------------------


class ClientPolicy:
    """Everything a client driver decides, for one client: endpoints, session, timeouts.

    Args:
        endpoints: client endpoints (`tcp://HOST:PORT`) of one or more nodes (a single
            str is one endpoint); the first is tried first. Repeats are dropped.
        timeout: the overall deadline of one request, in seconds.
        attempt_timeout: how long one attempt waits for its reply before moving on to the
            next endpoint. Default: the whole `timeout` with one endpoint (the node answers
            `unavailable` itself when it cannot complete), else `timeout / len(endpoints)`
            but at least `MIN_ATTEMPT_TIMEOUT_S`; never more than `timeout`.
        client_id, first_seq: the session (`Session`).
        node_endpoints: node id -> client endpoint, so a `leader` named in a reply can be
            tried next (and preferred afterwards).

    Raises:
        ValueError: no endpoints, a malformed endpoint, a timeout <= 0, a bad client_id
            or first_seq.
    """

    def __init__(
        self,
        endpoints: Sequence[str] | str,
        *,
        timeout: float = DEFAULT_TIMEOUT_S,
        attempt_timeout: float | None = None,
        client_id: str | None = None,
        first_seq: int = 1,
        node_endpoints: Mapping[str, str] | None = None,
    ) -> None:
        if isinstance(endpoints, str):
            endpoints = [endpoints]
        checked = endpoint_list(endpoints)
        self.rotation = Rotation(checked, node_endpoints=node_endpoints)
        if timeout <= 0 or (attempt_timeout is not None and attempt_timeout <= 0):
            raise ValueError("timeouts must be > 0 seconds")
        self.session = Session(client_id, first_seq)
        self.links = Links()
        self._timeout = timeout
        if attempt_timeout is None:
            n = len(checked)
            attempt_timeout = timeout if n == 1 else max(timeout / n, MIN_ATTEMPT_TIMEOUT_S)
        self._attempt_timeout = min(attempt_timeout, timeout)

    @property
    def endpoints(self) -> tuple[str, ...]:
        """The endpoints, in preference order at construction."""
        return self.rotation.endpoints

    @property
    def timeout(self) -> float:
        """The overall deadline of one request, in seconds."""
        return self._timeout

    @property
    def attempt_timeout(self) -> float:
        """The longest wait of one attempt of an op that may be re-sent."""
        return self._attempt_timeout

    def begin(self, op: str, fields: Mapping[str, Any], now: float) -> Exchange:
        """Start a request of `op` at time `now`; it may go to any endpoint.

        A write (an op with a session) without `client` and `seq` in `fields` takes the
        session's next seq; every retry of it re-sends the same frame.

        Raises:
            ValueError: an unknown op or field (no seq is used up then).
        """
        spec = ops.lookup(op)
        if spec is None:
            raise ValueError(f"unknown op {op!r}; known ops: {', '.join(sorted(ops.OPS))}")
        stamped = dict(fields)
        new_write = spec.has_session and "client" not in fields and "seq" not in fields
        if new_write:
            stamped.update(self.session.peek())
        frame = wire.encode_request(spec.name, **stamped)
        if new_write:
            self.session.take()  # only once the frame is good: a refused write uses none
        return Exchange(self, spec, stamped, frame, now)

    def begin_at(self, endpoint: str, op: str, fields: Mapping[str, Any], now: float) -> Exchange:
        """Start a node-addressed request: one attempt at `endpoint`, waiting up to the
        whole timeout, whatever the answer (see `endpoint_of`); no session is attached.

        Raises:
            ValueError: an unknown op or field.
        """
        spec = ops.lookup(op)
        if spec is None:
            raise ValueError(f"unknown op {op!r}")
        frame = wire.encode_request(spec.name, **fields)
        return Exchange(self, spec, dict(fields), frame, now, pinned=endpoint)

    def endpoint_of(self, node: str | None) -> str:
        """The endpoint a node-addressed request goes to (`Rotation.endpoint_of`)."""
        return self.rotation.endpoint_of(node)

    def before_send(self, endpoint: str) -> NoReply | None:
        """Why an attempt must not send to `endpoint` now (`Links.before_send`), or None."""
        return self.links.before_send(endpoint, self.rotation.endpoints)

    def while_waiting(self, endpoint: str) -> NoReply | None:
        """Whether a connection change ends the attempt at `endpoint` (`Links.while_waiting`)."""
        return self.links.while_waiting(endpoint)


# --- `members`: asking the leader too ---------------------------------------------------


def leader_to_ask(reply: Reply) -> str | None:
    """The client endpoint of the leader a `members` reply names, when only the leader's
    own answer would carry the match indexes this one lacks; else None."""
    row = reply.member(reply.leader) if reply.ok and reply.leader else None
    if row is None or row.get("match_index") is not None:
        return None
    endpoint = row.get("client")
    return endpoint if is_endpoint(endpoint) else None


def members_answer(first: Reply, from_leader: Reply) -> Reply:
    """The leader's `members` answer if it still leads, else the first answer."""
    return from_leader if from_leader.ok and from_leader.leader == first.leader else first
