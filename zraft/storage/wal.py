"""The write-ahead log's on-disk format: frames, the items inside them, segment names.

Pure encoding and decoding over bytes; `zraft.storage.file` does the I/O.

Frame (all integers little-endian)::

    u32 length      payload length in bytes
    u32 crc         zlib.crc32 of (u64 file offset, u32 length, u8 type) then the payload
    u8  type        FRAME_SEGMENT_HEADER or FRAME_SAVE
    payload

The CRC covers the length and type, so a damaged header is caught like a damaged payload,
and it is seeded with the frame's own file offset: a frame is valid only where it was
written. That matters when recovery looks for valid frames after a bad one (to tell a torn
tail from mid-log corruption): a frame-shaped value inside an entry's opaque data never
validates at the position where it happens to sit.

A segment starts with one FRAME_SEGMENT_HEADER (magic, version, seq, base index, and the
hard state at the time the segment was started), followed by FRAME_SAVE frames. One save
frame holds one `save()` call: an optional TRUNCATE or RESET item (never both), then ENTRY
items, then an optional HARD_STATE item. Items::

    ENTRY       u8 1, u64 term, u64 index, u8 kind, u32 data length, data
    TRUNCATE    u8 2, u64 from_index          drop every entry with index >= from_index
    HARD_STATE  u8 3, u64 term, u64 commit, u16 vote length, vote (UTF-8; length 0 = None)
    RESET       u8 4, u64 index, u64 term     drop every entry; the log continues at
                                              index + 1 (a snapshot at index/term replaced it)

The entries after a RESET in the same frame start at index + 1. Every frame before a RESET
is dead: replay still checks it, but none of its entries survive, so compaction may delete
segments that hold only dead frames. A segment started after a RESET has base index + 1
(or later), so the rule "a segment's base is one past the end of the log before it" holds
across a RESET as everywhere else.

RESET (tag 4) was added without changing VERSION: a log that never held one reads exactly
as before, and an older build that meets one refuses the log as undecodable (it never
silently misreads it).
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass

from zraft.core.types import Entry, EntryKind, HardState
from zraft.storage.naming import pair_name, parse_pair_name

FRAME_SEGMENT_HEADER = 1
FRAME_SAVE = 2
_FRAME_TYPES = (FRAME_SEGMENT_HEADER, FRAME_SAVE)

_ITEM_ENTRY = 1
_ITEM_TRUNCATE = 2
_ITEM_HARD_STATE = 3
_ITEM_RESET = 4

MAGIC = b"ZRAFTWAL"
VERSION = 1

_FRAME_HEADER = struct.Struct("<IIB")  # length, crc, type
_CRC_PREFIX = struct.Struct("<QIB")  # offset, length, type: what the CRC covers first
_SEGMENT_HEADER = struct.Struct("<8sHQQ")  # magic, version, seq, base index
_ENTRY = struct.Struct("<BQQBI")
_TRUNCATE = struct.Struct("<BQ")
_HARD_STATE = struct.Struct("<BQQH")
_RESET = struct.Struct("<BQQ")

FRAME_HEADER_SIZE = _FRAME_HEADER.size
MAX_PAYLOAD = 0xFFFF_FFFF

_NAME_PREFIX = "wal-"
_NAME_SUFFIX = ".log"


@dataclass(frozen=True, slots=True)
class Frame:
    """A CRC-valid frame found at `offset`; it ends at `end` (the next frame's offset)."""

    offset: int
    end: int
    type: int
    payload: memoryview


@dataclass(frozen=True, slots=True)
class Truncate:
    """The TRUNCATE item: drop every entry with index >= `from_index`."""

    from_index: int


@dataclass(frozen=True, slots=True)
class Reset:
    """The RESET item: drop every entry; the log continues at `index` + 1.

    A follower saves it when it installs a snapshot (ending at `index`, `term`) that its
    leader sent: everything in its log is then superseded.
    """

    index: int
    term: int


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """The first frame of every segment."""

    seq: int
    base_index: int  # the index the next entry had when the segment was started
    hard_state: HardState | None  # the hard state then, so old segments can be deleted


def segment_name(seq: int, base_index: int) -> str:
    """File name of segment `seq`; sorting names sorts by `seq`."""
    return pair_name(_NAME_PREFIX, seq, base_index, _NAME_SUFFIX)


def parse_segment_name(name: str) -> tuple[int, int] | None:
    """(seq, base_index) from a segment file name, or None if it is not one."""
    return parse_pair_name(name, _NAME_PREFIX, _NAME_SUFFIX)


def _crc(offset: int, frame_type: int, payload: bytes | memoryview) -> int:
    prefix = _CRC_PREFIX.pack(offset, len(payload), frame_type)
    return zlib.crc32(payload, zlib.crc32(prefix))


def encode_frame(offset: int, frame_type: int, payload: bytes) -> bytes:
    """One frame carrying `payload`, to be written at file offset `offset`."""
    if len(payload) > MAX_PAYLOAD:
        raise ValueError(f"a frame holds at most {MAX_PAYLOAD} bytes, got {len(payload)}")
    header = _FRAME_HEADER.pack(len(payload), _crc(offset, frame_type, payload), frame_type)
    return header + payload


def read_frame(data: bytes | memoryview, offset: int, *, base: int = 0) -> Frame | None:
    """The valid frame at `offset` in `data`, or None if there is none there.

    None covers a short header, a short payload, an unknown type and a CRC mismatch.
    `base` is the file offset of data[0], for a buffer that holds part of a file.
    """
    end_of_header = offset + FRAME_HEADER_SIZE
    if end_of_header > len(data):
        return None
    length, crc, frame_type = _FRAME_HEADER.unpack_from(data, offset)
    end = end_of_header + length
    if frame_type not in _FRAME_TYPES or end > len(data):
        return None
    payload = memoryview(data)[end_of_header:end]
    if _crc(base + offset, frame_type, payload) != crc:
        return None
    return Frame(offset=offset, end=end, type=frame_type, payload=payload)


def find_frame_after(data: bytes, start: int) -> int | None:
    """Offset of the first valid frame at or after `start`, or None.

    Candidates are found by searching for the type byte (a C-speed `bytes.find`), so a
    tail of zeros or random bytes is ruled out quickly.
    """
    type_bytes = [bytes([frame_type]) for frame_type in _FRAME_TYPES]
    type_pos = start + FRAME_HEADER_SIZE - 1
    while True:
        hits = [hit for hit in (data.find(b, type_pos) for b in type_bytes) if hit >= 0]
        if not hits:
            return None
        type_pos = min(hits)
        candidate = type_pos - (FRAME_HEADER_SIZE - 1)
        if read_frame(data, candidate) is not None:
            return candidate
        type_pos += 1


def encode_segment_header(header: SegmentHeader) -> bytes:
    """Payload of a FRAME_SEGMENT_HEADER."""
    fixed = _SEGMENT_HEADER.pack(MAGIC, VERSION, header.seq, header.base_index)
    if header.hard_state is None:
        return fixed
    return fixed + _encode_hard_state(header.hard_state)


def decode_segment_header(payload: memoryview) -> SegmentHeader:
    """Parse a FRAME_SEGMENT_HEADER payload.

    Raises:
        ValueError: wrong magic or version, or malformed.
    """
    if len(payload) < _SEGMENT_HEADER.size:
        raise ValueError("segment header too short")
    magic, version, seq, base_index = _SEGMENT_HEADER.unpack_from(payload, 0)
    if magic != MAGIC:
        raise ValueError(f"bad magic {bytes(magic)!r}")
    if version != VERSION:
        raise ValueError(f"unsupported format version {version}")
    items = decode_items(payload[_SEGMENT_HEADER.size :])
    hard_state = items[0] if items else None
    if len(items) > 1 or not (hard_state is None or isinstance(hard_state, HardState)):
        raise ValueError("a segment header carries at most one hard state and nothing else")
    return SegmentHeader(seq=seq, base_index=base_index, hard_state=hard_state)


def encode_save(
    truncate_from: int | None,
    entries: Sequence[Entry],
    hard_state: HardState | None,
    *,
    reset: Reset | None = None,
) -> bytes:
    """Payload of a FRAME_SAVE: truncation or reset, then entries, then hard state.

    Raises:
        ValueError: both a truncation and a reset, a number out of range for its field, or
            a vote that is too long.
    """
    if reset is not None and truncate_from is not None:
        raise ValueError("a save holds a truncation or a reset, not both")
    parts: list[bytes] = []
    try:
        if reset is not None:
            parts.append(_RESET.pack(_ITEM_RESET, reset.index, reset.term))
        if truncate_from is not None:
            parts.append(_TRUNCATE.pack(_ITEM_TRUNCATE, truncate_from))
        for entry in entries:
            data = bytes(entry.data)
            parts.append(
                _ENTRY.pack(_ITEM_ENTRY, entry.term, entry.index, int(entry.kind), len(data))
            )
            parts.append(data)
    except struct.error as exc:
        raise ValueError(f"entry does not fit the log format: {exc}") from exc
    if hard_state is not None:
        parts.append(_encode_hard_state(hard_state))
    return b"".join(parts)


def _encode_hard_state(hard_state: HardState) -> bytes:
    vote = b"" if hard_state.voted_for is None else hard_state.voted_for.encode()
    if hard_state.voted_for == "":
        raise ValueError("voted_for must be None or a non-empty node id")
    try:
        fixed = _HARD_STATE.pack(_ITEM_HARD_STATE, hard_state.term, hard_state.commit, len(vote))
    except struct.error as exc:
        raise ValueError(f"hard state does not fit the log format: {exc}") from exc
    return fixed + vote


Item = Entry | Truncate | Reset | HardState


def decode_items(payload: memoryview) -> list[Item]:
    """The items of a FRAME_SAVE payload, in order.

    Raises:
        ValueError: an unknown item tag, an unknown entry kind, or an item overrunning the
            payload.
    """
    items: list[Item] = []
    pos = 0
    size = len(payload)
    while pos < size:
        tag = payload[pos]
        if tag == _ITEM_ENTRY:
            _check_room(pos + _ENTRY.size, size)
            _, term, index, kind, length = _ENTRY.unpack_from(payload, pos)
            pos += _ENTRY.size
            _check_room(pos + length, size)
            data = bytes(payload[pos : pos + length])
            pos += length
            items.append(Entry(term=term, index=index, kind=EntryKind(kind), data=data))
        elif tag == _ITEM_TRUNCATE:
            _check_room(pos + _TRUNCATE.size, size)
            items.append(Truncate(_TRUNCATE.unpack_from(payload, pos)[1]))
            pos += _TRUNCATE.size
        elif tag == _ITEM_RESET:
            _check_room(pos + _RESET.size, size)
            _, index, term = _RESET.unpack_from(payload, pos)
            items.append(Reset(index=index, term=term))
            pos += _RESET.size
        elif tag == _ITEM_HARD_STATE:
            _check_room(pos + _HARD_STATE.size, size)
            _, term, commit, length = _HARD_STATE.unpack_from(payload, pos)
            pos += _HARD_STATE.size
            _check_room(pos + length, size)
            vote = bytes(payload[pos : pos + length]).decode() if length else None
            pos += length
            items.append(HardState(term=term, voted_for=vote, commit=commit))
        else:
            raise ValueError(f"unknown item tag {tag} at payload offset {pos}")
    return items


def _check_room(needed: int, size: int) -> None:
    if needed > size:
        raise ValueError("item overruns its frame")
