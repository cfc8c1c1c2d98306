"""Snapshot files: the on-disk format, an incremental writer, and a verifying reader.

A snapshot is the key-value state machine at an applied index: its `SnapshotMeta` (index,
term, membership), a small caller-owned `header` (a msgpack-able dict, e.g. the client
session table; opaque here, round-tripped as msgpack does: tuples come back as lists), and
the key/value pairs (bytes -> bytes). `snapstore.py` owns the directory they live in.

Format (integers little-endian)::

    preamble   8s "ZRAFTSNP", u16 version (1, or 2 when the caller's header names a
               "state_format": a state the first release must not read), u32 header length
    header     msgpack map {"index": int, "term": int, "voters": [str], "learners": [str],
                            "promotable": [str], "header": <caller's dict>, "pairs": int}
               ("promotable", the learners to promote once caught up, may be absent)
    records    repeated: u32 length, msgpack array [key0, value0, key1, value1, ...]
               (1 to RECORD_PAIRS pairs, about RECORD_BYTES at most unless one pair is
               larger; keys and values are msgpack bin)
    footer     8s "ZRAFTEND", u64 pair count, u32 crc32 (zlib) of every byte before it

The records hold exactly "pairs" pairs; there is no record count, so the reader stops at
that many pairs and expects the footer right there. The footer sits at a fixed place, the
last 20 bytes, so a truncated file is recognised before any parsing: its end is not a
footer, or the CRC does not match.

Verification (`load_snapshot`) checks, in order: the size, both magics, the version, the
CRC over everything before the footer, then the header's shape, every record's length and
shape, the pair counts (header == footer == records == distinct keys) and that nothing
trails the last record. Any failure raises `CorruptSnapshotError(path, reason)`; damaged
bytes never raise anything else (msgpack and shape errors are caught here). CRC-32 catches
every burst error up to 32 bits, so any single flipped byte is reported.

Writing (`SnapshotWriter`) is incremental, for a single-threaded node loop: each `step`
encodes and writes about `budget_bytes` of records into the temp file and fdatasyncs that
slice, so the final sync in `finish` has little left to flush. `finish` writes the footer,
fdatasyncs, renames the temp file to its final name and fsyncs the directory: a snapshot
file exists under its final name only when it is complete and durable.
"""

from __future__ import annotations

import contextlib
import os
import struct
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import msgpack

from zraft.core.types import Membership, SnapshotMeta
from zraft.storage.base import CorruptSnapshotError, StorageError
from zraft.storage.fsio import sync_data, sync_dir, write_all

MAGIC = b"ZRAFTSNP"
END_MAGIC = b"ZRAFTEND"
VERSION = 2
"""Written when the caller's header names a `state_format` (a state the first release
cannot read: its nodes refuse the file instead of misreading its values)."""
FIRST_VERSION = 1
"""Written otherwise: the first release's nodes read it."""
VERSIONS = frozenset({FIRST_VERSION, VERSION})

RECORD_PAIRS = 1024  # pairs per record at most
RECORD_BYTES = 64 << 10  # a record is closed once its keys and values reach this size

_PREAMBLE = struct.Struct("<8sHI")  # magic, version, header length
_RECORD_LENGTH = struct.Struct("<I")
_FOOTER = struct.Struct("<8sQI")  # end magic, pair count, crc32
_HEADER_KEYS = frozenset({"index", "term", "voters", "learners", "header", "pairs"})
_MAX_U32 = 0xFFFF_FFFF
_MAX_U64 = 0xFFFF_FFFF_FFFF_FFFF

FOOTER_SIZE = _FOOTER.size


@dataclass(frozen=True, slots=True)
class SnapshotInfo:
    """A complete, durable snapshot file.

    Args:
        meta: where the snapshot ends and the membership there.
        path: the file.
        size_bytes: its size.
    """

    meta: SnapshotMeta
    path: Path
    size_bytes: int


