"""A node's metrics and health over HTTP: `GET /metrics` and `GET /health`.

`Observer` serves `zraft.net.http.HttpServer` from the node's loop (the loop calls
`on_tick`, which reads the socket: an answer within a tick, no thread). `/metrics` is the
Prometheus text (or OpenMetrics, when the scraper asks for it) built by prometheus_client
from `NodeMetrics` (counted in the loop) and the node's `status` view (read when scraped),
plus the library's process collector (memory, CPU, open files). `/health` answers 200 when
`zraft.wire.health` finds nothing wrong, else 503; its JSON body says what is wrong.

The metric names (`zraft_` prefix, `_total` counters, `_seconds`, `_bytes`) and what each
means are in the README ("Operating zraft"); `METRIC_NAMES` lists them for tests.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import zmq
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.exposition import choose_encoder
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector, CollectorRegistry

from zraft import __version__
from zraft.net.base import TransportError
from zraft.net.http import HttpResponse, HttpServer
from zraft.node.metrics import Histogram, NodeMetrics, NoMetrics
from zraft.wire.health import health_problems

StatusView = Callable[[], Mapping[str, Any]]
"""The node's `status` view with a few more fields (`Node._observed_status`)."""


def _counter(name: str, doc: str, value: float) -> CounterMetricFamily:
    return CounterMetricFamily(name, doc, value=value)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=value)


def _histograms(
    name: str, doc: str, label: str | None, histograms: Mapping[str, Histogram]
) -> HistogramMetricFamily:
    family = HistogramMetricFamily(name, doc, labels=[label] if label else [])
    for key, histogram in sorted(histograms.items()):
        family.add_metric([key] if label else [], histogram.cumulative(), histogram.total)
    return family


def _labelled_counter(
    name: str, doc: str, labels: list[str], values: Mapping[Any, int]
) -> CounterMetricFamily:
    family = CounterMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], value)
    return family


class NodeCollector(Collector):
    """Every `zraft_` metric family of one node, built when scraped."""

    def __init__(self, node_id: str, metrics: NodeMetrics, status: StatusView) -> None:
        self._node_id = node_id
        self._metrics = metrics
        self._status = status

    def collect(self) -> Iterator[Metric]:
        """The families (prometheus_client's `Collector` protocol)."""
        m, s = self._metrics, self._status()
        info = GaugeMetricFamily("zraft_node_info", "1, labelled", labels=["node", "version"])
        info.add_metric([self._node_id, __version__], 1)
        yield info
        yield from self._raft(s)
        yield from self._requests(m, s)
        yield from self._store(s)
        yield _histograms(
            "zraft_wal_fsync_duration_seconds", "WAL writes with their fsync", None, {"": m.fsyncs}
        )
        yield _histograms(
            "zraft_loop_turn_duration_seconds", "loop turns' busy time", None, {"": m.turns}
        )
        yield _counter("zraft_loop_stalled", "ticks late by over 5 tick lengths", m.stalls)
        yield _histograms(
            "zraft_peer_round_trip_time_seconds", "heartbeat round trips", "peer", m.round_trips
        )
        yield _labelled_counter(
            "zraft_peer_sends_dropped", "peer frames dropped", ["peer"], m.dropped
        )
        yield _histograms(
            "zraft_snapshot_save_duration_seconds", "own snapshots", None, {"": m.snapshots}
        )
        yield _gauge("zraft_snapshot_size_bytes", "the newest own snapshot", m.last_snapshot_bytes)
        yield _counter("zraft_auth_denied", "connections refused by key", m.denials)
        yield _labelled_counter("zraft_bad_frames", "input dropped", ["source"], m.bad_frames)

    def _raft(self, s: Mapping[str, Any]) -> Iterator[Metric]:
        commit, applied = int(s["commit_index"]), int(s["applied_index"])
        yield _gauge("zraft_server_has_leader", "1 if a leader is known", int(bool(s["leader"])))
        yield _gauge("zraft_server_is_leader", "1 if this node leads", int(s["role"] == "leader"))
        yield _counter(
            "zraft_server_leader_changes_seen", "leaders seen", self._metrics.leader_changes
        )
        yield _gauge("zraft_raft_term", "the current term", s["term"])
        yield _gauge("zraft_raft_last_index", "the last log index", s["last_index"])
        yield _gauge(
            "zraft_raft_snapshot_index", "the newest snapshot's index", s["snapshot_index"]
        )
        yield _counter("zraft_proposals_committed", "the commit index", commit)
        yield _counter("zraft_proposals_applied", "the applied index", applied)
        yield _gauge(
            "zraft_raft_apply_lag_entries", "commit index - applied index", commit - applied
        )
        members = GaugeMetricFamily("zraft_raft_members", "members by role", labels=["role"])
        members.add_metric(["voter"], len(s["voters"]))
        members.add_metric(["learner"], len(s["learners"]))
        yield members
        yield _gauge("zraft_wal_size_bytes", "the WAL's segments", s["log_bytes"])

    def _requests(self, m: NodeMetrics, s: Mapping[str, Any]) -> Iterator[Metric]:
        yield _labelled_counter(
            "zraft_client_requests", "answers by op and outcome", ["op", "outcome"], m.requests
        )
        yield _histograms(
            "zraft_client_request_duration_seconds", "arrival to answer", "op", m.latencies
        )
        yield _gauge("zraft_requests_pending", "requests not answered yet", s["pending_requests"])
        yield _gauge(
            "zraft_proposals_pending", "writes proposed here, not applied", s["proposals_pending"]
        )
        yield _counter(
            "zraft_proposals_failed", "writes answered without an outcome", m.failed_proposals
        )
        yield _counter("zraft_requests_forwarded", "requests sent to the leader", m.forwards)
        yield _gauge(
            "zraft_requests_forwarded_pending", "forwarded, not answered", s["forwarded_pending"]
        )

    def _store(self, s: Mapping[str, Any]) -> Iterator[Metric]:
        yield _gauge("zraft_store_keys", "keys", s.get("keys", 0))
        yield _gauge("zraft_store_revision", "the store's revision", s.get("revision", 0))
        yield _gauge(
            "zraft_store_compact_revision", "compacted up to", s.get("compact_revision", 0)
        )
        yield _gauge("zraft_store_size_bytes", "what the quota counts", s.get("store_bytes", 0))
        yield _gauge("zraft_store_quota_bytes", "the space quota", s.get("quota_bytes", 0))
        alarms = GaugeMetricFamily("zraft_alarms_active", "1 if raised", labels=["alarm"])
        for alarm in ("nospace", *sorted(set(s.get("alarms", ())) - {"nospace"})):
            alarms.add_metric([alarm], int(alarm in s.get("alarms", ())))
        yield alarms
        yield _gauge("zraft_watchers", "watches held or polling", s.get("watches", 0))
        yield _gauge("zraft_leases", "leases granted", s.get("leases", 0))


