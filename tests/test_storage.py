"""Storage adapter tests: round trips, truncation, torn tails, corruption, fail-stop.

Shared behaviour runs against both `FileStorage` and `MemoryStorage`. File-only tests damage
the files the way a crash or a bad disk would (PLATFORM.md §2: torn writes can only be
simulated at file level) and inject OSErrors and short writes with monkeypatch.
"""

from __future__ import annotations

import errno
import os
import random
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from zraft.core.types import (
    Entry,
    EntryKind,
    HardState,
    Membership,
    RestoredState,
    SnapshotMeta,
)
from zraft.storage import (
    CorruptLogError,
    DataDirLockedError,
    FileStorage,
    LogGapError,
    LogStorage,
    MemoryStorage,
    StorageError,
    TailRepair,
)
from zraft.storage import file as storage_file
from zraft.storage.wal import (
    FRAME_SAVE,
    FRAME_SEGMENT_HEADER,
    Reset,
    SegmentHeader,
    encode_frame,
    encode_save,
    encode_segment_header,
    read_frame,
    segment_name,
)

ROOT = Path(__file__).resolve().parent.parent


def ent(index: int, term: int = 1, data: bytes | None = None) -> Entry:
    """A NORMAL entry whose data names its index and term unless given."""
    payload = f"e{index}t{term}".encode() if data is None else data
    return Entry(term=term, index=index, kind=EntryKind.NORMAL, data=payload)


def ents(lo: int, hi: int, term: int = 1) -> list[Entry]:
    """Entries lo..hi inclusive."""
    return [ent(i, term) for i in range(lo, hi + 1)]


def segments(data_dir: Path) -> list[Path]:
    """The WAL segment files, oldest first."""
    return sorted(data_dir.glob("wal-*.log"))


@pytest.fixture
def growing_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Segments that grow with every save (no preallocation), as releases before issue 18
    wrote them: the byte-level tests below cut and flip bytes at the file's end."""
    monkeypatch.setattr(storage_file, "PREALLOCATE_BYTES", 0)


def frame_ends(path: Path) -> list[int]:
    """Where each valid frame of a segment ends, up to the first invalid one."""
    data, ends = path.read_bytes(), [0]
    while (frame := read_frame(data, ends[-1])) is not None:
        ends.append(frame.end)
    return ends[1:]


def snap(index: int, term: int = 1) -> SnapshotMeta:
    """Snapshot metadata at `index`/`term` (two voters)."""
    return SnapshotMeta(index=index, term=term, membership=Membership(frozenset({"n1", "n2"})))


# --- shared behaviour, over both implementations ------------------------------------


