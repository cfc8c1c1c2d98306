"""What a leader writes to the log on the cluster's own behalf: the store's model upgrade,
automatic compaction and alarms. Both are ordinary entries, so every replica applies them at
the same point; only the decision to propose them is the leader's (and its clock's).

- **What each release reads**: every node tells every peer, once a second, the formats
  its release reads (a `Hello` naming `FEATURES`), and the leader writes a format into
  the log only once every other member said, within `FEATURES_FRESH_S`, that it reads it
  (`members_read`), as etcd decides its cluster version from its members' versions. A
  node of an earlier release names fewer features, or none, and a member that stops
  saying hello (restarted on an older release) stops counting after that time.
- **Model upgrade** (`zraft.state.machine` explains the models): a leader proposes the
  model entry once every other member reads the new model (`MODEL`), or at once when its
  store is empty (a new cluster), at most once per term: on its once-a-second check, and
  before it proposes any client write (`before_write`), so in a new cluster no client
  write ever precedes it. A node of the first release never says hello, so a mixed
  cluster stays legacy and keeps serving the first release's ops.
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
from zraft.node.members import RETIRED_MARKS
from zraft.state.machine import MODEL, KVMachine
from zraft.wire.client import Request
from zraft.wire.peer import Hello, encode_hello

HELLO_INTERVAL_S = 1.0
"""How often a legacy node says hello to its peers, and the leader checks for work."""

RETRY_S = 5.0
"""How long a proposal may stay unapplied before it is proposed again."""

FEATURES = (MODEL, RETIRED_MARKS)
"""What this release reads: the store's model, and retired marks in a member directory."""

FEATURES_FRESH_S = 3 * HELLO_INTERVAL_S
"""How long a peer's hello counts (three missed in a row: it restarted on another release,
or is gone)."""


class Upkeep:
    """The leader's own proposals (see the module doc).

    Args:
        node_id: this node.
        raft: the core (role, membership, proposals).
        machine: the state machine (its model and revisions).
        send: sends one peer frame; False if it was not sent.
        peers: the ids this node talks to now.
        clock: monotonic seconds (when a hello was heard).
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
        clock: Callable[[], float],
        compaction_mode: str = "revision",
        retention: int = 10_000,
    ) -> None:
        self._id = node_id
        self._raft = raft
        self._machine = machine
        self._send = send
        self._peers = peers
        self._clock = clock
        self._mode = compaction_mode
        self._retention = retention
        self._heard: dict[str, tuple[frozenset[str], float]] = {}  # peer -> (features, when)
        self._next_turn = 0.0
        self._upgrade_term = 0  # the term in which this node proposed the model entry
        self._alarm_terms: dict[str, int] = {}  # alarm -> the term it was proposed in
        self._compact_after = 0.0
        self._compacting: int | None = None  # the compaction proposed and not yet applied
        self._samples: deque[tuple[float, int]] = deque()  # periodic: (time, revision)

    def heard(self, hello: Hello) -> None:
        """A peer said what its release can do."""
        self._heard[hello.src] = (frozenset(hello.features), self._clock())

    def members_read(self, feature: str, members: Iterable[str]) -> bool:
        """Whether each of `members` (this node aside) said lately that it reads `feature`."""
        now = self._clock()
        for member in members:
            if member == self._id:
                continue
            features, when = self._heard.get(member, (frozenset(), -FEATURES_FRESH_S))
            if feature not in features or now - when > FEATURES_FRESH_S:
                return False
        return True

    def on_tick(self, now: float) -> None:
        """Every tick: as leader, compact if due (a few comparisons). Once a second: say
        hello, and as leader propose the model entry if due."""
        machine = self._machine
        leader = self._raft.role is Role.LEADER
        if leader and machine.model == MODEL:
            self._compact(now)
        if now < self._next_turn:
            return
        self._next_turn = now + HELLO_INTERVAL_S
        for peer in self._peers():
            self._send(peer, encode_hello(Hello(self._id, peer, FEATURES)))
        if machine.model != MODEL and leader:
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
        return self.members_read(MODEL, self._raft.membership.members)

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