@dataclass(frozen=True, slots=True)
class LoadedSnapshot:
    """A snapshot read back and verified in full.

    Args:
        meta: where the snapshot ends and the membership there.
        header: the caller's header dict, as msgpack returns it.
        pairs: the key/value pairs.
        path: the file it was read from.
        size_bytes: that file's size.
    """

    meta: SnapshotMeta
    header: dict[Any, Any]
    pairs: dict[bytes, bytes]
    path: Path
    size_bytes: int


class SnapshotWriter:
    """Writes one snapshot file a slice at a time, so the node loop never stalls long.

    Usually made by `SnapshotStore.begin`. Creating it creates `temp_path` and writes the
    preamble and header. Then call `step(budget)` once per loop turn until it returns True,
    then `finish()`; or `abort()` at any time. After any error the temp file is removed and
    the writer is closed.

    `pairs` is consumed lazily across steps, so it must not change meanwhile: pass a copy
    of the state (e.g. `list(data.items())`), not a live view of a dict that later applies
    modify.

    Args:
        path: the final file name.
        temp_path: where to write until `finish` renames it to `path` (same directory);
            must not exist.
        meta: the snapshot's index, term and membership.
        header: the caller's msgpack-able dict.
        pairs: (key, value) pairs of bytes; exactly `pair_count` of them.
        pair_count: how many pairs `pairs` yields.

    Raises:
        ValueError: `header` is not msgpack-able, or a number is out of range.
        StorageError: creating or writing the temp file failed.
    """

    def __init__(
        self,
        path: Path,
        temp_path: Path,
        meta: SnapshotMeta,
        header: Mapping[Any, Any],
        pairs: Iterable[tuple[bytes, bytes]],
        pair_count: int,
    ) -> None:
        if not 0 <= pair_count <= _MAX_U64:
            raise ValueError(f"pair_count out of range: {pair_count}")
        preamble = encode_preamble(meta, header, pair_count)
        self._path = path
        self._temp_path = temp_path
        self._meta = meta
        self._pairs: Iterator[tuple[bytes, bytes]] = iter(pairs)
        self._pair_count = pair_count
        self._pairs_written = 0
        self._crc = 0
        self._size = 0
        self._all_written = False
        self._closed = False
        self._fd = -1
        try:
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._fd = os.open(temp_path, flags, 0o644)
        except OSError as exc:
            self._closed = True
            raise StorageError(f"cannot create snapshot file {temp_path}: {exc}") from exc
        self._write(preamble)

    @property
    def meta(self) -> SnapshotMeta:
        """The snapshot being written."""
        return self._meta

    @property
    def temp_path(self) -> Path:
        """The temp file being written."""
        return self._temp_path

    @property
    def bytes_written(self) -> int:
        """Bytes written to the temp file so far."""
        return self._size

    @property
    def pairs_written(self) -> int:
        """Pairs written to the temp file so far."""
        return self._pairs_written

    def step(self, budget_bytes: int) -> bool:
        """Write about `budget_bytes` of records (at least one), then fdatasync them.

        Whole records are written, so a step may exceed the budget by up to one record
        (about RECORD_BYTES, more only for a single pair larger than that).

        Returns:
            True once every pair is written (then call `finish`); later calls write
            nothing and return True.

        Raises:
            ValueError: `pairs` yielded a non-bytes key or value, or more or fewer pairs
                than `pair_count` (the temp file is removed).
            StorageError: a write or sync failed (the temp file is removed).
        """
        self._check_open()
        if self._all_written:
            return True
        chunks: list[bytes] = []
        size = 0
        while not self._all_written and (size < budget_bytes or not chunks):
            record = self._next_record()
            if record is None:
                break
            chunks.append(record)
            size += len(record)
        if chunks:
            self._write(b"".join(chunks))
            self._sync()
        return self._all_written

    def finish(self) -> SnapshotInfo:
        """Write what is left and the footer, sync, and rename the file into place.

        Normally `step` has already returned True and this writes only the footer. It does
        not remove older snapshots (`SnapshotStore.prune` does).

        Returns:
            The durable snapshot under its final name.

        Raises:
            ValueError, StorageError: as for `step` (the temp file is removed).
        """
        while not self.step(1 << 20):
            pass
        footer = _FOOTER.pack(END_MAGIC, self._pairs_written, self._crc)
        self._write(footer)
        try:
            sync_data(self._fd)
            os.close(self._fd)
            self._fd = -1
            os.replace(self._temp_path, self._path)
            self._closed = True
            sync_dir(self._path.parent)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot finish snapshot file {self._path}: {exc}") from exc
        return SnapshotInfo(meta=self._meta, path=self._path, size_bytes=self._size)

    def abort(self) -> None:
        """Close and remove the temp file. Idempotent; does nothing after `finish`."""
        fd, self._fd = self._fd, -1
        if not self._closed:
            self._closed = True
            discard_temp(fd, self._temp_path)
        elif fd >= 0:
            discard_temp(fd, None)

    def _next_record(self) -> bytes | None:
        """The next encoded record, or None when all pairs are written."""
        remaining = self._pair_count - self._pairs_written
        if remaining == 0:
            self._check_exhausted()
            return None
        flat: list[bytes] = []
        nbytes = 0
        limit = min(remaining, RECORD_PAIRS)
        count = 0
        while count < limit and nbytes < RECORD_BYTES:
            pair = next(self._pairs, None)
            if pair is None:
                written = self._pairs_written + count
                self._misuse(f"pairs yielded {written} pairs, pair_count={self._pair_count}")
            try:
                key, value = pair
            except (TypeError, ValueError):
                self._misuse(f"pairs yielded {pair!r}, not a (key, value) pair")
            if type(key) is not bytes or type(value) is not bytes:
                self._misuse(f"keys and values must be bytes, got {type(key)}, {type(value)}")
            flat.append(key)
            flat.append(value)
            nbytes += len(key) + len(value)
            count += 1
        body = msgpack.packb(flat, use_bin_type=True)
        if len(body) > _MAX_U32:
            self._misuse(f"a record of {len(body)} bytes does not fit the format")
        self._pairs_written += count
        if count == remaining:
            self._check_exhausted()
        return _RECORD_LENGTH.pack(len(body)) + body

    def _check_exhausted(self) -> None:
        """Check that `pairs` yields nothing more, and note that all pairs are written."""
        if next(self._pairs, None) is not None:
            self._misuse(f"pairs yielded more than pair_count={self._pair_count} pairs")
        self._all_written = True

    def _write(self, data: bytes) -> None:
        try:
            write_all(self._fd, data)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot write snapshot file {self._temp_path}: {exc}") from exc
        self._crc = zlib.crc32(data, self._crc)
        self._size += len(data)

    def _sync(self) -> None:
        try:
            sync_data(self._fd)
        except OSError as exc:
            self.abort()
            raise StorageError(f"cannot sync snapshot file {self._temp_path}: {exc}") from exc

    def _misuse(self, reason: str) -> NoReturn:
        self.abort()
        raise ValueError(f"snapshot {self._path.name}: {reason}")

    def _check_open(self) -> None:
        if self._closed:
            raise StorageError(f"snapshot writer for {self._path} is finished or aborted")


