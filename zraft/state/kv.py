"""The key-value state machine: commands, results, and `KVStore` with client sessions.

This module owns what a committed log entry *means*. It is pure (layer L0): no I/O, no
clock, no randomness, no msgpack; `zraft.wire` turns commands into bytes and back.

Rules it keeps:

- **Determinism.** `KVStore.apply` depends only on the store's state and its arguments, so
  every replica that applies the same entries in the same order ends in the same state and
  hands back the same results. That includes the session table and its eviction.
- **Indexes only grow.** `apply` and `skip` take the log index of the entry; it must be
  strictly greater than `applied_index`, or `ValueError` is raised (a driver bug).
- **Exactly-once writes with sessions** (Raft thesis §6.3). A `Command` may carry a client
  session `(client, seq)`. The store remembers, per client, the highest seq it applied and
  the `Result` it produced:
  - the same seq again (a client retry) returns that first `Result` unchanged and does not
    apply the operation a second time;
  - a lower seq is stale: it is answered with a `bad_request` error and not applied;
  - a higher seq is applied normally and becomes the remembered one.
  The table holds at most `max_sessions` clients. Adding one more evicts the least recently
  used client (recency = the last time a command of that client was applied or answered as
  a duplicate). Because recency is driven only by the applied log, every replica evicts the
  same client at the same index, provided all replicas use the same `max_sessions`. A
  retry from an evicted client is applied again: the usual bound of the thesis' scheme.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

DEFAULT_MAX_SESSIONS = 10_000
"""Default bound on the session table; must be the same on every replica."""

CAS_FAILED = "cas_failed"
"""Error code of a compare-and-swap whose expected value did not match."""

BAD_REQUEST = "bad_request"
"""Error code of a stale session request (a seq lower than the last one applied)."""


@dataclass(frozen=True, slots=True)
class Put:
    """Set `key` to `value`."""

    key: bytes
    value: bytes


@dataclass(frozen=True, slots=True)
class Delete:
    """Remove `key`; deleting an absent key succeeds (idempotent)."""

    key: bytes


@dataclass(frozen=True, slots=True)
class Cas:
    """Compare-and-swap: set `key` to `value` only if its current value is `expected`.

    `expected=None` means the key must be absent (create-if-absent).
    """

    key: bytes
    expected: bytes | None
    value: bytes


Op = Put | Delete | Cas
"""Every operation a log entry can carry."""


@dataclass(frozen=True, slots=True)
class Command:
    """One state machine command: an operation plus an optional client session.

    Args:
        op: the operation.
        client: the session id, or None for a write without exactly-once protection.
        seq: the client's sequence number for this write; set exactly when `client` is.

    Raises:
        ValueError: `client` and `seq` are not both set or both None, `client` is empty,
            or `seq` is negative.
    """

    op: Op
    client: str | None = None
    seq: int | None = None

    def __post_init__(self) -> None:
        if (self.client is None) != (self.seq is None):
            raise ValueError("client and seq must be given together")
        if self.client is not None and not self.client:
            raise ValueError("client must be a non-empty string")
        if self.seq is not None and self.seq < 0:
            raise ValueError("seq must be >= 0")


@dataclass(frozen=True, slots=True)
class Result:
    """What applying a command produced.

    Args:
        ok: the operation took effect (for a duplicate: the first attempt did).
        index: the log index at which the command was applied (for a duplicate: the index
            of the first attempt).
        value: for a failed cas, the current value (None if the key is absent); else None.
        found: whether the key was present before the operation (None for a stale request).
        error: None, or an error code: `cas_failed` or `bad_request`.
        message: human-readable text for `error`, None when `error` is None.
    """

    ok: bool
    index: int
    value: bytes | None = None
    found: bool | None = None
    error: str | None = None
    message: str | None = None


class KVStore:
    """The replicated dictionary of bytes to bytes, with client sessions.

    Args:
        max_sessions: the bound on the session table; must be equal on all replicas so
            that eviction stays deterministic.
    """

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self._max_sessions = max_sessions
        self._data: dict[bytes, bytes] = {}
        # client -> (last applied seq, its result); order = least recently used first.
        self._sessions: OrderedDict[str, tuple[int, Result]] = OrderedDict()
        # Invariant: only grows; every apply/skip uses an index above it.
        self._applied_index = 0

    # --- read-only views ----------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        """The index of the last entry applied or skipped (0 before any)."""
        return self._applied_index

    @property
    def session_count(self) -> int:
        """How many client sessions the table holds."""
        return len(self._sessions)

    def __len__(self) -> int:
        """The number of keys stored."""
        return len(self._data)

    def get(self, key: bytes) -> bytes | None:
        """Return the value of `key`, or None if it is absent."""
        return self._data.get(key)

    def has_session(self, client: str) -> bool:
        """Whether `client` currently has a session in the table."""
        return client in self._sessions

    # --- applying the log ---------------------------------------------------------------

    def apply(self, index: int, command: Command) -> Result:
        """Apply the command of the committed entry at `index` and return its result.

        Args:
            index: the entry's log index; strictly greater than `applied_index`.
            command: the decoded command.

        Returns:
            The result; for a duplicate session request, the first result unchanged.

        Raises:
            ValueError: `index` is not above `applied_index`.
            TypeError: `command.op` is not a known operation (a programming error).
        """
        self._advance(index)
        client, seq = command.client, command.seq
        if client is None or seq is None:
            return self._apply_op(index, command.op)
        session = self._sessions.get(client)
        if session is not None:
            last_seq, last_result = session
            if seq == last_seq:
                # A retry of a write that already committed: answer, never re-apply.
                self._sessions.move_to_end(client)
                return last_result
            if seq < last_seq:
                # Not refreshed: a stale request is no sign the client is still active.
                return Result(
                    ok=False,
                    index=index,
                    error=BAD_REQUEST,
                    message=(
                        f"stale request: seq {seq} of client {client!r} is below the last "
                        f"applied seq {last_seq}; use a new, higher seq"
                    ),
                )
        result = self._apply_op(index, command.op)
        self._sessions[client] = (seq, result)
        self._sessions.move_to_end(client)
        while len(self._sessions) > self._max_sessions:
            self._sessions.popitem(last=False)
        return result

    def skip(self, index: int) -> None:
        """Advance `applied_index` past an entry that carries no command (NOOP, CONFIG).

        Raises:
            ValueError: `index` is not above `applied_index`.
        """
        self._advance(index)

    def _advance(self, index: int) -> None:
        if index <= self._applied_index:
            raise ValueError(
                f"apply out of order: index {index} is not above applied index "
                f"{self._applied_index}"
            )
        self._applied_index = index

    def _apply_op(self, index: int, op: Op) -> Result:
        data = self._data
        match op:
            case Put(key=key, value=value):
                found = key in data
                data[key] = value
                return Result(ok=True, index=index, found=found)
            case Delete(key=key):
                found = data.pop(key, None) is not None
                return Result(ok=True, index=index, found=found)
            case Cas(key=key, expected=expected, value=value):
                current = data.get(key)
                if current != expected:
                    return Result(
                        ok=False,
                        index=index,
                        value=current,
                        found=current is not None,
                        error=CAS_FAILED,
                        message=("key is present" if expected is None else "current value differs"),
                    )
                data[key] = value
                return Result(ok=True, index=index, found=current is not None)
        raise TypeError(f"unknown operation: {op!r}")

    # --- snapshots ----------------------------------------------------------------------

    def snapshot_items(self) -> dict[str, Any]:
        """Export the whole state as plain values (dict, list, int, str, bytes, bool, None).

        The shape is ``{"applied_index": int, "data": [[key, value], ...] sorted by key,
        "sessions": [[client, seq, [ok, index, value, found, error, message]], ...]}``
        with sessions least recently used first. Equal states export equal values.
        """
        return {
            "applied_index": self._applied_index,
            "data": [[key, self._data[key]] for key in sorted(self._data)],
            "sessions": [
                [client, seq, _result_to_list(result)]
                for client, (seq, result) in self._sessions.items()
            ],
        }

    def snapshot_view(self) -> SnapshotView:
        """A copy of the state to write a snapshot from while the store moves on.

        Costs one shallow dict copy (C speed: a few ms for 100k keys) and a walk of the
        bounded session table; keys and values are immutable bytes, so nothing is deep
        copied. The node writes the copy out in slices over later loop turns.
        """
        sessions = [
            [client, seq, _result_to_list(result)]
            for client, (seq, result) in self._sessions.items()
        ]
        return SnapshotView(self._applied_index, dict(self._data), sessions)

    def restore(self, items: dict[str, Any]) -> None:
        """Replace the whole state with one exported by `snapshot_items`.

        Raises:
            ValueError: `items` is not a valid export.
        """
        try:
            pairs = items["data"]
            data = dict(pairs) if type(pairs) is list else None
            if data is None or len(data) != len(pairs):
                raise ValueError("data must be a list of distinct [key, value] pairs")
            self.restore_snapshot(SnapshotView(items["applied_index"], data, items["sessions"]))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a kv snapshot: {exc!r}") from exc

    def restore_snapshot(self, view: SnapshotView) -> None:
        """Replace the whole state with `view` (as read back from a snapshot file).

        If it holds more sessions than `max_sessions`, the least recently used ones are
        dropped. The state is replaced only if `view` is entirely valid; `view.data` is
        taken over, not copied.

        Raises:
            ValueError: `view` is not a valid state.
        """
        applied_index = view.applied_index
        if type(applied_index) is not int or applied_index < 0:
            raise ValueError("applied_index must be an int >= 0")
        try:
            for key, value in view.data.items():
                if type(key) is not bytes or type(value) is not bytes:
                    raise ValueError("data keys and values must be bytes")
            sessions: OrderedDict[str, tuple[int, Result]] = OrderedDict()
            for client, seq, result in view.sessions:
                if type(client) is not str or type(seq) is not int:
                    raise ValueError("a session needs a str client and an int seq")
                sessions[client] = (seq, _result_from_list(result))
        except (TypeError, AttributeError) as exc:
            raise ValueError(f"not a kv snapshot: {exc!r}") from exc
        while len(sessions) > self._max_sessions:
            sessions.popitem(last=False)
        self._applied_index = applied_index
        self._data = view.data
        self._sessions = sessions


@dataclass(frozen=True, slots=True)
class SnapshotView:
    """The state machine's whole state at `applied_index`, as a snapshot holds it.

    `sessions` is ``[[client, seq, [ok, index, value, found, error, message]], ...]``,
    least recently used first (`zraft.state.machine` keeps its own shape and `header`).
    """

    applied_index: int
    data: dict[bytes, bytes]
    sessions: list[Any]
    header: dict[str, Any] = field(default_factory=dict)
    """What the state's model adds to a snapshot's header (empty for this module's)."""


def _result_to_list(result: Result) -> list[Any]:
    return [result.ok, result.index, result.value, result.found, result.error, result.message]


def _result_from_list(raw: Any) -> Result:
    ok, index, value, found, error, message = raw
    if type(ok) is not bool or type(index) is not int:
        raise ValueError("a session result needs a bool ok and an int index")
    return Result(ok=ok, index=index, value=value, found=found, error=error, message=message)
