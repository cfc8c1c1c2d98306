"""A deterministic simulator: N Raft cores on a fake network with a fake clock.

Not a test file. `SimCluster` owns every node's durable state (a dict standing in for
storage), routes messages through a seeded, fault-injecting network, and checks the Raft
safety properties after every delivery and every tick:

- election safety: at most one `leader_elected` per term across all nodes;
- log matching: two logs with an entry of the same index and term agree up to it;
- leader completeness: a new leader's log holds every entry committed before it won;
- state machine safety: every node applies the same entry at each index;
- snapshot safety: every snapshot taken or installed at index i holds exactly the entries
  applied everywhere at 1..i (a snapshot is a state machine, so this is state machine
  safety for state that arrives without being applied entry by entry);
- read safety: a released ReadIndex point covers every entry committed before the read
  was asked for (the linearizability condition of thesis §6.4);
- terms never decrease on a node (also across restarts), commit never decreases within
  one incarnation, and each node's own `check_invariants()`.

A failed check raises `SimFailure` whose message names the seed and the last trace lines
(``t=41 n2 role_changed follower->candidate term=3``), so `ZRAFT_SEED=41 pytest ...`
replays it exactly: every random choice comes from the one seeded `random.Random`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, replace

from zraft.core import (
    ChangeRefused,
    Entry,
    Event,
    HardState,
    Membership,
    Message,
    NotLeader,
    ProposalDropped,
    Raft,
    RaftConfig,
    Ready,
    RestoredState,
    Role,
    SnapshotMeta,
    SnapshotRequest,
)
from zraft.core.membership import MembershipChange


class SimFailure(AssertionError):
    """A safety or liveness check failed; the message carries the seed and a trace."""


@dataclass
class Durable:
    """What survives a crash: hard state, newest snapshot and the log after `offset`."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)
    snapshot: SnapshotMeta | None = None
    offset: int = 0  # entries[0] has index offset + 1 (the log was compacted to offset)

    def save(self, rd: Ready) -> None:
        """Persist a Ready: an installed snapshot replaces the log, then entries, hard state."""
        if rd.snapshot is not None:
            self.snapshot = rd.snapshot
            self.entries = []
            self.offset = rd.snapshot.index
        if rd.entries:
            first = rd.entries[0].index
            del self.entries[first - self.offset - 1 :]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state

    def compact(self, snapshot: SnapshotMeta, compact_to: int) -> None:
        """Record a snapshot the node took and drop the log up to `compact_to`."""
        if self.snapshot is None or snapshot.index > self.snapshot.index:
            self.snapshot = snapshot
        if compact_to > self.offset:
            del self.entries[: compact_to - self.offset]
            self.offset = compact_to

    def restored(self, membership: Membership) -> RestoredState:
        """What a restarted node reads back: the log after the snapshot it loads."""
        snapshot = self.snapshot
        after = snapshot.index if snapshot else 0
        return RestoredState(
            hard_state=self.hard_state,
            entries=tuple(e for e in self.entries if e.index > after),
            membership=snapshot.membership if snapshot else membership,
            snapshot=snapshot,
        )


@dataclass(order=True)
class _InFlight:
    due: int
    order: int
    msg: Message = field(compare=False)


@dataclass
class SimNode:
    """One simulated node: its core (None while crashed), durable state and applied log."""

    id: str
    durable: Durable
    raft: Raft | None
    applied: list[Entry] = field(default_factory=list)
    reads: dict[int, int] = field(default_factory=dict)  # context -> commit floor at ask
    max_commit: int = 0
    max_term: int = 0


