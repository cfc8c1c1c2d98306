"""What a node counts for its metrics: plain counters and histograms, updated in the loop.

The node's loop is one thread, so its counters need no locks: an increment is a dict or
list update, and a histogram observation one `bisect` (prometheus_client's own metric
objects take a lock on every update, which the hot path of every request would pay for).
`zraft.node.observe` turns these into Prometheus metric families when scraped.

`NoMetrics` is what a node without `metrics` configured gets: the same methods, doing
nothing, so the loop calls them unconditionally and a node with metrics off does no
counting at all (what `zraft.bench.metrics_cost` compares against).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import defaultdict

from zraft.node.pending import ReplyTo

DURATION_BUCKETS_S = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
"""Upper bounds (seconds) of every duration histogram: 100 µs (a loopback round trip) to
10 s (a request timeout), about three per decade, as etcd's disk histograms."""

MAX_RTT_PROBES = 8
"""Heartbeat rounds awaiting an answer, per peer; older ones are forgotten (lost)."""


class Histogram:
    """Counts of observations per bucket (not cumulative), their sum and their number."""

    __slots__ = ("count", "counts", "total")

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS_S) + 1)  # the last: above every bound
        self.total = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect_left(DURATION_BUCKETS_S, value)] += 1
        self.total += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """`(le, count of observations <= le)` for each bound, then `+Inf`."""
        running = 0
        out = []
        for bound, count in zip((*DURATION_BUCKETS_S, None), self.counts, strict=True):
            running += count
            out.append(("+Inf" if bound is None else repr(bound), float(running)))
        return out


class NoMetrics:
    """A node's metrics hooks when metrics are off: every method does nothing."""

    enabled = False

    def turn(self, seconds: float) -> None:
        """One loop turn's busy time (after the poll returned)."""

    def fsync(self, seconds: float) -> None:
        """One WAL save (write and fsync) took `seconds`."""

    def loop_stalled(self) -> None:
        """A tick came more than the stall threshold late."""

    def leader_changed(self) -> None:
        """This node saw a new leader."""

    def sends_dropped(self, peer: str, count: int) -> None:
        """`count` frames to `peer` were dropped (no connection, queue full)."""

    def heartbeat_sent(self, peer: str, seq: int, now: float) -> None:
        """The leader sent heartbeat round `seq` to `peer`."""

    def heartbeat_answered(self, peer: str, seq: int, now: float) -> None:
        """`peer` answered heartbeat round `seq`."""

    def snapshot_saved(self, seconds: float, size_bytes: int) -> None:
        """A snapshot of this node's state became durable."""

    def answered(self, reply_to: ReplyTo, outcome: str, now: float) -> None:
        """A client of this node got its answer (`outcome`: `ok` or the error code)."""

    def proposal_failed(self) -> None:
        """A proposed write was answered without its outcome (timeout, lost leadership)."""

    def forwarded(self) -> None:
        """A request was forwarded to the leader."""

    def auth_denied(self) -> None:
        """The ZAP handler refused a connection."""

    def bad_frame(self, source: str) -> None:
        """Input from `source` (`peer`, `client`) was dropped as malformed."""


class NodeMetrics(NoMetrics):
    """A node's counters and histograms (see the module doc)."""

    enabled = True

    def __init__(self) -> None:
        self.turns = Histogram()
        self.fsyncs = Histogram()
        self.snapshots = Histogram()
        self.last_snapshot_bytes = 0
        self.stalls = 0
        self.leader_changes = 0
        self.failed_proposals = 0
        self.forwards = 0
        self.denials = 0
        self.bad_frames: defaultdict[str, int] = defaultdict(int)
        self.dropped: defaultdict[str, int] = defaultdict(int)
        self.round_trips: defaultdict[str, Histogram] = defaultdict(Histogram)
        self.requests: defaultdict[tuple[str, str], int] = defaultdict(int)
        self.latencies: defaultdict[str, Histogram] = defaultdict(Histogram)
        self._probes: defaultdict[str, dict[int, float]] = defaultdict(dict)

    def turn(self, seconds: float) -> None:
        """See `NoMetrics.turn`."""
        self.turns.observe(seconds)

    def fsync(self, seconds: float) -> None:
        """See `NoMetrics.fsync`."""
        self.fsyncs.observe(seconds)

    def loop_stalled(self) -> None:
        """See `NoMetrics.loop_stalled`."""
        self.stalls += 1

    def leader_changed(self) -> None:
        """See `NoMetrics.leader_changed`."""
        self.leader_changes += 1

    def sends_dropped(self, peer: str, count: int) -> None:
        """See `NoMetrics.sends_dropped`."""
        self.dropped[peer] += count

    def heartbeat_sent(self, peer: str, seq: int, now: float) -> None:
        """See `NoMetrics.heartbeat_sent` (the first send of a round is its start)."""
        probes = self._probes[peer]
        if seq not in probes:
            if len(probes) >= MAX_RTT_PROBES:
                del probes[min(probes)]  # never answered: lost, or the peer is down
            probes[seq] = now

    def heartbeat_answered(self, peer: str, seq: int, now: float) -> None:
        """See `NoMetrics.heartbeat_answered`."""
        sent = self._probes[peer].pop(seq, None)
        if sent is not None:
            self.round_trips[peer].observe(now - sent)

    def snapshot_saved(self, seconds: float, size_bytes: int) -> None:
        """See `NoMetrics.snapshot_saved`."""
        self.snapshots.observe(seconds)
        self.last_snapshot_bytes = size_bytes

    def answered(self, reply_to: ReplyTo, outcome: str, now: float) -> None:
        """See `NoMetrics.answered`."""
        op = reply_to.op or "invalid"
        self.requests[op, outcome] += 1
        self.latencies[op].observe(max(0.0, now - reply_to.started))

    def proposal_failed(self) -> None:
        """See `NoMetrics.proposal_failed`."""
        self.failed_proposals += 1

    def forwarded(self) -> None:
        """See `NoMetrics.forwarded`."""
        self.forwards += 1

    def auth_denied(self) -> None:
        """See `NoMetrics.auth_denied`."""
        self.denials += 1

    def bad_frame(self, source: str) -> None:
        """See `NoMetrics.bad_frame`."""
        self.bad_frames[source] += 1


NO_METRICS = NoMetrics()
"""The shared do-nothing hooks."""
