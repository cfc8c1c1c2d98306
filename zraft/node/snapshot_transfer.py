"""InstallSnapshot over the peer channel: the leader streams files, a follower assembles one.

The core only says *which* snapshot a follower needs (a `SnapshotRequest` with metadata).
This module moves the bytes, in the node's one loop, without ever blocking it:

- `SnapshotSender` (leader): one transfer per follower. `pump` sends chunks of
  `chunk_bytes` read with `pread` while fewer than `window` are unacknowledged, so one
  call costs a bounded few chunks and heartbeats to every follower keep their pace. Each
  `SnapshotAck` names the next offset the follower wants: an ack past the window slides
  it; one for an offset already sent means a chunk was lost, and the sender goes back to
  it once (go-back-N, so a lost chunk costs one window); with no ack at all for
  `RESEND_AFTER_S` the unacknowledged window is sent again. A refusal, or no progress for
  `stall_timeout_s`,
  ends the transfer as failed; the node then calls `Raft.snapshot_failed`, and the core
  decides whether to try again. After the last chunk is acknowledged the sender keeps a
  watchdog for `stall_timeout_s`: if the core has still not heard the follower's
  `SnapshotResponse` by then, the node reports a failure too (a no-op if it has).
- `SnapshotInbox` (follower): one transfer at a time, from the current leader. Chunks go
  to a temp file (`SnapshotReceiver`); a chunk at offset 0 starts over, any other offset
  but the expected one is answered with the expected one. The last chunk makes the
  receiver verify the whole file; only then does the node step its core with the
  `SnapshotRequest`. A transfer from an older term or another leader is thrown away.

A leader change or a restart in the middle leaves at most a temp file, never a half
installed snapshot: installation is rename + WAL reset after the core accepted a verified
file, and temp files are deleted when the store opens.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from zraft.core import SnapshotMeta, SnapshotRequest
from zraft.storage.base import CorruptSnapshotError
from zraft.storage.snapfile import LoadedSnapshot
from zraft.storage.snapstore import SnapshotReceiver, SnapshotStore
from zraft.wire.peer import SnapshotAck, SnapshotChunk, encode_snapshot_chunk

DEFAULT_CHUNK_BYTES = 1 << 20
DEFAULT_WINDOW = 4
DEFAULT_STALL_TIMEOUT_S = 10.0
RESEND_AFTER_S = 1.0  # no ack for this long: send the unacknowledged window again


@dataclass(frozen=True, slots=True)
class TransferOutcome:
    """How a transfer to `peer` ended; `reason` is empty when delivered."""

    peer: str
    index: int
    size_bytes: int
    duration_s: float
    delivered: bool
    reason: str = ""


@dataclass(slots=True)
class _Outgoing:
    request: SnapshotRequest
    fd: int
    total: int
    started: float
    last_progress: float
    next_to_send: int = 0
    acked: int = 0
    rewound_to: int = -1  # the offset of the last go-back (-1: none yet)
    resent_at: float = float("-inf")  # when the window was last sent again for lack of acks
    delivered_at: float | None = None  # the last chunk was acknowledged

    @property
    def peer(self) -> str:
        return self.request.dst


class SnapshotSender:
    """Streams snapshot files to followers, a bounded window of chunks at a time.

    Args:
        send: sends one frame to a peer; returns False if it could not be queued.
        clock: monotonic seconds.
        chunk_bytes, window, stall_timeout_s: see the module docstring.
    """

    def __init__(
        self,
        send: Callable[[str, bytes], bool],
        clock: Callable[[], float],
        *,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
        window: int = DEFAULT_WINDOW,
        stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S,
    ) -> None:
        self._send = send
        self._clock = clock
        self._chunk_bytes = chunk_bytes
        self._window = window
        self._stall_timeout_s = stall_timeout_s
        self._transfers: dict[str, _Outgoing] = {}

    def start(self, request: SnapshotRequest, path: Path) -> TransferOutcome | None:
        """Begin sending `path` (the file of `request.meta`) to `request.dst`.

        Replaces any transfer to that peer. Returns a failed outcome at once if the file
        cannot be opened (the core then tries again later).
        """
        self._close(request.dst)
        now = self._clock()
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            total = os.fstat(fd).st_size
        except OSError as exc:
            return TransferOutcome(request.dst, request.meta.index, 0, 0.0, False, str(exc))
        self._transfers[request.dst] = _Outgoing(request, fd, total, now, now)
        return None

    def sending_to(self) -> dict[str, int]:
        """Peer -> snapshot index of every transfer still under way (for status)."""
        return {
            peer: t.request.meta.index
            for peer, t in self._transfers.items()
            if t.delivered_at is None
        }

    def on_ack(self, ack: SnapshotAck) -> TransferOutcome | None:
        """Take a follower's answer; returns an outcome when the transfer ends."""
        transfer = self._transfers.get(ack.src)
        if (
            transfer is None
            or ack.term != transfer.request.term
            or ack.index != transfer.request.meta.index
            or transfer.delivered_at is not None
        ):
            return None  # for a transfer that is over or was replaced
        now = self._clock()
        if not ack.ok:
            self._close(ack.src)
            return self._outcome(transfer, now, f"refused: {ack.reason}")
        if not 0 <= ack.next_offset <= transfer.total:
            return None  # nonsense offset: ignore it; a stall ends the transfer
        transfer.last_progress = now
        if ack.next_offset > transfer.acked:
            # The window slides; the chunks after it are still in flight: not again.
            transfer.acked = ack.next_offset
            transfer.next_to_send = max(transfer.next_to_send, ack.next_offset)
        elif ack.next_offset != transfer.rewound_to:
            # Go-back-N: the follower still wants an offset we sent, so a chunk was lost
            # (or it started over): send again from there. Once per offset: the rest of the
            # window it discarded is answered with the same offset, and so are the resent
            # duplicates; rewinding for each would resend the window again and again.
            transfer.acked = transfer.next_to_send = transfer.rewound_to = ack.next_offset
        if ack.next_offset == transfer.total:
            transfer.delivered_at = now
            os.close(transfer.fd)
            transfer.fd = -1
            return self._outcome(transfer, now, "")
        return None

    def pump(self) -> tuple[list[TransferOutcome], list[str]]:
        """Send what the windows allow and expire stalled transfers.

        Returns:
            (ended, overdue): transfers that failed now, and peers whose delivered
            snapshot was never answered by their core (report them as failed too).
        """
        now = self._clock()
        ended: list[TransferOutcome] = []
        overdue: list[str] = []
        for peer, transfer in list(self._transfers.items()):
            if now - transfer.last_progress > self._stall_timeout_s:
                self._close(peer)
                if transfer.delivered_at is None:
                    ended.append(self._outcome(transfer, now, "no progress (timed out)"))
                else:
                    overdue.append(peer)
                continue
            if transfer.delivered_at is None:
                quiet_since = max(transfer.last_progress, transfer.resent_at)
                if transfer.next_to_send > transfer.acked and now - quiet_since > RESEND_AFTER_S:
                    # A chunk lost after the one go-back (or a lost last ack): send again.
                    transfer.next_to_send = transfer.acked
                    transfer.resent_at = now
                self._send_window(transfer)
        return ended, overdue

    def confirmed(self, peer: str) -> None:
        """The core heard the follower's SnapshotResponse: stop watching that transfer."""
        transfer = self._transfers.get(peer)
        if transfer is not None and transfer.delivered_at is not None:
            self._close(peer)

    def cancel_all(self) -> None:
        """Drop every transfer (this node stopped leading)."""
        for peer in list(self._transfers):
            self._close(peer)

    def _send_window(self, transfer: _Outgoing) -> None:
        limit = transfer.acked + self._window * self._chunk_bytes
        while transfer.next_to_send < transfer.total and transfer.next_to_send < limit:
            offset = transfer.next_to_send
            length = min(self._chunk_bytes, transfer.total - offset)
            data = os.pread(transfer.fd, length, offset)
            if len(data) != length:
                raise OSError(f"snapshot file shrank while being sent (at offset {offset})")
            req = transfer.request
            chunk = SnapshotChunk(
                req.src, req.dst, req.term, req.meta, offset, transfer.total, data
            )
            if not self._send(req.dst, encode_snapshot_chunk(chunk)):
                return  # the peer's queue is full or it is not connected: retry next turn
            transfer.next_to_send = offset + length

    def _outcome(self, transfer: _Outgoing, now: float, reason: str) -> TransferOutcome:
        return TransferOutcome(
            transfer.peer,
            transfer.request.meta.index,
            transfer.total,
            now - transfer.started,
            not reason,
            reason,
        )

    def _close(self, peer: str) -> None:
        transfer = self._transfers.pop(peer, None)
        if transfer is not None and transfer.fd >= 0:
            os.close(transfer.fd)
            transfer.fd = -1


