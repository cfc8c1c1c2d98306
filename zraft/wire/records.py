"""A key's records as a snapshot file holds them: the state's longest-lived byte format
after the log's (`zraft.wire.entries`), with the same rule: a layout, once written,
is read by every later release.

A snapshot of the multi-version store (`zraft.state.machine`, state format 2) holds one
pair per key: the key, and the msgpack array ``[[value, create_revision, mod_revision,
version, lease], ...]`` of its records, oldest first (version 0: the tombstone of a
delete). Checking the values is the store's job (`MVCCStore.from_records`); this module
only turns the array into bytes and back.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from zraft.wire.codec import DecodeError, packb, unpack


def pack_records(records: Sequence[Sequence[Any]]) -> bytes:
    """The bytes of one key's records, each a `(value, create_revision, mod_revision,
    version, lease)` sequence, oldest first."""
    return packb(records)


def unpack_records(packed: Any) -> list[Any]:
    """The ``[[value, create, mod, version, lease], ...]`` array of `pack_records`.

    Raises:
        ValueError: `packed` is not an array (its elements are not checked here).
    """
    if type(packed) is not bytes:
        raise ValueError("a snapshot record must be bytes")
    try:
        records = unpack(packed, len(packed), len(packed), len(packed), 0)
    except DecodeError as exc:
        raise ValueError(f"a snapshot record does not decode: {exc.reason}") from exc
    if type(records) is not list:
        raise ValueError("a snapshot record must be an array")
    return records  # each element's shape is checked where it is read (from_records)
