"""Client sessions: exactly-once writes (Raft thesis §6.3), as part of the replicated state.

A write may carry a session `(client, seq)`. The table remembers, per client, the highest
seq applied and the reply it produced:

- the same seq again (a client retry) is answered with that first reply, marked
  `replayed`, and the write is not applied a second time;
- a lower seq is stale: answered `bad_request`, not applied;
- a higher seq is applied and becomes the remembered one.

The table holds at most `max_sessions` clients; one more evicts the least recently used
(recency = the last time a write of that client was applied or answered as a duplicate).
Recency follows the applied log only, so every replica with the same `max_sessions`
evicts the same client at the same index. A retry from an evicted client is applied
again: the usual bound of the thesis' scheme.

Replies are plain values (maps, lists, bytes, ints, str, bool, None) so they go into
snapshots as they are. Pure: no I/O, no clock.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

DEFAULT_MAX_SESSIONS = 10_000
"""Default bound on the session table; must be the same on every replica."""

Reply = Mapping[str, Any]
"""The reply fields a write produced (`zraft.state.machine.ReplyFields`)."""


class SessionTable:
    """The clients' last writes and their replies (see the module doc).

    Args:
        max_sessions: the bound; equal on all replicas so that eviction is deterministic.
    """

    def __init__(self, max_sessions: int = DEFAULT_MAX_SESSIONS) -> None:
        if max_sessions < 1:
            raise ValueError("max_sessions must be >= 1")
        self._max = max_sessions
        # client -> (last applied seq, its reply); least recently used first.
        self._table: OrderedDict[str, tuple[int, Reply]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def __contains__(self, client: object) -> bool:
        return client in self._table

    def answered(self, client: str, seq: int) -> Reply | None:
        """The reply to give instead of applying (client, seq): the first reply of a
        retry, a `bad_request` for a stale seq; None when the write is new."""
        session = self._table.get(client)
        if session is None:
            return None
        last_seq, last_reply = session
        if seq == last_seq:
            self._table.move_to_end(client)  # a retry: the client is active
            return {**last_reply, "replayed": True}
        if seq < last_seq:
            # Not refreshed: a stale request is no sign the client is still active.
            return {
                "ok": False,
                "error": "bad_request",
                "message": (
                    f"stale request: seq {seq} of client {client!r} is below the last "
                    f"applied seq {last_seq}; use a new, higher seq"
                ),
            }
        return None

    def applied(self, client: str, seq: int) -> bool:
        """Whether (client, seq) is not new: a retry or a stale seq (`answered` will not
        be None). Changes nothing (recency follows the applied log only)."""
        session = self._table.get(client)
        return session is not None and seq <= session[0]

    def remember(self, client: str, seq: int, reply: Reply) -> None:
        """Record the reply of the new write (client, seq), evicting if the table is full."""
        self._table[client] = (seq, reply)
        self._table.move_to_end(client)
        while len(self._table) > self._max:
            self._table.popitem(last=False)

    def export(self) -> list[list[Any]]:
        """``[[client, seq, reply], ...]``, least recently used first."""
        return [[client, seq, dict(reply)] for client, (seq, reply) in self._table.items()]

    @classmethod
    def restore(cls, rows: Any, max_sessions: int = DEFAULT_MAX_SESSIONS) -> SessionTable:
        """A table from `export`'s rows (the least recently used dropped beyond the bound).

        Raises:
            ValueError: `rows` is not a valid export.
        """
        table = cls(max_sessions)
        try:
            for client, seq, reply in rows:
                if type(client) is not str or type(seq) is not int or type(reply) is not dict:
                    raise ValueError("a session needs a str client, an int seq and a reply map")
                if type(reply.get("ok")) is not bool:
                    raise ValueError("a session reply needs a bool 'ok'")
                table._table[client] = (seq, reply)
        except TypeError as exc:
            raise ValueError(f"not a session table: {exc!r}") from exc
        while len(table._table) > max_sessions:
            table._table.popitem(last=False)
        return table


_VALUES = ("prev_kv", "prev_kvs", "kvs")


def replayable(reply: Reply) -> Reply:
    """What a session keeps of a write's reply to answer its retries: everything but the
    key-values it carried (`prev_kv`, `prev_kvs`, a txn's `kvs`: sessions x ranges would
    not be bounded). A failed cas's `value` stays: a retry reports what the first saw."""
    extra = reply.get("extra")
    if not extra:
        return reply  # nothing to leave out: kept as it is (no copy on the hot path)
    kept = dict(reply)
    if extra:
        trimmed = {name: value for name, value in extra.items() if name not in _VALUES}
        responses = extra.get("responses")
        if responses:
            trimmed["responses"] = [
                {name: value for name, value in item.items() if name not in _VALUES}
                for item in responses
            ]
        kept["extra"] = trimmed
    return kept
