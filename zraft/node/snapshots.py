"""The node's snapshots: restoring from one at start, making them, sending them to
followers that fell behind, receiving and installing one from the leader.

`restore_state` rebuilds the state machine from the newest snapshot that verifies plus
the log after it. `NodeSnapshots` then moves snapshots along from the loop: one slice of
our own snapshot per tick (`SnapshotMaker`), chunk windows to followers
(`SnapshotSender`), chunks from the leader into a verified file (`SnapshotInbox`), and
the install that the Raft core decides on. The order that makes an install crash-safe
is the loop's to keep (rename the file into place, then persist the WAL reset, then
replace the state); this module supplies each step. It must not decide Raft matters
(when to send a snapshot, whether to install one): the core does.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from zraft import diagnostics
from zraft.core import Raft, Ready, RestoredState, SnapshotRequest
from zraft.diagnostics import FilteringBoundLogger, NodeEvent
from zraft.node.metrics import NO_METRICS, NoMetrics
from zraft.node.pending import Pending
from zraft.node.serving import Handler, RequestServer
from zraft.node.snapshot_maker import SnapshotMaker, SnapshotStats
from zraft.node.snapshot_transfer import Received, SnapshotInbox, SnapshotSender, TransferOutcome
from zraft.state.kv import SnapshotView
from zraft.state.machine import StateMachine
from zraft.storage import LogStorage
from zraft.storage.snapfile import LoadedSnapshot
from zraft.storage.snapstore import SnapshotStore
from zraft.wire.peer import SnapshotAck, SnapshotChunk, encode_snapshot_ack

READ_CHUNK_BYTES = 1 << 20  # a `snapshot_read` reply's bytes at most: ~1 ms of the loop
MAX_SNAPSHOT_TRANSFER_BYTES = 64 << 30  # a follower refuses a bigger incoming snapshot


def view_of(loaded: LoadedSnapshot) -> SnapshotView:
    """The state machine's state as a snapshot file holds it."""
    header = loaded.header
    return SnapshotView(
        header.get("applied_index"), loaded.pairs, header.get("sessions"), dict(header)
    )


def restore_state(
    storage: LogStorage,
    snapshots: SnapshotStore,
    machine: StateMachine,
    log: FilteringBoundLogger,
) -> tuple[RestoredState, LoadedSnapshot | None]:
    """Rebuild from the newest valid snapshot plus the log after it (or the log alone).

    A damaged snapshot is refused (logged) and an older one used. If the newest
    snapshot is ahead of the log, or the log's entry at the snapshot index has another
    term, the log holds a history the snapshot supersedes (a crash between installing a
    received snapshot and saving its reset): the reset is saved again now.

    Returns:
        What the core starts from (its membership None when neither the log nor a
        snapshot has one: a brand-new log), and the snapshot loaded, if any.
    """
    for temp in snapshots.removed_temps:
        diagnostics.emit_node(log, NodeEvent.SNAPSHOT_REFUSED, path=str(temp), reason="unfinished")
    began = time.perf_counter()
    loaded, refused = snapshots.load_newest()
    for path, reason in refused:
        diagnostics.emit_node(log, NodeEvent.SNAPSHOT_REFUSED, path=str(path), reason=reason)
    if loaded is None:
        return storage.load(), None
    meta = loaded.meta
    stored_term = None
    if storage.first_index() <= meta.index <= storage.last_index():
        stored_term = storage.entries(meta.index, meta.index + 1)[0].term
    if storage.last_index() < meta.index or (stored_term is not None and stored_term != meta.term):
        storage.save(None, (), snapshot=meta)
    restored = storage.load(after=meta.index)
    machine.restore(view_of(loaded))
    diagnostics.emit_node(
        log,
        NodeEvent.SNAPSHOT_LOADED,
        index=meta.index,
        term=meta.term,
        size_bytes=loaded.size_bytes,
        duration_ms=round((time.perf_counter() - began) * 1000, 1),
    )
    return replace(restored, snapshot=meta, membership=meta.membership), loaded


