"""Membership and leadership administration, and the node's views of the cluster.

`Admin` serves the ops that describe or change the cluster (`status`, `members`,
`add_member`, `promote_member`, `remove_member`, `transfer_leader`) and keeps the member
directory (`zraft.node.members.Endpoints`: endpoints and public keys) in step with the
membership the log carries, so the transport can reach, and the ZAP handler admit, every
member. It decides what a change request asks for; the Raft core decides whether it may
happen (one change at a time, a leader with a committed entry of its term). This module
must not apply state machine commands or touch storage.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from zraft import __version__, diagnostics
from zraft.config import is_endpoint
from zraft.core import (
    ChangeKind,
    ChangeRefused,
    Entry,
    Membership,
    MembershipChange,
    ProposalDropped,
    Raft,
    Role,
    SnapshotMeta,
)
from zraft.core.membership import decode_config
from zraft.diagnostics import FilteringBoundLogger, NodeEvent
from zraft.net import security
from zraft.net.zap import ZapHandler
from zraft.node.members import (
    Endpoints,
    decode_endpoints,
    endpoints_from_plain,
    retired_from_header,
)
from zraft.node.pending import Pending
from zraft.node.reports import Reporter
from zraft.node.serving import Handler, RequestServer


class PeerLinks(Protocol):
    """What `Admin` needs of the transport: who to dial and whom to accept."""

    def update_peers(
        self, peers: Mapping[str, str], server_keys: Mapping[str, bytes] | None = None
    ) -> None:
        """Dial these peers (with these CURVE server keys)."""
        ...

    def accept_from(self, peer_ids: Iterable[str]) -> None:
        """Accept peer frames from these ids only."""
        ...


def learn_config_endpoints(endpoints: Endpoints, entry: Entry) -> bool | str:
    """Merge the directory (and retired ids) a CONFIG entry carries: whether an entry
    changed, or why the entry's directory could not be read."""
    try:
        _, context = decode_config(entry.data)
        directory, retired = decode_endpoints(context)
    except ValueError as exc:  # the core validated the membership; this is ours
        return f"config {entry.index}: {exc}"
    return endpoints.merge(directory, retired)


def learn_snapshot_endpoints(
    endpoints: Endpoints, header: dict[str, Any], meta: SnapshotMeta
) -> tuple[bool, str | None]:
    """Merge the directory and retired ids a snapshot's header carries: whether an entry
    changed, and what could not be read. A damaged retired list costs only itself: the
    directory (how to reach every member) is still taken."""
    try:
        directory = endpoints_from_plain(header.get("endpoints", {}))
    except ValueError as exc:
        return False, f"snapshot {meta.index}: {exc}"
    retired = retired_from_header(header, meta.membership.members)
    if isinstance(retired, str):
        return endpoints.merge(directory), f"snapshot {meta.index}: {retired}"
    return endpoints.merge(directory, retired), None


