"""Where the time of a write goes: per-entry stage timestamps, kept by the loop on request.

`zraft-node --trace-writes FILE` makes a node note, for each log entry it handles, when
each stage of its life happened on this node, and write them to FILE (JSON lines, one per
entry) when it stops; `python -m zraft.bench.breakdown` joins the files of a cluster's
nodes by index into the latency breakdown of a write. Stages:

- on the leader: `accepted` (the client request read from the socket), `proposed` (the
  entry appended to the core's log), `sent` (the first AppendRequest carrying it handed
  to the transport), `persisted` (its fsync done), `acked` (peer -> the first
  AppendResponse whose match index is this entry's: with one write in flight, the one
  acknowledging it), `committed` (the apply loop reached it) and
  `replied` (the reply handed to the transport);
- on a follower: `received` (the AppendRequest carrying it stepped into the core),
  `persisted` and `ack_sent`.

Times are `time.monotonic()` seconds: one clock for every process of a machine, so the
files of several nodes on one host can be joined. It costs a dictionary write per stage
and entry, so it is off by default (`NO_TRACE`: hooks that do nothing) and meant for
benchmarks; it keeps at most `MAX_ENTRIES` entries, then stops noting new ones. It keeps
the loop's rules: nothing is written to disk before the node stops.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from zraft.core import AppendRequest, AppendResponse, Entry, Message

MAX_ENTRIES = 200_000
"""Entries a trace keeps (about 60 MB at most); later ones are not noted."""


class NoTrace:
    """Tracing off: every hook does nothing."""

    enabled = False

    def proposed(self, index: int, accepted: float) -> None:
        """A client write was proposed at `index` (`accepted`: when it was read)."""

    def sent(self, messages: Iterable[Message]) -> None:
        """Peer messages were handed to the transport."""

    def received(self, message: Message) -> None:
        """A peer message is about to be stepped into the core."""

    def persisted(self, entries: Iterable[Entry]) -> None:
        """These entries are durable."""

    def committed(self, entries: Iterable[Entry]) -> None:
        """These entries are about to be applied."""

    def replied(self, index: int) -> None:
        """The write at `index` was answered."""

    def close(self) -> None:
        """Write what was noted (nothing here)."""


NO_TRACE = NoTrace()


class WriteTrace(NoTrace):
    """Tracing on: stages noted in memory, written to `path` by `close` (see the module doc).

    Args:
        node_id: this node (written on each line).
        path: the JSON-lines file to write when the node stops.
        clock: seconds on the machine-wide monotonic clock.
    """

    enabled = True

    def __init__(self, node_id: str, path: Path, clock: Any = time.monotonic) -> None:
        self._id = node_id
        self._path = path
        self._clock = clock
        self._entries: dict[int, dict[str, Any]] = {}

    def _note(self, index: int, stage: str, now: float) -> None:
        stages = self._entries.get(index)
        if stages is None:
            if len(self._entries) >= MAX_ENTRIES:
                return
            stages = self._entries[index] = {}
        stages.setdefault(stage, now)  # the first time counts (a resend is not news)

    def proposed(self, index: int, accepted: float) -> None:
        """See `NoTrace.proposed`."""
        self._note(index, "accepted", accepted)
        self._note(index, "proposed", self._clock())

    def sent(self, messages: Iterable[Message]) -> None:
        """See `NoTrace.sent`: an append's entries are `sent`, an acknowledgement `ack_sent`."""
        now = self._clock()
        for msg in messages:
            if type(msg) is AppendRequest:
                for entry in msg.entries:
                    self._note(entry.index, "sent", now)
            elif type(msg) is AppendResponse and msg.success:
                self._note(msg.index, "ack_sent", now)

    def received(self, message: Message) -> None:
        """See `NoTrace.received`: an append's entries, or a peer's acknowledgement."""
        if type(message) is AppendRequest:
            now = self._clock()
            for entry in message.entries:
                self._note(entry.index, "received", now)
        elif type(message) is AppendResponse and message.success:
            stages = self._entries.get(message.index)
            if stages is not None:
                stages.setdefault("acked", {}).setdefault(message.src, self._clock())

    def persisted(self, entries: Iterable[Entry]) -> None:
        """See `NoTrace.persisted`."""
        now = self._clock()
        for entry in entries:
            self._note(entry.index, "persisted", now)

    def committed(self, entries: Iterable[Entry]) -> None:
        """See `NoTrace.committed`."""
        now = self._clock()
        for entry in entries:
            self._note(entry.index, "committed", now)

    def replied(self, index: int) -> None:
        """See `NoTrace.replied`."""
        self._note(index, "replied", self._clock())

    def close(self) -> None:
        """Write every noted entry, one JSON line each, sorted by index (a file that cannot
        be written is said on stderr: a trace must not change how the node stops)."""
        try:
            with self._path.open("w") as out:
                for index in sorted(self._entries):
                    line = {"node": self._id, "index": index, **self._entries[index]}
                    out.write(json.dumps(line) + "\n")
        except OSError as exc:
            print(f"zraft-node: cannot write the write trace: {exc}", file=sys.stderr)