@pytest.fixture(params=["memory", "file"])
def make_store(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[Callable[[], LogStorage]]:
    """A factory returning the store; calling it again 'restarts' it (durable state kept)."""
    opened: list[LogStorage] = []
    memory = MemoryStorage()

    def factory() -> LogStorage:
        if request.param == "memory":
            return memory  # a restart rebuilds from the same durable state
        if opened:
            opened[-1].close()
        opened.append(FileStorage(tmp_path / "data", segment_bytes=256))
        return opened[-1]

    yield factory
    for store in opened:
        store.close()


def test_empty_store_loads_nothing(make_store: Callable[[], LogStorage]) -> None:
    """A fresh store: default hard state, no entries, first 1, last 0."""
    store = make_store()
    restored = store.load()
    assert restored.hard_state == HardState()
    assert restored.entries == ()
    assert (store.first_index(), store.last_index()) == (1, 0)
    assert store.tail_repair is None


def test_round_trip_and_restart(make_store: Callable[[], LogStorage]) -> None:
    """Entries and hard state saved over many calls come back, also after a restart."""
    store = make_store()
    hard_state = HardState()
    for index in range(1, 41):
        hard_state = HardState(term=2, voted_for="n2", commit=index - 1)
        store.save(hard_state, [ent(index, 2, bytes([index]) * index)])
    store.save(None, ents(41, 50, 2))
    expected = tuple([ent(i, 2, bytes([i]) * i) for i in range(1, 41)] + ents(41, 50, 2))
    assert store.load().entries == expected
    store = make_store()
    restored = store.load()
    assert restored.hard_state == hard_state
    assert restored.entries == expected
    assert store.entries(10, 13) == list(expected[9:12])
    assert store.entries(50, 51) == [expected[-1]]
    assert store.entries(7, 7) == []


def test_hard_state_alone_and_none(make_store: Callable[[], LogStorage]) -> None:
    """A hard-state-only save persists it; None keeps the previous one."""
    store = make_store()
    store.save(HardState(term=3, voted_for="n1", commit=0), [])
    store.save(None, ents(1, 2))
    store.save(None, [])  # nothing to do
    store = make_store()
    assert store.load().hard_state == HardState(term=3, voted_for="n1", commit=0)
    assert store.last_index() == 2


def test_truncation_replaces_the_suffix(make_store: Callable[[], LogStorage]) -> None:
    """Entries 1..10, then entries from 6 with a new term: 1..5 old plus the new ones."""
    store = make_store()
    store.save(HardState(term=1), ents(1, 10, term=1))
    store.save(HardState(term=2), ents(6, 7, term=2))
    expected = tuple(ents(1, 5, 1) + ents(6, 7, 2))
    assert store.load().entries == expected
    assert store.last_index() == 7
    store = make_store()
    assert store.load().entries == expected
    store.save(None, ents(8, 8, term=2))  # appending after a truncation works
    store.save(None, ents(3, 3, term=3))  # and truncating again, deeper
    store = make_store()
    assert store.load().entries == (*ents(1, 2, 1), ent(3, 3))


def test_bad_appends_raise_value_error_and_change_nothing(
    make_store: Callable[[], LogStorage],
) -> None:
    """A gap or non-contiguous batch is misuse: ValueError, store unchanged and usable."""
    store = make_store()
    store.save(None, ents(1, 3))
    with pytest.raises(ValueError, match="outside"):
        store.save(None, [ent(5)])
    with pytest.raises(ValueError, match="contiguous"):
        store.save(None, [ent(4), ent(6)])
    with pytest.raises(ValueError, match="outside"):
        store.save(None, [ent(0)])
    store.save(None, [ent(4)])
    assert [e.index for e in store.load().entries] == [1, 2, 3, 4]


def test_entries_out_of_range(make_store: Callable[[], LogStorage]) -> None:
    """Reading outside the stored range raises IndexError."""
    store = make_store()
    store.save(None, ents(1, 3))
    for lo, hi in [(0, 2), (2, 5), (3, 2)]:
        with pytest.raises(IndexError):
            store.entries(lo, hi)


def test_reset_empties_the_log_and_survives_a_restart(
    make_store: Callable[[], LogStorage],
) -> None:
    """A save with a snapshot drops the whole log; it continues at snapshot.index + 1."""
    store = make_store()
    store.save(HardState(term=1, commit=5), ents(1, 10))
    store.save(HardState(term=3, voted_for="n2", commit=20), [], snap(20, 2))
    assert (store.first_index(), store.last_index()) == (21, 20)
    assert store.load(after=20).entries == ()
    store = make_store()
    assert (store.first_index(), store.last_index()) == (21, 20)
    restored = store.load(after=20)
    assert restored.entries == ()
    assert restored.hard_state == HardState(term=3, voted_for="n2", commit=20)
    store.save(None, ents(21, 23, term=3))  # the log goes on after the snapshot
    with pytest.raises(IndexError):
        store.entries(20, 22)
    store = make_store()
    assert store.load(after=20).entries == tuple(ents(21, 23, term=3))
    assert store.load(after=22).entries == (ent(23, 3),)


def test_reset_carries_the_entries_after_it(make_store: Callable[[], LogStorage]) -> None:
    """Reset and entries in one save; the reset may also move the log backwards."""
    store = make_store()
    store.save(HardState(term=1), ents(1, 30))
    store.save(HardState(term=4, commit=7), ents(8, 9, term=4), snap(7, 3))
    assert (store.first_index(), store.last_index()) == (8, 9)
    store = make_store()
    assert store.load(after=7).entries == tuple(ents(8, 9, term=4))
    store.save(None, ents(9, 9, term=5))  # truncating after a reset works as usual
    store = make_store()
    assert store.load(after=7).entries == (ent(8, 4), ent(9, 5))


def test_reset_misuse_raises_value_error(make_store: Callable[[], LogStorage]) -> None:
    """Entries after a reset must start at snapshot.index + 1; nothing is written if not."""
    store = make_store()
    store.save(None, ents(1, 3))
    for batch in ([ent(12)], [ent(3)], [ent(11), ent(13)]):
        with pytest.raises(ValueError, match=r"outside|contiguous"):
            store.save(None, batch, snap(10))
    with pytest.raises(ValueError, match=">= 0"):
        store.save(None, [], snap(-1))
    assert (store.first_index(), store.last_index()) == (1, 3)


def test_load_after_a_snapshot_index(make_store: Callable[[], LogStorage]) -> None:
    """load(after) returns entries > after; a log starting above after + 1 is a gap."""
    store = make_store()
    for index in range(1, 61):
        store.save(HardState(term=1, commit=index), [ent(index, data=b"z" * 40)])
    assert [e.index for e in store.load(after=57).entries] == [58, 59, 60]
    assert store.load(after=60).entries == ()
    assert store.load(after=75).entries == ()  # a snapshot ahead of the log (see load)
    with pytest.raises(ValueError):
        store.load(after=-1)
    store.compact(45)
    first = store.first_index()
    assert first > 1
    with pytest.raises(LogGapError, match=f"starts at index {first}") as caught:
        store.load()
    assert (caught.value.after, caught.value.first_index) == (0, first)
    assert store.load(after=first - 1).entries[0].index == first
    assert store.load(after=50).entries == tuple(ent(i, data=b"z" * 40) for i in range(51, 61))
    store.save(None, [ent(61)])  # a gap error does not fail the store


def test_memory_and_file_storage_agree_on_resets(tmp_path: Path) -> None:
    """The twin and the real store give the same answers through resets and truncations."""
    stores: list[LogStorage] = [MemoryStorage(), FileStorage(tmp_path, segment_bytes=200)]
    script: list[tuple[HardState | None, list[Entry], SnapshotMeta | None]] = [
        (HardState(term=1), ents(1, 12), None),
        (None, ents(10, 11, term=2), None),
        (HardState(term=3, commit=20), [], snap(20, 2)),
        (None, ents(21, 25, term=3), None),
        (HardState(term=4, commit=3), ents(4, 6, term=4), snap(3, 1)),
        (None, ents(7, 9, term=4), None),
    ]
    for hard_state, batch, meta in script:
        views = []
        for store in stores:
            store.save(hard_state, batch, meta)
            first = store.first_index()
            views.append((first, store.last_index(), store.load(after=first - 1)))
        assert views[0] == views[1]
    for store in stores:
        store.close()


def test_compact_keeps_everything_above_the_index(make_store: Callable[[], LogStorage]) -> None:
    """compact(i) may drop entries <= i only; the rest survives a restart."""
    store = make_store()
    for index in range(1, 61):
        store.save(HardState(term=1, commit=index), [ent(index, data=b"z" * 40)])
    store.compact(45)
    first = store.first_index()
    assert 1 < first <= 46
    store = make_store()
    assert store.first_index() == first
    restored = store.load(after=first - 1)
    assert restored.entries == tuple(ent(i, data=b"z" * 40) for i in range(first, 61))
    assert restored.hard_state == HardState(term=1, commit=60)


def test_closed_store_refuses_calls(tmp_path: Path) -> None:
    """After close every call raises StorageError; close is idempotent."""
    for store in (MemoryStorage(), FileStorage(tmp_path)):
        store.close()
        store.close()
        with pytest.raises(StorageError):
            store.save(None, [ent(1)])
        with pytest.raises(StorageError):
            store.load()


def test_memory_storage_injected_failure_is_permanent() -> None:
    """MemoryStorage fails like FileStorage: StorageError, then every call refuses."""
    store = MemoryStorage()
    store.save(None, [ent(1)])
    store.inject_failure(OSError(errno.EIO, "injected"))
    with pytest.raises(StorageError, match="injected"):
        store.save(None, [ent(2)])
    with pytest.raises(StorageError):
        store.save(None, [ent(2)])
    with pytest.raises(StorageError):
        store.load()


# --- FileStorage: layout, segments, lock --------------------------------------------


def test_creates_a_missing_data_dir(tmp_path: Path) -> None:
    """The data dir (and its parents) is created; a stray file in it is ignored."""
    data_dir = tmp_path / "a" / "b" / "data"
    with_store = FileStorage(data_dir)
    with_store.save(HardState(term=1), [ent(1)])
    with_store.close()
    (data_dir / "wal-notes.tmp").write_bytes(b"junk")
    store = FileStorage(data_dir)
    assert store.load().entries == (ent(1),)
    store.close()


def test_segments_roll_and_reload(tmp_path: Path) -> None:
    """Small segments: many files, all replayed in order, truncation across a boundary."""
    store = FileStorage(tmp_path, segment_bytes=300)
    for index in range(1, 101):
        store.save(HardState(term=1, commit=index - 1), [ent(index)])
    assert len(segments(tmp_path)) > 10
    store.save(HardState(term=2, commit=50), ents(51, 55, term=2))  # cuts into old segments
    store.close()
    store = FileStorage(tmp_path, segment_bytes=300)
    restored = store.load()
    assert restored.entries == tuple(ents(1, 50, 1) + ents(51, 55, 2))
    assert restored.hard_state == HardState(term=2, commit=50)
    assert store.entries(49, 53) == [ent(49), ent(50), ent(51, 2), ent(52, 2)]
    store.close()


def test_segment_names_and_headers(tmp_path: Path) -> None:
    """Segments are named wal-<seq>-<base index>.log (16 hex digits each)."""
    store = FileStorage(tmp_path, segment_bytes=1)
    store.save(None, [ent(1)])
    store.save(None, [ent(2)])
    store.close()
    names = [p.name for p in segments(tmp_path)]
    assert names == [segment_name(1, 1), segment_name(2, 2)]
    assert names[1] == "wal-0000000000000002-0000000000000002.log"


def test_second_open_is_refused(tmp_path: Path) -> None:
    """Two stores on one data dir: the second is refused, in-process and cross-process."""
    store = FileStorage(tmp_path)
    with pytest.raises(DataDirLockedError, match="in use"):
        FileStorage(tmp_path)
    code = (
        "import sys\n"
        "from zraft.storage import FileStorage, DataDirLockedError\n"
        "try:\n"
        f"    FileStorage({str(tmp_path)!r})\n"
        "except DataDirLockedError:\n"
        "    sys.exit(3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run([sys.executable, "-c", code], env=env, check=False, timeout=30)
    assert result.returncode == 3
    store.close()
    FileStorage(tmp_path).close()  # released on close


def test_one_fsync_per_append(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Append-only saves (entries plus hard state) cost exactly one sync; a roll adds one."""
    store = FileStorage(tmp_path, segment_bytes=1 << 20)
    calls: list[str] = []
    real_fdatasync, real_fsync = os.fdatasync, os.fsync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append("data"), real_fdatasync(fd)))
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("full"), real_fsync(fd)))
    store.save(HardState(term=1, voted_for="n1", commit=0), ents(1, 32))
    store.save(HardState(term=1, voted_for="n1", commit=32), [])
    store.save(None, ents(5, 6, term=2))  # a truncation is in the same single frame
    assert calls == ["data", "data", "data"]
    store._segment_bytes = 1  # internals: force the next save to roll
    calls.clear()
    store.save(None, [ent(7, 2)])
    assert calls == ["data", "full"]  # the new file, then its directory entry
    store.close()


# --- FileStorage: torn tails and corruption ------------------------------------------

LAST_ENTRY = ent(3, data=b"payload-of-the-last-record")
LAST_HARD_STATE = HardState(term=1, voted_for="n3", commit=2)
LAST_FRAME_LEN = len(encode_frame(0, FRAME_SAVE, encode_save(None, [LAST_ENTRY], LAST_HARD_STATE)))


def three_saves(data_dir: Path) -> tuple[Path, int]:
    """Saves entries 1, 2, 3 (one frame each); returns the segment and the last frame's start."""
    store = FileStorage(data_dir)
    store.save(HardState(term=1, voted_for="n1", commit=0), [ent(1)])
    store.save(HardState(term=1, voted_for="n1", commit=1), [ent(2)])
    (path,) = segments(data_dir)
    start = path.stat().st_size
    store.save(LAST_HARD_STATE, [LAST_ENTRY])
    store.close()
    assert path.stat().st_size == start + LAST_FRAME_LEN
    return path, start


def assert_repaired(data_dir: Path, path: Path, start: int, dropped: int) -> None:
    """The last record is cut off and reported once; the store works on afterwards."""
    store = FileStorage(data_dir)
    assert store.tail_repair == TailRepair(str(path), start, dropped, last_index=2)
    restored = store.load()
    assert restored.entries == (ent(1), ent(2))
    assert restored.hard_state == HardState(term=1, voted_for="n1", commit=1)
    assert path.stat().st_size == start
    store.save(None, [ent(3, 2)])
    store.close()
    store = FileStorage(data_dir)
    assert store.tail_repair is None
    assert store.load().entries == (ent(1), ent(2), ent(3, 2))
    store.close()


@pytest.mark.usefixtures("growing_files")
@pytest.mark.parametrize("kept", range(1, LAST_FRAME_LEN))
def test_torn_tail_at_every_byte(tmp_path: Path, kept: int) -> None:
    """The last record cut after `kept` bytes: dropped and reported, earlier ones intact."""
    path, start = three_saves(tmp_path)
    os.truncate(path, start + kept)
    assert_repaired(tmp_path, path, start, kept)


@pytest.mark.usefixtures("growing_files")
@pytest.mark.parametrize("position", range(LAST_FRAME_LEN))
def test_flipped_byte_in_last_record(tmp_path: Path, position: int) -> None:
    """Any damaged byte in the final record (header or payload) is a torn tail."""
    path, start = three_saves(tmp_path)
    data = bytearray(path.read_bytes())
    data[start + position] ^= 0xFF
    path.write_bytes(bytes(data))
    assert_repaired(tmp_path, path, start, LAST_FRAME_LEN)


@pytest.mark.usefixtures("growing_files")
@pytest.mark.parametrize("junk", [b"\x02" * 33, bytes(range(256)) * 4, b"\x00" * 99 + b"\x01"])
def test_junk_after_the_last_record_is_a_torn_tail(tmp_path: Path, junk: bytes) -> None:
    """Junk after valid records (even zeros with one byte set) is cut off and reported."""
    path, _ = three_saves(tmp_path)
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(junk)
    store = FileStorage(tmp_path)
    assert store.tail_repair == TailRepair(str(path), size, len(junk), last_index=3)
    assert store.last_index() == 3
    store.close()


@pytest.mark.usefixtures("growing_files")
def test_zeros_after_the_last_record_are_room_not_damage(tmp_path: Path) -> None:
    """Zeros to the end of the file (preallocated room, or a file an older build extended
    and never wrote) are the log's clean end: nothing reported, the next save goes right
    after the last record, and the log reads back whole."""
    path, _ = three_saves(tmp_path)
    size = path.stat().st_size
    with path.open("ab") as f:
        f.write(b"\x00" * 4096)
    store = FileStorage(tmp_path)
    assert store.tail_repair is None
    assert store.last_index() == 3
    store.save(None, [ent(4)])
    store.close()
    assert frame_ends(path)[-1] == size + len(
        encode_frame(0, FRAME_SAVE, encode_save(None, [ent(4)], None))
    )
    assert path.stat().st_size == size + 4096  # written into the room, not after it
    store = FileStorage(tmp_path)
    assert store.tail_repair is None
    assert store.load().entries == (*ents(1, 2), LAST_ENTRY, ent(4))
    store.close()


def test_segments_are_preallocated_and_reopen_where_they_ended(tmp_path: Path) -> None:
    """A segment's file is reserved ahead of its writes (up to the segment size); a reopen
    reports no repair and continues at the last record; zeros at the end of a segment that
    is no longer the last (room it never used) are no damage either; nothing is lost."""
    store = FileStorage(tmp_path, segment_bytes=1 << 20, preallocate_bytes=65536)
    for index in range(1, 21):
        store.save(HardState(term=1, commit=index - 1), [ent(index, data=bytes(200))])
    store.close()
    (first,) = segments(tmp_path)
    assert first.stat().st_size > frame_ends(first)[-1] + 32768  # zeros after the frames
    store = FileStorage(tmp_path, segment_bytes=4096, preallocate_bytes=65536)
    assert store.tail_repair is None
    for index in range(21, 41):  # rolls: the first segment keeps its unused room
        store.save(HardState(term=1, commit=index - 1), [ent(index, data=bytes(200))])
    store.close()
    files = segments(tmp_path)
    assert len(files) > 2 and first.stat().st_size > frame_ends(first)[-1]
    assert all(path.stat().st_size <= max(4096, frame_ends(path)[-1]) for path in files[1:])
    for round_ in range(2):
        store = FileStorage(tmp_path, segment_bytes=4096, preallocate_bytes=65536)
        assert store.tail_repair is None
        assert [e.index for e in store.load().entries] == list(range(1, 41 + round_))
        store.save(HardState(term=1, commit=40), [ent(41 + round_)])
        store.close()
    store = FileStorage(tmp_path, preallocate_bytes=0)  # and as a build that never preallocates
    assert store.tail_repair is None and store.last_index() == 42
    store.close()


@pytest.mark.parametrize("kept", range(0, LAST_FRAME_LEN))
def test_torn_record_in_preallocated_room(tmp_path: Path, kept: int) -> None:
    """The last record written into preallocated room and torn after `kept` bytes (the
    rest still zeros): dropped, reported when something of it reached the disk, the log
    before it intact, and the next save goes where it was."""
    store = FileStorage(tmp_path)
    store.save(HardState(term=1, voted_for="n1", commit=0), [ent(1)])
    store.save(HardState(term=1, voted_for="n1", commit=1), [ent(2)])
    (path,) = segments(tmp_path)
    start = frame_ends(path)[-1]
    store.save(LAST_HARD_STATE, [LAST_ENTRY])
    store.close()
    size = path.stat().st_size
    assert size > start + LAST_FRAME_LEN
    data = bytearray(path.read_bytes())
    data[start + kept : start + LAST_FRAME_LEN] = bytes(LAST_FRAME_LEN - kept)
    path.write_bytes(bytes(data))
    store = FileStorage(tmp_path)
    if any(data[start : start + kept]):
        assert store.tail_repair == TailRepair(str(path), start, size - start, last_index=2)
    else:
        assert store.tail_repair is None  # nothing of it reached the disk
    assert store.load().entries == (ent(1), ent(2))
    store.save(None, [ent(3, 2)])
    store.close()
    assert frame_ends(path)[-1] > start
    store = FileStorage(tmp_path)
    assert store.tail_repair is None
    assert store.load().entries == (ent(1), ent(2), ent(3, 2))
    store.close()


def test_a_valid_record_after_zeros_is_corruption(tmp_path: Path) -> None:
    """Zeros are the end only when nothing valid follows: a record after a zeroed one is
    corruption (lost writes in mid-log), never skipped."""
    store = FileStorage(tmp_path)
    store.save(HardState(term=1), [ent(1)])
    (path,) = segments(tmp_path)
    start = frame_ends(path)[-1]
    store.save(None, [ent(2)])
    store.close()
    data = bytearray(path.read_bytes())
    gap = start + 64
    frame = encode_frame(gap, FRAME_SAVE, encode_save(None, [ent(2)], None))
    data[start:gap] = bytes(64)
    data[gap : gap + len(frame)] = frame
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="followed by a valid record"):
        FileStorage(tmp_path)


def test_refused_preallocation_falls_back_to_growing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A filesystem that refuses fallocate (no support, no room for the reserve) costs
    nothing but the speed-up: saves grow the file and read back."""
    monkeypatch.setattr(storage_file, "preallocate", lambda fd, offset, length: False)
    store = FileStorage(tmp_path)
    store.save(HardState(term=1), ents(1, 3))
    store.save(HardState(term=1, commit=3), [ent(4)])
    (path,) = segments(tmp_path)
    assert path.stat().st_size == frame_ends(path)[-1]
    store.close()
    monkeypatch.undo()
    store = FileStorage(tmp_path)
    assert store.tail_repair is None and store.last_index() == 4
    store.close()


@pytest.mark.usefixtures("growing_files")
def test_torn_truncation_keeps_the_old_suffix(tmp_path: Path) -> None:
    """A crash while a truncating save is written leaves the old log whole, never half."""
    store = FileStorage(tmp_path)
    store.save(HardState(term=1), ents(1, 10, 1))
    (path,) = segments(tmp_path)
    start = path.stat().st_size
    store.save(HardState(term=2), ents(6, 8, 2))
    store.close()
    end = path.stat().st_size
    for kept in (1, (end - start) // 2, end - start - 1):
        data = path.read_bytes()
        os.truncate(path, start + kept)
        store = FileStorage(tmp_path)
        assert store.load().entries == tuple(ents(1, 10, 1))
        assert store.load().hard_state == HardState(term=1)
        store.close()
        path.write_bytes(data)  # put the full record back for the next cut
    store = FileStorage(tmp_path)
    assert store.load().entries == tuple(ents(1, 5, 1) + ents(6, 8, 2))
    store.close()


def test_torn_hard_state_record_keeps_the_previous_one(tmp_path: Path) -> None:
    """A vote whose record was torn was never durable: the previous hard state stands."""
    store = FileStorage(tmp_path)
    store.save(HardState(term=4, voted_for="n1", commit=0), [])
    (path,) = segments(tmp_path)
    start = path.stat().st_size
    store.save(HardState(term=5, voted_for="n2", commit=0), [])
    store.close()
    end = path.stat().st_size
    for kept in range(1, end - start):
        os.truncate(path, start + kept)
        store = FileStorage(tmp_path)
        assert store.load().hard_state == HardState(term=4, voted_for="n1", commit=0)
        assert store.tail_repair is not None
        store.close()


@pytest.mark.parametrize("kept", [0, 1, 8, 9, 20])
def test_torn_new_segment_header_removes_the_file(tmp_path: Path, kept: int) -> None:
    """A crash while a new segment's header was written: the file goes, nothing else."""
    store = FileStorage(tmp_path, segment_bytes=1)
    store.save(HardState(term=1, commit=1), [ent(1)])
    store.save(HardState(term=1, commit=2), [ent(2)])
    store.close()
    first, second = segments(tmp_path)
    size = second.stat().st_size
    os.truncate(second, kept)
    store = FileStorage(tmp_path, segment_bytes=1)
    assert store.tail_repair == TailRepair(str(second), 0, kept, last_index=1)
    assert segments(tmp_path) == [first]
    assert store.load().entries == (ent(1),)
    store.save(None, [ent(2, 2)])
    store.close()
    assert size > kept
    store = FileStorage(tmp_path)
    assert store.load().entries == (ent(1), ent(2, 2))
    assert store.tail_repair is None
    store.close()


def test_torn_first_segment_of_a_new_store(tmp_path: Path) -> None:
    """A store that crashed while being created starts empty again."""
    FileStorage(tmp_path).close()
    (path,) = segments(tmp_path)
    os.truncate(path, 5)
    store = FileStorage(tmp_path)
    assert store.tail_repair is not None
    assert store.load().entries == ()
    store.save(None, [ent(1)])
    store.close()


def test_corruption_in_the_middle_names_file_and_offset(tmp_path: Path) -> None:
    """A bad record followed by valid ones is corruption, never a silent skip."""
    store = FileStorage(tmp_path)
    offsets = []
    for index in range(1, 6):
        offsets.append(store._segments[-1].size)  # internals: where each frame starts
        store.save(HardState(term=1, commit=index), [ent(index)])
    store.close()
    (path,) = segments(tmp_path)
    data = bytearray(path.read_bytes())
    data[offsets[1] + 20] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError) as caught:
        FileStorage(tmp_path)
    assert caught.value.path == str(path)
    assert caught.value.offset == offsets[1]
    assert str(path) in str(caught.value)
    assert f"byte offset {offsets[1]}" in str(caught.value)
    assert f"valid record at offset {offsets[2]}" in str(caught.value)
    FileStorage(tmp_path / "other").close()  # the failed open released the lock on tmp_path
    with pytest.raises(CorruptLogError):
        FileStorage(tmp_path)


@pytest.mark.usefixtures("growing_files")
def test_damaged_non_final_segment_is_corruption(tmp_path: Path) -> None:
    """Even a damaged last record is corruption when a later segment exists."""
    store = FileStorage(tmp_path, segment_bytes=1)
    for index in range(1, 4):
        store.save(None, [ent(index)])
    store.close()
    first = segments(tmp_path)[0]
    os.truncate(first, first.stat().st_size - 3)
    with pytest.raises(CorruptLogError, match="not last") as caught:
        FileStorage(tmp_path)
    assert caught.value.path == str(first)


def test_missing_segment_is_corruption(tmp_path: Path) -> None:
    """A hole in the segment sequence is refused, naming the file after the hole."""
    store = FileStorage(tmp_path, segment_bytes=1)
    for index in range(1, 4):
        store.save(None, [ent(index)])
    store.close()
    _, second, third = segments(tmp_path)
    second.unlink()
    with pytest.raises(CorruptLogError, match="missing") as caught:
        FileStorage(tmp_path)
    assert caught.value.path == str(third)


def write_segment(path: Path, seq: int, base: int, saves: list[bytes]) -> list[int]:
    """Craft a segment from save payloads with valid CRCs; returns the frames' offsets."""
    header = SegmentHeader(seq=seq, base_index=base, hard_state=None)
    data = encode_frame(0, FRAME_SEGMENT_HEADER, encode_segment_header(header))
    offsets = []
    for payload in saves:
        offsets.append(len(data))
        data += encode_frame(len(data), FRAME_SAVE, payload)
    path.write_bytes(data)
    return offsets


def test_index_gap_is_corruption(tmp_path: Path) -> None:
    """CRC-valid records whose entries skip an index are refused."""
    path = tmp_path / segment_name(1, 1)
    saves = [encode_save(None, [ent(1)], None), encode_save(None, [ent(3)], None)]
    offsets = write_segment(path, 1, 1, saves)
    with pytest.raises(CorruptLogError, match="entry index 3 where 2 was expected") as caught:
        FileStorage(tmp_path)
    assert (caught.value.path, caught.value.offset) == (str(path), offsets[1])


def test_segment_base_mismatch_is_corruption(tmp_path: Path) -> None:
    """A segment whose base index does not follow the previous segment is refused."""
    write_segment(tmp_path / segment_name(1, 1), 1, 1, [encode_save(None, ents(1, 2), None)])
    write_segment(tmp_path / segment_name(2, 5), 2, 5, [encode_save(None, [ent(5)], None)])
    with pytest.raises(CorruptLogError, match="starts at index 5"):
        FileStorage(tmp_path)


@pytest.mark.usefixtures("growing_files")
def test_flipped_byte_in_a_read_back_frame(tmp_path: Path) -> None:
    """A frame damaged after open is caught by the CRC when it is read back."""
    store = FileStorage(tmp_path)
    store.save(None, ents(1, 3))
    (path,) = segments(tmp_path)
    data = bytearray(path.read_bytes())
    data[-2] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptLogError, match="changed since written"):
        store.load()
    store.close()


