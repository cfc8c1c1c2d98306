"""Watches: long polls on the store's revisions, served by the node they reach.

A `watch` asks for every change of a key range at or after `start_revision` (0: after the
node's current revision). The node answers from its own applied state, never asking the
leader, so watches spread over the nodes:

- if such changes exist, at once, with up to `max_events` of them (whole revisions);
- else it holds the request. Every loop turn that applied entries looks up which keys
  those revisions changed (the store's change log) and which held watches cover them: an
  exact-key index, a prefix index probed at the prefix lengths in use, and a list of the
  other intervals (from-key ranges, explicit ends), so a change costs O(1 + prefix lengths
  + intervals + matches), not O(watches). A watch that matches is answered then;
- when `wait_ms` passes with nothing new, it answers with no events: a *progress* reply
  whose `next_revision` says every change below it has been delivered.

A node that has not yet applied `start_revision - 1` finds nothing at or after it and
holds the watch: it cannot answer past a gap. A start at or below the compact revision is
answered `compacted` (also when a snapshot install moves the compaction past a held
watch). `require_leader` makes a node without a leader answer `unavailable`, at once and
for held watches within a tick of losing it, so the client moves to a node that has one.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from zraft.core import Raft
from zraft.node.pending import Pending
from zraft.node.serving import Handler, RequestServer
from zraft.state.events import event_map, find_events, in_range
from zraft.state.execute import range_bounds
from zraft.state.machine import KVMachine
from zraft.state.mvcc import MVCCStore, prefix_end
from zraft.wire.fields import DEFAULT_WATCH_EVENTS, DEFAULT_WATCH_WAIT_MS

_Shared = dict[tuple[object, ...], tuple[int, bytes | None]]
"""What a look found for a question, this turn: the next revision, and the encoded reply
(None: no events yet)."""

MAX_WATCHES = 20_000
"""Held watches per node at most; beyond it a new one is answered `unavailable`."""


@dataclass(slots=True)
class Watcher:
    """One held watch: its request, its range and filters, and where it stands."""

    id: int
    pending: Pending
    key: bytes
    end: bytes | None
    start: int  # the next revision it needs
    deadline: float
    max_events: int
    prev_kv: bool
    no_put: bool
    no_delete: bool
    prefix: bytes | None  # set when the range is a prefix (indexed by it)


class WatchHub:
    """Every watch a node holds, indexed by what it covers (see the module doc).

    Args:
        raft: for the leader (`require_leader`).
        machine: the state machine whose store the watches read.
        server: to answer them.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        raft: Raft,
        machine: KVMachine,
        server: RequestServer,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._raft = raft
        self._machine = machine
        self._server = server
        self._clock = clock
        self._watchers: dict[int, Watcher] = {}
        self._by_key: dict[bytes, set[int]] = {}
        self._by_prefix: dict[bytes, set[int]] = {}
        self._prefix_lengths: Counter[int] = Counter()
        self._intervals: set[int] = set()
        self._require_leader: set[int] = set()
        self._deadlines: list[tuple[float, int]] = []
        self._store: MVCCStore = machine.store
        self._seen = machine.store.revision  # every change up to it has been matched

    def handlers(self) -> Mapping[str, Handler]:
        """The op this serves."""
        return {"watch": self._watch}

    def __len__(self) -> int:
        """How many watches are held."""
        return len(self._watchers)

    # --- a new watch ----------------------------------------------------------------------

    def _watch(self, pending: Pending) -> bool:
        fields = pending.request.fields
        server = self._server
        if self._machine.model != "mvcc":
            message = "watch needs the revision data model; the cluster is upgrading to it"
            server.reply_error(pending.reply_to, "unavailable", message)
            return True
        require_leader = bool(fields.get("require_leader"))
        if require_leader and self._raft.leader_id is None:
            server.reply_error(pending.reply_to, "unavailable", "this node has no leader")
            return True
        if len(self._watchers) >= MAX_WATCHES:
            message = f"this node holds {MAX_WATCHES} watches already; ask another node"
            server.reply_error(pending.reply_to, "unavailable", message)
            return True
        self._catch_up()  # a watch must not be held on changes not yet matched
        key, end = range_bounds(fields)
        filters = fields.get("filters", ())
        wait_s = fields.get("wait_ms", DEFAULT_WATCH_WAIT_MS) / 1000
        watcher = Watcher(
            id=server.take_id(),
            pending=pending,
            key=key,
            end=end,
            start=fields.get("start_revision", 0) or self._store.revision + 1,
            deadline=self._clock() + wait_s,
            max_events=fields.get("max_events", DEFAULT_WATCH_EVENTS),
            prev_kv=bool(fields.get("prev_kv")),
            no_put="noput" in filters,
            no_delete="nodelete" in filters,
            prefix=_prefix_of(key, end),
        )
        if not self._answer(watcher, final=wait_s <= 0):
            self._hold(watcher, require_leader)
        return True

    def _hold(self, watcher: Watcher, require_leader: bool) -> None:
        wid = watcher.id
        self._watchers[wid] = watcher
        if watcher.prefix is not None:
            self._by_prefix.setdefault(watcher.prefix, set()).add(wid)
            self._prefix_lengths[len(watcher.prefix)] += 1
        elif watcher.end is None:
            self._by_key.setdefault(watcher.key, set()).add(wid)
        else:
            self._intervals.add(wid)
        if require_leader:
            self._require_leader.add(wid)
        heapq.heappush(self._deadlines, (watcher.deadline, wid))

    def _drop(self, watcher: Watcher) -> None:
        wid = watcher.id
        del self._watchers[wid]
        if watcher.prefix is not None:
            _discard(self._by_prefix, watcher.prefix, wid)
            lengths = self._prefix_lengths
            lengths[len(watcher.prefix)] -= 1
            if not lengths[len(watcher.prefix)]:
                del lengths[len(watcher.prefix)]
        elif watcher.end is None:
            _discard(self._by_key, watcher.key, wid)
        else:
            self._intervals.discard(wid)
        self._require_leader.discard(wid)

    # --- answering ------------------------------------------------------------------------

    def _answer(self, watcher: Watcher, *, final: bool, shared: _Shared | None = None) -> bool:
        """Answer `watcher` if it has events (or, if `final`, in any case); returns whether
        it was answered. Watches woken together that ask the same thing from the same
        revision get the same reply: with `shared`, it is looked up and encoded once."""
        store = self._store
        asked = (
            watcher.key,
            watcher.end,
            watcher.start,
            watcher.max_events,
            watcher.no_put,
            watcher.no_delete,
            watcher.prev_kv,
        )
        if shared is not None and asked in shared:
            next_revision, body = shared[asked]
            watcher.start = next_revision
            if body is None:
                return False
            self._server.send_reply(watcher.pending.reply_to, body)
            return True
        if watcher.start <= store.compact_revision:
            self._server.reply(
                watcher.pending,
                {
                    "ok": False,
                    "error": "compacted",
                    "message": f"revision {watcher.start} is compacted (the compact revision "
                    f"is {store.compact_revision}); watch from a later one",
                    "revision": store.revision,
                    "extra": {"compact_revision": store.compact_revision},
                },
            )
            return True
        found = find_events(
            store,
            watcher.key,
            watcher.end,
            watcher.start,
            max_events=watcher.max_events,
            no_put=watcher.no_put,
            no_delete=watcher.no_delete,
        )
        watcher.start = found.next_revision  # below it: delivered now, or filtered out
        if not found.changes and not final:
            if shared is not None:
                shared[asked] = (found.next_revision, None)
            return False
        events = [event_map(change, watcher.prev_kv) for change in found.changes]
        extra = {"events": events, "next_revision": found.next_revision}
        body = self._server.encode(
            "watch", {"ok": True, "revision": store.revision, "extra": extra}
        )
        if shared is not None:
            shared[asked] = (found.next_revision, body)
        self._server.send_reply(watcher.pending.reply_to, body)
        return True

    # --- the loop's calls -----------------------------------------------------------------

    def applied(self) -> None:
        """Entries were applied (or a snapshot installed): answer the watches they match."""
        self._catch_up()

    def _catch_up(self) -> None:
        store = self._machine.store
        if store is self._store and store.revision == self._seen:
            return
        if not self._watchers:
            self._store, self._seen = store, store.revision
            return
        if store is not self._store or not store.changes.covers(self._seen + 1):
            self._store = store  # a new store (snapshot, upgrade) or an old gap: look at all
            woken = set(self._watchers)
        else:
            woken = self._matching(store)
        quiet, self._seen = self._seen, store.revision
        shared: _Shared = {}
        for wid in sorted(woken):  # in arrival order: answers go out deterministically
            watcher = self._watchers[wid]
            # Held, it had no change up to `quiet` (one would have woken it): look from
            # after it, so a compaction of those revisions is not taken for a gap.
            watcher.start = max(watcher.start, quiet + 1)
            if self._answer(watcher, final=False, shared=shared):
                self._drop(watcher)

    def _matching(self, store: MVCCStore) -> set[int]:
        """The held watches covering a key changed since the last look."""
        woken: set[int] = set()
        by_key, by_prefix, lengths = self._by_key, self._by_prefix, self._prefix_lengths
        intervals = [self._watchers[wid] for wid in self._intervals]
        for _, key in store.changes.since(self._seen + 1):
            found = by_key.get(key)
            if found:
                woken |= found
            for length in lengths:
                found = by_prefix.get(key[:length]) if length <= len(key) else None
                if found:
                    woken |= found
            for watcher in intervals:
                if in_range(key, watcher.key, watcher.end):
                    woken.add(watcher.id)
        return woken

    def on_tick(self, now: float) -> None:
        """Answer watches whose wait is over, and (`require_leader`) those left leaderless."""
        deadlines = self._deadlines
        if deadlines and deadlines[0][0] <= now:
            self._catch_up()  # every change applied so far is matched first
        while deadlines and deadlines[0][0] <= now:
            _, wid = heapq.heappop(deadlines)
            watcher = self._watchers.get(wid)
            if watcher is not None:
                watcher.start = max(watcher.start, self._seen + 1)  # quiet up to `_seen`
                self._answer(watcher, final=True)
                self._drop(watcher)
        if self._require_leader and self._raft.leader_id is None:
            for wid in sorted(self._require_leader):
                watcher = self._watchers[wid]
                self._server.reply_error(
                    watcher.pending.reply_to, "unavailable", "this node lost its leader"
                )
                self._drop(watcher)


def _prefix_of(key: bytes, end: bytes | None) -> bytes | None:
    """The prefix a range is, if it is one (every key: the empty prefix)."""
    if end is None:
        return None
    if key == b"\0" and end == b"\0":
        return b""
    return key if end == prefix_end(key) and end != b"\0" else None


def _discard(index: dict[bytes, set[int]], key: bytes, wid: int) -> None:
    members = index.get(key)
    if members is not None:
        members.discard(wid)
        if not members:
            del index[key]
