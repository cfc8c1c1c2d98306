"""Helpers for the core tests: building cores, draining Readies, message builders, `Net`.

`make_raft` builds a `Raft` from a hand-written restored state with a deterministic
`rand_int`. The message builders take keyword arguments with harmless defaults, so a test
names only the fields its rule is about. `Net` is a tiny zero-delay network of directly
driven cores for tests that must hold, inspect or count individual messages, which the
simulator (`tests/sim.py`) delivers all at once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from zraft.core import (
    AppendRequest,
    AppendResponse,
    Entry,
    EntryKind,
    Event,
    HardState,
    Membership,
    Message,
    Raft,
    RaftConfig,
    ReadState,
    Ready,
    RestoredState,
    Role,
    VoteRequest,
    VoteResponse,
)


class ScriptedRand:
    """A deterministic `rand_int(low, high)` that records every range it is asked for.

    It returns `values` in turn and then keeps returning the last one; with no values it
    returns `low`, so the election timeout is exactly `election_ticks_min`.
    """

    def __init__(self, *values: int) -> None:
        self.values = list(values)
        self.calls: list[tuple[int, int]] = []

    def __call__(self, low: int, high: int) -> int:
        self.calls.append((low, high))
        if not self.values:
            return low
        value = self.values.pop(0) if len(self.values) > 1 else self.values[0]
        if not low <= value <= high:
            raise AssertionError(f"scripted value {value} outside [{low}, {high}]")
        return value


def log_entries(*terms: int, start: int = 1) -> tuple[Entry, ...]:
    """Entries with the given terms at indexes `start`, `start + 1`, ... (data names them)."""
    return tuple(
        Entry(term, start + offset, EntryKind.NORMAL, f"i{start + offset}t{term}".encode())
        for offset, term in enumerate(terms)
    )


def make_raft(
    node_id: str = "n1",
    peers: Iterable[str] = ("n2", "n3"),
    *,
    learners: Iterable[str] = (),
    log_terms: Sequence[int] = (),
    term: int | None = None,
    voted_for: str | None = None,
    commit: int = 0,
    rand: ScriptedRand | None = None,
    **cfg: Any,
) -> Raft:
    """A `Raft` restored from a hand-written durable state.

    Args:
        node_id: this node; it is a voter unless named in `learners`.
        peers: the other members; those not in `learners` are voters.
        log_terms: the durable log, one term per entry from index 1.
        term: the durable term (default: the last log term, or 0).
        voted_for, commit: the rest of the durable hard state.
        rand: the `rand_int` (default: always `election_ticks_min`).
        **cfg: `RaftConfig` fields (`election_ticks_min` 10 and `_max` 20 by default).
    """
    learner_set = frozenset(learners)
    members = frozenset({node_id, *peers})
    membership = Membership(voters=members - learner_set, learners=learner_set)
    if term is None:
        term = log_terms[-1] if log_terms else 0
    restored = RestoredState(
        hard_state=HardState(term=term, voted_for=voted_for, commit=commit),
        entries=log_entries(*log_terms),
        membership=membership,
    )
    config = RaftConfig(node_id=node_id, **cfg)
    return Raft(config, restored, rand if rand is not None else ScriptedRand())


def drain(r: Raft) -> Ready:
    """Take one Ready and acknowledge it at once (persisted, sent, applied)."""
    rd = r.ready()
    r.advance(rd)
    r.check_invariants()
    return rd


def drain_all(r: Raft) -> list[Ready]:
    """Drain until the core has nothing left (a leader may commit during `advance`)."""
    readies = [drain(r)]
    for _ in range(100):
        if not r.has_ready():
            return readies
        readies.append(drain(r))
    raise AssertionError("the core keeps producing Readies")


def outgoing(rd: Ready) -> tuple[Message, ...]:
    """Every message a Ready sends: a leader's early appends first, then the rest."""
    return rd.early_messages + rd.messages


def messages_of(readies: Ready | Iterable[Ready]) -> list[Message]:
    """Every message (early ones included) in one Ready or a sequence of them, in order."""
    if isinstance(readies, Ready):
        readies = [readies]
    return [m for rd in readies for m in outgoing(rd)]


def events_of(readies: Ready | Iterable[Ready]) -> list[Event]:
    """Every event in one Ready or a sequence of them, in order."""
    if isinstance(readies, Ready):
        readies = [readies]
    return [e for rd in readies for e in rd.events]


def event_names(readies: Ready | Iterable[Ready]) -> list[str]:
    """The names of `events_of(readies)`."""
    return [str(e.name) for e in events_of(readies)]


def vote_req(
    src: str,
    dst: str,
    term: int,
    *,
    last_log_index: int = 0,
    last_log_term: int = 0,
    prevote: bool = False,
    transfer: bool = False,
) -> VoteRequest:
    """A VoteRequest (a pre-vote when `prevote`)."""
    return VoteRequest(
        src=src,
        dst=dst,
        term=term,
        last_log_index=last_log_index,
        last_log_term=last_log_term,
        prevote=prevote,
        transfer=transfer,
    )


