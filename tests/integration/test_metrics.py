"""Metrics and health over HTTP, served by real nodes from their own loops: scraped and
parsed with prometheus_client's parser, `/health` turning 503 when quorum is lost, and
hostile HTTP input on the port changing nothing."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from zraft import config
from zraft.client import Client
from zraft.testing.cluster import ProcessCluster, wait_for, write_cluster_config

pytestmark = pytest.mark.integration
CLIENT = Path(__file__).resolve().parents[2] / "bin" / "zraft-client"
NODE = CLIENT.parent / "zraft-node"

EXPECTED = {
    "zraft_node_info",
    "zraft_server_has_leader",
    "zraft_server_is_leader",
    "zraft_server_leader_changes_seen",
    "zraft_raft_term",
    "zraft_proposals_committed",
    "zraft_proposals_applied",
    "zraft_proposals_pending",
    "zraft_proposals_failed",
    "zraft_raft_apply_lag_entries",
    "zraft_wal_fsync_duration_seconds",
    "zraft_loop_turn_duration_seconds",
    "zraft_loop_stalled",
    "zraft_peer_round_trip_time_seconds",
    "zraft_peer_sends_dropped",
    "zraft_snapshot_save_duration_seconds",
    "zraft_snapshot_size_bytes",
    "zraft_client_requests",
    "zraft_client_request_duration_seconds",
    "zraft_requests_pending",
    "zraft_requests_forwarded",
    "zraft_store_keys",
    "zraft_store_size_bytes",
    "zraft_store_revision",
    "zraft_store_quota_bytes",
    "zraft_alarms_active",
    "zraft_watchers",
    "zraft_leases",
    "zraft_auth_denied",
    "zraft_bad_frames",
    "process_resident_memory_bytes",
}
"""Families every node exposes (prometheus_client's parser names counters without _total)."""


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[ProcessCluster]:
    running = ProcessCluster(tmp_path, 3, metrics=True)
    try:
        running.start_all()
        yield running
    finally:
        running.close()


def scrape(url: str) -> dict[str, Any]:
    """`{family name: {labels tuple: value}}` of one node's `/metrics`."""
    with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
        assert reply.status == 200
        text = reply.read().decode()
    families: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for sample in family.samples
        }
    return families


def value(families: dict[str, Any], name: str, sample: str | None = None, **labels: str) -> float:
    return families[name][(sample or name, tuple(sorted(labels.items())))]