# --- FileStorage: write failures (fail-stop) -----------------------------------------


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.pwrite returning short counts (a nearly full disk) is looped until done."""
    store = FileStorage(tmp_path)
    real_pwrite = os.pwrite
    calls = []

    def short_write(fd: int, data: bytes, offset: int) -> int:
        calls.append(len(data))
        return real_pwrite(fd, bytes(data)[:7], offset)

    monkeypatch.setattr(os, "pwrite", short_write)
    store.save(HardState(term=4, voted_for="n2", commit=0), ents(1, 5))
    monkeypatch.undo()
    assert len(calls) > 10
    store.close()
    store = FileStorage(tmp_path)
    assert store.tail_repair is None
    assert store.load().entries == tuple(ents(1, 5))
    assert store.load().hard_state == HardState(term=4, voted_for="n2", commit=0)
    store.close()


def test_zero_byte_write_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that makes no progress raises instead of spinning forever."""
    store = FileStorage(tmp_path)
    monkeypatch.setattr(os, "pwrite", lambda fd, data, offset: 0)
    with pytest.raises(StorageError):
        store.save(None, [ent(1)])
    store.close()


def failing(error_number: int) -> Callable[..., int]:
    """A stand-in for os.pwrite/os.fdatasync/os.fsync that raises OSError(error_number)."""

    def fail(*args: object) -> int:
        raise OSError(error_number, os.strerror(error_number))

    return fail