class Admin:
    """The cluster ops of one node, and its member directory.

    Args:
        node_id: this node.
        raft: the core.
        endpoints: the member directory (already holding what the log and snapshot say).
        links: the transport (peers to dial and accept).
        zap: the ZAP handler when CURVE is on (members' keys to admit), else None.
        server: request serving (replies, forwards, awaiting an applied entry).
        reporter: for `bad_frame`.
        log: the node's logger (member events).
        clock: a monotonic clock in seconds.
        awaiting_contact: a joining node that dials nobody until a member talks to it.
        replayed_until: CONFIG entries up to this index are a replay (no events).
        applied_membership: the membership of the last applied CONFIG entry.
        applied_from_log: whether `applied_membership` is known to be the one before the
            next CONFIG entry applied: it came from a snapshot, or from the file of a
            founding node whose log is brand new (the membership its log starts from; a
            file read again later may have been edited). Then a member missing from the
            next CONFIG entry applied was removed, and is retired even where the entry
            (written by an earlier release, or before every member read marks) did not
            mark it.
        marks_readable: whether each of the given members reads retired marks (else a
            removal is written the way an earlier release wrote it, see `serve_change`).
        status_extras: more `status` fields, computed when asked (pending requests, WAL
            bytes on disk).
    """

    def __init__(
        self,
        node_id: str,
        raft: Raft,
        endpoints: Endpoints,
        links: PeerLinks,
        *,
        zap: ZapHandler | None,
        server: RequestServer,
        reporter: Reporter,
        log: FilteringBoundLogger,
        clock: Callable[[], float],
        awaiting_contact: bool,
        replayed_until: int,
        applied_membership: Membership,
        applied_from_log: bool,
        marks_readable: Callable[[Iterable[str]], bool],
        status_extras: Callable[[], dict[str, Any]],
    ) -> None:
        self._id = node_id
        self._raft = raft
        self.endpoints = endpoints
        self._links = links
        self._zap = zap
        self._server = server
        self._reporter = reporter
        self._log = log
        self._clock = clock
        self._awaiting_contact = awaiting_contact
        self._replayed_until = replayed_until
        self._applied_membership = applied_membership
        self._applied_from_log = applied_from_log
        self._marks_readable = marks_readable
        self._status_extras = status_extras
        self._secured = zap is not None
        # transfer_leader requests waiting to see the target lead: (request, target).
        self._transfers_waiting: list[tuple[Pending, str]] = []
        self.peer_ids = frozenset(endpoints.peers_of(node_id))
        self.revoked: frozenset[str] = frozenset()
        """Removed members: their keys are refused and their frames dropped."""
        self._revoke_removed()

    def handlers(self) -> dict[str, Handler]:
        """The ops this module serves."""
        return {
            "status": self.serve_status,
            "members": self.serve_members,
            "add_member": self.serve_change,
            "promote_member": self.serve_change,
            "remove_member": self.serve_change,
            "transfer_leader": self.serve_transfer,
        }

    # --- the member directory -------------------------------------------------------------

    def reachable_peers(self) -> dict[str, str]:
        """Peer id -> endpoint of every member we can talk to (with CURVE: whose key we
        know; a member added without one cannot be reached, and cannot reach us)."""
        if self._awaiting_contact:
            return {}
        peers = self.endpoints.peers_of(self._id)
        if not self._secured:
            return peers
        keys = self.endpoints.keys_of(self._id)
        return {i: e for i, e in peers.items() if i in keys}

    def sync_peers(self) -> None:
        """Dial, admit and accept every member the directory holds now."""
        peers = self.reachable_peers()
        server_keys = self.endpoints.keys_of(self._id)
        self._links.update_peers(peers, server_keys)
        if self._zap is not None:
            self._zap.admit_peers(
                {security.raw_key(key): peer for peer, key in server_keys.items()}
            )
        self.peer_ids = frozenset(self.endpoints.peers_of(self._id))
        self._links.accept_from(self.peer_ids)

    def member_peers(self) -> frozenset[str]:
        """The peers this node talks to, less the members removed (revoked)."""
        return self.peer_ids - self.revoked

    def heard_from(self, peer: str) -> bool:
        """A peer sent us a frame: False (reported) if it was removed from the cluster,
        whose frames are dropped; else it counts as contact (`contacted_by`)."""
        if peer in self.revoked:
            self._reporter.bad_frame("peer", peer, "removed from the cluster: its key is revoked")
            return False
        self.contacted_by(peer)
        return True

    def _revoke_removed(self) -> None:
        """Revoke every known member that is neither in the membership in force (appended)
        nor in the one applied: a removal counts once committed and applied (a removal
        that is truncated away revokes nothing), an addition as soon as it is appended."""
        current = self._raft.membership.members | self._applied_membership.members
        known = frozenset(self.endpoints.peers_of(self._id))
        self.revoked = known - current - {self._id}
        if self._zap is not None:
            self._zap.revoke(self.revoked)

    def contacted_by(self, peer: str) -> None:
        """A member sent us a frame: a joining node now knows it was added."""
        if self._awaiting_contact:
            self._awaiting_contact = False
            self.sync_peers()

    def config_appended(self, entry: Entry) -> None:
        """A CONFIG entry is in force once appended: reach (and admit) new members now."""
        changed = learn_config_endpoints(self.endpoints, entry)
        if isinstance(changed, str):
            self._reporter.bad_frame("peer", self._raft.leader_id or "", changed)
        elif changed:
            self.sync_peers()
        self._revoke_removed()

    def snapshot_adopted(self, header: dict[str, Any], meta: SnapshotMeta) -> None:
        """A snapshot replaced the state: take its directory, retired ids and membership."""
        changed, problem = learn_snapshot_endpoints(self.endpoints, header, meta)
        if problem is not None:
            self._reporter.bad_frame("peer", "", problem)
        if changed:
            self.sync_peers()
        self._applied_membership = meta.membership
        self._applied_from_log = True
        self._revoke_removed()

    def config_applied(self, entry: Entry) -> None:
        """Log who joined, was promoted or left, once a CONFIG entry is applied."""
        new, _ = decode_config(entry.data)
        old, self._applied_membership = self._applied_membership, new
        if self._applied_from_log:  # an earlier release's removals carry no mark
            for gone in old.members - new.members:
                self.endpoints.retire(gone)
        self._applied_from_log = True
        self._revoke_removed()
        if entry.index <= self._replayed_until:
            return  # replayed at start: logged when it first happened
        for member in sorted(new.members - old.members):
            role = "voter" if member in new.voters else "learner"
            diagnostics.emit_node(
                self._log, NodeEvent.MEMBER_ADDED, member=member, index=entry.index, role=role
            )
        for member in sorted(new.voters & old.learners):
            diagnostics.emit_node(
                self._log, NodeEvent.MEMBER_ADDED, member=member, index=entry.index, role="voter"
            )
        for member in sorted(old.members - new.members):
            diagnostics.emit_node(
                self._log, NodeEvent.MEMBER_REMOVED, member=member, index=entry.index
            )

    @property
    def retired(self) -> frozenset[str]:
        """Ids removed from the cluster (from the moment the removal is in force): never
        members again."""
        return self.endpoints.retired - self._raft.membership.members

    def snapshot_header(self) -> dict[str, Any]:
        """What a snapshot's header carries for this module: directory and retired ids."""
        directory = {i: list(e) for i, e in self.endpoints.as_dict().items()}
        return {"endpoints": directory, "retired": sorted(self.retired)}

    # --- views ------------------------------------------------------------------------------

    def serve_status(self, pending: Pending) -> bool:
        """`status`: this node's own view."""
        view = self.status_view()
        self._server.reply(
            pending, {"ok": True, "leader": view["leader"], "extra": {"status": view}}
        )
        return True

    def status_view(self) -> dict[str, Any]:
        """This node's own view: what `status` answers (and metrics and health read)."""
        status = self._raft.status()
        return {
            "id": status.id,
            "role": str(status.role),
            "term": status.term,
            "leader": status.leader,
            "commit_index": status.commit_index,
            "applied_index": status.applied_index,
            "last_index": status.last_index,
            "voters": list(status.voters),
            "learners": list(status.learners),
            "config_index": status.config_index,
            "pending_requests": 0,
            "snapshot_index": status.snapshot_index,
            "first_index": status.first_index,
            "log_bytes": 0,
            "version": __version__,
            **self._status_extras(),
        }

    def serve_members(self, pending: Pending) -> bool:
        """`members`: the membership in force, with endpoints (and match indexes, leader)."""
        self._server.reply(pending, self.members_fields())
        return True

    def members_fields(self) -> dict[str, Any]:
        """The reply fields of `members` (also the answer to an applied change)."""
        status = self._raft.status()
        leading = status.role is Role.LEADER
        rows = []
        for role, ids in (("voter", status.voters), ("learner", status.learners)):
            for member in ids:
                match = (
                    status.last_index if member == self._id else status.match_indexes.get(member)
                )
                rows.append(
                    {
                        "id": member,
                        "role": role,
                        "peer": self.endpoints.peer(member),
                        "client": self.endpoints.client(member),
                        "match_index": match if leading else None,
                    }
                )
        extra = {
            "members": rows,
            "config_index": status.config_index,
            "retired": sorted(self.retired),
        }
        return {"ok": True, "leader": status.leader, "extra": extra}

    # --- changes ----------------------------------------------------------------------------

    def serve_change(self, pending: Pending) -> bool:
        """`add_member`, `promote_member`, `remove_member`, at the leader."""
        request = pending.request
        change = self._change_of(pending)
        if isinstance(change, str):
            self._server.reply_error(pending.reply_to, "bad_request", change)
            return True
        previous = self.endpoints.entry(change.node_id)
        # Marked in the entry's directory: every replica learns the id is retired with it.
        newly_retired = change.kind is ChangeKind.REMOVE and self.endpoints.retire(change.node_id)
        if change.kind is ChangeKind.ADD_LEARNER:
            # Reachable before the entry is even replicated: the leader must send it.
            key = request.get("public_key") or ""
            self.endpoints.set(
                change.node_id, request.get("peer"), request.get("client_endpoint"), key
            )
        # A member of an earlier release cannot read a marked directory (it would miss every
        # endpoint and key in it): until each reads them, write none. Each replica still
        # retires the id as it applies the removal (`config_applied`). A node being removed
        # need not read it; one being added is not yet heard from (it runs this release).
        readers = self._raft.membership.members
        if change.kind is ChangeKind.REMOVE:
            readers = readers - {change.node_id}
        context = self.endpoints.encode(marks=self._marks_readable(readers))
        try:
            term, index = self._raft.propose_membership(change, context)
        except (ProposalDropped, ChangeRefused) as exc:
            # Nothing was appended: forget the endpoints (and key) the request brought,
            # so a refused add never spreads in a later CONFIG entry.
            self.endpoints.restore(change.node_id, previous)
            if newly_retired:
                self.endpoints.unretire(change.node_id)
            if isinstance(exc, ProposalDropped):
                return False  # a leadership transfer is under way; retry after it
            code = {"invalid": "bad_request", "in_progress": "conflict"}.get(exc.code)
            self._server.reply_error(pending.reply_to, code or "unavailable", str(exc))
            return True
        if change.kind is ChangeKind.ADD_LEARNER:
            self.sync_peers()
        self._server.await_apply(pending, term, index)
        return True

    def _change_of(self, pending: Pending) -> MembershipChange | str:
        """The change a request asks for, or why it is malformed."""
        request = pending.request
        node_id = request.get("id") or ""
        if request.op == "add_member":
            peer, client = request.get("peer") or "", request.get("client_endpoint") or ""
            if not is_endpoint(peer) or not is_endpoint(client):
                return "add_member needs `peer` and `client_endpoint` as tcp://HOST:PORT"
            if node_id == self._id:
                return f"{node_id} is this node"
            if node_id in self.retired:
                return (
                    f"{node_id} was removed from this cluster and member ids are never "
                    "reused: add the new host under a new id, with its own key"
                )
            if self._secured and not security.is_public_key(request.get("public_key") or ""):
                return "add_member needs `public_key`, the new node's Z85 key (CURVE is on)"
            return MembershipChange(
                ChangeKind.ADD_LEARNER,
                node_id,
                promote_when_caught_up=not request.get("learner", False),
            )
        kind = ChangeKind.PROMOTE if request.op == "promote_member" else ChangeKind.REMOVE
        return MembershipChange(kind, node_id)

    # --- leadership transfer ---------------------------------------------------------------

    def serve_transfer(self, pending: Pending) -> bool:
        """`transfer_leader`, at the leader: answered once the target leads."""
        status = self._raft.status()
        target = pending.request.get("id")
        if target is None:  # the most up-to-date other voter
            others = [(status.match_indexes.get(v, 0), v) for v in status.voters if v != self._id]
            target = max(others)[1] if others else None
        if target is None or target == self._id:
            self._server.reply(pending, _transferred(self._id))
            return True
        try:
            self._raft.transfer_leadership(target)
        except ValueError as exc:
            self._server.reply_error(pending.reply_to, "bad_request", str(exc))
            return True
        self._transfers_waiting.append((pending, target))
        return True

    @property
    def has_transfers(self) -> bool:
        """Whether a transfer_leader request is waiting."""
        return bool(self._transfers_waiting)

    def settle_transfers(self) -> None:
        """Answer transfer_leader requests whose target now leads, or whose time is up."""
        now = self._clock()
        waiting, self._transfers_waiting = self._transfers_waiting, []
        for pending, target in waiting:
            if self._raft.leader_id == target:
                self._server.reply(pending, _transferred(target))
            elif now >= pending.deadline:
                self._server.reply_error(
                    pending.reply_to, "timeout", f"leadership did not move to {target} in time"
                )
            else:
                self._transfers_waiting.append((pending, target))


def _transferred(leader: str) -> dict[str, Any]:
    return {"ok": True, "leader": leader, "extra": {"transferred_to": leader}}
