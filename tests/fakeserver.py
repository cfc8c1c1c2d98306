"""A fake zraft cluster for client tests: client endpoints answered from a thread.

`FakeCluster` binds one ROUTER per fake node on 127.0.0.1 (OS-chosen ports) and serves
them all from one background thread, answering DESIGN.md §2 requests from one shared
state machine (`KVMachine` in the multi-version model), so any node accepts any request,
like the real cluster, and every store op (`put`, `get`, `range`, `delete`,
`delete_range`, `cas`, `txn`, `compact`) means what it means on a node: a write is
applied as the log entry at the next index, a read is served from the applied state, and
the machine's `revision` becomes the reply's `header` (`revision`, `raft_term` = `term`,
`member` = the answering node) as the node's serving code does. It is a test helper: the
thread exists only because the client under test blocks while it waits (the node itself
never uses threads).

Knobs, all settable while it runs (plain attributes read by the server thread):

- `drop_replies`: apply the next N requests but swallow their replies (a lost reply:
  the client must retry, and a retried write must not be applied twice);
- `unavailable`: answer the next N requests with `unavailable` (no leader);
- `not_leader`: answer the next N requests with `not_leader` naming `leader_hint`;
- `delay`: seconds to hold every reply before sending it (a slow server);
- `silent`: a set of node ids that receive but never answer (hung nodes).

It records every decoded request as `(node_id, Request)` in `requests`, counts every
request frame (decodable or not) in `frames`, and counts writes that actually changed the
store in `applied_writes` (a write answered from the session table is not counted).
`machine` is the state machine (`kv` a read-only view of its current values, the name
the legacy store had).

A `snapshot` request is answered like a real node's: `{"index", "size_bytes"}` of a new
snapshot at the current index, or with `size_bytes` null when nothing was written since
the last one (`snapshot_size` sets the size reported).

Membership ops are answered like a real cluster's, from a shared member table (`members`:
id -> `FakeMember`; the nodes start as voters): `members` from any node (`match_index`
only in the leader's answer), `add_member` (a learner; with `learner` false the fake
promotes it right after answering, as a leader does once the learner caught up),
`promote_member`, `remove_member` (each answered with the `members` shape and a new
`config_index`, or `bad_request` for an unknown/duplicate id or the last voter) and
`transfer_leader` (`transferred_to`; the fake's leader changes at once). Set `conflict`
to answer the next N changes with `conflict`.

Leases: `lease_grant`, `lease_revoke` and `lease_leases` are the machine's own (a log
command, a read). The two ops a real leader serves itself are answered here as the
leader's `LeaseKeeper` does: `lease_keepalive` applies a refresh entry
(`machine.refresh_command`) and answers `lease`, `ttl` and `remaining` (= `ttl`), or
`lease_not_found`; `lease_timetolive` answers the granted `ttl`, `remaining` (the TTL
minus the seconds since the lease's last grant or refresh on this fake's monotonic
clock, rounded up, never below 0) and, if asked, the attached `keys`. Leases do not
expire by themselves unless `auto_expire` is set (the server thread then applies an
expiry entry for each lease past its TTL, as a leader would); `expire(lease_id)` expires
one now, on the server thread, as an expiry entry naming its last refresh.
"""

from __future__ import annotations

import math
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import zmq

from zraft import wire
from zraft.core.types import Entry, EntryKind
from zraft.state.leasing import time_to_live
from zraft.state.machine import MODEL, KVMachine, Refused, ReplyFields
from zraft.wire.fields import TooManyOps
from zraft.wire.ops import Route


@dataclass(slots=True)
class FakeNode:
    """One fake node: its id, endpoint and socket, and the status it reports."""

    id: str
    endpoint: str
    sock: zmq.Socket[bytes]
    role: str = "follower"
    extra_status: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class FakeMember:
    """One row of the fake member table."""

    role: str  # "voter" or "learner"
    peer: str
    client: str