@pytest.mark.parametrize(
    ("function", "error_number"),
    [
        ("pwrite", errno.ENOSPC),
        ("pwrite", errno.EIO),
        ("fdatasync", errno.EIO),
        ("fsync", errno.EIO),
    ],
)
def test_io_error_fails_the_store_for_good(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str, error_number: int
) -> None:
    """Any OSError in a save raises StorageError, and every later call refuses too."""
    store = FileStorage(tmp_path)
    store.save(HardState(term=1), [ent(1)])
    if function == "fsync":
        # fsync is what the WAL uses on a platform without fdatasync.
        monkeypatch.delattr(os, "fdatasync")
    monkeypatch.setattr(os, function, failing(error_number))
    with pytest.raises(StorageError, match=os.strerror(error_number)):
        store.save(HardState(term=2), [ent(2)])
    monkeypatch.undo()
    for call in (
        lambda: store.save(HardState(term=2), [ent(2)]),
        lambda: store.save(HardState(term=2), []),
        store.load,
        store.first_index,
        lambda: store.entries(1, 2),
        lambda: store.compact(1),
    ):
        with pytest.raises(StorageError, match="failed earlier"):
            call()
    store.close()
    store = FileStorage(tmp_path)  # the next incarnation recovers what was durable
    assert store.load().entries[0] == ent(1)
    store.close()


