"""File names that carry two numbers: ``<prefix><a:016x>-<b:016x><suffix>``.

WAL segments (`wal-<seq>-<base index>.log`) and snapshot files
(`snap-<index>-<term>.snap`) both use it: fixed-width hex, so sorting the names sorts by
the first number, and a name either parses exactly or is not one of ours.
"""

from __future__ import annotations


def pair_name(prefix: str, first: int, second: int, suffix: str) -> str:
    """The file name holding `first` and `second`."""
    return f"{prefix}{first:016x}-{second:016x}{suffix}"


def parse_pair_name(name: str, prefix: str, suffix: str) -> tuple[int, int] | None:
    """The two numbers of a name made by `pair_name`, or None if `name` is not one."""
    if not (name.startswith(prefix) and name.endswith(suffix)):
        return None
    parts = name[len(prefix) : len(name) - len(suffix)].split("-")
    if len(parts) != 2 or any(len(part) != 16 for part in parts):
        return None
    try:
        return int(parts[0], 16), int(parts[1], 16)
    except ValueError:
        return None