def discard_temp(fd: int, path: Path | None) -> None:
    """Close `fd` (if >= 0) and remove `path` (if given), ignoring errors.

    For abandoned temp files: they are thrown away, so their state does not matter, and a
    temp file left behind is removed when the next `SnapshotStore` opens the directory.
    """
    if fd >= 0:
        with contextlib.suppress(OSError):
            os.close(fd)
    if path is not None:
        with contextlib.suppress(OSError):
            path.unlink(missing_ok=True)


def encode_preamble(meta: SnapshotMeta, header: Mapping[Any, Any], pair_count: int) -> bytes:
    """Magic, version and the length-prefixed msgpack header of a snapshot file.

    Raises:
        ValueError: `header` is not msgpack-able, or a number is out of range.
    """
    if not (0 <= meta.index <= _MAX_U64 and 0 <= meta.term <= _MAX_U64):
        raise ValueError(f"snapshot index and term must fit a u64: {meta}")
    fields = {
        "index": meta.index,
        "term": meta.term,
        "voters": sorted(meta.membership.voters),
        "learners": sorted(meta.membership.learners),
        "promotable": sorted(meta.membership.promotable),
        "header": dict(header),
        "pairs": pair_count,
    }
    try:
        packed = msgpack.packb(fields, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError(f"snapshot header is not msgpack-able: {exc}") from exc
    if len(packed) > _MAX_U32:
        raise ValueError(f"snapshot header of {len(packed)} bytes does not fit the format")
    version = VERSION if "state_format" in header else FIRST_VERSION
    return _PREAMBLE.pack(MAGIC, version, len(packed)) + packed


def load_snapshot(path: Path) -> LoadedSnapshot:
    """Read a snapshot file and verify all of it (module docstring).

    Raises:
        CorruptSnapshotError: anything is wrong with the bytes (names the file and what).
        StorageError: the file cannot be read (missing, EIO, ...).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read snapshot file {path}: {exc}") from exc
    return parse_snapshot(Path(path), data)


def parse_snapshot(path: Path, data: bytes) -> LoadedSnapshot:
    """Verify and decode the bytes of a snapshot file; `path` is for messages only.

    Raises:
        CorruptSnapshotError: anything is wrong with `data`.
    """
    size = len(data)
    view = memoryview(data)
    if size < _PREAMBLE.size + _FOOTER.size:
        raise CorruptSnapshotError(str(path), f"only {size} bytes: too short for a snapshot")
    header_end = _check_preamble(path, view)
    end_magic, footer_count, footer_crc = _FOOTER.unpack_from(view, size - _FOOTER.size)
    body_end = size - _FOOTER.size
    if end_magic != END_MAGIC:
        raise CorruptSnapshotError(
            str(path), "no footer at the end: the file is truncated or has trailing bytes"
        )
    crc = zlib.crc32(view[:body_end])
    if crc != footer_crc:
        raise CorruptSnapshotError(
            str(path), f"CRC mismatch: footer says {footer_crc:08x}, content has {crc:08x}"
        )
    if header_end > body_end:
        raise CorruptSnapshotError(str(path), "the header overruns the footer")
    meta, caller_header, pair_count = _decode_header(path, view[_PREAMBLE.size : header_end])
    if footer_count != pair_count:
        raise CorruptSnapshotError(
            str(path), f"header says {pair_count} pairs, footer says {footer_count}"
        )
    pairs = _decode_records(path, view, header_end, body_end, pair_count)
    return LoadedSnapshot(
        meta=meta, header=caller_header, pairs=pairs, path=Path(path), size_bytes=size
    )


def read_meta(path: Path) -> SnapshotMeta:
    """The metadata from a snapshot file's header, without reading or checking the rest.

    Cheap (two small reads), for listings; `load_snapshot` is what verifies a file.

    Raises:
        CorruptSnapshotError: the preamble or header is damaged.
        StorageError: the file cannot be read.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            preamble = os.pread(fd, _PREAMBLE.size, 0)
            if len(preamble) < _PREAMBLE.size:
                raise CorruptSnapshotError(str(path), "too short for a snapshot")
            header_end = _check_preamble(path, memoryview(preamble))
            header = os.pread(fd, header_end - _PREAMBLE.size, _PREAMBLE.size)
        finally:
            os.close(fd)
    except OSError as exc:
        raise StorageError(f"cannot read snapshot file {path}: {exc}") from exc
    if len(header) != header_end - _PREAMBLE.size:
        raise CorruptSnapshotError(str(path), "the file ends inside the header")
    return _decode_header(path, memoryview(header))[0]


def _check_preamble(path: Path, view: memoryview) -> int:
    """Check magic and version; return where the header ends."""
    magic, version, header_length = _PREAMBLE.unpack_from(view, 0)
    if magic != MAGIC:
        raise CorruptSnapshotError(str(path), f"bad magic {bytes(magic)!r}: not a snapshot")
    if version not in VERSIONS:
        raise CorruptSnapshotError(str(path), f"unsupported snapshot format version {version}")
    return int(_PREAMBLE.size + header_length)


def _decode_header(path: Path, raw: memoryview) -> tuple[SnapshotMeta, dict[Any, Any], int]:
    """The meta, the caller's header and the pair count from the msgpack header."""
    # strict_map_key=False: the caller's dict may use int keys; a key msgpack cannot hash
    # raises TypeError, which is caught as damage like every other decoding error.
    fields = _unpack(path, raw, "header", strict_map_key=False)
    if not isinstance(fields, dict) or set(fields) - {"promotable"} != _HEADER_KEYS:
        raise CorruptSnapshotError(str(path), "the header is not the expected map")
    index, term, pair_count = fields["index"], fields["term"], fields["pairs"]
    for name, value in (("index", index), ("term", term), ("pairs", pair_count)):
        if type(value) is not int or value < 0:
            raise CorruptSnapshotError(str(path), f"header field {name!r} is not an int >= 0")
    voters, learners = fields["voters"], fields["learners"]
    promotable = fields.get("promotable", [])
    for name, ids in (("voters", voters), ("learners", learners), ("promotable", promotable)):
        if not isinstance(ids, list) or not all(type(i) is str and i for i in ids):
            raise CorruptSnapshotError(str(path), f"header field {name!r} is not a list of ids")
        if len(set(ids)) != len(ids):
            raise CorruptSnapshotError(str(path), f"header field {name!r} repeats an id")
    if not isinstance(fields["header"], dict):
        raise CorruptSnapshotError(str(path), "the caller's header is not a map")
    try:
        membership = Membership(frozenset(voters), frozenset(learners), frozenset(promotable))
    except ValueError as exc:
        raise CorruptSnapshotError(str(path), f"bad membership: {exc}") from None
    meta = SnapshotMeta(index=index, term=term, membership=membership)
    return meta, fields["header"], pair_count


def _decode_records(
    path: Path, view: memoryview, start: int, end: int, pair_count: int
) -> dict[bytes, bytes]:
    """Decode the records in view[start:end], which must hold exactly `pair_count` pairs."""
    pairs: dict[bytes, bytes] = {}
    seen = 0
    pos = start
    while seen < pair_count:
        if pos + _RECORD_LENGTH.size > end:
            raise CorruptSnapshotError(
                str(path), f"records end after {seen} of {pair_count} pairs (offset {pos})"
            )
        (length,) = _RECORD_LENGTH.unpack_from(view, pos)
        pos += _RECORD_LENGTH.size
        if length > end - pos:
            raise CorruptSnapshotError(str(path), f"the record at offset {pos - 4} overruns")
        flat = _unpack(path, view[pos : pos + length], f"the record at offset {pos - 4}")
        if (
            not isinstance(flat, list)
            or not flat
            or len(flat) % 2
            or not all(type(item) is bytes for item in flat)
        ):
            raise CorruptSnapshotError(
                str(path), f"the record at offset {pos - 4} is not a list of byte pairs"
            )
        seen += len(flat) // 2
        if seen > pair_count:
            raise CorruptSnapshotError(str(path), f"more than the {pair_count} pairs announced")
        items = iter(flat)
        pairs.update(zip(items, items, strict=True))
        pos += length
    if pos != end:
        raise CorruptSnapshotError(str(path), f"{end - pos} stray bytes after the last record")
    if len(pairs) != pair_count:
        raise CorruptSnapshotError(str(path), f"{pair_count - len(pairs)} duplicate keys")
    return pairs


def _unpack(path: Path, raw: memoryview, what: str, *, strict_map_key: bool = True) -> Any:
    """msgpack-decode one object, turning every decoding failure into damage."""
    try:
        return msgpack.unpackb(raw, raw=False, strict_map_key=strict_map_key)
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        # ValueError covers ExtraData, FormatError, StackError and bad UTF-8 in a str.
        raise CorruptSnapshotError(str(path), f"{what} is not valid msgpack: {exc}") from None
