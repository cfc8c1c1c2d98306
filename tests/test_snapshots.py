"""Snapshot files and the snapshot directory: round trips, damage, fallback, transfer.

Damage is made at file level (truncations, flipped bytes, garbage, and CRC-valid files with
a bad shape) and must only ever raise `CorruptSnapshotError`, naming the file and the
problem. I/O failures are injected with monkeypatch and must raise `StorageError`.
"""

from __future__ import annotations

import errno
import os
import random
import struct
import time
import zlib
from pathlib import Path
from typing import Any

import msgpack
import pytest

from zraft.core.types import Membership, SnapshotMeta
from zraft.node.snapshot_maker import SnapshotMaker
from zraft.state.kv import SnapshotView
from zraft.storage import (
    CorruptSnapshotError,
    LoadedSnapshot,
    SnapshotStore,
    StorageError,
    load_snapshot,
    read_meta,
    snapfile,
)
from zraft.storage.snapstore import snapshot_name

MEMBERS = Membership(
    voters=frozenset({"n1", "n2", "n3"}),
    learners=frozenset({"n4", "n5"}),
    promotable=frozenset({"n5"}),
)
HEADER = {"applied_index": 7, "sessions": [["c1", 3, [True, 7, None]]], 9: "int key"}


def meta(index: int, term: int = 1) -> SnapshotMeta:
    """Snapshot metadata at `index`/`term` with three voters and a learner."""
    return SnapshotMeta(index=index, term=term, membership=MEMBERS)


def make_pairs(count: int, value_size: int = 8, seed: int = 0) -> dict[bytes, bytes]:
    """`count` pairs with 16-byte keys and random values of `value_size` bytes."""
    rng = random.Random(seed)
    return {i.to_bytes(16, "big"): rng.randbytes(value_size) for i in range(count)}


def write(
    store: SnapshotStore,
    at: SnapshotMeta,
    pairs: dict[bytes, bytes],
    *,
    budget: int = 1 << 20,
    header: dict[Any, Any] | None = None,
) -> Path:
    """Write a snapshot in steps of `budget` bytes; returns its final path."""
    writer = store.begin(at, HEADER if header is None else header, list(pairs.items()), len(pairs))
    while not writer.step(budget):
        pass
    info = writer.finish()
    assert info.meta == at
    assert info.size_bytes == info.path.stat().st_size
    return info.path


def temps(directory: Path) -> list[Path]:
    """Temp files in a snapshot dir."""
    return sorted(directory.glob("*.tmp"))


