"""Bookkeeping of client requests a node is still working on.

A request waits in exactly one place until it is answered or its deadline passes:

- `writes`: proposed at log index i in term t; answered when index i is applied (with
  the kv result if the entry applied there is of term t, else "not applied").
- `reads`: waiting for a ReadIndex point, then for the state machine to reach it.
- `forwarded`: sent to the leader; answered when the leader's reply comes back.
- `parked`: no leader known yet (or the leader could not be reached); retried every loop
  turn until the deadline, then answered `unavailable`.

Who to answer is a `ReplyTo`: a client envelope on our client socket, or a peer that
forwarded the request to us. Deadlines all have the same length, so one FIFO queue
ordered by arrival serves as the timer wheel; entries already answered are skipped.
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from zraft.wire.client import Request

Bucket = Literal["writes", "reads", "forwarded", "parked"]


@dataclass(frozen=True, slots=True)
class ReplyTo:
    """Where an answer goes: a client envelope, or (peer, request id) for a forward; and,
    for the metrics, the op asked (empty until decoded) and when it arrived."""

    envelope: tuple[bytes, ...] | None = None
    peer: str | None = None
    request_id: int = 0
    op: str = ""
    started: float = 0.0

    @property
    def is_forwarded(self) -> bool:
        """Whether a peer forwarded this request to us (so we must not forward it again)."""
        return self.peer is not None


@dataclass(slots=True)
class Pending:
    """One request in flight."""

    request: Request
    reply_to: ReplyTo
    deadline: float
    term: int = 0  # writes: the term the entry was proposed in
    read_index: int = 0  # reads: the index to wait for, once known


@dataclass(slots=True)
class PendingRequests:
    """Every request the node is still working on, by bucket, with one deadline queue."""

    writes: dict[int, Pending] = field(default_factory=dict)  # log index -> request
    reads: dict[int, Pending] = field(default_factory=dict)  # read context -> request
    forwarded: dict[int, Pending] = field(default_factory=dict)  # forward id -> request
    parked: dict[int, Pending] = field(default_factory=dict)  # park id -> request
    _read_waits: list[tuple[int, int]] = field(default_factory=list)  # heap (index, context)
    _deadlines: deque[tuple[float, Bucket, int, Pending]] = field(default_factory=deque)

    def add(self, bucket: Bucket, key: int, pending: Pending) -> None:
        """File `pending` under `bucket`/`key` and start watching its deadline."""
        getattr(self, bucket)[key] = pending
        self._deadlines.append((pending.deadline, bucket, key, pending))

    def wait_for_apply(self, context: int, index: int) -> None:
        """A read got its ReadIndex point; release it once `index` is applied."""
        pending = self.reads.get(context)
        if pending is not None:
            pending.read_index = index
            heapq.heappush(self._read_waits, (index, context))

    def reads_ready(self, applied_index: int) -> list[Pending]:
        """Reads whose point the state machine has reached, removed from the table."""
        ready: list[Pending] = []
        while self._read_waits and self._read_waits[0][0] <= applied_index:
            _, context = heapq.heappop(self._read_waits)
            pending = self.reads.pop(context, None)
            if pending is not None:
                ready.append(pending)
        return ready

    def take_parked(self) -> list[tuple[int, Pending]]:
        """Every parked request with its park id, removed from the table.

        The caller re-dispatches each one, or puts it back with `repark` (which keeps its
        original deadline).
        """
        parked = list(self.parked.items())
        self.parked.clear()
        return parked

    def repark(self, key: int, pending: Pending) -> None:
        """Put back a request taken with `take_parked`; its deadline is already watched."""
        self.parked[key] = pending

    def expire(self, now: float) -> list[tuple[Bucket, Pending]]:
        """Remove and return every request whose deadline has passed.

        The deadline queue also lets go of the requests answered meanwhile, from its front
        (they are answered in about the order they came, all with one timeout): kept until
        their deadlines, a leader held every request of the last timeout's worth of load
        (30,000 at 10,000 puts/s with a 3 s timeout, values included), which was most of
        why its memory was twice a follower's.
        """
        expired: list[tuple[Bucket, Pending]] = []
        deadlines = self._deadlines
        while deadlines:
            deadline, bucket, key, pending = deadlines[0]
            live = getattr(self, bucket).get(key) is pending
            if live and deadline > now:
                break
            deadlines.popleft()
            if live:
                del getattr(self, bucket)[key]
                expired.append((bucket, pending))
        return expired

    def __len__(self) -> int:
        return len(self.writes) + len(self.reads) + len(self.forwarded) + len(self.parked)
