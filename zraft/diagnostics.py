"""Diagnostics: the node-level event vocabulary and the JSON-lines logger of one node.

This module owns the rendering of events (DESIGN.md §3): every line of `logs/<node>.jsonl`
is one JSON object that starts with `timestamp` (ISO 8601, UTC, fixed width so that a
string sort is a time sort), `level`, `event` and `node`, followed by the event's fields.

Rules it keeps (STYLE.md B6):

- Event names come from a closed vocabulary: the core's `EventName` plus `NodeEvent`
  below. `LEVELS` gives each name its one level; `emit` and `emit_node` use it, so callers
  never pick a level by hand.
- A vocabulary check sits first in the processor chain. With `strict=True` (tests) it
  raises `VocabularyError` on an unknown name, on a name logged at the wrong level, and on
  fields that differ from the documented set. Without it (production) an unknown name is
  renamed to `unknown_event` and the original is kept under `original_event`; nothing
  else is checked, so a bad call costs one log line, never the node.
- No global state: `configure` never calls `structlog.configure()`. Each call builds its
  own logger with its own file, so several nodes in one process keep separate logs.
- Each line is written with ONE unbuffered `write()` to a file opened in append mode, so
  every line that was logged survives a SIGKILL and lines are never interleaved.
- Calls below the configured level are no-ops of the filtering bound logger: the
  processors do not run, so per-message debug events cost nothing at `info`.

orjson renders when it is importable (about twice as fast, PLATFORM.md §5); otherwise the
stdlib `json` module renders the same compact objects.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import structlog
from structlog.typing import FilteringBoundLogger

from zraft.core.events import REQUIRED_FIELDS, Event, EventName

try:  # optional accelerator; the stdlib fallback writes identical objects
    import orjson as _orjson
except ImportError:  # pragma: no cover - depends on the environment
    _orjson = None


class NodeEvent(StrEnum):
    """Events the node emits (the core's events are `zraft.core.events.EventName`)."""

    NODE_STARTED = "node_started"  # after storage is restored, before the first poll
    NODE_STOPPING = "node_stopping"  # the loop exits
    LOG_TAIL_REPAIRED = "log_tail_repaired"  # a torn tail is cut off on open
    SNAPSHOT_INSTALLED = "snapshot_installed"  # a snapshot replaced the state machine
    SNAPSHOT_SAVED = "snapshot_saved"  # the node wrote a snapshot of its own state
    SNAPSHOT_LOADED = "snapshot_loaded"  # the state machine was rebuilt from one at start
    SNAPSHOT_REFUSED = "snapshot_refused"  # a damaged snapshot file or transfer refused
    SNAPSHOT_SENT = "snapshot_sent"  # a leader's transfer to a follower ended
    LOG_COMPACTED = "log_compacted"  # entries up to a snapshot were discarded
    MEMBER_ADDED = "member_added"  # a configuration change is applied
    MEMBER_REMOVED = "member_removed"  # a configuration change is applied
    BAD_FRAME = "bad_frame"  # undecodable or invalid input dropped
    LOOP_STALLED = "loop_stalled"  # the tick schedule ran late past a threshold
    FATAL_ERROR = "fatal_error"  # right before a non-zero exit
    CLIENT_REPLIED = "client_replied"  # a client got its answer (debug)
    STORAGE_SYNCED = "storage_synced"  # one Ready was made durable (debug)
    PEER_SEND_DROPPED = "peer_send_dropped"  # a peer's send queue was full
    AUTH_DENIED = "auth_denied"  # the ZAP handler refused a connection (rate-limited)
    AUTH_ADMITTED = "auth_admitted"  # the ZAP handler admitted a connection (debug)
    SECURITY_DISABLED = "security_disabled"  # security = "none": logged at every start
    LEASE_EXPIRED = "lease_expired"  # an expiry entry revoked a lease (every node applies it)


UNKNOWN_EVENT = "unknown_event"
"""The name a non-strict logger writes instead of a name outside the vocabulary."""

LEVELS: dict[str, str] = {
    EventName.ROLE_CHANGED: "info",
    EventName.TERM_CHANGED: "info",
    EventName.ELECTION_STARTED: "info",
    EventName.VOTE_GRANTED: "info",
    EventName.VOTE_DENIED: "debug",
    EventName.LEADER_ELECTED: "info",
    EventName.LEADER_CHANGED: "info",
    EventName.LOG_TRUNCATED: "warning",
    EventName.COMMIT_ADVANCED: "debug",
    NodeEvent.NODE_STARTED: "info",
    NodeEvent.NODE_STOPPING: "info",
    NodeEvent.LOG_TAIL_REPAIRED: "warning",
    NodeEvent.SNAPSHOT_INSTALLED: "info",
    NodeEvent.SNAPSHOT_SAVED: "info",
    NodeEvent.SNAPSHOT_LOADED: "info",
    NodeEvent.SNAPSHOT_REFUSED: "warning",
    NodeEvent.SNAPSHOT_SENT: "info",
    NodeEvent.LOG_COMPACTED: "info",
    NodeEvent.MEMBER_ADDED: "info",
    NodeEvent.MEMBER_REMOVED: "info",
    NodeEvent.BAD_FRAME: "warning",
    NodeEvent.LOOP_STALLED: "warning",
    NodeEvent.FATAL_ERROR: "critical",
    NodeEvent.CLIENT_REPLIED: "debug",
    NodeEvent.STORAGE_SYNCED: "debug",
    NodeEvent.PEER_SEND_DROPPED: "warning",
    NodeEvent.AUTH_DENIED: "warning",
    NodeEvent.AUTH_ADMITTED: "debug",
    NodeEvent.SECURITY_DISABLED: "warning",
    NodeEvent.LEASE_EXPIRED: "info",
}
"""The level of every event name in the vocabulary (DESIGN.md §3)."""

FIELDS: dict[str, frozenset[str] | None] = {
    **REQUIRED_FIELDS,
    NodeEvent.NODE_STARTED: frozenset({"peers", "term", "last_index", "commit_index", "version"}),
    NodeEvent.NODE_STOPPING: frozenset({"reason"}),
    NodeEvent.LOG_TAIL_REPAIRED: frozenset({"dropped_bytes", "last_index"}),
    NodeEvent.SNAPSHOT_INSTALLED: frozenset({"index", "term", "size_bytes"}),
    NodeEvent.SNAPSHOT_SAVED: frozenset(
        {"index", "term", "size_bytes", "pairs", "copy_ms", "max_slice_ms", "total_ms"}
    ),
    NodeEvent.SNAPSHOT_LOADED: frozenset({"index", "term", "size_bytes", "duration_ms"}),
    NodeEvent.SNAPSHOT_REFUSED: frozenset({"path", "reason"}),
    NodeEvent.SNAPSHOT_SENT: frozenset(
        {"peer", "index", "size_bytes", "duration_ms", "delivered", "reason"}
    ),
    NodeEvent.LOG_COMPACTED: frozenset({"index", "term", "size_bytes", "first_index"}),
    NodeEvent.MEMBER_ADDED: frozenset({"member", "index", "role"}),
    NodeEvent.MEMBER_REMOVED: frozenset({"member", "index"}),
    NodeEvent.BAD_FRAME: frozenset({"source", "sender", "reason", "suppressed"}),
    NodeEvent.LOOP_STALLED: frozenset({"lag_ms"}),
    NodeEvent.FATAL_ERROR: frozenset({"kind", "exception"}),
    NodeEvent.AUTH_DENIED: frozenset(
        {"source", "address", "key", "mechanism", "reason", "suppressed"}
    ),
    NodeEvent.AUTH_ADMITTED: frozenset(
        {"source", "address", "key", "mechanism", "user", "suppressed"}
    ),
    NodeEvent.SECURITY_DISABLED: frozenset({"config"}),
    NodeEvent.LEASE_EXPIRED: frozenset({"lease", "keys"}),
    # Per-message debug events have no fixed field set (yet): None means "not checked".
    NodeEvent.CLIENT_REPLIED: None,
    NodeEvent.STORAGE_SYNCED: None,
    NodeEvent.PEER_SEND_DROPPED: None,
}
"""The exact fields of each event, besides `event` and the bound `node` (strict check)."""

_LEVEL_NAMES = ("debug", "info", "warning", "error", "critical")
# What structlog passes as method name, mapped to the level we write.
_METHOD_LEVELS = {"warn": "warning", "exception": "error", "fatal": "critical"}
_ENVELOPE = frozenset({"event", "node"})


class VocabularyError(ValueError):
    """A strict logger was asked to log something outside the event vocabulary."""


def configure(
    node_id: str,
    path: Path | str | IO[bytes] | None,
    level: str = "info",
    *,
    strict: bool = False,
) -> FilteringBoundLogger:
    """Build the logger of one node: one JSON object per line, `node` bound.

    Args:
        node_id: bound as the `node` field of every line.
        path: the JSONL file (parent directories are created; opened in append mode,
            unbuffered), or an already open binary stream (left open by `close`), or None
            for standard output.
        level: the lowest level written: debug, info, warning, error or critical.
            Calls below it are no-ops.
        strict: raise `VocabularyError` on an unknown event name, a wrong level or wrong
            fields (tests). Otherwise unknown names become `unknown_event`.

    Returns:
        A structlog filtering bound logger. Prefer `emit`/`emit_node` over its level
        methods; call `close(logger)` when the node stops.

    Raises:
        ValueError: `level` is not one of the names above.
    """
    if level not in _LEVEL_NAMES:
        raise ValueError(f"log level must be one of {', '.join(_LEVEL_NAMES)}, got {level!r}")
    if path is None:
        # A raw writer on fd 1; closefd=False keeps stdout open when close() closes the writer.
        sink = _LineSink(open(1, "wb", buffering=0, closefd=False), owned=True)  # noqa: SIM115
    elif isinstance(path, str | Path):
        file_path = Path(path)
        file_path.parent.mkdir(parents=True, exist_ok=True)
        sink = _LineSink(open(file_path, "ab", buffering=0), owned=True)  # noqa: SIM115
    else:
        sink = _LineSink(path, owned=False)
    processors = [
        structlog.processors.format_exc_info,  # exc_info=True -> the `exception` field
        _VocabularyCheck(strict),
        _envelope,
        _renderer(),
    ]
    return structlog.wrap_logger(
        sink,
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(level),
        # A plain dict context: wrap_logger would otherwise read the global default.
        context_class=dict,
    ).bind(node=node_id)


def emit(log: FilteringBoundLogger, event: Event) -> None:
    """Log one core event at its level from `LEVELS`."""
    getattr(log, LEVELS[event.name])(event.name.value, **event.fields)


def emit_node(log: FilteringBoundLogger, name: NodeEvent, **fields: Any) -> None:
    """Log one node event at its level from `LEVELS`, e.g. ``emit_node(log, NodeEvent.BAD_FRAME,
    source="peer", sender="n2", reason="bad_tag")``."""
    getattr(log, LEVELS[name])(name.value, **fields)


def close(log: FilteringBoundLogger) -> None:
    """Close the file behind a logger from `configure` (a no-op for streams it did not open).

    Logging through `log` afterwards raises `ValueError` (I/O on a closed file).
    """
    # structlog documents `_logger` (the wrapped logger) as readable by wrapper users.
    sink = log._logger
    if isinstance(sink, _LineSink):
        sink.close()


class _LineSink:
    """The wrapped logger: writes each rendered event as one line in ONE `write()` call."""

    __slots__ = ("_file", "_owned")

    def __init__(self, file: IO[bytes], *, owned: bool) -> None:
        self._file = file
        self._owned = owned

    def msg(self, message: bytes | str) -> None:
        """Write one rendered event and its newline."""
        if isinstance(message, str):
            message = message.encode()
        # One write of the whole line to an O_APPEND, unbuffered file: the kernel holds the
        # line as soon as this returns, so a SIGKILL cannot leave it in a Python buffer.
        self._file.write(message + b"\n")

    # structlog calls the wrapped logger's method named after the level.
    debug = info = warning = warn = error = exception = critical = fatal = msg

    def close(self) -> None:
        """Close the file if this sink opened it."""
        if self._owned:
            self._file.close()


class _VocabularyCheck:
    """Processor: keep the event vocabulary closed (STYLE.md B6 rule 6)."""

    __slots__ = ("_strict",)

    def __init__(self, strict: bool) -> None:
        self._strict = strict

    def __call__(self, logger: Any, method_name: str, event_dict: dict[str, Any]) -> Any:
        """Check (strict) or repair (lenient) one event before it is rendered."""
        name = event_dict.get("event")
        if name in LEVELS:
            if self._strict:
                _check_level_and_fields(name, method_name, event_dict)
            return event_dict
        if self._strict:
            raise VocabularyError(f"unknown event name {name!r}: add it to zraft.diagnostics")
        event_dict["original_event"] = name
        event_dict["event"] = UNKNOWN_EVENT
        return event_dict


def _check_level_and_fields(name: str, method_name: str, event_dict: Mapping[str, Any]) -> None:
    """Raise VocabularyError unless `name` is logged at its level with its exact fields."""
    written = _METHOD_LEVELS.get(method_name, method_name)
    if written != LEVELS[name]:
        raise VocabularyError(f"event {name!r} is {LEVELS[name]}, logged as {written}")
    expected = FIELDS[name]
    if expected is not None:
        got = event_dict.keys() - _ENVELOPE
        if got != expected:
            raise VocabularyError(
                f"event {name!r} needs fields {sorted(expected)}, got {sorted(got)}"
            )


def _envelope(logger: Any, method_name: str, event_dict: dict[str, Any]) -> dict[str, Any]:
    """Processor: put timestamp, level, event and node first, then the event's fields."""
    # isoformat with a fixed timespec keeps the width constant (a plain isoformat() drops
    # the fraction when it is zero), so sorting the strings sorts by time.
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="microseconds")
    ordered = {
        "timestamp": now[:-6] + "Z",  # "+00:00" -> "Z"
        "level": _METHOD_LEVELS.get(method_name, method_name),
        "event": event_dict.pop("event", None),
        "node": event_dict.pop("node", None),
    }
    ordered.update(event_dict)
    return ordered


def _json_default(value: Any) -> Any:
    """Render values JSON has no type for: sets sorted, bytes as text, the rest by str()."""
    if isinstance(value, set | frozenset):
        try:
            return sorted(value)
        except TypeError:
            return list(value)
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "backslashreplace")
    return str(value)


def _renderer() -> structlog.processors.JSONRenderer:
    """The last processor: compact JSON as bytes (orjson) or str (stdlib json)."""
    if _orjson is not None:
        return structlog.processors.JSONRenderer(serializer=_orjson.dumps, default=_json_default)
    return structlog.processors.JSONRenderer(separators=(",", ":"), default=_json_default)