class FakeCluster:
    """Fake nodes `n1..nN` on OS-chosen ports, served by one thread until `close()`.

    Args:
        count: how many nodes.
        leader: the node reported as leader (status and reply `leader`), or None.
        max_txn_ops: the cluster's `max_txn_ops`, used where a node uses it: as the
            decoder's bound on a transaction's lists and by the machine.
    """

    def __init__(
        self, count: int = 1, *, leader: str | None = "n1", max_txn_ops: int = 128
    ) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.nodes: list[FakeNode] = []
        for i in range(1, count + 1):
            sock = self._context.socket(zmq.ROUTER)
            sock.linger = 0
            port = sock.bind_to_random_port("tcp://127.0.0.1")
            node = FakeNode(f"n{i}", f"tcp://127.0.0.1:{port}", sock)
            node.role = "leader" if node.id == leader else "follower"
            self.nodes.append(node)
        self.leader = leader
        self.term = 3
        self.machine = KVMachine(model=MODEL, max_txn_ops=max_txn_ops)
        self.max_txn_ops = max_txn_ops
        self.index = 0
        self.requests: list[tuple[str, wire.Request]] = []
        self.frames = 0  # every request frame, valid or not
        self.applied_writes = 0
        self.drop_replies = 0
        self.unavailable = 0
        self.not_leader = 0
        self.leader_hint: str | None = leader
        self.delay = 0.0
        self.silent: set[str] = set()
        self.snapshot_size = 4321
        self.members: dict[str, FakeMember] = {
            node.id: FakeMember("voter", f"tcp://127.0.0.1:{9000 + i}", node.endpoint)
            for i, node in enumerate(self.nodes, start=1)
        }
        self.config_index = 0
        self.conflict = 0
        self._snapshot_index: dict[str, int] = {}  # node id -> index of its newest snapshot
        self.auto_expire = False
        self._lease_clock: dict[int, float] = {}  # lease -> its last grant or refresh
        self._expiries: queue.SimpleQueue[tuple[int, threading.Event, list[bool]]]
        self._expiries = queue.SimpleQueue()
        self._held: list[tuple[float, zmq.Socket[bytes], list[bytes]]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, name="fake-zraft", daemon=True)
        self._thread.start()

    @property
    def endpoints(self) -> list[str]:
        """Every node's client endpoint, n1 first."""
        return [node.endpoint for node in self.nodes]

    @property
    def kv(self) -> StoreValues:
        """The store's current values (`get`, `len`), read from the machine."""
        return StoreValues(self.machine)

    def node(self, node_id: str) -> FakeNode:
        """The node called `node_id`."""
        return next(n for n in self.nodes if n.id == node_id)

    def writes(self) -> list[tuple[str, int | None, str | None]]:
        """`(op, seq, client)` of every write request received, in order."""
        return [
            (req.op, req.seq, req.client) for _, req in self.requests if req.spec.route is Route.LOG
        ]

    def expire(self, lease_id: int, timeout: float = 5.0) -> bool:
        """Expire lease `lease_id` now, as a leader's expiry entry would (its keys are
        deleted), on the server thread; returns whether the lease existed.

        Raises:
            TimeoutError: the server thread did not get to it within `timeout` seconds.
        """
        done, result = threading.Event(), [False]
        self._expiries.put((lease_id, done, result))
        if not done.wait(timeout):
            raise TimeoutError(f"the fake did not expire lease {lease_id} in {timeout} s")
        return result[0]

    def close(self) -> None:
        """Stop the thread (bounded wait) and close every socket."""
        self._stop.set()
        self._thread.join(timeout=5)
        assert not self._thread.is_alive(), "the fake server thread did not stop"
        self._context.destroy(linger=0)

    def __enter__(self) -> FakeCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- the server thread --------------------------------------------------------------

    def _serve(self) -> None:
        poller = zmq.Poller()
        by_socket = {node.sock: node for node in self.nodes}
        for sock in by_socket:
            poller.register(sock, zmq.POLLIN)
        while not self._stop.is_set():
            for sock, _ in poller.poll(10):
                node = by_socket[sock]
                while True:
                    try:
                        frames = sock.recv_multipart(zmq.NOBLOCK)
                    except zmq.Again:
                        break
                    self._handle(node, frames)
            self._expire_leases()
            now = time.monotonic()
            due = [held for held in self._held if held[0] <= now]
            self._held = [held for held in self._held if held[0] > now]
            for _, sock, frames in due:
                sock.send_multipart(frames, zmq.NOBLOCK)

    def _handle(self, node: FakeNode, frames: list[bytes]) -> None:
        # A REQ client's message is [identity, b"", body]; keep everything up to the body.
        envelope, body = frames[:-1], frames[-1]
        self.frames += 1
        try:
            request = wire.decode_request(body, max_ops=self.max_txn_ops)
        except wire.DecodeError as exc:
            code = "too_many_ops" if isinstance(exc, TooManyOps) else "bad_request"
            self._send(node, envelope, wire.encode_reply(ok=False, error=code, message=exc.reason))
            return
        self.requests.append((node.id, request))
        if node.id in self.silent:
            return
        reply = self._answer(node, request)
        if self.drop_replies > 0:
            self.drop_replies -= 1
            return
        self._send(node, envelope, reply)

    def _send(self, node: FakeNode, envelope: Sequence[bytes], reply: bytes) -> None:
        frames = [*envelope, reply]
        if self.delay > 0:
            self._held.append((time.monotonic() + self.delay, node.sock, frames))
        else:
            node.sock.send_multipart(frames, zmq.NOBLOCK)

    def _answer(self, node: FakeNode, request: wire.Request) -> bytes:
        if self.unavailable > 0 and request.op != "status":
            self.unavailable -= 1
            return wire.encode_reply(ok=False, error="unavailable", message="no leader")
        if self.not_leader > 0 and request.op != "status":
            self.not_leader -= 1
            return wire.encode_reply(
                ok=False, error="not_leader", message="not the leader", leader=self.leader_hint
            )
        if request.op == "status":
            return wire.encode_reply(
                ok=True, leader=self.leader, extra={"status": self._status(node)}
            )
        if request.spec.route is Route.READ:
            return self._encode(node, request.op, self.machine.read(request))
        if request.spec.route is Route.LOG:
            return self._write(node, request)
        if request.op == "snapshot":
            fresh = self._snapshot_index.get(node.id, 0) < self.index
            self._snapshot_index[node.id] = self.index
            snapshot = {"index": self.index, "size_bytes": self.snapshot_size if fresh else None}
            return wire.encode_reply(ok=True, leader=self.leader, extra={"snapshot": snapshot})
        if request.op == "members":
            return self._members_reply(node)
        if request.op in ("lease_keepalive", "lease_timetolive"):
            return self._lease_op(request)
        if request.spec.route is Route.LEADER:
            return self._change(node, request)
        return wire.encode_reply(ok=False, error="bad_request", message="not supported here")

    def _write(self, node: FakeNode, request: wire.Request) -> bytes:
        """A store write, applied as the next log entry (a refused one uses no index)."""
        try:
            data = self.machine.command(request)
        except Refused as exc:
            return wire.encode_reply(
                ok=False, error=exc.code, message=exc.message, leader=self.leader
            )
        fields = self._apply(data)
        assert fields is not None  # a write always has a reply
        if fields["ok"] and fields.get("index") == self.index:
            self.applied_writes += 1  # not a duplicate answered from the session
        return self._encode(node, request.op, fields)

    def _apply(self, data: bytes) -> ReplyFields | None:
        """Apply `data` as the next log entry; restart or stop the lease clocks it asks."""
        self.index += 1
        fields = self.machine.apply(Entry(self.term, self.index, EntryKind.NORMAL, data))
        now = time.monotonic()
        for event in self.machine.take_lease_events():
            if event.ttl is None:
                self._lease_clock.pop(event.lease, None)
            else:
                self._lease_clock[event.lease] = now
        return fields

    def _lease_op(self, request: wire.Request) -> bytes:
        """`lease_keepalive` or `lease_timetolive`, as a leader's `LeaseKeeper` answers."""
        lease_id = request.get("lease")
        lease = self.machine.leases.get(lease_id)
        if lease is None:
            message = f"lease {lease_id} does not exist (expired or revoked?)"
            return wire.encode_reply(
                ok=False, error="lease_not_found", message=message, leader=self.leader
            )
        if request.op == "lease_keepalive":
            self._apply(self.machine.refresh_command([lease_id]))
            extra = {"lease": lease_id, "ttl": lease.ttl, "remaining": lease.ttl}
        else:
            extra = time_to_live(self.machine.leases, lease_id, bool(request.get("keys")))
            assert extra is not None
            elapsed = time.monotonic() - self._lease_clock.get(lease_id, time.monotonic())
            extra["remaining"] = max(0, math.ceil(lease.ttl - elapsed))
        return wire.encode_reply(ok=True, op=request.op, leader=self.leader, extra=extra)

    def _expire_leases(self) -> None:
        """Serve `expire` calls; with `auto_expire`, expire every lease past its TTL."""
        while True:
            try:
                lease_id, done, result = self._expiries.get_nowait()
            except queue.Empty:
                break
            result[0] = self._expire(lease_id)
            done.set()
        if self.auto_expire:
            now = time.monotonic()
            for lease_id, since in list(self._lease_clock.items()):
                lease = self.machine.leases.get(lease_id)
                if lease is not None and now - since >= lease.ttl:
                    self._expire(lease_id)

    def _expire(self, lease_id: int) -> bool:
        lease = self.machine.leases.get(lease_id)
        if lease is None:
            return False
        self._apply(self.machine.expiry_command([(lease_id, lease.refreshed_index)]))
        return lease_id not in self.machine.leases

    def _encode(self, node: FakeNode, op: str, fields: ReplyFields) -> bytes:
        """A reply from the machine's fields, its `revision` turned into the `header`."""
        rest = {name: value for name, value in fields.items() if name != "revision"}
        revision = fields.get("revision")
        header = None
        if revision is not None:
            header = {"revision": revision, "raft_term": self.term, "member": node.id}
        return wire.encode_reply(op=op, leader=self.leader, header=header, **rest)

    def _members_reply(self, node: FakeNode) -> bytes:
        leading = node.id == self.leader
        rows = [
            {
                "id": member_id,
                "role": member.role,
                "peer": member.peer,
                "client": member.client,
                "match_index": self.index if leading else None,
            }
            for member_id, member in sorted(
                self.members.items(), key=lambda kv: kv[1].role != "voter"
            )
        ]
        return wire.encode_reply(
            ok=True,
            leader=self.leader,
            extra={"members": rows, "config_index": self.config_index},
        )

    def _change(self, node: FakeNode, request: wire.Request) -> bytes:
        """A membership or leadership op, checked and applied like a leader would."""
        member_id = request.get("id")

        def refuse(code: str, message: str) -> bytes:
            return wire.encode_reply(ok=False, error=code, message=message, leader=self.leader)

        if request.op == "transfer_leader":
            target = member_id or next(i for i, m in self.members.items() if i != self.leader)
            if target not in self.members or self.members[target].role != "voter":
                return refuse("bad_request", f"{target} is not a voter")
            self.leader = target
            for fake_node in self.nodes:
                fake_node.role = "leader" if fake_node.id == target else "follower"
            extra = {"transferred_to": target}
            return wire.encode_reply(ok=True, leader=target, extra=extra)
        if self.conflict > 0:
            self.conflict -= 1
            return refuse("conflict", "another membership change is not committed yet")
        assert member_id is not None
        existing = self.members.get(member_id)
        promote_later = False
        if request.op == "add_member":
            if existing is not None:
                return refuse("bad_request", f"{member_id} is already a {existing.role}")
            assert request.get("peer") is not None and request.get("client_endpoint") is not None
            self.members[member_id] = FakeMember(
                "learner", request.get("peer"), request.get("client_endpoint")
            )
            promote_later = not request.get("learner", False)
        elif existing is None:
            return refuse("bad_request", f"{member_id} is not a member")
        elif request.op == "promote_member":
            if existing.role == "voter":
                return refuse("bad_request", f"{member_id} is already a voter")
            existing.role = "voter"
        else:
            voters = [i for i, m in self.members.items() if m.role == "voter"]
            if voters == [member_id]:
                return refuse("bad_request", f"{member_id} is the last voter")
            del self.members[member_id]
        self.index += 1
        self.config_index = self.index
        reply = self._members_reply(self.node(self.leader) if self.leader else node)
        if promote_later:  # the leader's own promotion, once the learner caught up
            self.index += 1
            self.config_index = self.index
            self.members[member_id].role = "voter"
        return reply

    def _status(self, node: FakeNode) -> dict[str, Any]:
        return {
            "id": node.id,
            "role": node.role,
            "term": self.term,
            "leader": self.leader,
            "commit_index": self.index,
            "applied_index": self.index,
            "last_index": self.index,
            "voters": [n.id for n in self.nodes],
            "snapshot_index": self._snapshot_index.get(node.id, 0),
            "first_index": 1,
            "log_bytes": 0,
            **node.extra_status,
        }


class StoreValues:
    """The current values of a machine's store, read like the legacy `KVStore`."""

    def __init__(self, machine: KVMachine) -> None:
        self._machine = machine

    def get(self, key: bytes) -> bytes | None:
        """The current value of `key`, or None."""
        return self._machine.value(key)

    def __len__(self) -> int:
        return self._machine.key_count()


def silent_endpoint(context: zmq.Context[zmq.Socket[bytes]]) -> tuple[zmq.Socket[bytes], str]:
    """A ROUTER bound on an OS-chosen port that never answers: an unreachable node.

    The caller closes the socket (linger 0). Unlike a closed port, the endpoint cannot be
    taken by another process during the test.
    """
    sock = context.socket(zmq.ROUTER)
    sock.linger = 0
    port = sock.bind_to_random_port("tcp://127.0.0.1")
    return sock, f"tcp://127.0.0.1:{port}"
