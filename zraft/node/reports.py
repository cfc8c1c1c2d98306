"""The node's rate-limited reports of what went wrong outside it: garbage input
(`bad_frame`), connection decisions (`auth_denied`, `auth_admitted`) and dropped peer sends
(`peer_send_dropped`).

Each is limited, so a peer gone mad, a client sending garbage or a flood of connection
attempts cannot fill the disk; what is held back is counted in the next event. This
module only decides when to emit; it never drops or answers anything itself.
"""

from __future__ import annotations

from collections.abc import Callable

from zraft import diagnostics
from zraft.diagnostics import FilteringBoundLogger, NodeEvent
from zraft.net.zap import AuthRecord, EventLimiter
from zraft.node.metrics import NO_METRICS, NoMetrics

BAD_FRAME_EVENTS_PER_S = 50  # per source; the rest are counted in the next one's `suppressed`
DROP_REPORT_INTERVAL_S = 1.0  # at most one peer_send_dropped event per second


class Reporter:
    """Emits the rate-limited events of one node.

    Args:
        log: the node's bound logger.
        clock: a monotonic clock in seconds.
        metrics: counts every refusal and bad frame, the held back ones too.
    """

    def __init__(
        self,
        log: FilteringBoundLogger,
        clock: Callable[[], float],
        metrics: NoMetrics = NO_METRICS,
    ) -> None:
        self._log = log
        self._metrics = metrics
        self._clock = clock
        self._bad_frame_limiters: dict[str, EventLimiter] = {}  # per `source` of bad_frame
        # Separate budgets: a flood of refused connections must not hide admissions.
        self._denied_limiter = EventLimiter(clock)
        self._admitted_limiter = EventLimiter(clock)
        self._last_drop_report = 0.0
        self._drops_unreported = 0

    def bad_frame(self, source: str, sender: str, reason: str) -> None:
        """Report input that was dropped (`source`: `peer`, `client` or `test`)."""
        self._metrics.bad_frame(source)
        limiter = self._bad_frame_limiters.get(source)
        if limiter is None:
            limiter = EventLimiter(self._clock, limit=BAD_FRAME_EVENTS_PER_S)
            self._bad_frame_limiters[source] = limiter
        suppressed = limiter.admit()
        if suppressed is None:
            return
        diagnostics.emit_node(
            self._log,
            NodeEvent.BAD_FRAME,
            source=source,
            sender=sender,
            reason=reason,
            suppressed=suppressed,
        )

    def auth(self, record: AuthRecord) -> None:
        """Report one decision of the ZAP handler."""
        if not record.admitted:
            self._metrics.auth_denied()
        limiter = self._admitted_limiter if record.admitted else self._denied_limiter
        suppressed = limiter.admit()
        if suppressed is None:
            return  # over the rate limit: counted, reported with the next event
        common = {
            "source": record.source,
            "address": record.address,
            "key": record.key,
            "mechanism": record.mechanism,
            "suppressed": suppressed,
        }
        if record.admitted:
            diagnostics.emit_node(self._log, NodeEvent.AUTH_ADMITTED, user=record.user, **common)
        else:
            diagnostics.emit_node(self._log, NodeEvent.AUTH_DENIED, reason=record.reason, **common)

    def sends_dropped(self, count: int) -> None:
        """Count peer sends that were dropped; report them at most once a second."""
        self._drops_unreported += count
        if not self._drops_unreported:
            return
        now = self._clock()
        if now - self._last_drop_report >= DROP_REPORT_INTERVAL_S:
            diagnostics.emit_node(
                self._log, NodeEvent.PEER_SEND_DROPPED, count=self._drops_unreported
            )
            self._drops_unreported = 0
            self._last_drop_report = now