class NodeSnapshots:
    """Snapshots of one running node (see the module doc).

    Args:
        node_id: this node.
        raft: the core (snapshot metadata, compaction, transfer outcomes).
        machine: the state machine (copied into snapshots, replaced by installs).
        storage: the WAL (compacted behind the oldest kept snapshot).
        store: the snapshot directory.
        send: sends one peer frame (chunks and acks).
        server: replies to `snapshot` requests.
        log: the node's logger.
        clock: a monotonic clock in seconds.
        every_entries, every_bytes, trailing: the config's `snapshot_entries`,
            `snapshot_bytes` and `snapshot_trailing`.
        header_fields: what to write into each snapshot's header beside the state (the
            member directory and retired ids: `Admin.snapshot_header`).
        metrics: told each snapshot's duration and size.
    """

    def __init__(
        self,
        node_id: str,
        raft: Raft,
        machine: StateMachine,
        storage: LogStorage,
        store: SnapshotStore,
        *,
        send: Callable[[str, bytes], bool],
        server: RequestServer,
        log: FilteringBoundLogger,
        clock: Callable[[], float],
        every_entries: int,
        every_bytes: int,
        trailing: int,
        header_fields: Callable[[], dict[str, Any]],
        metrics: NoMetrics = NO_METRICS,
    ) -> None:
        self._raft = raft
        self._metrics = metrics
        self._machine = machine
        self._storage = storage
        self._store = store
        self._send = send
        self._server = server
        self._log = log
        self._trailing = trailing
        self._header_fields = header_fields
        self._maker = SnapshotMaker(store, every_entries=every_entries, every_bytes=every_bytes)
        self._sender = SnapshotSender(send, clock)
        self._inbox = SnapshotInbox(node_id, store, max_bytes=MAX_SNAPSHOT_TRANSFER_BYTES)
        self._received: Received | None = None  # a verified snapshot the core is deciding on
        self._failed_transfers: list[str] = []  # peers to report to the core next turn
        self._waiters: list[Pending] = []  # `snapshot` requests awaiting the file

    def handlers(self) -> dict[str, Handler]:
        """The ops this module serves."""
        return {"snapshot": self.serve_snapshot, "snapshot_read": self.serve_snapshot_read}

    # --- our own snapshots ------------------------------------------------------------------

    def note_applied(self, command_bytes: int) -> None:
        """An entry of this many bytes was applied (towards `snapshot_bytes`)."""
        self._maker.note_applied(command_bytes)

    def move(self, *, write_slice: bool) -> None:
        """Per turn: report failed transfers and send chunk windows; per tick, write one
        slice of our own snapshot. One slice (~1 MiB and its fdatasync, a few ms) per tick
        spreads the cost: a busy leader's requests see it in one turn of every few, not in
        every turn, and the snapshot still advances ~100 MiB/s at a 10 ms tick."""
        ended, overdue = self._sender.pump()
        for outcome in ended:
            self._report_transfer(outcome)
        failed, self._failed_transfers = self._failed_transfers, []
        for peer in failed + overdue:
            self._raft.snapshot_failed(peer)
        if write_slice:
            stats = self._maker.step()
            if stats is not None:
                self._finish(stats)

    def maybe_start(self, *, force: bool = False) -> bool:
        """Start a snapshot of the applied state if one is due (or `force`d); returns
        whether one is now being written."""
        newest = self._raft.snapshot_index
        applied = self._machine.applied_index
        if self._maker.writing is not None:
            return True
        if not (force and applied > newest) and not self._maker.is_due(applied, newest):
            return False
        began = time.perf_counter()
        view = self._machine.snapshot_view()  # the one pause: a shallow copy of the state
        self._maker.start(
            self._raft.snapshot_meta(view.applied_index),
            view,
            extra_header=self._header_fields(),
        )
        self._maker.note_copy_ms((time.perf_counter() - began) * 1000)
        return True

    def _finish(self, stats: SnapshotStats) -> None:
        """A snapshot of ours is durable: compact the log behind it, keep the newest few."""
        meta = stats.info.meta
        diagnostics.emit_node(
            self._log,
            NodeEvent.SNAPSHOT_SAVED,
            index=meta.index,
            term=meta.term,
            size_bytes=stats.info.size_bytes,
            pairs=stats.pairs,
            copy_ms=round(stats.copy_ms, 1),
            max_slice_ms=round(stats.max_slice_ms, 1),
            total_ms=round(stats.total_ms, 1),
        )
        self._metrics.snapshot_saved(stats.total_ms / 1000, stats.info.size_bytes)
        # Keep `snapshot_trailing` entries in memory for followers that lag a little.
        keep_from = max(self._raft.log.snapshot_index, meta.index - self._trailing)
        self._raft.compact(meta, keep_from)
        self.compact_storage(meta.term)
        waiters, self._waiters = self._waiters, []
        for pending in waiters:
            self._server.reply(pending, _snapshot_fields(meta.index, stats.info.size_bytes))

    def compact_storage(self, term: int) -> None:
        """Prune old snapshot files, then drop WAL segments the oldest kept one covers.

        The WAL keeps everything after the OLDEST retained snapshot, so that a damaged
        newest snapshot can fall back to an older one and still find its log.
        """
        self._store.prune()
        upto = min(self._store.oldest_retained_index(), self._raft.log.snapshot_index)
        before = self._storage.first_index()
        self._storage.compact(upto)
        if self._storage.first_index() != before:
            diagnostics.emit_node(
                self._log,
                NodeEvent.LOG_COMPACTED,
                index=upto,
                term=term,
                size_bytes=self.wal_bytes(),
                first_index=self._storage.first_index(),
            )

    def serve_snapshot_read(self, pending: Pending) -> bool:
        """`snapshot_read`: a chunk of one of our snapshot files (a backup reads it)."""
        fields = pending.request.fields
        chunk = read_chunk(self._store, fields.get("snapshot_index", 0), fields["offset"])
        self._server.reply(pending, chunk)
        return True

    def serve_snapshot(self, pending: Pending) -> bool:
        """The operator's `snapshot`: take one now; answer once it is durable."""
        if self.maybe_start(force=True):
            self._waiters.append(pending)
        else:  # nothing applied since the newest snapshot: it is already current
            self._server.reply(pending, _snapshot_fields(self._raft.snapshot_index, None))
        return True

    def wal_bytes(self) -> int:
        """The size of the WAL on disk (0 for an in-memory storage)."""
        data_dir = getattr(self._storage, "data_dir", None)
        if data_dir is None:
            return 0
        return sum(p.stat().st_size for p in Path(data_dir).glob("wal-*.log"))

    # --- sending to followers ---------------------------------------------------------------

    def start_transfer(self, request: SnapshotRequest) -> None:
        """The core wants a follower to get our snapshot: stream the file in chunks."""
        failed = self._sender.start(request, self._store.path_of(request.meta))
        if failed is not None:
            self._report_transfer(failed, defer=True)

    def on_ack(self, ack: SnapshotAck) -> None:
        """A follower acknowledged chunks (or refused the transfer)."""
        self._report_transfer(self._sender.on_ack(ack))

    def cancel_transfers(self) -> None:
        """No longer the leader: a new leader starts its own transfers."""
        self._sender.cancel_all()

    def _report_transfer(self, outcome: TransferOutcome | None, *, defer: bool = False) -> None:
        """Log how a transfer ended; a failure goes back to the core (next turn if
        `defer`, when the core is between ready() and advance())."""
        if outcome is None:
            return
        diagnostics.emit_node(
            self._log,
            NodeEvent.SNAPSHOT_SENT,
            peer=outcome.peer,
            index=outcome.index,
            size_bytes=outcome.size_bytes,
            duration_ms=round(outcome.duration_s * 1000, 1),
            delivered=outcome.delivered,
            reason=outcome.reason,
        )
        if outcome.delivered:
            return
        if defer:
            self._failed_transfers.append(outcome.peer)
        else:
            self._raft.snapshot_failed(outcome.peer)

    # --- receiving from the leader ----------------------------------------------------------

    def receive_chunk(self, chunk: SnapshotChunk) -> None:
        """Write a chunk from the leader; a whole, verified file goes to the core."""
        ack, received = self._inbox.on_chunk(chunk, self._raft.term)
        if not ack.ok:
            diagnostics.emit_node(
                self._log,
                NodeEvent.SNAPSHOT_REFUSED,
                path=f"transfer from {chunk.src}",
                reason=ack.reason,
            )
        self._send(chunk.src, encode_snapshot_ack(ack))
        if received is not None:
            if self._received is not None:
                self._received.receiver.abort()
            self._received = received
            self._raft.step(received.request)  # decides in the next Ready

    def take_received(self, rd: Ready) -> Received | None:
        """Step 0 of a Ready: if it installs a snapshot, give the received, verified file
        its final name (before the WAL's reset: a final name means a complete, durable
        file) and return it; otherwise drop what the core did not need."""
        received, self._received = self._received, None
        if rd.snapshot is None:
            if received is not None:
                received.receiver.abort()  # the core did not need it (already had it all)
            return None
        if received is None or received.request.meta != rd.snapshot:
            # The core only installs what this node handed it: anything else is a bug.
            raise RuntimeError(f"the core installs {rd.snapshot}, which this node does not hold")
        self._maker.note_installed()  # our own older snapshot in progress is moot now
        self._store.install(received.receiver)
        return received

    def adopt(self, received: Received) -> LoadedSnapshot:
        """After the WAL reset is durable: replace the state machine and tidy up old
        files. Returns the snapshot (its header carries the member directory)."""
        loaded = received.loaded
        self._machine.restore(view_of(loaded))
        diagnostics.emit_node(
            self._log,
            NodeEvent.SNAPSHOT_INSTALLED,
            index=loaded.meta.index,
            term=loaded.meta.term,
            size_bytes=loaded.size_bytes,
        )
        # Older snapshots cannot be combined with a log that restarts after this one.
        for older in self._store.list():
            if older.index < loaded.meta.index:
                older.path.unlink(missing_ok=True)
        self.compact_storage(loaded.meta.term)
        return loaded


