"""Handing the core's messages to the transport: `Outbox.send`.

A `SnapshotRequest` is not a message on the wire: it starts a chunked transfer
(`zraft.node.snapshots`). Everything else is encoded and sent; a message that cannot be
sent (no connection to that member yet, or its queue full) is dropped and counted, since
Raft retries by design. Heartbeat send times feed the peer round-trip metric, and a write
trace (`zraft.node.trace`) notes when entries left.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from zraft.core import AppendRequest, Message, SnapshotRequest
from zraft.net.base import Transport
from zraft.node.metrics import NoMetrics
from zraft.node.reports import Reporter
from zraft.node.trace import NoTrace
from zraft.wire.peer import encode_message


class Outbox:
    """Sends a Ready's messages (see the module doc).

    Args:
        transport: the node's transport.
        start_transfer: starts streaming a snapshot for a `SnapshotRequest`.
        reporter: counts dropped sends (`peer_send_dropped`).
        metrics: per-peer drops, heartbeat send times.
        trace: the write trace (or `NO_TRACE`).
    """

    def __init__(
        self,
        transport: Transport,
        start_transfer: Callable[[SnapshotRequest], None],
        reporter: Reporter,
        metrics: NoMetrics,
        trace: NoTrace,
    ) -> None:
        self._transport = transport
        self._start_transfer = start_transfer
        self._reporter = reporter
        self._metrics = metrics
        self._trace = trace

    def send(self, messages: tuple[Message, ...]) -> None:
        """Send every message (see the module doc)."""
        dropped = 0
        metrics, transport = self._metrics, self._transport
        for msg in messages:
            if isinstance(msg, SnapshotRequest):
                self._start_transfer(msg)  # streamed in chunks, not one message
            # Not connected: a member whose endpoints we have not learned (yet). Not sent:
            # queue full or peer absent. Raft retries by design.
            elif not transport.has_peer(msg.dst) or not transport.send_message(
                msg.dst, encode_message(msg)
            ):
                dropped += 1
                metrics.sends_dropped(msg.dst, 1)
            elif metrics.enabled and type(msg) is AppendRequest and not msg.entries:
                metrics.heartbeat_sent(msg.dst, msg.seq, time.perf_counter())
        if self._trace.enabled:
            self._trace.sent(messages)
        self._reporter.sends_dropped(dropped)