def test_failure_while_starting_a_segment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An error creating the next segment fails the store like a write error."""
    store = FileStorage(tmp_path, segment_bytes=1)
    store.save(None, [ent(1)])
    monkeypatch.setattr(os, "open", failing(errno.EMFILE))
    with pytest.raises(StorageError):
        store.save(None, [ent(2)])
    monkeypatch.undo()
    with pytest.raises(StorageError):
        store.save(None, [ent(2)])
    store.close()


def test_half_written_record_before_a_failure_is_repaired(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Write some bytes, then ENOSPC: the next open cuts the partial record off."""
    store = FileStorage(tmp_path)
    store.save(None, [ent(1)])
    real_pwrite = os.pwrite
    calls = []

    def half_then_enospc(fd: int, data: bytes, offset: int) -> int:
        calls.append(fd)
        if len(calls) == 1:
            return real_pwrite(fd, bytes(data)[: len(data) // 2], offset)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "pwrite", half_then_enospc)
    with pytest.raises(StorageError):
        store.save(None, ents(2, 4))
    monkeypatch.undo()
    store.close()
    store = FileStorage(tmp_path)
    assert store.tail_repair is not None
    assert store.tail_repair.last_index == 1
    assert store.load().entries == (ent(1),)
    store.close()


# --- FileStorage against a model, with restarts and compaction -----------------------


RESET_FRAME_LEN = len(
    encode_frame(
        0, FRAME_SAVE, encode_save(None, ents(51, 52, 2), HardState(term=2), reset=Reset(50, 2))
    )
)


@pytest.mark.usefixtures("growing_files")
@pytest.mark.parametrize("kept", [*range(1, 40), *range(40, RESET_FRAME_LEN, 7)])
def test_torn_reset_record_keeps_the_old_log(tmp_path: Path, kept: int) -> None:
    """A reset frame cut short is the save in flight: the old log and hard state come back."""
    store = FileStorage(tmp_path)
    store.save(HardState(term=1, commit=2), ents(1, 3))
    (path,) = segments(tmp_path)
    start = path.stat().st_size
    store.save(HardState(term=2), ents(51, 52, 2), snap(50, 2))
    store.close()
    assert path.stat().st_size == start + RESET_FRAME_LEN
    os.truncate(path, start + kept)
    store = FileStorage(tmp_path)
    assert store.tail_repair == TailRepair(str(path), start, kept, last_index=3)
    assert (store.first_index(), store.last_index()) == (1, 3)
    assert store.load() == RestoredState(
        hard_state=HardState(term=1, commit=2), entries=tuple(ents(1, 3))
    )
    store.save(HardState(term=2), [], snap(50, 2))  # the node saves the reset again
    store.close()
    store = FileStorage(tmp_path)
    assert store.tail_repair is None
    assert (store.first_index(), store.last_index()) == (51, 50)
    store.close()


def test_a_reset_costs_one_fsync(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Reset, entries and hard state are one frame: one fdatasync."""
    store = FileStorage(tmp_path)
    store.save(None, ents(1, 5))
    calls: list[str] = []
    real_fdatasync = os.fdatasync
    monkeypatch.setattr(os, "fdatasync", lambda fd: (calls.append("data"), real_fdatasync(fd)))
    store.save(HardState(term=2, commit=9), ents(10, 12, 2), snap(9, 2))
    assert calls == ["data"]
    store.close()


def test_compaction_after_a_reset_removes_dead_segments(tmp_path: Path) -> None:
    """Segments holding only frames before a reset go even with compact(0); live ones stay."""
    store = FileStorage(tmp_path, segment_bytes=1)  # one save per segment
    for index in range(1, 11):
        store.save(HardState(term=1, commit=index), [ent(index)])
    store.save(HardState(term=2, commit=100), [], snap(100, 2))
    store.save(None, ents(101, 102, 2))
    store.save(None, [ent(103, 2)])
    store.save(None, [ent(104, 2)])
    assert len(segments(tmp_path)) == 14
    store.compact(0)
    remaining = [p.name for p in segments(tmp_path)]
    assert remaining == [segment_name(12, 101), segment_name(13, 103), segment_name(14, 104)]
    assert (store.first_index(), store.last_index()) == (101, 104)
    store.close()
    store = FileStorage(tmp_path, segment_bytes=1)
    assert (store.first_index(), store.last_index()) == (101, 104)
    assert store.load(after=100) == RestoredState(
        hard_state=HardState(term=2, commit=100), entries=tuple(ents(101, 104, 2))
    )
    store.compact(102)
    assert [p.name for p in segments(tmp_path)] == remaining[1:]
    assert store.first_index() == 103
    store.close()


def test_dead_frames_before_a_reset_in_the_first_kept_segment(tmp_path: Path) -> None:
    """A segment with dead frames, a reset and live entries replays to the same log."""
    store = FileStorage(tmp_path, segment_bytes=1 << 20)
    store.save(None, ents(1, 5))
    store.save(HardState(term=3, commit=20), ents(21, 22, 3), snap(20, 3))
    store._segment_bytes = 1  # internals: force the next saves to roll
    store.save(None, [ent(23, 3)])
    store.save(None, [ent(24, 3)])
    store.compact(22)  # the first segment holds live entries up to 22: deleted
    assert (store.first_index(), store.last_index()) == (23, 24)
    store.close()
    store = FileStorage(tmp_path)
    assert (store.first_index(), store.last_index()) == (23, 24)
    assert store.load(after=22).entries == (ent(23, 3), ent(24, 3))
    store.close()


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (
            encode_save(None, [ent(4)], None) + encode_save(None, [], None, reset=Reset(5, 1)),
            "reset that is not a record's first item",
        ),
        (
            encode_save(None, [], None, reset=Reset(5, 1)) + encode_save(2, [], None),
            "truncation from index 2",
        ),
        (encode_save(None, [ent(7)], None, reset=Reset(5, 1)), "entry index 7 where 6"),
    ],
    ids=["reset-after-entries", "truncate-after-reset", "gap-after-reset"],
)
def test_malformed_reset_records_are_corruption(
    tmp_path: Path, payload: bytes, message: str
) -> None:
    """CRC-valid frames that misuse RESET are refused with the file and offset."""
    path = tmp_path / segment_name(1, 1)
    offsets = write_segment(path, 1, 1, [encode_save(None, ents(1, 3), None), payload])
    with pytest.raises(CorruptLogError, match=message) as caught:
        FileStorage(tmp_path)
    assert (caught.value.path, caught.value.offset) == (str(path), offsets[1])


def test_segment_after_a_reset_must_start_after_it(tmp_path: Path) -> None:
    """The base-index check across segments holds across a reset."""
    reset = encode_save(None, [], None, reset=Reset(50, 2))
    write_segment(tmp_path / segment_name(1, 1), 1, 1, [encode_save(None, ents(1, 2), None), reset])
    write_segment(tmp_path / segment_name(2, 3), 2, 3, [encode_save(None, [ent(3)], None)])
    with pytest.raises(CorruptLogError, match="starts at index 3 but the log before it ends at 50"):
        FileStorage(tmp_path)
    (tmp_path / segment_name(2, 3)).unlink()
    write_segment(tmp_path / segment_name(2, 51), 2, 51, [encode_save(None, [ent(51)], None)])
    store = FileStorage(tmp_path)
    assert (store.first_index(), store.last_index()) == (51, 51)
    store.close()


def test_compaction_then_truncation_below_the_segment_base(tmp_path: Path) -> None:
    """A truncation written in a later segment that reaches into a deleted one replays."""
    store = FileStorage(tmp_path, segment_bytes=1)  # one save per segment
    store.save(None, ents(1, 10))
    store.save(None, ents(11, 20))
    store.save(HardState(term=2, commit=14), ents(15, 16, term=2))  # segment base 21
    store.compact(14)  # drops the first two segments
    first, last = store.first_index(), store.last_index()
    entries = store.load(after=14).entries
    assert (first, last) == (15, 16)
    store.close()
    store = FileStorage(tmp_path, segment_bytes=1)
    assert (store.first_index(), store.last_index()) == (first, last)
    assert store.load(after=14).entries == entries
    assert store.load(after=14).hard_state == HardState(term=2, commit=14)
    store.close()


@pytest.mark.parametrize("seed", range(6))
def test_random_operations_match_a_model(tmp_path: Path, seed: int) -> None:
    """Random appends, truncations, resets, compactions and restarts agree with a model."""
    rng = random.Random(seed)
    model: dict[int, Entry] = {}
    hard_state = HardState()
    compacted = 0
    store = FileStorage(tmp_path, segment_bytes=rng.choice([1, 200, 1000]))
    for step in range(150):
        last = store.last_index()
        choice = rng.random()
        if choice < 0.1:
            store.close()
            store = FileStorage(tmp_path, segment_bytes=rng.choice([1, 200, 1000]))
            assert store.tail_repair is None
        elif choice < 0.15 and last > compacted:
            compacted = rng.randint(compacted, last)
            store.compact(compacted)
        elif choice < 0.2:
            # A follower installs a snapshot from its leader: behind, at or past its log.
            compacted = rng.randint(max(0, last - 5), last + 20)
            batch = ents(compacted + 1, compacted + rng.randint(0, 3), term=step)
            hard_state = HardState(term=step, commit=compacted)
            store.save(hard_state, batch, snap(compacted, step))
            model = {e.index: e for e in batch}
        else:
            start = rng.randint(max(store.first_index(), compacted + 1, last - 3), last + 1)
            stop = start + rng.randint(0, 4)
            batch = [ent(i, step, rng.randbytes(rng.randint(0, 50))) for i in range(start, stop)]
            if rng.random() < 0.5:
                vote = rng.choice([None, "n1"])
                hard_state = HardState(term=step, voted_for=vote, commit=compacted)
                store.save(hard_state, batch)
            else:
                store.save(None, batch)
            if batch:
                model = {i: e for i, e in model.items() if i < start}
                model.update({e.index: e for e in batch})
        first = store.first_index()
        assert first <= compacted + 1
        assert store.last_index() == max(model, default=compacted)
        restored = store.load(after=first - 1)
        assert restored.hard_state == hard_state
        assert restored.entries == tuple(model[i] for i in range(first, store.last_index() + 1))
    store.close()
