"""What a leader writes to the log on the cluster's own behalf: the store's model upgrade,
automatic compaction and alarms. Both are ordinary entries, so every replica applies them at
the same point; only the decision to propose them is the leader's (and its clock's).

- **Model upgrade** (`zraft.state.machine` explains the models): while this node's store
  is legacy it tells every peer, once a second, that its release reads the new model (a
  `Hello`). A leader proposes the model entry once every other member has said so, or at
  once when its store is empty (a new cluster), at most once per term: on its once-a-second
  check, and before it proposes any client write (`before_write`), so in a new cluster
  no client write ever precedes it. A node of the first release never says hello, so a
  mixed cluster stays legacy and keeps serving the first release's ops.
- **Automatic compaction**, as etcd's `--auto-compaction-mode`: `revision` keeps the last
  `retention` revisions (checked every tick, proposed when a tenth of `retention` more
  has accumulated, so compaction runs in steps, not on every write); `periodic` keeps the
  revisions of the last `retention` seconds (the leader samples its revision each second
  and compacts to the newest sample older than that). `retention` 0 turns it off.

- **Alarms**: a write the machine refuses for lack of space asks for the `nospace` alarm
  (`raise_alarm`); the leader writes it once per term until it is applied.

At most one compaction is in flight; one not applied after `RETRY_S` (leadership
changed) is proposed again.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable

from zraft.core import NotLeader, ProposalDropped, Raft, Role
from zraft.state.machine import MODEL, KVMachine
from zraft.wire.client import Request
from zraft.wire.peer import Hello, encode_hello

HELLO_INTERVAL_S = 1.0
"""How often a legacy node says hello to its peers, and the leader checks for work."""

RETRY_S = 5.0
"""How long a proposal may stay unapplied before it is proposed again."""


class Upkeep:
    """The leader's own proposals (see the module doc).

    Args:
        node_id: this node.
        raft: the core (role, membership, proposals).
        machine: the state machine (its model and revisions).
        send: sends one peer frame; False if it was not sent.
        peers: the ids this node talks to now.
        compaction_mode, retention: the `[cluster]` settings of the same names.
    """

    def __init__(
        self,
        node_id: str,
        raft: Raft,
        machine: KVMachine,
        send: Callable[[str, bytes], bool],
        peers: Callable[[], Iterable[str]],
        *,
        compaction_mode: str = "revision",
        retention: int = 10_000,
    ) -> None:
        self._id = node_id
        self._raft = raft
        self._machine = machine
        self._send = send
        self._peers = peers
        self._mode = compaction_mode
        self._retention = retention
        self._upgraders: set[str] = set()  # peers that said they read the new model
        self._next_turn = 0.0
        self._upgrade_term = 0  # the term in which this node proposed the model entry
        self._alarm_terms: dict[str, int] = {}  # alarm -> the term it was proposed in
        self._compact_after = 0.0
        self._compacting: int | None = None  # the compaction proposed and not yet applied
        self._samples: deque[tuple[float, int]] = deque()  # periodic: (time, revision)

    def heard(self, hello: Hello) -> None:
        """A peer said what its release can do."""
        if MODEL in hello.features:
            self._upgraders.add(hello.src)

    def on_tick(self, now: float) -> None:
        """Every tick: as leader, compact if due (a few comparisons). Once a second: say
        hello while legacy, and as leader propose the model entry if due."""
        machine = self._machine
        leader = self._raft.role is Role.LEADER
        if leader and machine.model == MODEL:
            self._compact(now)
        if now < self._next_turn:
            return
        self._next_turn = now + HELLO_INTERVAL_S
        if machine.model != MODEL:
            for peer in self._peers():
                self._send(peer, encode_hello(Hello(self._id, peer, (MODEL,))))
            if leader:
                self.before_write()
        if not leader:
            self._samples.clear()

    def before_write(self) -> bool:
        """Propose the model entry first if it is due (the leader, about to propose a
        client write; see the module doc). Returns whether a model entry of this term
        precedes the write in the log (so the write may use the new model)."""
        machine, raft = self._machine, self._raft
        if machine.model == MODEL or raft.role is not Role.LEADER:
            return False
        due = self._upgrade_term != raft.term and self._may_upgrade()
        if due and self._propose(machine.upgrade_command()):
            self._upgrade_term = raft.term
        return self._upgrade_term == raft.term

    def raise_alarm(self, alarm: str) -> None:
        """Write `alarm` to the log (the leader; once per term while it is not raised)."""
        raft = self._raft
        if raft.role is not Role.LEADER or alarm in self._machine.alarms:
            return
        if self._alarm_terms.get(alarm) == raft.term:
            return
        if self._propose(self._machine.alarm_command(alarm)):
            self._alarm_terms[alarm] = raft.term

    def _may_upgrade(self) -> bool:
        if self._machine.key_count() == 0:
            return True  # nothing to convert: a new cluster (see the module doc)
        others = self._raft.membership.members - {self._id}
        return others <= self._upgraders

    def _compact(self, now: float) -> None:
        store = self._machine.store
        revision, compacted = store.revision, store.compact_revision
        if self._compacting is not None and compacted >= self._compacting:
            self._compacting = None  # applied: the next step may follow at once
        if not self._retention or (self._compacting is not None and now < self._compact_after):
            return
        if self._mode == "revision":
            target = revision - self._retention
            if target - compacted < max(1, self._retention // 10):
                return
        else:
            if not self._samples or now - self._samples[-1][0] >= HELLO_INTERVAL_S:
                self._samples.append((now, revision))  # one sample a second
            target = 0
            while self._samples and self._samples[0][0] <= now - self._retention:
                target = self._samples.popleft()[1]
            if target <= compacted:
                return
        command = self._machine.command(Request("compact", revision=target))
        if self._propose(command):
            self._compacting, self._compact_after = target, now + RETRY_S

    def _propose(self, data: bytes) -> bool:
        try:
            self._raft.propose(data)
        except (NotLeader, ProposalDropped):
            return False
        return True