@pytest.fixture
def small_records(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tiny records, so a small file has several of them (every record boundary is hit)."""
    monkeypatch.setattr(snapfile, "RECORD_PAIRS", 3)


@pytest.fixture
def small_file(tmp_path_factory: pytest.TempPathFactory, small_records: None) -> bytes:
    """The bytes of a small snapshot with 10 pairs in 4 records."""
    store = SnapshotStore(tmp_path_factory.mktemp("src"))
    path = write(store, meta(5), make_pairs(10), budget=1)
    return path.read_bytes()


def expect_corrupt(path: Path, data: bytes, match: str | None = None) -> CorruptSnapshotError:
    """Write `data` to `path` and check that loading it raises CorruptSnapshotError only."""
    path.write_bytes(data)
    with pytest.raises(CorruptSnapshotError, match=match) as caught:
        load_snapshot(path)
    assert caught.value.path == str(path)
    assert str(path) in str(caught.value)
    return caught.value


# --- round trips ---------------------------------------------------------------------


@pytest.mark.parametrize("count", [0, 1, 3, 2500])
def test_round_trip(tmp_path: Path, count: int) -> None:
    """Meta, the caller's header and the pairs come back exactly; no temp file is left."""
    store = SnapshotStore(tmp_path)
    pairs = make_pairs(count, value_size=50)
    pairs[b""] = b""  # empty keys and values are legal
    path = write(store, meta(42, 3), pairs)
    assert path == store.path_of(meta(42, 3))
    assert path.name == snapshot_name(42, 3) == "snap-000000000000002a-0000000000000003.snap"
    loaded = load_snapshot(path)
    assert loaded == LoadedSnapshot(
        meta=meta(42, 3), header=HEADER, pairs=pairs, path=path, size_bytes=path.stat().st_size
    )
    assert read_meta(path) == meta(42, 3)
    assert temps(tmp_path) == []


def test_small_steps_write_the_same_bytes_as_one_big_step(tmp_path: Path) -> None:
    """The file does not depend on how the writing was sliced (or not sliced at all)."""
    pairs = make_pairs(3000, value_size=40)
    sliced = write(SnapshotStore(tmp_path / "a"), meta(10), pairs, budget=1).read_bytes()
    whole = write(SnapshotStore(tmp_path / "b"), meta(10), pairs, budget=1 << 30).read_bytes()
    writer = SnapshotStore(tmp_path / "c").begin(meta(10), HEADER, pairs.items(), len(pairs))
    unstepped = writer.finish().path.read_bytes()  # finish writes whatever is left
    assert sliced == whole == unstepped


def test_steps_respect_the_budget(tmp_path: Path) -> None:
    """Each step writes about the budget (at least one record) and syncs it."""
    store = SnapshotStore(tmp_path)
    pairs = make_pairs(5000, value_size=100)
    writer = store.begin(meta(1), {}, list(pairs.items()), len(pairs))
    sizes = []
    done = False
    while not done:
        before = writer.bytes_written
        done = writer.step(100_000)
        sizes.append(writer.bytes_written - before)
    assert len(sizes) >= 5
    assert all(0 < size < 100_000 + snapfile.RECORD_BYTES + 1024 for size in sizes)
    assert writer.step(100_000) is True  # nothing more to do
    assert writer.pairs_written == 5000
    writer.finish()


def test_a_large_snapshot_and_its_timings(tmp_path: Path) -> None:
    """100k pairs of 256-byte values with 16-byte keys: round trip; prints the timings."""
    store = SnapshotStore(tmp_path)
    pairs = make_pairs(100_000, value_size=256)
    items = list(pairs.items())
    started = time.perf_counter()
    writer = store.begin(meta(100_000, 5), HEADER, items, len(items))
    longest_step = 0.0
    steps = 0
    done = False
    while not done:
        step_started = time.perf_counter()
        done = writer.step(1 << 20)
        longest_step = max(longest_step, time.perf_counter() - step_started)
        steps += 1
    finish_started = time.perf_counter()
    info = writer.finish()
    finished = time.perf_counter()
    loaded = load_snapshot(info.path)
    load_time = time.perf_counter() - finished
    assert loaded.pairs == pairs
    print(
        f"\nsnapshot 100k pairs x (16 B key + 256 B value): {info.size_bytes / 1e6:.1f} MB, "
        f"write {(finished - started) * 1e3:.0f} ms in {steps} steps of 1 MiB, "
        f"longest step {longest_step * 1e3:.1f} ms, finish {(finished - finish_started) * 1e3:.1f} "
        f"ms, load_snapshot {load_time * 1e3:.0f} ms"
    )


# --- damage --------------------------------------------------------------------------


def test_every_truncation_is_refused(tmp_path: Path, small_file: bytes) -> None:
    """Cut after any number of bytes: CorruptSnapshotError, never anything else."""
    path = tmp_path / "cut.snap"
    for kept in range(len(small_file)):
        expect_corrupt(path, small_file[:kept])


def test_every_flipped_byte_is_refused(tmp_path: Path, small_file: bytes) -> None:
    """A flipped byte anywhere in the file is caught (CRC-32 catches every 8-bit burst)."""
    path = tmp_path / "flipped.snap"
    rng = random.Random(3)
    for position in range(len(small_file)):
        damaged = bytearray(small_file)
        damaged[position] ^= rng.randrange(1, 256)
        expect_corrupt(path, bytes(damaged))


@pytest.mark.parametrize(
    "data",
    [b"", b"ZRAFTSNP", b"\x00" * 4096, random.Random(1).randbytes(5000), b"ZRAFTEND" * 10],
    ids=["empty", "magic-only", "zeros", "random", "end-magics"],
)
def test_garbage_is_refused(tmp_path: Path, data: bytes) -> None:
    """Files that are not snapshots at all."""
    expect_corrupt(tmp_path / "junk.snap", data)


def test_trailing_bytes_are_refused(tmp_path: Path, small_file: bytes) -> None:
    """Anything after the footer means the footer is not at the end."""
    expect_corrupt(tmp_path / "long.snap", small_file + b"\x00", "no footer at the end")


def test_reasons_name_the_problem(tmp_path: Path, small_file: bytes) -> None:
    """A few damages and the reason each one reports."""
    path = tmp_path / "x.snap"
    expect_corrupt(path, b"NOTASNAP" + small_file[8:], "bad magic")
    expect_corrupt(path, small_file[:8] + b"\x03\x00" + small_file[10:], "version 3")
    expect_corrupt(path, small_file[:-30], "truncated")
    damaged = bytearray(small_file)
    damaged[len(damaged) // 2] ^= 1
    expect_corrupt(path, bytes(damaged), "CRC mismatch")


def seal(body: bytes, pair_count: int) -> bytes:
    """Add a footer with a correct CRC, so the shape checks behind the CRC are reached."""
    return body + b"ZRAFTEND" + struct.pack("<QI", pair_count, zlib.crc32(body))


def preamble(fields: Any) -> bytes:
    """Magic, version and a length-prefixed msgpack header holding `fields`."""
    packed = msgpack.packb(fields, use_bin_type=True)
    return b"ZRAFTSNP" + struct.pack("<HI", 1, len(packed)) + packed


def record(items: Any) -> bytes:
    """One length-prefixed msgpack record."""
    packed = msgpack.packb(items, use_bin_type=True)
    return struct.pack("<I", len(packed)) + packed


def fields(pairs: int = 1, **changes: Any) -> dict[str, Any]:
    """A valid header map, with `changes` applied."""
    base = {"index": 5, "term": 1, "voters": ["n1"], "learners": [], "header": {}}
    return {**base, "pairs": pairs, **changes}


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (seal(preamble(fields()) + record([b"k", b"v"]), 1), None),  # the control: valid
        (seal(preamble([1, 2]) + record([b"k", b"v"]), 1), "expected map"),
        (seal(preamble(fields(index=-1)) + record([b"k", b"v"]), 1), "'index'"),
        (seal(preamble(fields(term="1")) + record([b"k", b"v"]), 1), "'term'"),
        (seal(preamble(fields(voters=[])) + record([b"k", b"v"]), 1), "membership"),
        (seal(preamble(fields(voters=["n1", "n1"])) + record([b"k", b"v"]), 1), "repeats"),
        (seal(preamble(fields(learners=["n1"])) + record([b"k", b"v"]), 1), "membership"),
        (seal(preamble(fields(header=[])) + record([b"k", b"v"]), 1), "header is not a map"),
        (seal(preamble({**fields(), "extra": 1}) + record([b"k", b"v"]), 1), "expected map"),
        (seal(preamble(fields()) + record([b"k", b"v"]), 2), "footer says 2"),
        (seal(preamble(fields()) + record([b"k"]), 1), "not a list of byte pairs"),
        (seal(preamble(fields()) + record([]), 1), "not a list of byte pairs"),
        (seal(preamble(fields()) + record([b"k", "v"]), 1), "not a list of byte pairs"),
        (seal(preamble(fields()) + record({b"k": b"v"}), 1), "not a list of byte pairs"),
        (seal(preamble(fields(2)) + record([b"k", b"v", b"k", b"w"]), 2), "duplicate"),
        (seal(preamble(fields(1)) + record([b"k", b"v", b"j", b"w"]), 1), "more than the 1"),
        (seal(preamble(fields(2)) + record([b"k", b"v"]), 2), "after 1 of 2 pairs"),
        (seal(preamble(fields()) + record([b"k", b"v"]) + b"\x00", 1), "stray bytes"),
        (seal(preamble(fields()) + b"\xff\xff\xff\x00xx", 1), "overruns"),
        (seal(preamble(fields()) + struct.pack("<I", 1) + b"\xc1", 1), "not valid msgpack"),
        (seal(preamble(fields()) + struct.pack("<I", 3) + b"\x92\xc4\x05", 1), "not valid msgpack"),
        (seal(b"ZRAFTSNP" + struct.pack("<HI", 1, 10**6), 0), "overruns the footer"),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_crc_valid_files_with_a_bad_shape(tmp_path: Path, data: bytes, reason: str) -> None:
    """Past the CRC, every field's type, range and count is still checked."""
    path = tmp_path / "crafted.snap"
    path.write_bytes(data)
    if reason is None:
        assert load_snapshot(path).pairs == {b"k": b"v"}
    else:
        expect_corrupt(path, data, reason)


def test_read_meta_on_a_damaged_header(tmp_path: Path, small_file: bytes) -> None:
    """read_meta reads just the header, and refuses a damaged one the same way."""
    path = tmp_path / "m.snap"
    path.write_bytes(small_file[:30])
    with pytest.raises(CorruptSnapshotError, match="ends inside the header"):
        read_meta(path)
    path.write_bytes(small_file[:5])
    with pytest.raises(CorruptSnapshotError, match="too short"):
        read_meta(path)
    with pytest.raises(StorageError, match="cannot read"):
        read_meta(tmp_path / "missing.snap")


# --- the writer's contract -----------------------------------------------------------


def test_abort_removes_the_temp_file(tmp_path: Path) -> None:
    """abort() at any point removes the temp file; the final name never appears."""
    store = SnapshotStore(tmp_path)
    pairs = make_pairs(500)
    writer = store.begin(meta(3), {}, list(pairs.items()), len(pairs))
    writer.step(100)
    assert temps(tmp_path) == [writer.temp_path]
    writer.abort()
    writer.abort()
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StorageError, match="aborted"):
        writer.step(100)


@pytest.mark.parametrize(
    ("pairs", "count", "message"),
    [
        ([(b"a", b"1")], 2, "yielded 1 pairs"),
        ([(b"a", b"1"), (b"b", b"2")], 1, "more than pair_count"),
        ([("a", b"1")], 1, "must be bytes"),
        ([(b"a", bytearray(b"1"))], 1, "must be bytes"),
        ([(b"a",)], 1, "not a \\(key, value\\) pair"),
    ],
)
def test_writer_misuse_raises_value_error_and_cleans_up(
    tmp_path: Path, pairs: list[Any], count: int, message: str
) -> None:
    """Wrong pair counts or types are the caller's bug: ValueError, temp file removed."""
    store = SnapshotStore(tmp_path)
    writer = store.begin(meta(3), {}, pairs, count)
    with pytest.raises(ValueError, match=message):
        writer.finish()
    assert list(tmp_path.iterdir()) == []


def test_header_that_msgpack_cannot_encode(tmp_path: Path) -> None:
    """The caller's header must be msgpack-able; nothing is created if it is not."""
    store = SnapshotStore(tmp_path)
    with pytest.raises(ValueError, match="msgpack"):
        store.begin(meta(3), {"bad": object()}, [], 0)
    assert list(tmp_path.iterdir()) == []


def test_short_writes_are_completed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """os.write returning short counts (a nearly full disk) is looped until done."""
    store = SnapshotStore(tmp_path)
    real_write = os.write
    monkeypatch.setattr(os, "write", lambda fd, data: real_write(fd, bytes(data)[:100]))
    path = write(store, meta(4), make_pairs(300, value_size=30))
    monkeypatch.undo()
    assert load_snapshot(path).pairs == make_pairs(300, value_size=30)


@pytest.mark.parametrize("function", ["write", "fdatasync", "replace"])
def test_io_errors_raise_storage_error_and_clean_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, function: str
) -> None:
    """ENOSPC or EIO while writing, syncing or renaming: StorageError, no files left."""
    store = SnapshotStore(tmp_path)
    pairs = make_pairs(100)
    writer = store.begin(meta(4), {}, list(pairs.items()), len(pairs))

    def fail(*args: object) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, function, fail)
    with pytest.raises(StorageError, match="No space left"):
        writer.finish()
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []


# --- the directory -------------------------------------------------------------------


def test_leftover_temp_files_are_removed_at_start(tmp_path: Path) -> None:
    """A crash mid-write leaves a temp file; the next store removes and reports it."""
    store = SnapshotStore(tmp_path / "snaps")
    assert store.removed_temps == ()
    kept = write(store, meta(1), make_pairs(5))
    writer = store.begin(meta(2), {}, [], 0)
    receiver = store.begin_receive(meta(3))
    other = tmp_path / "snaps" / "notes.tmp"  # not ours: left alone
    other.write_bytes(b"x")
    del writer, receiver  # the "crash": nothing cleaned up
    store = SnapshotStore(tmp_path / "snaps")
    assert len(store.removed_temps) == 2
    assert all(path.name.startswith("snap-") for path in store.removed_temps)
    assert sorted((tmp_path / "snaps").iterdir()) == sorted([kept, other])


def test_list_ignores_other_files_and_sorts_by_index(tmp_path: Path) -> None:
    """Only well-named snapshot files are listed, oldest first."""
    store = SnapshotStore(tmp_path)
    for index in (30, 4, 100):
        write(store, meta(index, 2), make_pairs(2))
    for name in ("snap-zz.snap", "snap-1-2.snap", "LOCK", "wal-0000000000000001.log"):
        (tmp_path / name).write_bytes(b"")
    assert [(f.index, f.term) for f in store.list()] == [(4, 2), (30, 2), (100, 2)]
    assert all(f.size_bytes == f.path.stat().st_size for f in store.list())