@dataclass(slots=True)
class Received:
    """A complete, verified snapshot waiting for the core's decision."""

    request: SnapshotRequest
    receiver: SnapshotReceiver
    loaded: LoadedSnapshot


@dataclass(slots=True)
class _Incoming:
    src: str
    term: int
    meta: SnapshotMeta
    total: int
    receiver: SnapshotReceiver


class SnapshotInbox:
    """Assembles the snapshot the current leader streams to this follower.

    Args:
        node_id: this node (the `src` of acks).
        store: where the temp file is written.
        max_bytes: refuse transfers larger than this.
    """

    def __init__(self, node_id: str, store: SnapshotStore, *, max_bytes: int) -> None:
        self._id = node_id
        self._store = store
        self._max_bytes = max_bytes
        self._current: _Incoming | None = None

    def on_chunk(self, chunk: SnapshotChunk, term: int) -> tuple[SnapshotAck, Received | None]:
        """Take one chunk; returns the ack to send and, after the last chunk, the result.

        `term` is this node's current term: chunks from an older term are refused.

        Raises:
            StorageError: writing the temp file failed (the node stops).
        """
        if chunk.term < term:
            stale = f"stale term {chunk.term} < {term}"
            return self._ack(chunk, 0, ok=False, reason=stale), None
        current = self._current
        same = current is not None and (current.src, current.term, current.meta, current.total) == (
            chunk.src,
            chunk.term,
            chunk.meta,
            chunk.total,
        )
        restart = chunk.offset == 0 and not (same and current and current.receiver.next_offset == 0)
        if restart:
            self.abort()
            if chunk.total > self._max_bytes:
                reason = f"snapshot of {chunk.total} bytes exceeds the limit {self._max_bytes}"
                return self._ack(chunk, 0, ok=False, reason=reason), None
            receiver = self._store.begin_receive(chunk.meta, max_bytes=self._max_bytes)
            current = _Incoming(chunk.src, chunk.term, chunk.meta, chunk.total, receiver)
            self._current = current
        elif not same or current is None:
            return self._ack(chunk, 0, ok=False, reason="no transfer of this snapshot"), None
        receiver = current.receiver
        try:
            written = receiver.write_chunk(chunk.offset, chunk.data)
        except CorruptSnapshotError as exc:  # grew past the limit (the receiver aborted)
            self._current = None
            return self._ack(chunk, 0, ok=False, reason=str(exc)), None
        if not written:
            return self._ack(chunk, receiver.next_offset), None  # resend from there
        if receiver.next_offset < current.total:
            return self._ack(chunk, receiver.next_offset), None
        self._current = None
        try:
            loaded = receiver.finish()
        except CorruptSnapshotError as exc:
            return self._ack(chunk, 0, ok=False, reason=f"damaged: {exc}"), None
        request = SnapshotRequest(chunk.src, self._id, chunk.term, chunk.meta)
        return self._ack(chunk, current.total), Received(request, receiver, loaded)

    def abort(self) -> None:
        """Throw away a partial transfer (its temp file is removed)."""
        if self._current is not None:
            self._current.receiver.abort()
            self._current = None

    def receiving(self) -> int | None:
        """The index of the snapshot being received, if any (for status)."""
        return self._current.meta.index if self._current is not None else None

    def _ack(
        self, chunk: SnapshotChunk, next_offset: int, *, ok: bool = True, reason: str = ""
    ) -> SnapshotAck:
        return SnapshotAck(
            self._id, chunk.src, chunk.term, chunk.meta.index, next_offset, ok, reason
        )
