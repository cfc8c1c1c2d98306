"""Read the nodes' JSON-lines event logs and wait on them (a test helper, not a test file).

Tests count events by name and exact field values, never by grepping text (STYLE.md B7):

    events = read_events(tmp_path / "logs")
    assert count(events, "leader_elected") == 1
    wait_for(lambda: count(read_events(logs), "leader_elected") >= 1, timeout=5,
             describe=describe_logs(logs))

A log may end in a partial line (a node killed mid-write, or a read racing a write); such
lines, and any other line that is not a JSON object, are skipped.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from zraft.testing import cluster

T = TypeVar("T")
Sources = str | Path | Iterable[str | Path]

_MISSING = object()
_ENVELOPE = ("timestamp", "level", "event", "node")


def read_events(sources: Sources) -> list[dict[str, Any]]:
    """Parse JSONL logs into event dicts.

    Args:
        sources: a `.jsonl` file, a directory (all its `*.jsonl` files, sorted by name), or
            an iterable of files and directories. Missing files are skipped, so a poll may
            start before a node has written anything.

    Returns:
        The events file by file, each file in write order.
    """
    events: list[dict[str, Any]] = []
    for path in _files(sources):
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            continue
        for line in data.splitlines():
            try:
                event = json.loads(line)
            except ValueError:  # a torn last line (JSONDecodeError or bad UTF-8)
                continue
            if isinstance(event, dict):
                events.append(event)
    return events


def _files(sources: Sources) -> list[Path]:
    """Expand `sources` into the files to read."""
    items = [sources] if isinstance(sources, str | Path) else list(sources)
    files: list[Path] = []
    for item in items:
        path = Path(item)
        files.extend(sorted(path.glob("*.jsonl")) if path.is_dir() else [path])
    return files


def _matches(event: dict[str, Any], name: str, fields: dict[str, Any]) -> bool:
    """True if `event` is called `name` and has every field with exactly the given value."""
    if event.get("event") != name:
        return False
    return all(event.get(key, _MISSING) == value for key, value in fields.items())


def select(events: Iterable[dict[str, Any]], name: str, **fields: Any) -> list[dict[str, Any]]:
    """The events called `name` whose fields equal `fields` (`leader=None` needs a null)."""
    return [e for e in events if _matches(e, name, fields)]


def count(events: Iterable[dict[str, Any]], name: str, **fields: Any) -> int:
    """How many events `select` would return, e.g. ``count(events, "leader_elected", term=3)``."""
    return sum(1 for e in events if _matches(e, name, fields))


def tail(events: list[dict[str, Any]], n: int = 20) -> str:
    """The last `n` events as compact lines: ``03:27:53.650 n2 role_changed term=3 ...``."""
    lines = []
    for event in events[-n:]:
        clock = str(event.get("timestamp", ""))[11:23]  # HH:MM:SS.mmm of an ISO timestamp
        extra = " ".join(f"{k}={v}" for k, v in event.items() if k not in _ENVELOPE)
        lines.append(f"{clock} {event.get('node')} {event.get('event')} {extra}".rstrip())
    return "\n".join(lines) if lines else "(no events)"


def describe_logs(sources: Sources, n: int = 20) -> Callable[[], str]:
    """A `describe` callback for `wait_for`: the last `n` events found in `sources`."""

    def describe() -> str:
        return f"last {n} events:\n{tail(read_events(sources), n)}"

    return describe


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    interval: float = 0.03,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that.

    The predicate is called at least once, and once more at the deadline, so a slow
    machine does not lose the last chance.

    Raises:
        AssertionError: the deadline passed; the message holds the last value seen and
            `describe()` (for example the last events of the logs).
    """
    # The harness's wait (zraft/testing/cluster.py), under this module's long-standing name.
    return cluster.wait_for(
        predicate, timeout, what="condition", interval=interval, describe=describe
    )