class SimCluster:
    """N Raft cores on a simulated network; see the module docstring."""

    def __init__(
        self,
        ids: Iterable[str],
        seed: int = 0,
        *,
        pre_vote: bool = True,
        check_quorum: bool = True,
        election_ticks: tuple[int, int] = (10, 20),
        heartbeat_ticks: int = 2,
        max_batch_entries: int = 64,
        max_inflight: int = 8,
        voters: Iterable[str] | None = None,
        max_promotion_lag: int = 5,
    ) -> None:
        self.ids = list(ids)
        self.seed = seed
        self.rng = random.Random(seed)
        # The bootstrap membership; nodes outside it are spares that may be added later.
        self.membership = Membership(frozenset(self.ids if voters is None else voters))
        self.configs = {
            i: RaftConfig(
                node_id=i,
                election_ticks_min=election_ticks[0],
                election_ticks_max=election_ticks[1],
                heartbeat_ticks=heartbeat_ticks,
                pre_vote=pre_vote,
                check_quorum=check_quorum,
                max_batch_entries=max_batch_entries,
                max_inflight=max_inflight,
                max_promotion_lag=max_promotion_lag,
            )
            for i in self.ids
        }
        self.nodes: dict[str, SimNode] = {}
        for i in self.ids:
            self.nodes[i] = SimNode(i, Durable(), None)
            self._boot(i)
        self.now = 0
        self._order = 0
        self._in_flight: list[_InFlight] = []
        self._cuts: set[tuple[str, str]] = set()  # (src, dst) pairs that drop everything
        self._filters: list[Callable[[Message], bool]] = []  # drop a message if any is True
        self.drop_rate = 0.0
        self.dup_rate = 0.0
        self.max_delay = 0  # ticks; > 0 also reorders messages
        self.crash_before_sync_rate = 0.0  # crash a leader between early send and fsync
        self.snapshot_every = 0  # take a snapshot after this many applied entries (0: never)
        self.snapshot_trailing = 0  # entries kept in the log behind a snapshot
        self.snapshot_timeout = 30  # ticks after which a sent snapshot counts as failed
        self.snapshot_states: dict[int, tuple[Entry, ...]] = {}  # index -> applied entries
        self._snapshot_sends: dict[tuple[str, str], int] = {}  # (leader, peer) -> tick sent
        self.trace: list[str] = []
        self.events: list[tuple[int, str, Event]] = []
        self.leaders_by_term: dict[int, str] = {}
        self.committed: list[Entry] = []  # the one applied sequence all nodes must share
        self._next_context = 1
        self.delivered = 0

    # === faults ================================================================================
    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups (nodes not named form one more group)."""
        sets = [set(g) for g in groups]
        rest = set(self.ids) - set().union(*sets)
        if rest:
            sets.append(rest)
        self._cuts = {
            (a, b) for a in self.ids for b in self.ids if not any(a in s and b in s for s in sets)
        }
        self._note(f"partition {' | '.join(','.join(sorted(s)) for s in sets)}")

    def isolate(self, node_id: str) -> None:
        """Cut `node_id` off from everyone."""
        self.partition({node_id})

    def cut(self, src: str, dst: str) -> None:
        """Drop everything sent from `src` to `dst` (one direction only)."""
        self._cuts.add((src, dst))
        self._note(f"cut {src}->{dst}")

    def heal(self) -> None:
        """Restore every link."""
        self._cuts.clear()
        self._note("heal")

    def add_filter(self, drop: Callable[[Message], bool]) -> None:
        """Drop every message for which `drop(msg)` is True (scripted scenarios)."""
        self._filters.append(drop)

    def clear_filters(self) -> None:
        """Remove every filter added with `add_filter`."""
        self._filters.clear()

    def set_drop_rate(self, rate: float) -> None:
        """Drop each message with probability `rate`."""
        self.drop_rate = rate

    def set_dup_rate(self, rate: float) -> None:
        """Deliver each message twice with probability `rate`."""
        self.dup_rate = rate

    def set_delay(self, max_ticks: int) -> None:
        """Delay each message by 0..max_ticks ticks, which also reorders them."""
        self.max_delay = max_ticks

    def set_crash_before_sync_rate(self, rate: float) -> None:
        """Crash a leader between sending its early appends and persisting them."""
        self.crash_before_sync_rate = rate

    def crash(self, node_id: str) -> None:
        """Stop a node: volatile state is lost, durable state and messages to it are not kept."""
        node = self.nodes[node_id]
        node.raft = None
        self._in_flight = [f for f in self._in_flight if f.msg.dst != node_id]
        self._note(f"{node_id} crashed")

    def restart(self, node_id: str) -> None:
        """Rebuild a crashed node from its durable state."""
        if self.nodes[node_id].raft is None:
            self._boot(node_id)
            self._note(f"{node_id} restarted")

    def enable_snapshots(self, every: int, trailing: int = 0) -> None:
        """Make every node snapshot after `every` applied entries, keeping `trailing`."""
        self.snapshot_every = every
        self.snapshot_trailing = trailing
        self._note(f"snapshots every {every}, trailing {trailing}")

    def take_snapshot(self, node_id: str) -> SnapshotMeta:
        """Snapshot `node_id`'s applied state now and compact its log (driver's role)."""
        node = self.nodes[node_id]
        r = self.raft(node_id)
        meta = r.snapshot_meta(r.applied_index)
        self._record_snapshot_state(node_id, meta.index, tuple(node.applied[: meta.index]))
        compact_to = max(r.log.snapshot_index, meta.index - self.snapshot_trailing)
        r.compact(meta, compact_to)
        node.durable.compact(meta, compact_to)
        self._note(f"{node_id} snapshot at {meta.index} term {meta.term} from {compact_to + 1}")
        return meta

    def is_up(self, node_id: str) -> bool:
        """Whether the node is running."""
        return self.nodes[node_id].raft is not None

    # === driving ===============================================================================
    def raft(self, node_id: str) -> Raft:
        """The live core of `node_id` (fails if crashed)."""
        r = self.nodes[node_id].raft
        if r is None:
            raise SimFailure(self._explain(f"{node_id} is crashed"))
        return r

    def leader(self) -> str | None:
        """The live leader with the highest term, if any."""
        best: tuple[int, str] | None = None
        for i, node in self.nodes.items():
            r = node.raft
            if r is not None and r.role is Role.LEADER and (best is None or r.term > best[0]):
                best = (r.term, i)
        return best[1] if best else None

    def tick(self, n: int = 1) -> None:
        """Advance the clock `n` ticks: tick every live node, then deliver what is due."""
        for _ in range(n):
            self.now += 1
            self._expire_snapshot_sends()
            for i in self.ids:
                r = self.nodes[i].raft
                if r is not None:
                    r.tick()
                    self._process(i)
            self._deliver_due()
            self.check_logs()

    def run_until(self, predicate: Callable[[], bool], max_ticks: int, what: str = "") -> int:
        """Tick until `predicate()` holds; returns ticks taken, fails after `max_ticks`."""
        for taken in range(max_ticks + 1):
            if predicate():
                return taken
            self.tick()
        raise SimFailure(self._explain(f"not reached within {max_ticks} ticks: {what}"))

    def campaign(self, node_id: str) -> None:
        """Make `node_id` start an election now."""
        self.raft(node_id).campaign()
        self._process(node_id)
        self._deliver_due()

    def propose(self, node_id: str, data: bytes) -> tuple[int, int] | None:
        """Propose at `node_id`; returns (term, index), or None if it is not leader (or down)."""
        if not self.is_up(node_id):
            return None
        try:
            result = self.raft(node_id).propose(data)
        except (NotLeader, ProposalDropped):
            return None
        self._process(node_id)
        self._deliver_due()
        return result

    def change_membership(self, change: MembershipChange) -> tuple[int, int] | None:
        """Propose `change` at the leader; returns (term, index), or None if refused."""
        leader = self.leader()
        if leader is None:
            return None
        try:
            result = self.raft(leader).propose_membership(change)
        except (NotLeader, ProposalDropped, ChangeRefused) as exc:
            self._note(f"{leader} refused {change.kind} {change.node_id}: {exc}")
            return None
        self._note(f"{leader} proposed {change.kind} {change.node_id} at {result[1]}")
        self._process(leader)
        self._deliver_due()
        return result

    def members(self) -> frozenset[str]:
        """The members in the leader's view (all ids' bootstrap members if no leader)."""
        leader = self.leader()
        return self.raft(leader).membership.members if leader else self.membership.members

    def read(self, node_id: str) -> int | None:
        """Ask `node_id` for a read index; returns the context, or None if refused (or down)."""
        if not self.is_up(node_id):
            return None
        context = self._next_context
        self._next_context += 1
        # The read must observe everything committed anywhere before it was asked.
        self.nodes[node_id].reads[context] = len(self.committed)
        try:
            self.raft(node_id).read_index(context)
        except NotLeader:
            del self.nodes[node_id].reads[context]
            return None
        self._process(node_id)
        self._deliver_due()
        return context

    def stabilize(self, max_rounds: int = 10_000) -> None:
        """Deliver messages until none are in flight (zero-delay networks only)."""
        for _ in range(max_rounds):
            if not self._in_flight:
                return
            self._deliver_due(force=True)
        raise SimFailure(self._explain("network did not go quiet"))

    def events_named(self, name: str, node_id: str | None = None) -> list[Event]:
        """Events named `name` (optionally of one node), in emission order."""
        return [e for _, i, e in self.events if e.name == name and (node_id in (None, i))]

    # === the Ready loop ========================================================================
    def _boot(self, node_id: str) -> None:
        node = self.nodes[node_id]
        restored = node.durable.restored(self.membership)
        node.raft = Raft(self.configs[node_id], restored, self.rng.randint)
        # The state machine is volatile: rebuilt from the snapshot, then by re-applying.
        snapshot = restored.snapshot
        node.applied = list(self.snapshot_states[snapshot.index]) if snapshot else []
        node.reads = {}
        node.max_commit = node.raft.commit_index

    def _process(self, node_id: str) -> None:
        node = self.nodes[node_id]
        r = node.raft
        while r is not None and r.has_ready():
            rd = r.ready()
            for msg in rd.early_messages:  # 0. a leader's appends may precede its fsync
                self._send(msg)
            if rd.early_messages and self.rng.random() < self.crash_before_sync_rate:
                self.crash(node_id)  # the appends left, our own write never happened
                self._note(f"{node_id} crashed after sending, before its fsync")
                return
            node.durable.save(rd)  # 1. persist
            if rd.snapshot is not None:  # ... and install: the state machine is replaced
                node.applied = list(self.snapshot_states[rd.snapshot.index])
                self._check_snapshot_state(node_id, rd.snapshot.index)
                self._note(f"{node_id} installed snapshot {rd.snapshot.index}")
            for msg in rd.messages:  # 2. send
                if isinstance(msg, SnapshotRequest):
                    self._snapshot_sends[(msg.src, msg.dst)] = self.now
                self._send(msg)
            for entry in rd.committed:  # 3. apply
                self._apply(node, entry)
            for rs in rd.read_states:
                self._check_read(node, rs.context, rs.index)
            for event in rd.events:
                self._record(node_id, event)
            r.advance(rd)  # 4. advance
            self._check_node(node)
            if (
                self.snapshot_every
                and r.applied_index - r.snapshot_index >= self.snapshot_every
            ):
                self.take_snapshot(node_id)

    def _send(self, msg: Message) -> None:
        if (msg.src, msg.dst) in self._cuts or self.nodes[msg.dst].raft is None:
            return
        if any(drop(msg) for drop in self._filters):
            return
        if self.drop_rate and self.rng.random() < self.drop_rate:
            return
        copies = 2 if self.dup_rate and self.rng.random() < self.dup_rate else 1
        for _ in range(copies):
            delay = self.rng.randint(0, self.max_delay) if self.max_delay else 0
            self._order += 1
            self._in_flight.append(_InFlight(self.now + delay, self._order, msg))

    def _deliver_due(self, *, force: bool = False) -> None:
        rounds = 0
        while True:
            due = [f for f in self._in_flight if force or f.due <= self.now]
            if not due:
                return
            rounds += 1
            if rounds > 10_000:
                raise SimFailure(self._explain("message storm: delivery does not converge"))
            due.sort()
            pick = due[0]
            self._in_flight.remove(pick)
            force = False
            target = self.nodes[pick.msg.dst].raft
            if target is None or (pick.msg.src, pick.msg.dst) in self._cuts:
                continue
            self.delivered += 1
            target.step(pick.msg)
            self._process(pick.msg.dst)

    def _expire_snapshot_sends(self) -> None:
        """A transfer with no outcome after `snapshot_timeout` ticks is reported failed."""
        for (src, dst), sent in list(self._snapshot_sends.items()):
            if self.now - sent < self.snapshot_timeout:
                continue
            del self._snapshot_sends[(src, dst)]
            r = self.nodes[src].raft
            if r is not None:
                r.snapshot_failed(dst)
                self._process(src)

    # === checks ================================================================================
    def _record_snapshot_state(self, node_id: str, index: int, state: tuple[Entry, ...]) -> None:
        if len(state) != index:
            raise SimFailure(self._explain(f"{node_id} snapshot at {index} holds {len(state)}"))
        known = self.snapshot_states.setdefault(index, state)
        if known != state:
            raise SimFailure(self._explain(f"snapshot safety: {node_id} differs at {index}"))
        self._check_snapshot_state(node_id, index)

    def _check_snapshot_state(self, node_id: str, index: int) -> None:
        state = self.snapshot_states[index]
        common = min(index, len(self.committed))
        if state[:common] != tuple(self.committed[:common]):
            raise SimFailure(
                self._explain(f"snapshot safety: {node_id}'s snapshot {index} differs")
            )

    def _record(self, node_id: str, event: Event) -> None:
        self.events.append((self.now, node_id, event))
        f = event.fields
        detail = " ".join(f"{k}={v}" for k, v in f.items() if k not in ("old_role", "new_role"))
        if event.name == "role_changed":
            detail = f"{f['old_role']}->{f['new_role']} {detail}"
        if event.name != "commit_advanced":
            self._note(f"{node_id} {event.name} {detail}")
        if event.name == "leader_elected":
            term = f["term"]
            other = self.leaders_by_term.get(term)
            if other is not None and other != node_id:
                raise SimFailure(self._explain(f"election safety: {other} and {node_id} in {term}"))
            self.leaders_by_term[term] = node_id
            self._check_leader_completeness(node_id)

    def _apply(self, node: SimNode, entry: Entry) -> None:
        index = len(node.applied) + 1
        if entry.index != index:
            raise SimFailure(self._explain(f"{node.id} applied {entry.index}, expected {index}"))
        node.applied.append(entry)
        if index <= len(self.committed):
            if self.committed[index - 1] != entry:
                raise SimFailure(
                    self._explain(
                        f"state machine safety: {node.id} applied {entry} at {index}, "
                        f"others applied {self.committed[index - 1]}"
                    )
                )
        else:
            self.committed.append(entry)

    def _check_read(self, node: SimNode, context: int, index: int | None) -> None:
        floor = node.reads.pop(context, None)
        if floor is None:
            raise SimFailure(self._explain(f"{node.id} released unknown read {context}"))
        if index is not None and index < floor:
            raise SimFailure(
                self._explain(
                    f"read safety: {node.id} read {context} at index {index}, but {floor} "
                    "entries were committed before it was asked"
                )
            )

    def _check_leader_completeness(self, node_id: str) -> None:
        r = self.raft(node_id)
        for entry in self.committed:
            if entry.index <= r.log.snapshot_index:
                continue  # covered by its snapshot, checked against `committed` when taken
            if r.log.term_at(entry.index) != entry.term:
                raise SimFailure(
                    self._explain(f"leader completeness: {node_id} lacks committed {entry}")
                )

    def _check_node(self, node: SimNode) -> None:
        r = node.raft
        if r is None:
            return
        r.check_invariants()
        if r.term < node.max_term:
            raise SimFailure(self._explain(f"{node.id} term went back to {r.term}"))
        if r.commit_index < node.max_commit:
            raise SimFailure(self._explain(f"{node.id} commit went back to {r.commit_index}"))
        node.max_term, node.max_commit = r.term, r.commit_index

    def check_logs(self) -> None:
        """Log matching across every pair of nodes (crashed ones by their durable log).

        Logs may start at different indexes (compaction); only the overlap is compared.
        """
        logs: dict[str, tuple[int, tuple[Entry, ...]]] = {}  # id -> (first index, entries)
        for i, n in self.nodes.items():
            if n.raft is not None:
                log = n.raft.log
                logs[i] = (log.first_index, log.slice(log.first_index, log.last_index + 1))
            else:
                logs[i] = (n.durable.offset + 1, tuple(n.durable.entries))
        ids = sorted(logs)
        for a_pos, a in enumerate(ids):
            for b in ids[a_pos + 1 :]:
                (fa, la), (fb, lb) = logs[a], logs[b]
                low = max(fa, fb)
                high = min(fa + len(la), fb + len(lb)) - 1  # last common index
                top = next(
                    (k for k in range(high, low - 1, -1) if la[k - fa].term == lb[k - fb].term),
                    low - 1,
                )
                if la[low - fa : top - fa + 1] != lb[low - fb : top - fb + 1]:
                    raise SimFailure(self._explain(f"log matching: {a} and {b} differ below {top}"))

    # === tracing ===============================================================================
    def _note(self, line: str) -> None:
        self.trace.append(f"t={self.now} {line}")

    def _explain(self, problem: str) -> str:
        tail = "\n  ".join(self.trace[-40:])
        return f"{problem}\nseed={self.seed} (replay: ZRAFT_SEED={self.seed})\n  {tail}"

    def summary(self) -> str:
        """One line per node: role, term, commit, last index."""
        lines = []
        for i, n in self.nodes.items():
            r = n.raft
            if r is None:
                lines.append(f"{i}: down")
            else:
                lines.append(
                    f"{i}: {r.role} term={r.term} commit={r.commit_index} last={r.last_index}"
                )
        return "; ".join(lines)


def with_term(entry: Entry, term: int) -> Entry:
    """A copy of `entry` in another term (for hand-built conflicting logs)."""
    return replace(entry, term=term)