def test_load_newest_falls_back_to_an_older_valid_snapshot(tmp_path: Path) -> None:
    """A damaged newest snapshot is refused with its reason; the one before is used."""
    store = SnapshotStore(tmp_path)
    write(store, meta(10), make_pairs(3, seed=10))
    older = write(store, meta(20), make_pairs(3, seed=20))
    newest = write(store, meta(30), make_pairs(3, seed=30))
    newest.write_bytes(newest.read_bytes()[:-1])
    loaded, refused = store.load_newest()
    assert loaded is not None
    assert (loaded.meta, loaded.path, loaded.pairs) == (meta(20), older, make_pairs(3, seed=20))
    assert refused == [
        (newest, "no footer at the end: the file is truncated or has trailing bytes")
    ]


def test_load_newest_refuses_a_file_named_for_another_snapshot(tmp_path: Path) -> None:
    """A file's name and its header must agree."""
    store = SnapshotStore(tmp_path)
    path = write(store, meta(10), make_pairs(3))
    renamed = store.path_of(meta(11))
    path.rename(renamed)
    loaded, refused = store.load_newest()
    assert loaded is None
    assert refused == [(renamed, "the name says index 11 term 1, the header says index 10 term 1")]


def test_load_newest_of_an_empty_dir(tmp_path: Path) -> None:
    """No snapshots: nothing loaded, nothing refused, oldest retained index 0."""
    store = SnapshotStore(tmp_path)
    assert store.load_newest() == (None, [])
    assert store.oldest_retained_index() == 0
    assert store.prune() == []


