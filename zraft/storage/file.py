"""`FileStorage`: one node's log and hard state, durable in a segmented write-ahead log.

What it owns: the files in one data directory::

    LOCK                          flock'ed while a store is open; holds the owner's pid
    wal-<seq:016x>-<base:016x>.log  segments, replayed in `seq` order (format: `wal.py`)

Each `save()` appends exactly ONE CRC-framed record holding the truncation point (if the
entries overwrite stored ones) or a RESET (when a snapshot is saved), the entries and the
hard state, then calls `fdatasync` once. Rolling to a new segment adds a directory fsync to
that one save. Files are preallocated ahead of the writes (`fsio.preallocate`), so most
fdatasyncs commit no size change; replay takes zeros up to the end of a file as its clean
end (no frame has type 0). An older release cuts them off as a torn tail, losing nothing.

Snapshots themselves live in their own files (`snapstore.py`); the log only learns where
they cut it. Two ways, two meanings:

- `compact(index)`: the node took (or kept) a snapshot at `index` and may lose the log up
  to there. The node passes the index of the OLDEST snapshot it retains, so a start-up that
  has to fall back to that snapshot (the newest one is damaged) still finds the log after
  it. Whole segments are deleted, so the log usually keeps more than asked.
- `save(..., snapshot=meta)`: a follower installed a snapshot its leader sent. Its whole
  log is superseded: one RESET item says "empty, continuing at meta.index + 1", in the same
  frame as the entries after it and the hard state.

Why the hard state lives in the WAL and not in its own file: Raft persists term, vote and
commit on nearly every loop turn. A separate file written atomically costs write + fsync +
rename + directory fsync on top of the log's fsync; inside the WAL it costs ~25 bytes under
the same fsync, and a frame is all-or-nothing (next paragraph), so it is written atomically.
Each segment header repeats the hard state of its time, so deleting old segments
(`compact`) never loses it.

Crash-safety argument, point by point:

- *A save is atomic.* Its frame carries a CRC over offset, length, type and payload, so
  after a crash the frame is either wholly valid or detected as damaged. Truncation, new
  entries and hard state share that frame: no crash leaves the log truncated without its
  replacement entries, or a hard state without the entries it was saved with.
- *A save is durable when it returns.* `os.pwrite` is looped until every byte is written
  (a nearly full disk returns short counts), then `fdatasync` covers the data and the file
  size; a new segment also gets its directory fsync'ed before returning.
- *Only the last frame can be torn.* A frame is written only after the previous save's
  fsync returned, and a segment is started only when the previous one is complete. So a bad
  frame with nothing valid after it, at the end of the last segment, is the save that was
  in flight, which no caller saw succeed: cutting it off (`TailRepair`) loses nothing that
  was acknowledged. A bad frame anywhere else, or entries that do not follow each other, is
  real corruption: `CorruptLogError` names the file and offset, and nothing is skipped.
  A save that left only zeros (or nothing) is dropped the same way, unreported.
- *A half-started segment is harmless.* If even its header is torn, it holds no
  acknowledged save and is removed (reported as a repair).
- *A RESET is atomic like any save*: the reset, the entries after it and the hard state are
  one frame, so no crash leaves the old log dropped without the new start; if it is torn,
  the old log is back. So the node makes the snapshot file durable (installs it) BEFORE it
  saves the RESET: after a crash in between, it finds a snapshot newer than its log and
  saves the RESET again (see `load`); the reverse could leave a log after every snapshot.
- *Compaction deletes the oldest segments first*, so a crash midway leaves a contiguous run.
  It deletes a segment only if none of its entries is live (not overwritten by a later
  truncation, not dropped by a later RESET) at an index above `index`. Replaying the
  remaining segments gives the same log: the first one's header holds the base index and
  hard state of its time, and every frame after it was kept. A segment holding only frames
  before a RESET is dead whatever `index` is, and is deleted as soon as it is not the
  active one.
- Every OSError raises `StorageError` and fails the store for good (fail-stop): after a
  failed write or fsync the file's state is unknown, and Linux may have dropped the dirty
  pages, so retrying could report durability that does not exist.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from zraft.core.types import Entry, HardState, RestoredState, SnapshotMeta
from zraft.storage.base import (
    CorruptLogError,
    LogGapError,
    StorageError,
    TailRepair,
    check_append,
)
from zraft.storage.frameindex import FrameIndex
from zraft.storage.fsio import lock_dir, make_dir, preallocate, pwrite_all, sync_data, sync_dir
from zraft.storage.wal import (
    FRAME_HEADER_SIZE,
    FRAME_SAVE,
    FRAME_SEGMENT_HEADER,
    MAX_PAYLOAD,
    Frame,
    Item,
    Reset,
    SegmentHeader,
    Truncate,
    decode_items,
    decode_segment_header,
    encode_frame,
    encode_save,
    encode_segment_header,
    find_frame_after,
    parse_segment_name,
    read_frame,
    segment_name,
)

DEFAULT_SEGMENT_BYTES = 64 << 20
PREALLOCATE_BYTES = 4 << 20
"""How far ahead of a segment's end its file is preallocated (one fallocate per 4 MiB)."""