def health(url: str) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of `/health`; (0, {}) when refused (every slot taken)."""
    try:
        with urllib.request.urlopen(url + "/health", timeout=5) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as error:
        if error.headers.get("content-type") != "application/json":
            return 0, {}  # the busy answer: no slot free
        return error.code, json.loads(error.read())
    except ConnectionError:
        return 0, {}


def test_every_node_is_scraped_and_parsed(cluster: ProcessCluster) -> None:
    leader = cluster.wait_leader()
    with Client([cluster.client_endpoints[leader]], curve=cluster.curve) as client:
        for n in range(30):
            assert client.put(f"m/{n}", "v").ok
        assert client.get("m/1").value == b"v"
        assert not client.get("m/absent").found
    scraped = {node: scrape(url) for node, url in cluster.metrics_urls.items()}
    for node, families in scraped.items():
        missing = EXPECTED - set(families)
        assert not missing, f"{node} lacks {sorted(missing)}"
        assert value(families, "zraft_server_has_leader") == 1
        version = families_version(families)
        assert value(families, "zraft_node_info", node=node, version=version) == 1
        assert value(families, "zraft_raft_term") == value(scraped[leader], "zraft_raft_term")
        assert value(families, "process_resident_memory_bytes") > 1 << 20
    assert [n for n, f in scraped.items() if value(f, "zraft_server_is_leader") == 1] == [leader]
    mine = scraped[leader]
    requests = ("zraft_client_requests", "zraft_client_requests_total")
    assert value(mine, *requests, op="put", outcome="ok") == 30
    assert value(mine, *requests, op="get", outcome="ok") == 2  # found, and not found
    latency = "zraft_client_request_duration_seconds"
    assert value(mine, latency, latency + "_count", op="put") == 30
    fsync = "zraft_wal_fsync_duration_seconds"
    assert value(mine, fsync, fsync + "_count") >= 30  # one save per turn with new entries
    assert value(mine, "zraft_store_keys") >= 30
    peers = {p for p in cluster.ids if p != leader}
    rtt = "zraft_peer_round_trip_time_seconds"
    for peer in peers:
        assert value(mine, rtt, rtt + "_count", peer=peer) > 0  # heartbeats answered


def families_version(families: dict[str, Any]) -> str:
    ((_, labels),) = families["zraft_node_info"].keys()
    return dict(labels)["version"]


def test_openmetrics_when_asked_and_404_elsewhere(cluster: ProcessCluster) -> None:
    url = next(iter(cluster.metrics_urls.values()))
    request = urllib.request.Request(
        url + "/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"}
    )
    with urllib.request.urlopen(request, timeout=5) as reply:
        assert reply.headers["content-type"].startswith("application/openmetrics-text")
        assert reply.read().rstrip().endswith(b"# EOF")
    with pytest.raises(urllib.error.HTTPError) as missing:
        urllib.request.urlopen(url + "/nothing", timeout=5)
    assert missing.value.code == 404


def endpoint(cluster: ProcessCluster, *args: str) -> subprocess.CompletedProcess[str]:
    """`zraft-client --config F endpoint ARGS`."""
    command = [sys.executable, str(CLIENT), "--config", str(cluster.config_path), "endpoint"]
    return subprocess.run([*command, *args], capture_output=True, text=True, timeout=30)


def test_health_turns_503_without_a_quorum(cluster: ProcessCluster) -> None:
    cluster.wait_leader()
    for url in cluster.metrics_urls.values():
        wait_for(lambda url=url: health(url)[0] == 200, 10, what="every node healthy")
    healthy = endpoint(cluster, "health")
    assert healthy.returncode == 0, healthy.stderr
    assert healthy.stdout.count(" is healthy: took = ") == 3
    table = endpoint(cluster, "status", "-w", "table").stdout.splitlines()
    assert table[0].split()[:3] == ["ENDPOINT", "ID", "VERSION"] and len(table) == 4
    assert sum(" true " in row for row in table[1:]) == 1  # one leader, no learner
    survivor, *others = cluster.ids
    for node in others:
        cluster.kill(node)
    url = cluster.metrics_urls[survivor]
    wait_for(lambda: health(url)[0] == 503, 10, what="the lone node unhealthy")
    _, body = health(url)
    assert body["health"] is False and body["node"] == survivor
    assert any(reason.startswith("no leader") for reason in body["reasons"])
    sick = endpoint(cluster, "health")
    assert sick.returncode == 1
    lone = cluster.client_endpoints[survivor]
    assert f"{lone} is unhealthy: no leader" in sick.stderr
    assert sick.stderr.count("is unhealthy: no reply within") == 2


def test_hostile_http_input_changes_nothing(cluster: ProcessCluster) -> None:
    leader = cluster.wait_leader()
    url = cluster.metrics_urls[leader]
    host, port = url.removeprefix("http://").rsplit(":", 1)
    payloads = [
        b"\x00\xff" * 5000,
        b"GET /metrics HTTP/1.1\r\nHost: x\r\nX: " + b"a" * 100_000 + b"\r\n\r\n",
        b"POST /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n" + b"a" * 4096,
        b"GET /health HTTP/9.9\r\n\r\n",
        b"GET /../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n",
    ]
    for payload in payloads:
        with socket.create_connection((host, int(port)), timeout=5) as sock:
            sock.sendall(payload)
            sock.shutdown(socket.SHUT_WR)
            while sock.recv(65536):
                pass  # the server answers (an error) and closes
    held = [socket.create_connection((host, int(port)), timeout=5) for _ in range(100)]
    try:
        with Client([cluster.client_endpoints[leader]], curve=cluster.curve) as client:
            assert client.put("after-garbage", "ok").ok
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: health(url)[0] == 200, 10, what="still healthy and serving")
    assert cluster.is_running(leader)
    assert not [e for e in cluster.node_events(leader) if e["event"] == "fatal_error"]


def test_a_node_whose_metrics_port_is_taken_refuses_to_start(tmp_path: Path) -> None:
    path = write_cluster_config(tmp_path, 1, metrics=True)
    url = config.load(path).nodes[0].metrics
    assert url is not None
    host, port = url.removeprefix("http://").rsplit(":", 1)
    with socket.socket() as squatter:
        squatter.bind((host, int(port)))
        squatter.listen()
        done = subprocess.run(
            [sys.executable, str(NODE), "--config", str(path), "--id", "n1"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert done.returncode == 1
    assert f"zraft-node: cannot start n1: cannot serve metrics at {url}" in done.stderr
    # Nothing was left behind: the data dir's lock is free, and with the port free the
    # same node starts.
    log = tmp_path / "logs" / "n1.jsonl"
    node = subprocess.Popen([sys.executable, str(NODE), "--config", str(path), "--id", "n1"])
    try:
        wait_for(lambda: log.exists() and "node_started" in log.read_text(), 20, what="a start")
        with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
            assert reply.status == 200
    finally:
        node.terminate()
        node.wait(10)