def read_chunk(store: SnapshotStore, index: int, offset: int) -> dict[str, Any]:
    """The reply fields of `snapshot_read`: up to `READ_CHUNK_BYTES` of snapshot `index`
    (0: the newest) from `offset`, or an error when there is no such snapshot (any more)."""
    files = store.list()
    chosen = max(files, key=lambda f: f.index, default=None) if index == 0 else None
    chosen = chosen or next((f for f in files if f.index == index), None)
    if chosen is None:
        what = "no snapshot yet" if index == 0 else f"no snapshot {index} (a newer one replaced it)"
        return {"ok": False, "error": "conflict", "message": f"{what}: start again"}
    try:
        with chosen.path.open("rb") as file:
            file.seek(min(offset, chosen.size_bytes))
            data = file.read(READ_CHUNK_BYTES)
    except FileNotFoundError:
        message = f"snapshot {chosen.index} was replaced by a newer one: start again"
        return {"ok": False, "error": "conflict", "message": message}
    described = {
        "index": chosen.index,
        "term": chosen.term,
        "size_bytes": chosen.size_bytes,
        "offset": offset,
    }
    return {"ok": True, "extra": {"snapshot": described, "data": data}}


def _snapshot_fields(index: int, size_bytes: int | None) -> dict[str, Any]:
    return {"ok": True, "extra": {"snapshot": {"index": index, "size_bytes": size_bytes}}}