def test_prune_keeps_the_newest_n(tmp_path: Path) -> None:
    """prune deletes all but the newest `retain`; oldest_retained_index follows."""
    store = SnapshotStore(tmp_path, retain=2)
    paths = [write(store, meta(index), make_pairs(2)) for index in (5, 9, 14, 20)]
    assert store.oldest_retained_index() == 14  # what prune will keep, even before it runs
    assert store.prune() == paths[:2]
    assert [f.path for f in store.list()] == paths[2:]
    assert store.prune() == []
    assert store.oldest_retained_index() == 14
    one = SnapshotStore(tmp_path, retain=1)
    assert one.oldest_retained_index() == 20
    assert one.prune() == [paths[2]]
    with pytest.raises(ValueError):
        SnapshotStore(tmp_path, retain=0)


# --- receiving a snapshot from the leader --------------------------------------------


def receive(store: SnapshotStore, at: SnapshotMeta, data: bytes, chunk: int) -> LoadedSnapshot:
    """Stream `data` into a receiver in chunks of `chunk` bytes and verify it."""
    receiver = store.begin_receive(at, sync_bytes=1000)
    for offset in range(0, len(data), chunk):
        assert receiver.write_chunk(offset, data[offset : offset + chunk])
    loaded = receiver.finish()
    info = store.install(receiver)
    assert info.path == store.path_of(at)
    assert info.size_bytes == len(data)
    return loaded