class Observer:
    """The node's HTTP endpoint for metrics and health.

    Args:
        context: the node's zmq context.
        url: `http://HOST:PORT` to listen on.
        node_id: this node.
        metrics: the node's counters.
        status: the node's status view with the fields `NodeCollector` reads.
        clock: the node's monotonic clock.

    Raises:
        ValueError, zmq.ZMQError: `url` is not `http://HOST:PORT` or cannot be bound.
    """

    def __init__(
        self,
        context: zmq.Context[Any],
        url: str,
        node_id: str,
        metrics: NodeMetrics,
        status: StatusView,
        clock: Callable[[], float],
    ) -> None:
        self._status = status
        self._node_id = node_id
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node_id, metrics, status))
        ProcessCollector(registry=self.registry)
        self._http = HttpServer(context, url, self.answer, clock=clock)

    def on_tick(self, now: float) -> None:
        """Answer what arrived; close idle connections."""
        self._http.handle()
        self._http.on_tick(now)

    def close(self) -> None:
        """Close the socket (before the transport terminates the context)."""
        self._http.close()

    def answer(self, method: str, target: str, headers: Mapping[str, str]) -> HttpResponse:
        """One request: `/metrics`, `/health`, or 404."""
        del method
        path = target.split("?", 1)[0]
        if path == "/metrics":
            encoder, content_type = choose_encoder(headers.get("accept", ""))
            return HttpResponse(200, content_type, encoder(self.registry))
        if path == "/health":
            status = self._status()
            problems = health_problems(status)
            body = {
                "health": not problems,
                "node": self._node_id,
                "reasons": problems,
                **{k: status.get(k) for k in ("leader", "term", "commit_index", "applied_index")},
                "alarms": list(status.get("alarms", ())),
            }
            text = json.dumps(body).encode() + b"\n"
            return HttpResponse(503 if problems else 200, "application/json", text)
        return HttpResponse(404, "text/plain", b"not found: try /metrics or /health\n")


def observer(
    context: zmq.Context[Any] | None,
    url: str | None,
    node_id: str,
    metrics: NoMetrics,
    status: StatusView,
    clock: Callable[[], float],
) -> Observer | None:
    """An `Observer`, or None without a URL (metrics off) or a context (an in-memory
    transport: tests). A socket that cannot be bound is a `TransportError` naming the URL
    (the node then refuses to start, as for its other endpoints)."""
    if url is None or context is None or not isinstance(metrics, NodeMetrics):
        return None
    try:
        return Observer(context, url, node_id, metrics, status, clock)
    except zmq.ZMQError as exc:
        message = f"cannot serve metrics at {url}: {exc.strerror}"
        raise TransportError(message, url, exc.errno) from exc