def vote_resp(
    src: str, dst: str, term: int, *, granted: bool = True, prevote: bool = False
) -> VoteResponse:
    """A VoteResponse (granted by default)."""
    return VoteResponse(src=src, dst=dst, term=term, granted=granted, prevote=prevote)


def append_req(
    src: str,
    dst: str,
    term: int,
    *,
    prev_index: int = 0,
    prev_term: int = 0,
    entries: tuple[Entry, ...] = (),
    commit: int = 0,
    seq: int = 0,
) -> AppendRequest:
    """An AppendRequest (a heartbeat when `entries` is empty)."""
    return AppendRequest(
        src=src,
        dst=dst,
        term=term,
        prev_index=prev_index,
        prev_term=prev_term,
        entries=entries,
        commit=commit,
        seq=seq,
    )


def append_resp(
    src: str,
    dst: str,
    term: int,
    *,
    success: bool = True,
    index: int = 0,
    hint: int = 0,
    seq: int = 0,
) -> AppendResponse:
    """An AppendResponse (a success by default)."""
    return AppendResponse(
        src=src, dst=dst, term=term, success=success, index=index, hint=hint, seq=seq
    )


def elect(r: Raft) -> list[Ready]:
    """Make `r` leader by feeding it granted (pre-)votes from every other voter.

    Returns the Readies drained afterwards: the leader's no-op is then durable (but not
    committed, since no follower acknowledged it).
    """
    r.campaign()
    peers = sorted(r.membership.voters - {r.id})
    if r.role is Role.PRE_CANDIDATE:
        for peer in peers:
            if r.role is not Role.PRE_CANDIDATE:
                break
            r.step(vote_resp(peer, r.id, r.term + 1, prevote=True))
    for peer in peers:
        if r.role is not Role.CANDIDATE:
            break
        r.step(vote_resp(peer, r.id, r.term))
    if r.role is not Role.LEADER:
        raise AssertionError(f"{r.id} did not become leader: {r.role}")
    return drain_all(r)


class Net:
    """A zero-delay network of directly driven cores that records what it carries.

    `process(id)` drains one node and returns the messages it sent without delivering
    them; `deliver(msgs)` steps messages into their destinations and keeps delivering
    whatever that produces until the network is quiet. Links in `blocked` drop messages.
    """

    def __init__(self, *rafts: Raft) -> None:
        self.rafts: dict[str, Raft] = {r.id: r for r in rafts}
        self.sent: list[Message] = []
        self.delivered: list[Message] = []
        self.events: list[tuple[str, Event]] = []
        self.read_states: dict[str, list[ReadState]] = {i: [] for i in self.rafts}
        self.applied: dict[str, list[Entry]] = {i: [] for i in self.rafts}
        self.blocked: set[tuple[str, str]] = set()

    def process(self, node_id: str) -> list[Message]:
        """Drain `node_id` until it has nothing left; returns the messages it sent."""
        r = self.rafts[node_id]
        out: list[Message] = []
        for rd in drain_all(r):
            out.extend(outgoing(rd))
            self.events.extend((node_id, e) for e in rd.events)
            self.read_states[node_id].extend(rd.read_states)
            self.applied[node_id].extend(rd.committed)
        self.sent.extend(out)
        return out

    def deliver(self, msgs: Iterable[Message], max_steps: int = 100_000) -> None:
        """Deliver `msgs` in order, then everything they cause, until quiet."""
        queue = list(msgs)
        for _ in range(max_steps):
            if not queue:
                return
            msg = queue.pop(0)
            if (msg.src, msg.dst) in self.blocked or msg.dst not in self.rafts:
                continue
            self.delivered.append(msg)
            self.rafts[msg.dst].step(msg)
            queue.extend(self.process(msg.dst))
        raise AssertionError("the network did not go quiet")

    def run(self) -> None:
        """Drain every node and deliver until quiet."""
        for node_id in self.rafts:
            self.deliver(self.process(node_id))

    def tick(self, n: int = 1) -> None:
        """Tick every node `n` times, delivering until quiet after each round."""
        for _ in range(n):
            for r in self.rafts.values():
                r.tick()
            self.run()

    def isolate(self, node_id: str) -> None:
        """Drop everything to and from `node_id`."""
        for other in self.rafts:
            if other != node_id:
                self.blocked |= {(node_id, other), (other, node_id)}

    def heal(self) -> None:
        """Restore every link."""
        self.blocked.clear()

    def events_named(self, name: str, node_id: str | None = None) -> list[Event]:
        """Recorded events called `name`, optionally only those of `node_id`."""
        return [e for i, e in self.events if e.name == name and node_id in (None, i)]


def make_net(
    ids: Sequence[str] = ("n1", "n2", "n3"), *, leader: str | None = "n1", **cfg: Any
) -> Net:
    """A `Net` of voters `ids`; with `leader`, that node campaigns and wins first.

    Every node draws a fixed election timeout of `election_ticks_min`, so only the
    explicit campaign starts an election unless a test ticks that far.
    """
    rafts = [make_raft(i, [p for p in ids if p != i], **cfg) for i in ids]
    net = Net(*rafts)
    if leader is not None:
        net.rafts[leader].campaign()
        net.run()
        if net.rafts[leader].role is not Role.LEADER:
            raise AssertionError(f"{leader} did not win the election")
    return net