def test_receive_in_chunks_round_trip(tmp_path: Path) -> None:
    """The leader's file, streamed in chunks, is verified and installed byte for byte."""
    leader = SnapshotStore(tmp_path / "leader")
    pairs = make_pairs(700, value_size=30)
    data = write(leader, meta(50, 4), pairs).read_bytes()
    follower = SnapshotStore(tmp_path / "follower")
    loaded = receive(follower, meta(50, 4), data, chunk=1234)
    assert (loaded.meta, loaded.header, loaded.pairs) == (meta(50, 4), HEADER, pairs)
    assert follower.path_of(meta(50, 4)).read_bytes() == data
    assert temps(tmp_path / "follower") == []
    assert follower.load_newest()[0] is not None


def test_receiver_refuses_a_wrong_offset(tmp_path: Path, small_file: bytes) -> None:
    """Out-of-order, repeated or gapped chunks are refused without writing anything."""
    store = SnapshotStore(tmp_path)
    receiver = store.begin_receive(meta(5))
    assert receiver.write_chunk(0, small_file[:100])
    assert not receiver.write_chunk(0, small_file[:100])  # a duplicate
    assert not receiver.write_chunk(150, small_file[150:])  # a gap
    assert receiver.next_offset == 100
    assert receiver.write_chunk(100, small_file[100:])
    assert receiver.finish().meta == meta(5)
    store.install(receiver)
    with pytest.raises(StorageError, match="installed"):
        receiver.write_chunk(len(small_file), b"x")


@pytest.mark.parametrize("damage", ["flip", "short", "other-meta", "too-big"])
def test_receiver_refuses_damaged_data_and_removes_it(
    tmp_path: Path, small_file: bytes, damage: str
) -> None:
    """Damaged or unexpected data: CorruptSnapshotError, the temp file is gone."""
    store = SnapshotStore(tmp_path)
    data = bytearray(small_file)
    announced = meta(5)
    if damage == "flip":
        data[40] ^= 0x10
    elif damage == "short":
        del data[-3:]
    elif damage == "other-meta":
        announced = meta(6)
    receiver = store.begin_receive(announced, max_bytes=100 if damage == "too-big" else None)
    with pytest.raises(CorruptSnapshotError) as caught:
        receiver.write_chunk(0, bytes(data))
        receiver.finish()
    assert caught.value.path == str(receiver.temp_path)
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(StorageError):
        store.install(receiver)


def test_receiver_abort_removes_the_temp_file(tmp_path: Path, small_file: bytes) -> None:
    """abort() before or after verification removes the temp file; install is refused."""
    store = SnapshotStore(tmp_path)
    for verify in (False, True):
        receiver = store.begin_receive(meta(5))
        receiver.write_chunk(0, small_file)
        if verify:
            receiver.finish()
        receiver.abort()
        receiver.abort()
        assert list(tmp_path.iterdir()) == []
        with pytest.raises(StorageError, match="aborted"):
            store.install(receiver)


# --- when to snapshot (zraft.node.snapshot_maker.SnapshotMaker) ---------------------------------


def test_snapshot_is_due_by_entries_or_by_command_bytes(tmp_path: Path) -> None:
    """`snapshot_entries` and `snapshot_bytes` each trigger a snapshot on their own; the
    byte count starts afresh with every snapshot taken or installed, and nothing is due
    while one is being written."""
    maker = SnapshotMaker(SnapshotStore(tmp_path), every_entries=100, every_bytes=1000)
    assert not maker.is_due(applied_index=99, snapshot_index=0)
    assert maker.is_due(applied_index=100, snapshot_index=0)
    maker.note_applied(600)
    assert not maker.is_due(applied_index=10, snapshot_index=0)
    maker.note_applied(400)
    assert maker.is_due(applied_index=10, snapshot_index=0)  # 1000 bytes, 10 entries
    assert not maker.is_due(applied_index=10, snapshot_index=10)  # nothing new applied
    maker.start(meta(10), SnapshotView(applied_index=10, data={b"k": b"v"}, sessions=[]))
    maker.note_applied(5000)
    assert not maker.is_due(applied_index=500, snapshot_index=0)  # one is being written
    while maker.step() is None:
        pass
    assert maker.is_due(applied_index=20, snapshot_index=10)  # the 5000 bytes since
    maker.note_installed()
    assert not maker.is_due(applied_index=20, snapshot_index=10)
