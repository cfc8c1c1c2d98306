"""What every zraft byte format shares: msgpack with explicit limits, one `DecodeError`,
and the field checkers the three contracts (`peer`, `client`, `entries`) build on.

Rules it keeps (STYLE rule 9): a decoder validates the whole structure (types, ranges,
sizes) and raises `DecodeError`, and only `DecodeError`, for anything it does not accept.
Decoders catch msgpack's exceptions, `ValueError`, `TypeError` and `OverflowError`, and
nothing else; encoders trust their (local) input and may raise anything on misuse.
This module must not know any message, request or command: those are its users'.
"""

from __future__ import annotations

from typing import Any, NoReturn

import msgpack

MAX_NODE_ID_LEN = 64
"""Longest node id, in characters."""

MAX_CLIENT_ID_LEN = 256
"""Longest client session id, in characters."""


class DecodeError(ValueError):
    """Bytes that are not a valid frame of the expected kind.

    Attributes:
        reason: what was wrong, readable by a client or an operator.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TooLarge(DecodeError):
    """A client request whose key, value or frame exceeds the configured limits."""


def reject_ext(code: int, data: bytes) -> NoReturn:
    """msgpack `ext_hook` that refuses every extension type."""
    raise DecodeError(f"msgpack extension types are not accepted (type {code})")


def unpack(
    buf: bytes,
    max_bin: int,
    max_str: int,
    max_array: int,
    max_map: int,
    *,
    unique_keys: bool = False,
) -> Any:
    """msgpack.unpackb with explicit limits; every failure becomes DecodeError.

    `unique_keys` refuses a map that repeats a key (msgpack would keep the last one
    silently, PLATFORM.md §4b); client requests ask for it.
    """
    if type(buf) is not bytes:
        raise DecodeError("a frame must be bytes")
    try:
        return msgpack.unpackb(
            buf,
            raw=False,
            strict_map_key=True,
            max_bin_len=max_bin,
            max_str_len=max_str,
            max_array_len=max_array,
            max_map_len=max_map,
            ext_hook=reject_ext,
            object_pairs_hook=_unique_keys if unique_keys else None,
        )
    except DecodeError:
        raise
    except (msgpack.UnpackException, ValueError, TypeError, OverflowError) as exc:
        raise DecodeError(f"not valid msgpack: {exc}") from exc


def _unique_keys(pairs: list[tuple[Any, Any]]) -> dict[Any, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise DecodeError("duplicate keys in a map")
    return out


def packb(obj: Any) -> bytes:
    """msgpack with bytes kept as bin (so they come back as bytes)."""
    return msgpack.packb(obj, use_bin_type=True)  # type: ignore[no-any-return]


def type_name(value: object) -> str:
    """The type's name of an untrusted value, for an error message."""
    return type(value).__name__


def describe(value: object) -> str:
    """A short description of an untrusted value for an error message.

    Never the repr of a container: a deeply nested one would recurse without bound.
    """
    if isinstance(value, str | bytes):
        return repr(value[:20]) + ("..." if len(value) > 20 else "")
    if value is None or type(value) in (bool, int, float):
        return repr(value)
    return type_name(value)


# --- field checkers -------------------------------------------------------------------
# Each takes the raw value and a label for the error message and returns the typed value.
# `type(x) is int` on purpose: bool is an int subclass and must not pass as one.


def uint(value: Any, label: str) -> int:
    """An int >= 0."""
    if type(value) is not int or value < 0:
        raise DecodeError(f"{label}: expected an int >= 0, got {describe(value)}")
    return value


def boolean(value: Any, label: str) -> bool:
    """A bool (not an int)."""
    if type(value) is not bool:
        raise DecodeError(f"{label}: expected a bool, got {type_name(value)}")
    return value


def blob(value: Any, label: str) -> bytes:
    """bytes (msgpack bin)."""
    if type(value) is not bytes:
        raise DecodeError(f"{label}: expected bytes, got {type_name(value)}")
    return value


def node_id(value: Any, label: str) -> str:
    """A node id: a str of 1..MAX_NODE_ID_LEN characters."""
    if type(value) is not str or not 0 < len(value) <= MAX_NODE_ID_LEN:
        raise DecodeError(
            f"{label}: expected a node id (str of 1..{MAX_NODE_ID_LEN} chars), "
            f"got {type_name(value)}"
        )
    return value


def short_str(value: Any, name: str, limit: int) -> str:
    """A non-empty str of at most `limit` characters (a request field named `name`)."""
    if type(value) is not str or not 0 < len(value) <= limit:
        raise DecodeError(f"field {name!r} must be a non-empty str of at most {limit} chars")
    return value
