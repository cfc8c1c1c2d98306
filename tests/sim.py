"""A deterministic simulator: N Raft cores on a fake network with a fake clock.

Not a test file. `SimCluster` owns every node's durable state (a dict standing in for
storage), routes messages through a seeded, fault-injecting network, and checks the Raft
safety properties after every delivery and every tick:

- election safety: at most one `leader_elected` per term across all nodes;
- log matching: two logs with an entry of the same index and term agree up to it;
- leader completeness: a new leader's log holds every entry committed before it won;
- state machine safety: every node applies the same entry at each index;
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
)


class SimFailure(AssertionError):
    """A safety or liveness check failed; the message carries the seed and a trace."""


@dataclass
class Durable:
    """What survives a crash: the hard state and the log (MemoryStorage's role)."""

    hard_state: HardState = field(default_factory=HardState)
    entries: list[Entry] = field(default_factory=list)

    def save(self, rd: Ready) -> None:
        """Persist a Ready's hard state and entries, truncating a replaced suffix first."""
        if rd.entries:
            first = rd.entries[0].index
            del self.entries[first - 1 :]
            self.entries.extend(rd.entries)
        if rd.hard_state is not None:
            self.hard_state = rd.hard_state


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
    ) -> None:
        self.ids = list(ids)
        self.seed = seed
        self.rng = random.Random(seed)
        self.membership = Membership(frozenset(self.ids))
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
        restored = RestoredState(
            hard_state=node.durable.hard_state,
            entries=tuple(node.durable.entries),
            membership=self.membership,
        )
        node.raft = Raft(self.configs[node_id], restored, self.rng.randint)
        node.applied = []  # the state machine is volatile: it is rebuilt by re-applying
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
            for msg in rd.messages:  # 2. send
                self._send(msg)
            for entry in rd.committed:  # 3. apply
                self._apply(node, entry)
            for rs in rd.read_states:
                self._check_read(node, rs.context, rs.index)
            for event in rd.events:
                self._record(node_id, event)
            r.advance(rd)  # 4. advance
            self._check_node(node)

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

    # === checks ================================================================================
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
        """Log matching across every pair of nodes (crashed ones by their durable log)."""
        logs = {
            i: (n.raft.log.slice(1, n.raft.last_index + 1) if n.raft else tuple(n.durable.entries))
            for i, n in self.nodes.items()
        }
        ids = sorted(logs)
        for a_pos, a in enumerate(ids):
            for b in ids[a_pos + 1 :]:
                la, lb = logs[a], logs[b]
                common = min(len(la), len(lb))
                top = next((k for k in range(common, 0, -1) if la[k - 1].term == lb[k - 1].term), 0)
                if la[:top] != lb[:top]:
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
