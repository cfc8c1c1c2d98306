"""Lease clocks, keepalives and expiry: the node's half of leases (`zraft.state.leases`
holds the replicated half).

Every node keeps a *deadline* per lease on its own monotonic clock: the moment it applied
the entry that last granted or refreshed the lease, plus the TTL (after a restart or a
snapshot install: the moment of the restore, plus the TTL). Only the leader acts on them.

- **Keepalives** go to the leader (followers forward them, `Route.LEADER`). The leader
  collects the keepalives of one loop turn and proposes ONE refresh entry for all of
  them; each is answered once that entry is applied, so an acknowledged keepalive is in
  the log (group commit, as for writes: one small entry per turn, not one per call).
- **Expiry**: once a lease's deadline passes, the leader proposes an expiry entry naming
  the lease and the refresh it last saw (at most `EXPIRY_BATCH` leases an entry, one
  entry a tick, so expiring thousands at once keeps the loop on time). Applying it
  revokes the lease unless a refresh was applied since.
- A leader acts only once it has applied an entry of its own term, so its lease table
  and deadlines include everything committed before it led.

The guarantee this gives (README "Leases"): a lease is never revoked earlier than its TTL
after the last keepalive the cluster acknowledged (every node's deadline is at least the
acknowledgement plus the TTL: it applies the refresh entry no earlier than the leader
answers it); with a stable leader it is revoked within the TTL plus about two ticks and
a commit after its owner's last keepalive; after a leader change, within the TTL plus the
time to elect the new leader (at most about an election timeout after the old one
failed) plus that margin, provided the new leader was running when the last refresh was
applied (a node that restarted counts its leases from its restart). A leader that was
paused past its deadlines and wakes up deposed revokes nothing: an expiry is a log entry,
and it cannot commit one.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Callable, Iterable, Mapping

from structlog.typing import FilteringBoundLogger

from zraft import diagnostics
from zraft.core import Entry, NotLeader, ProposalDropped, Raft, Role
from zraft.diagnostics import NodeEvent
from zraft.node.pending import Pending
from zraft.node.serving import Handler, RequestServer
from zraft.state.leasing import LeaseEvent, time_to_live
from zraft.state.machine import KVMachine

EXPIRY_BATCH = 256
"""Most leases one expiry entry names."""

EXPIRY_RETRY_S = 2.0
"""How long an expiry may stay unapplied before the leader proposes it again."""


class LeaseKeeper:
    """Lease clocks and the leader's lease duties (see the module doc).

    Args:
        raft: the core (role, term, log, proposals).
        machine: the state machine (the lease table, and the entries to propose).
        server: to answer keepalives and time-to-live requests.
        clock: monotonic seconds.
        log: for `lease_expired` events.
        request_timeout_s: a keepalive waiting longer than this is answered `timeout`.
    """

    def __init__(
        self,
        raft: Raft,
        machine: KVMachine,
        server: RequestServer,
        *,
        clock: Callable[[], float],
        log: FilteringBoundLogger,
        request_timeout_s: float,
    ) -> None:
        self._raft = raft
        self._machine = machine
        self._server = server
        self._clock = clock
        self._log = log
        self._timeout_s = request_timeout_s
        self._deadlines: dict[int, float] = {}
        self._heap: list[tuple[float, int]] = []  # (deadline, lease); stale rows skipped
        self._batch: dict[int, list[Pending]] = {}  # keepalives of this turn, by lease
        # index of a refresh entry -> (its term, when proposed, the keepalives it answers)
        self._waiting: dict[int, tuple[int, float, dict[int, list[Pending]]]] = {}
        self._expiring: dict[int, float] = {}  # lease -> when its expiry was proposed
        self.note(machine.take_lease_events())

    def handlers(self) -> Mapping[str, Handler]:
        """The ops this keeper serves (on the leader: `Route.LEADER`)."""
        return {"lease_keepalive": self._keepalive, "lease_timetolive": self._time_to_live}

    @property
    def deadlines(self) -> Mapping[int, float]:
        """Each lease's deadline on this node's clock (read-only: tests, status)."""
        return self._deadlines

    # --- clocks -----------------------------------------------------------------------

    def note(self, events: Iterable[LeaseEvent]) -> None:
        """Start, restart or stop the clocks the applied entries ask for."""
        now = self._clock()
        for event in events:
            if event.ttl is not None:
                deadline = now + event.ttl
                self._deadlines[event.lease] = deadline
                heapq.heappush(self._heap, (deadline, event.lease))
                continue
            self._deadlines.pop(event.lease, None)
            self._expiring.pop(event.lease, None)
            if event.expired:
                diagnostics.emit_node(
                    self._log, NodeEvent.LEASE_EXPIRED, lease=event.lease, keys=event.keys
                )

    def restored(self) -> None:
        """The state machine was replaced (a snapshot installed): every clock restarts."""
        self._deadlines.clear()
        self._heap.clear()
        self._expiring.clear()
        self.note(self._machine.take_lease_events())

    # --- requests ---------------------------------------------------------------------

    def _leading(self) -> bool:
        """Leader, with an entry of its own term applied (see the module doc)."""
        raft = self._raft
        if raft.role is not Role.LEADER:
            return False
        return raft.log.term_at(self._machine.applied_index) == raft.term

    def _keepalive(self, pending: Pending) -> bool:
        if not self._leading():
            return False  # parked: retried once this node leads fully, or forwarded
        lease = pending.request.fields["lease"]
        if lease not in self._machine.leases:
            self._server.reply_error(pending.reply_to, "lease_not_found", _gone(lease))
        else:
            self._batch.setdefault(lease, []).append(pending)
        return True

    def _time_to_live(self, pending: Pending) -> bool:
        if not self._leading():
            return False
        fields = pending.request.fields
        lease = fields["lease"]
        answer = time_to_live(self._machine.leases, lease, bool(fields.get("keys")))
        if answer is None:
            self._server.reply_error(pending.reply_to, "lease_not_found", _gone(lease))
            return True
        deadline = self._deadlines.get(lease, self._clock())
        answer["remaining"] = max(0, math.ceil(deadline - self._clock()))
        self._server.reply(pending, {"ok": True, "extra": answer})
        return True

    def flush(self) -> None:
        """Propose one refresh entry for the keepalives taken this turn."""
        if not self._batch:
            return
        batch, self._batch = self._batch, {}
        try:
            term, index = self._raft.propose(self._machine.refresh_command(sorted(batch)))
        except (NotLeader, ProposalDropped):
            for waiting in batch.values():
                for pending in waiting:
                    self._server.reply_error(
                        pending.reply_to, "unavailable", "leadership changed; retry"
                    )
            return
        self._waiting[index] = (term, self._clock(), batch)

    def applied(self, entry: Entry) -> None:
        """After `entry` was applied: update clocks, answer the keepalives it carries."""
        events = self._machine.take_lease_events()
        if events:
            self.note(events)
        waiting = self._waiting.pop(entry.index, None)
        if waiting is None:
            return
        term, _, batch = waiting
        leases = self._machine.leases
        for lease_id, pendings in batch.items():
            lease = leases.get(lease_id)
            for pending in pendings:
                if term != entry.term:
                    self._server.reply_error(
                        pending.reply_to, "unavailable", "leadership changed; retry"
                    )
                elif lease is None or lease.refreshed_index != entry.index:
                    self._server.reply_error(pending.reply_to, "lease_not_found", _gone(lease_id))
                else:
                    extra = {"lease": lease_id, "ttl": lease.ttl, "remaining": lease.ttl}
                    self._server.reply(pending, {"ok": True, "extra": extra})

    # --- expiry -----------------------------------------------------------------------

    def on_tick(self, now: float) -> None:
        """As the leader: propose the expiry of leases past their deadline; time out
        keepalives whose refresh never applied (leadership moved on)."""
        events = self._machine.take_lease_events()  # e.g. after a snapshot install
        if events:
            self.note(events)
        for index, (_, proposed, batch) in list(self._waiting.items()):
            if now - proposed > self._timeout_s:
                del self._waiting[index]
                for pendings in batch.values():
                    for pending in pendings:
                        self._server.reply_error(pending.reply_to, "timeout", "keepalive timed out")
        if not self._heap or self._heap[0][0] > now or not self._leading():
            return
        due: list[tuple[int, int]] = []
        heap, leases = self._heap, self._machine.leases
        while heap and heap[0][0] <= now and len(due) < EXPIRY_BATCH:
            deadline, lease_id = heapq.heappop(heap)
            lease = leases.get(lease_id)
            if lease is None or self._deadlines.get(lease_id) != deadline:
                continue  # gone, or refreshed since this row was pushed
            if now - self._expiring.get(lease_id, -math.inf) < EXPIRY_RETRY_S:
                heapq.heappush(heap, (deadline + EXPIRY_RETRY_S, lease_id))
                self._deadlines[lease_id] = deadline + EXPIRY_RETRY_S
                continue
            due.append((lease_id, lease.refreshed_index))
        if not due:
            return
        try:
            self._raft.propose(self._machine.expiry_command(due))
        except (NotLeader, ProposalDropped):
            return
        for lease_id, _ in due:
            self._expiring[lease_id] = now
            # Checked again after the retry time if the expiry is not applied by then.
            self._deadlines[lease_id] = now + EXPIRY_RETRY_S
            heapq.heappush(heap, (now + EXPIRY_RETRY_S, lease_id))


def _gone(lease: int) -> str:
    return f"lease {lease} does not exist (expired or revoked?)"
