"""`Ready`: the work the core hands its driver, and `ReadState`, a released linearizable read."""

from __future__ import annotations

from dataclasses import dataclass

from zraft.core.events import Event
from zraft.core.messages import Message
from zraft.core.types import Entry, HardState, SnapshotMeta


@dataclass(frozen=True, slots=True)
class ReadState:
    """A ReadIndex request the core has resolved (thesis §6.4).

    `index` is the commit index the read must wait for: serve it once the state machine
    has applied at least `index`. `index` is None when the read failed (leadership was
    lost, or the leader refused it); the client should retry.
    """

    context: int
    index: int | None


@dataclass(frozen=True, slots=True)
class Ready:
    """Work the caller must do, in this order.

    0. `early_messages` may be sent at once, before step 1: they are a leader's appends,
       which depend on nothing this Ready persists (thesis §10.2.1: the leader writes its
       own log in parallel with replicating; it counts itself towards a commit quorum only
       once its entries are durable, i.e. after `advance`).
    1. Persist `hard_state` (if not None), `snapshot` (if not None) and `entries`
       (storage first truncates its log from `entries[0].index`), then fsync once.
    2. Only then send `messages`.
    3. Apply `committed` to the state machine in order; release `read_states` whose
       index has been applied.
    4. Call `Raft.advance(ready)`.

    `events` may be logged at any point; they describe what already happened.
    """

    hard_state: HardState | None
    entries: tuple[Entry, ...]
    snapshot: SnapshotMeta | None
    messages: tuple[Message, ...]
    early_messages: tuple[Message, ...]
    committed: tuple[Entry, ...]
    read_states: tuple[ReadState, ...]
    events: tuple[Event, ...]
    must_sync: bool
    """Whether step 1 needs an fsync before `messages` go out: entries, a snapshot, or a
    changed term or vote. A hard state whose only change is `commit` may be written
    without one: commit is recomputed by the leader after a crash (§5.3)."""