@dataclass(slots=True)
class _Segment:
    seq: int
    path: Path
    size: int  # bytes of valid frames; the active segment's append position
    header_size: int  # a segment holding nothing but its header is never rolled over
    allocated: int = 0  # the file's length: `size` plus preallocated zeros


class FileStorage:
    """A `LogStorage` backed by a segmented, CRC-framed write-ahead log.

    Constructing it creates the data dir if missing, takes its lock, and recovers: it
    replays every segment, cuts a torn tail off the last one (see `tail_repair`) and
    refuses corruption anywhere else. Not thread-safe: one node loop owns it.

    Args:
        data_dir: the node's data directory.
        segment_bytes: start a new segment once the active one has reached this size.
        preallocate_bytes: how far ahead of its end a segment's file is preallocated, up
            to `segment_bytes` (default `PREALLOCATE_BYTES`; 0: never, files just grow).

    Raises:
        DataDirLockedError: another open store holds the data dir.
        CorruptLogError: the log is damaged other than by a torn tail.
        StorageError: an OSError while opening or recovering.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str],
        *,
        segment_bytes: int = DEFAULT_SEGMENT_BYTES,
        preallocate_bytes: int | None = None,
    ) -> None:
        ahead = PREALLOCATE_BYTES if preallocate_bytes is None else preallocate_bytes
        if segment_bytes < 1 or ahead < 0:
            raise ValueError("segment_bytes must be >= 1 and preallocate_bytes >= 0")
        self._dir = Path(data_dir)
        self._segment_bytes = segment_bytes
        self._preallocate_bytes = ahead
        self._lock_fd = -1
        self._fd = -1  # the active (last) segment, opened for appending
        self._closed = False
        self._failure: str | None = None
        self._segments: list[_Segment] = []  # Invariant: seqs consecutive; last is active
        self._frames = FrameIndex()  # Invariant: covers [first, last] exactly
        self._first_index = 1
        self._last_index = 0
        self._hard_state = HardState()
        self._tail_repair: TailRepair | None = None
        try:
            make_dir(self._dir)
            self._lock_fd = lock_dir(self._dir)
            self._recover()
            if self._segments:
                active = self._segments[-1].path
                self._fd = os.open(active, os.O_WRONLY | os.O_CLOEXEC)
            else:
                self._start_segment(seq=1)
                sync_data(self._fd)
                sync_dir(self._dir)
        except OSError as exc:
            self._release()
            raise StorageError(f"cannot open storage in {self._dir}: {exc}") from exc
        except BaseException:
            self._release()
            raise

    @property
    def data_dir(self) -> Path:
        """The data directory this store owns."""
        return self._dir

    @property
    def tail_repair(self) -> TailRepair | None:
        """The torn tail cut off while opening, or None; the node logs `log_tail_repaired`."""
        return self._tail_repair

    def first_index(self) -> int:
        """Index of the first stored entry (last_index() + 1 when the log is empty)."""
        self._check_usable()
        return self._first_index

    def last_index(self) -> int:
        """Index of the last stored entry, or first_index() - 1 when the log is empty."""
        self._check_usable()
        return self._last_index

    def entries(self, lo: int, hi: int) -> list[Entry]:
        """Read back the entries with lo <= index < hi (each frame's CRC is checked again).

        Raises:
            IndexError: the range is reversed or reaches outside [first_index, last_index].
            CorruptLogError: a frame no longer matches what was written.
            StorageError: a read failed (the store is then failed).
        """
        self._check_usable()
        if not self._first_index <= lo <= hi <= self._last_index + 1:
            raise IndexError(
                f"entries [{lo}, {hi}) outside the stored [{self._first_index}, {self._last_index}]"
            )
        result: list[Entry] = []
        frames = self._frames
        pos = max(0, frames.position(lo))
        fds: dict[int, int] = {}
        try:
            while pos < len(frames) and frames.firsts[pos] < hi:
                # Only [lo, hi) and only what is live: a later frame may have replaced
                # this frame's tail.
                live_end = frames.firsts[pos + 1] if pos + 1 < len(frames) else hi
                low, high = max(lo, frames.firsts[pos]), min(hi, live_end)
                for item in self._read_save(frames.seqs[pos], frames.offsets[pos], fds):
                    if isinstance(item, Entry) and low <= item.index < high:
                        result.append(item)
                pos += 1
        except OSError as exc:
            raise self._fail(f"reading the log in {self._dir}", exc) from exc
        finally:
            for fd in fds.values():
                os.close(fd)
        return result

    def save(
        self,
        hard_state: HardState | None,
        entries: Sequence[Entry],
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Truncate from entries[0].index, append `entries`, set `hard_state`; one fsync.

        With `snapshot` (a follower installed a snapshot its leader sent), the whole log is
        dropped first and continues at snapshot.index + 1, where `entries` must start:
        afterwards first_index() is snapshot.index + 1 and last_index() is the last entry
        (snapshot.index if there are none). It is all one frame and one fsync. Install the
        snapshot file before this save (module docstring).

        Nothing is written when there are no entries, no hard state and no snapshot.

        Raises:
            ValueError: the entries leave a gap, are not contiguous, or a field is out of
                range for the format (nothing was written; the store stays usable).
            StorageError: a write or fsync failed; the store is failed from now on.
        """
        self._check_usable()
        reset: Reset | None = None
        if snapshot is None:
            check_append(entries, self._first_index, self._last_index)
            if not entries and hard_state is None:
                return
        else:
            if snapshot.index < 0 or snapshot.term < 0:
                raise ValueError(f"snapshot index and term must be >= 0: {snapshot}")
            check_append(entries, snapshot.index + 1, snapshot.index)
            reset = Reset(index=snapshot.index, term=snapshot.term)
        overwrite = reset is None and bool(entries) and entries[0].index <= self._last_index
        truncate_from = entries[0].index if overwrite else None
        payload = encode_save(truncate_from, entries, hard_state, reset=reset)
        if len(payload) > MAX_PAYLOAD:
            raise ValueError(f"one save holds at most {MAX_PAYLOAD} bytes, got {len(payload)}")
        try:
            active = self._segments[-1]
            rolled = active.size >= self._segment_bytes and active.size > active.header_size
            if rolled:
                self._roll()
            segment = self._segments[-1]
            offset = segment.size
            self._append(segment, encode_frame(offset, FRAME_SAVE, payload))
            sync_data(self._fd)
            if rolled:
                sync_dir(self._dir)
        except OSError as exc:
            raise self._fail(f"writing the log in {self._dir}", exc) from exc
        if reset is not None:
            self._reset(reset.index)
        if entries:
            if truncate_from is not None:
                self._truncate(truncate_from)
            self._frames.append(segment.seq, offset, entries[0].index)
            self._last_index = entries[-1].index
        if hard_state is not None:
            self._hard_state = hard_state

    def load(self, after: int = 0) -> RestoredState:
        """The durable hard state and the stored entries with index > `after`.

        `after` is the index of the snapshot the node loaded (0 for none); entries up to it
        are not returned. The caller adds the snapshot and membership to the result.

        If `after` >= last_index() no entries come back. When `after` > last_index() the
        log cannot be appended to yet: that happens only after a crash between installing
        a received snapshot and saving its RESET, and the node must then call
        `save(hard_state, [], snapshot=meta)` before anything else.

        Raises:
            ValueError: `after` < 0.
            LogGapError: the log starts above after + 1 (entries are missing between the
                snapshot and the log); the store stays usable.
            CorruptLogError, StorageError: as for `entries`.
        """
        self._check_usable()
        if after < 0:
            raise ValueError(f"after must be >= 0, got {after}")
        if self._first_index > after + 1:
            raise LogGapError(str(self._dir), after, self._first_index)
        low = max(after + 1, self._first_index)
        entries = self.entries(low, self._last_index + 1) if low <= self._last_index else []
        return RestoredState(hard_state=self._hard_state, entries=tuple(entries))

    def compact(self, index: int) -> None:
        """Delete the oldest segments whose live entries all have index <= `index`.

        The node passes the index of the oldest snapshot it retains (module docstring).
        Works in whole segments and never deletes the active one, so first_index() may stay
        well below index + 1. Entries above `index` are never discarded. Segments holding
        nothing live (only frames before a RESET, or only hard states) go whatever `index`.

        Raises:
            StorageError: deleting a segment failed; the store is failed from now on.
        """
        self._check_usable()
        removed = False
        try:
            while len(self._segments) > 1:
                count = self._frames.count_in(self._segments[0].seq)
                if count:
                    after = count < len(self._frames)
                    last_live = self._frames.firsts[count] - 1 if after else self._last_index
                    if last_live > index:
                        break
                os.unlink(self._segments[0].path)
                del self._segments[0]
                self._frames.drop_prefix(count)
                removed = True
            if removed:
                sync_dir(self._dir)
        except OSError as exc:
            raise self._fail(f"compacting the log in {self._dir}", exc) from exc
        if removed:
            # What a replay of the remaining segments would find (see `_truncate`).
            self._first_index = self._frames.firsts[0] if self._frames else self._last_index + 1

    def close(self) -> None:
        """Close the log and release the lock. Idempotent; safe after a failure."""
        if self._closed:
            return
        self._closed = True
        self._release()

    # --- recovery ------------------------------------------------------------------

    def _recover(self) -> None:
        named = ((parse_segment_name(path.name), path) for path in self._dir.iterdir())
        found = sorted((parsed[0], path) for parsed, path in named if parsed is not None)
        for (prev_seq, _), (seq, path) in itertools.pairwise(found):
            if seq != prev_seq + 1:
                raise CorruptLogError(str(path), 0, f"segment {prev_seq + 1:016x} is missing")
        for position, (seq, path) in enumerate(found):
            self._recover_segment(seq, path, is_last=position == len(found) - 1)
        if self._tail_repair is not None:
            self._tail_repair = replace(self._tail_repair, last_index=self._last_index)

    def _recover_segment(self, seq: int, path: Path, *, is_last: bool) -> None:
        data = path.read_bytes()
        frame = read_frame(data, 0)
        if frame is None or frame.type != FRAME_SEGMENT_HEADER:
            if frame is None and is_last and find_frame_after(data, 1) is None:
                # Torn while being started: it holds no acknowledged save.
                os.unlink(path)
                sync_dir(self._dir)
                self._tail_repair = TailRepair(str(path), 0, len(data), self._last_index)
                return
            raise CorruptLogError(str(path), 0, "no valid segment header")
        self._replay_header(seq, path, frame)
        header_size = offset = frame.end
        allocated = len(data)
        while offset < len(data):
            frame = read_frame(data, offset)
            if frame is None:
                if data.count(0, offset) != len(data) - offset:  # not just preallocated room
                    self._cut_torn_tail(path, data, offset, is_last=is_last)
                    allocated = offset
                break
            if frame.type != FRAME_SAVE:
                raise CorruptLogError(str(path), offset, "a segment header in mid-segment")
            self._replay_save(seq, path, frame)
            offset = frame.end
        self._segments.append(_Segment(seq, path, offset, header_size, allocated))

    def _replay_header(self, seq: int, path: Path, frame: Frame) -> None:
        try:
            header = decode_segment_header(frame.payload)
        except ValueError as exc:
            raise CorruptLogError(str(path), 0, f"bad segment header: {exc}") from None
        name_seq_base = parse_segment_name(path.name)
        if (header.seq, header.base_index) != name_seq_base:
            raise CorruptLogError(str(path), 0, "segment header does not match the file name")
        if not self._segments:
            self._first_index = header.base_index
            self._last_index = header.base_index - 1
        elif header.base_index != self._last_index + 1:
            raise CorruptLogError(
                str(path),
                0,
                f"segment starts at index {header.base_index} "
                f"but the log before it ends at {self._last_index}",
            )
        if header.hard_state is not None:
            self._hard_state = header.hard_state

    def _replay_save(self, seq: int, path: Path, frame: Frame) -> None:
        try:
            items = decode_items(frame.payload)
        except ValueError as exc:
            raise CorruptLogError(str(path), frame.offset, f"undecodable record: {exc}") from None
        first: int | None = None
        for position, item in enumerate(items):
            if isinstance(item, Reset):
                if position != 0:
                    raise CorruptLogError(
                        str(path), frame.offset, "a reset that is not a record's first item"
                    )
                self._reset(item.index)
            elif isinstance(item, Truncate):
                if position != 0 or not 1 <= item.from_index <= self._last_index + 1:
                    raise CorruptLogError(
                        str(path),
                        frame.offset,
                        f"truncation from index {item.from_index} "
                        f"with the log ending at {self._last_index}",
                    )
                self._truncate(item.from_index)
            elif isinstance(item, Entry):
                if item.index != self._last_index + 1:
                    raise CorruptLogError(
                        str(path),
                        frame.offset,
                        f"entry index {item.index} where {self._last_index + 1} was expected",
                    )
                first = item.index if first is None else first
                self._last_index = item.index
            else:
                self._hard_state = item
        if first is not None:
            self._frames.append(seq, frame.offset, first)

    def _cut_torn_tail(self, path: Path, data: bytes, offset: int, *, is_last: bool) -> None:
        if not is_last:
            raise CorruptLogError(str(path), offset, "bad record in a segment that is not last")
        valid = find_frame_after(data, offset + 1)
        if valid is not None:
            raise CorruptLogError(
                str(path), offset, f"bad record followed by a valid record at offset {valid}"
            )
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.ftruncate(fd, offset)
            os.fsync(fd)
        finally:
            os.close(fd)
        self._tail_repair = TailRepair(str(path), offset, len(data) - offset, self._last_index)

    # --- writing -------------------------------------------------------------------

    def _truncate(self, from_index: int) -> None:
        """Drop entries >= from_index from the in-memory view (replay and live saves)."""
        if from_index <= self._first_index:
            # Only a replay after `compact` sees from_index < first_index: the segment it
            # starts from has a base above entries that this truncation rewrites.
            self._first_index = from_index
        self._frames.truncate(from_index)
        self._last_index = from_index - 1

    def _reset(self, index: int) -> None:
        """Drop every entry from the in-memory view; the log continues at index + 1."""
        self._frames.drop_prefix(len(self._frames))
        self._first_index = index + 1
        self._last_index = index

    def _roll(self) -> None:
        old_fd = self._fd
        self._fd = -1
        os.close(old_fd)
        self._start_segment(seq=self._segments[-1].seq + 1)

    def _start_segment(self, seq: int) -> None:
        """Create segment `seq` and write its header; the caller syncs file and directory."""
        base_index = self._last_index + 1
        path = self._dir / segment_name(seq, base_index)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o644)
        header = SegmentHeader(seq=seq, base_index=base_index, hard_state=self._hard_state)
        frame = encode_frame(0, FRAME_SEGMENT_HEADER, encode_segment_header(header))
        self._segments.append(_Segment(seq, path, 0, len(frame)))
        self._append(self._segments[-1], frame)

    def _append(self, segment: _Segment, frame: bytes) -> None:
        """Write `frame` at the end of the active `segment`, preallocating room first."""
        end = segment.size + len(frame)
        if end > segment.allocated and self._preallocate_bytes:
            room = max(end, min(end + self._preallocate_bytes, self._segment_bytes))
            if preallocate(self._fd, segment.allocated, room - segment.allocated):
                segment.allocated = room
        pwrite_all(self._fd, frame, segment.size)
        segment.size = end
        segment.allocated = max(segment.allocated, end)

    # --- reading and housekeeping --------------------------------------------------

    def _read_save(self, seq: int, offset: int, fds: dict[int, int]) -> list[Item]:
        path = self._segments[seq - self._segments[0].seq].path
        if seq not in fds:
            fds[seq] = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        header = os.pread(fds[seq], FRAME_HEADER_SIZE, offset)
        length = int.from_bytes(header[:4], "little") if len(header) == FRAME_HEADER_SIZE else 0
        data = os.pread(fds[seq], FRAME_HEADER_SIZE + length, offset)
        frame = read_frame(data, 0, base=offset)
        if frame is None or frame.type != FRAME_SAVE:
            raise CorruptLogError(str(path), offset, "record changed since written")
        try:
            return decode_items(frame.payload)
        except ValueError as exc:
            raise CorruptLogError(str(path), offset, str(exc)) from None

    def _check_usable(self) -> None:
        if self._closed:
            raise StorageError(f"storage in {self._dir} is closed")
        if self._failure is not None:
            raise StorageError(f"storage in {self._dir} failed earlier: {self._failure}")

    def _fail(self, what: str, exc: OSError) -> StorageError:
        self._failure = f"{what}: {exc}"
        return StorageError(self._failure)

    def _release(self) -> None:
        fds = [self._fd, self._lock_fd]  # closing the lock fd releases the flock
        self._fd = self._lock_fd = -1
        for fd in fds:
            if fd >= 0:
                os.close(fd)
