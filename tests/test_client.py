"""The client library, `zraft-client` and the bench, against a fake cluster.

`tests.fakeserver.FakeCluster` answers the client protocol from a thread (the client
under test blocks while it waits); CLI tests run `bin/zraft-client` as a subprocess
against it. Ports come from the OS, every socket closes with linger 0, every subprocess
has a timeout and is killed by PID at teardown, and every wait is bounded. Speeds are
never asserted, only counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import zmq

from tests.fakeserver import FakeCluster, silent_endpoint
from tests.procs import free_ports
from tests.terminal import type_session
from zraft.bench.load import BenchSpec, percentile, run_bench
from zraft.client import Client, ClientTimeout, Reply, probe_status

ROOT = Path(__file__).resolve().parent.parent
CLIENT_BIN = ROOT / "bin" / "zraft-client"
SUBPROCESS_TIMEOUT_S = 20.0


@pytest.fixture
def fake() -> Iterator[Callable[..., FakeCluster]]:
    """A factory of fake clusters, all closed at teardown."""
    made: list[FakeCluster] = []

    def make(count: int = 1, **kwargs: object) -> FakeCluster:
        made.append(FakeCluster(count, **kwargs))  # type: ignore[arg-type]
        return made[-1]

    yield make
    for cluster in made:
        cluster.close()


@pytest.fixture
def silent() -> Iterator[Callable[[], str]]:
    """A factory of endpoints that accept requests and never answer."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()

    def make() -> str:
        return silent_endpoint(context)[1]

    yield make
    context.destroy(linger=0)


def write_config(path: Path, clients: dict[str, str]) -> Path:
    """A cluster TOML whose nodes have the given client endpoints (peers never used)."""
    lines = [
        "[cluster]",
        'name = "test"',
        "heartbeat_ms = 50",
        "election_timeout_ms = [300, 600]",
        "request_timeout_ms = 1000",
        'security = "none"',  # the fake cluster speaks plaintext
    ]
    for i, (node_id, endpoint) in enumerate(clients.items(), start=1):
        lines += [
            "[[node]]",
            f'id = "{node_id}"',
            f'peer = "tcp://127.0.0.1:{i}"',
            f'client = "{endpoint}"',
            f'data_dir = "data/{node_id}"',
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


# --- the library -------------------------------------------------------------------------


def test_put_get_delete_cas(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake()
    with Client(cluster.endpoints, timeout=3) as client:
        put = client.put("k", "v1")
        assert put.ok and put.index == 1 and put.leader == "n1"
        got = client.get("k")
        assert (got.ok, got.found, got.value) == (True, True, b"v1")
        assert client.get(b"k", consistency="serializable").value == b"v1"

        failed = client.cas("k", "nope", "v2")
        assert (failed.ok, failed.error_code, failed.value) == (False, "cas_failed", b"v1")
        assert client.cas("k", "v1", "v2").ok
        assert client.cas("k", None, "v3").error_code == "cas_failed"
        assert client.cas("fresh", None, "new").ok

        assert client.delete("k").ok
        missing = client.get("k")
        assert (missing.ok, missing.found, missing.value) == (True, False, None)


def test_status_reply_exposes_the_node_view(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(2)
    cluster.node("n1").extra_status["snapshot_index"] = 7
    with Client(cluster.endpoints, timeout=3) as client:
        reply = client.status()
    assert reply.ok and reply.leader == "n1"
    assert reply.status is not None
    assert reply.status["role"] == "leader" and reply.status["voters"] == ["n1", "n2"]
    assert reply.status["snapshot_index"] == 7


def test_writes_carry_a_session_with_increasing_seq(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake()
    with Client(cluster.endpoints, client_id="me", first_seq=10) as client:
        client.put("a", "1")
        client.get("a")
        client.delete("a")
        client.cas("a", None, "2")
        assert client.next_seq == 13
    assert cluster.writes() == [("put", 10, "me"), ("delete", 11, "me"), ("cas", 12, "me")]
    reads = [req for _, req in cluster.requests if req.op == "get"]
    assert reads[0].client is None  # reads need no session


def test_a_lost_reply_is_retried_with_the_same_seq_and_applied_once(
    fake: Callable[..., FakeCluster],
) -> None:
    cluster = fake(2)
    cluster.drop_replies = 1  # n1 applies the put, but its reply never arrives
    with Client(cluster.endpoints, timeout=5, attempt_timeout=0.3) as client:
        reply = client.put("k", "v")
        assert reply.ok and reply.endpoint == cluster.endpoints[1]
        seq = client.next_seq - 1
        assert client.get("k").value == b"v"
    assert cluster.writes() == [("put", seq, client.client_id)] * 2
    assert [node for node, _ in cluster.requests][:2] == ["n1", "n2"]
    assert cluster.applied_writes == 1
    assert reply.index == 1  # the first attempt's answer, from the session table


def test_a_lost_reply_with_one_endpoint_retries_there(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake()
    cluster.drop_replies = 2
    with Client(cluster.endpoints, timeout=5, attempt_timeout=0.2) as client:
        assert client.put("k", "v").ok
    assert len(cluster.writes()) == 3 and len(set(cluster.writes())) == 1
    assert cluster.applied_writes == 1


def test_unavailable_is_retried_until_an_answer(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(2)
    cluster.unavailable = 3
    with Client(cluster.endpoints, timeout=5) as client:
        reply = client.put("k", "v")
    assert reply.ok
    assert len(cluster.writes()) == 4 and cluster.applied_writes == 1


def test_not_leader_goes_to_the_named_leader_next(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(3, leader="n3")
    cluster.not_leader = 1
    node_endpoints = {node.id: node.endpoint for node in cluster.nodes}
    with Client(cluster.endpoints, timeout=5, node_endpoints=node_endpoints) as client:
        assert client.get("k").ok
        assert client.get("k").ok  # stays with the leader
    assert [node for node, _ in cluster.requests] == ["n1", "n3", "n3"]


def test_a_retryable_error_at_the_deadline_is_returned(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(2)
    cluster.unavailable = 10**9
    started = time.monotonic()
    with Client(cluster.endpoints, timeout=0.5) as client:
        reply = client.put("k", "v")
    assert time.monotonic() - started < 2.0
    assert (reply.ok, reply.error_code, reply.error_message) == (False, "unavailable", "no leader")
    assert cluster.applied_writes == 0


def test_other_errors_are_returned_without_retry(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(2)
    with Client(cluster.endpoints, timeout=3) as client:
        reply = client.put("", "v")  # an empty key is a bad request
    assert (reply.ok, reply.error_code) == (False, "bad_request")
    assert cluster.frames == 1


def test_no_answer_raises_client_timeout_promptly(silent: Callable[[], str]) -> None:
    endpoints = [silent(), silent()]
    started = time.monotonic()
    with Client(endpoints, timeout=0.6) as client, pytest.raises(ClientTimeout) as caught:
        client.put("k", "v")
    assert time.monotonic() - started < 2.0
    message = str(caught.value)
    assert all(endpoint in message for endpoint in endpoints)
    assert set(caught.value.endpoints) == set(endpoints)


def test_an_admin_op_is_not_retried_after_a_lost_reply(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(2)
    cluster.drop_replies = 1
    with Client(cluster.endpoints, timeout=0.4) as client, pytest.raises(ClientTimeout) as caught:
        client.request("snapshot")
    assert "outcome is unknown" in str(caught.value)
    assert len(cluster.requests) == 1


def test_snapshot_goes_to_the_node_named_and_nowhere_else(
    fake: Callable[..., FakeCluster],
) -> None:
    cluster = fake(3)
    ids = {node.id: node.endpoint for node in cluster.nodes}
    with Client(cluster.endpoints, timeout=2, node_endpoints=ids) as client:
        client.put("k", "v")
        reply = client.snapshot("n2")
        assert reply.ok and reply.endpoint == ids["n2"]
        assert reply.raw["snapshot"] == {"index": 1, "size_bytes": 4321}
        assert client.snapshot(ids["n2"]).raw["snapshot"] == {"index": 1, "size_bytes": None}
        # An error answer is returned as is: no other node is asked instead.
        cluster.not_leader = 5
        refused = client.snapshot("n3")
        assert (refused.ok, refused.error_code) == (False, "not_leader")
    assert [node for node, req in cluster.requests if req.op == "snapshot"] == ["n2", "n2", "n3"]


def test_snapshot_needs_a_known_node_and_is_tried_once(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(2)
    with Client(cluster.endpoints, timeout=0.5) as client:
        with pytest.raises(ValueError, match="name the node"):
            client.snapshot()
        with pytest.raises(ValueError, match="unknown node"):
            client.snapshot("n9")
        cluster.drop_replies = 1
        with pytest.raises(ClientTimeout, match="outcome is unknown") as caught:
            client.snapshot(cluster.endpoints[1])
        assert [endpoint for endpoint, _ in caught.value.attempts] == [cluster.endpoints[1]]
    assert [node for node, _ in cluster.requests] == ["n2"]
    with Client(cluster.endpoints[0], timeout=2) as single:
        assert single.snapshot().raw["snapshot"]["index"] == 0


def test_from_config_uses_every_node(tmp_path: Path, fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(2)
    path = write_config(
        tmp_path / "cluster.toml", dict(zip(["n1", "n2"], cluster.endpoints, strict=True))
    )
    with Client.from_config(path) as client:
        assert client.endpoints == tuple(cluster.endpoints)
        assert client.timeout == pytest.approx(2.0)  # request_timeout_ms + 1 s
        assert client.put("k", "v").ok


def test_misuse_is_refused_early() -> None:
    with pytest.raises(ValueError, match="bad endpoint"):
        Client(["http://example.com"])
    with pytest.raises(ValueError, match="at least one"):
        Client([])
    with Client(["tcp://127.0.0.1:9"]) as client, pytest.raises(ValueError, match="unknown op"):
        client.request("frobnicate")


def test_reply_from_map_ignores_mistyped_fields() -> None:
    reply = Reply.from_map({"ok": 1, "value": "text", "error": "boom", "index": True})
    assert (reply.ok, reply.value, reply.error_code, reply.index) == (False, None, None, None)


def test_probe_status_marks_silent_nodes_unreachable(
    fake: Callable[..., FakeCluster], silent: Callable[[], str]
) -> None:
    cluster = fake()
    dead = silent()
    started = time.monotonic()
    probes = probe_status([cluster.endpoints[0], dead], timeout=0.5)
    assert time.monotonic() - started < 1.5
    assert [p.reachable for p in probes] == [True, False]
    assert probes[0].reply is not None and probes[0].reply.status is not None
    assert probes[0].reply.status["id"] == "n1"
    assert probes[1].problem == "no reply within 0.5 s"


# --- the bench library -------------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 99), percentile(values, 100)) == (
        50.0,
        99.0,
        100.0,
    )
    assert percentile([], 50) == 0.0


def test_bench_puts_with_sessions(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(2)
    spec = BenchSpec(clients=4, requests=200, value_size=16, keys=50)
    result = run_bench(cluster.endpoints, spec)
    assert (result.ops, result.errors) == (800, 0)
    assert cluster.applied_writes == 800
    assert len({client for _, _, client in cluster.writes()}) == 4
    assert (
        0 < result.latencies_ms["p50"] <= result.latencies_ms["p99"] <= result.latencies_ms["max"]
    )
    assert result.to_dict()["ops"] == 800


def test_bench_gets_after_prefill(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake()
    result = run_bench(cluster.endpoints, BenchSpec(clients=3, requests=50, op="get", keys=10))
    assert (result.ops, result.errors) == (150, 0)
    assert cluster.applied_writes == 10  # the prefill, one put per key
    assert len(cluster.kv) == 10


def test_bench_counts_timeouts_as_errors(
    fake: Callable[..., FakeCluster], silent: Callable[[], str]
) -> None:
    cluster = fake()
    spec = BenchSpec(clients=2, requests=3, timeout=0.2)
    result = run_bench([cluster.endpoints[0], silent()], spec)
    # The client on the silent node loses one request, then moves to the live node.
    assert (result.ops, result.errors, result.error_codes) == (5, 1, {"timeout": 1})


# --- zraft-client ------------------------------------------------------------------------


@pytest.fixture
def cli(tmp_path: Path) -> Iterator[Callable[..., subprocess.CompletedProcess[str]]]:
    """Run `bin/zraft-client ARGS` with optional stdin; every process is killed at teardown.

    It runs in an empty directory without `$ZRAFT_CONFIG`, so no default config is found
    unless a test sets one up (`env`)."""
    started: list[subprocess.Popen[str]] = []
    workdir = tmp_path / "cwd"
    workdir.mkdir()
    base_env = {k: v for k, v in os.environ.items() if k != "ZRAFT_CONFIG"}

    def run(
        *args: str, stdin: str = "", env: dict[str, str] | None = None
    ) -> subprocess.CompletedProcess[str]:
        proc = subprocess.Popen(
            [sys.executable, str(CLIENT_BIN), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=workdir,
            env={**base_env, **(env or {})},
        )
        started.append(proc)
        out, err = proc.communicate(stdin, timeout=SUBPROCESS_TIMEOUT_S)
        return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)

    yield run
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=5)


CliRunner = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def config(tmp_path: Path, fake: Callable[..., FakeCluster]) -> tuple[FakeCluster, str]:
    """A 2-node fake cluster and a config file naming it."""
    cluster = fake(2)
    path = write_config(
        tmp_path / "cluster.toml", dict(zip(["n1", "n2"], cluster.endpoints, strict=True))
    )
    return cluster, str(path)


def test_cli_one_shot_commands_and_exit_codes(
    cli: CliRunner, config: tuple[FakeCluster, str]
) -> None:
    cluster, path = config
    steps = [
        (["put", "k", "hello world"], 0, "OK\n", ""),
        (["get", "k"], 0, "hello world\n", ""),
        (["get", "nope"], 1, "", "(not found)\n"),
        (["cas", "k", "wrong", "x"], 1, "", "cas_failed"),
        (["cas", "k", "hello world", "x"], 0, "OK\n", ""),
        (["cas", "--absent", "new", "1"], 0, "OK\n", ""),
        (["del", "k"], 0, "1 key deleted\n", ""),
        (["del", "k"], 0, "0 keys deleted\n", ""),  # absent: nothing to do, still success
        (["put", "--", "neg", "-5x"], 0, "OK\n", ""),
        (["cas", "k"], 2, "", "usage: cas"),
        (["frobnicate"], 2, "", "unknown command"),
    ]
    for args, code, out, err in steps:
        result = cli("--config", path, *args)
        assert (result.returncode, result.stdout) == (code, out), (args, result)
        assert err in result.stderr, (args, result.stderr)
    assert cluster.kv.get(b"neg") == b"-5x" and cluster.kv.get(b"k") is None


def test_cli_json_output_parses(cli: CliRunner, config: tuple[FakeCluster, str]) -> None:
    _, path = config
    put = json.loads(cli("--json", "--config", path, "put", "k", "v").stdout)
    assert put["ok"] is True and put["index"] == 1
    got = json.loads(cli("--json", "--config", path, "get", "k").stdout)
    assert (got["value"], got["found"]) == ("v", True)
    failed = cli("--json", "--config", path, "cas", "k", "x", "y")
    assert failed.returncode == 1
    assert json.loads(failed.stdout)["error"]["code"] == "cas_failed"


def test_cli_endpoint_without_config(cli: CliRunner, fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(2)
    result = cli("--endpoint", cluster.endpoints[1], "put", "k", "v")
    assert (result.returncode, result.stdout) == (0, "OK\n")
    assert [node for node, _ in cluster.requests] == ["n2"]
    bad = cli("--endpoint", "localhost:1", "get", "k")
    assert bad.returncode == 2 and "bad endpoint" in bad.stderr


def test_cli_usage_and_config_errors(cli: CliRunner, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    result = cli("--config", str(missing), "get", "k")
    assert result.returncode == 2 and str(missing) in result.stderr
    neither = cli("get", "k")  # neither --config nor --endpoint, and no default config
    assert neither.returncode == 2 and "ZRAFT_CONFIG" in neither.stderr
    assert cli("--timeout", "-1", "--endpoint", "tcp://127.0.0.1:9", "get", "k").returncode == 2
    helped = cli("--help")
    assert helped.returncode == 0 and "exit codes" in helped.stdout


def test_cli_unavailability_exits_3(
    cli: CliRunner, fake: Callable[..., FakeCluster], silent: Callable[[], str]
) -> None:
    cluster = fake()
    cluster.unavailable = 10**9
    result = cli("--endpoint", cluster.endpoints[0], "--timeout", "0.3", "put", "k", "v")
    assert result.returncode == 3 and "error: unavailable" in result.stderr
    dead = silent()
    result = cli("--json", "--endpoint", dead, "--timeout", "0.3", "get", "k")
    assert result.returncode == 3
    reply = json.loads(result.stdout)
    assert reply["error"]["code"] == "client_timeout" and dead in reply["error"]["message"]


def test_cli_repl_through_stdin(cli: CliRunner, config: tuple[FakeCluster, str]) -> None:
    _, path = config
    script = (
        'put a 1\nget a\n\nput b "two words"\nget b\nget zz\nbogus\ncas a 9 9\ndel a\nquit\nget a\n'
    )
    result = cli("--config", path, stdin=script)
    # On a pipe the REPL exits with the code of the last command that failed (`cas`: 1),
    # so a script notices; every line still ran.
    assert result.returncode == 1, result.stderr
    assert result.stdout.splitlines() == [
        "OK",
        "1",
        "OK",
        "two words",
        "(not found)",
        "error: unknown command 'bogus'; try help",
        "error: cas_failed: current value differs (current value: 1)",
        "1 key deleted",
    ]
    assert result.stderr == ""


def test_cli_repl_json_and_eof(cli: CliRunner, config: tuple[FakeCluster, str]) -> None:
    _, path = config
    result = cli("--json", "--config", path, stdin="put a 1\nget a\n")
    assert result.returncode == 0
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["ok"] for line in lines] == [True, True] and lines[1]["value"] == "1"


def test_cli_repl_help(cli: CliRunner, config: tuple[FakeCluster, str]) -> None:
    _, path = config
    result = cli("--config", path, stdin="help\nhelp cas\n")
    assert "put KEY [VALUE]" in result.stdout and "usage: cas KEY OLD NEW" in result.stdout


def test_cli_status_table(
    cli: CliRunner, tmp_path: Path, fake: Callable[..., FakeCluster], silent: Callable[[], str]
) -> None:
    cluster = fake()
    path = str(write_config(tmp_path / "c.toml", {"n1": cluster.endpoints[0], "n2": silent()}))
    result = cli("--config", path, "--timeout", "0.5", "status")
    assert result.returncode == 0, result.stderr
    header, row1, row2 = (line.split() for line in result.stdout.splitlines())
    assert header == [
        "node", "endpoint", "role", "term", "leader", "commit", "applied", "last", "snapshot",
        "log", "reachable",
    ]  # fmt: skip
    assert row1[0] == "n1" and row1[2:] == ["leader", "3", "n1", "0", "0", "0", "0", "0B", "yes"]
    assert row2[0] == "n2" and row2[2:] == ["-"] * 8 + ["no"]

    as_json = json.loads(cli("--json", "--config", path, "--timeout", "0.5", "status").stdout)
    assert as_json["ok"] is True
    assert [n["reachable"] for n in as_json["nodes"]] == [True, False]
    assert as_json["nodes"][0]["status"]["voters"] == ["n1"]

    only = cli("--config", path, "--endpoint", cluster.endpoints[0], "status")
    assert only.returncode == 0 and len(only.stdout.splitlines()) == 2


def test_cli_status_shows_snapshot_index_and_log_size(
    cli: CliRunner, config: tuple[FakeCluster, str]
) -> None:
    cluster, path = config
    cluster.node("n1").extra_status.update(snapshot_index=1200, log_bytes=1_234_567)
    cluster.node("n2").extra_status.update(snapshot_index=0, log_bytes=70 << 20)
    result = cli("--config", path, "status", "--verbose")
    assert result.returncode == 0, result.stderr
    rows = [line.split() for line in result.stdout.splitlines()[1:]]
    assert [row[8:10] for row in rows] == [["1200", "1.2M"], ["0", "70M"]]
    # The new columns are not repeated among the verbose details; first_index is there.
    assert "first_index=1" in rows[0][-1] and "log_bytes" not in result.stdout


def test_human_bytes() -> None:
    from zraft.cli.render import human_bytes

    cases = [(0, "0B"), (1023, "1023B"), (1024, "1.0K"), (1_234_567, "1.2M"), (70 << 20, "70M")]
    assert [human_bytes(n) for n, _ in cases] == [text for _, text in cases]
    assert human_bytes(5 << 40) == "5.0T" and human_bytes(3 << 50) == "3072T"


def test_cli_snapshot_one_shot(cli: CliRunner, config: tuple[FakeCluster, str]) -> None:
    cluster, path = config
    assert cli("--config", path, "put", "k", "v").returncode == 0
    taken = cli("--config", path, "snapshot", "n2")
    assert (taken.returncode, taken.stdout) == (0, "snapshot at index 1 (4321 bytes, 4.2K)\n")
    again = cli("--config", path, "snapshot", "n2")
    assert again.stdout == (
        "snapshot at index 1 (already current: nothing applied since the last one)\n"
    )
    as_json = json.loads(cli("--json", "--config", path, "snapshot", "n1").stdout)
    assert as_json["ok"] is True and as_json["snapshot"] == {"index": 1, "size_bytes": 4321}
    by_endpoint = cli("--endpoint", cluster.endpoints[0], "snapshot")
    assert by_endpoint.stdout.startswith("snapshot at index 1 (already current")
    snapshots = [node for node, req in cluster.requests if req.op == "snapshot"]
    assert snapshots == ["n2", "n2", "n1", "n1"]

    no_node = cli("--config", path, "snapshot")
    assert no_node.returncode == 2 and "usage: snapshot NODE" in no_node.stderr
    unknown = cli("--config", path, "snapshot", "n7")
    assert unknown.returncode == 2 and "unknown node 'n7' (known: n1, n2)" in unknown.stderr
    cluster.unavailable = 1  # an error answer: shown, exit 3, and not retried elsewhere
    refused = cli("--config", path, "snapshot", "n2")
    assert refused.returncode == 3 and "error: unavailable" in refused.stderr
    assert [node for node, req in cluster.requests if req.op == "snapshot"][4:] == ["n2"]


def test_cli_snapshot_in_the_repl(cli: CliRunner, config: tuple[FakeCluster, str]) -> None:
    _, path = config
    result = cli("--config", path, stdin="put a 1\nsnapshot n1\nsnapshot\nhelp snapshot\n")
    lines = result.stdout.splitlines()
    assert lines[:2] == ["OK", "snapshot at index 1 (4321 bytes, 4.2K)"]
    assert lines[2] == "usage: snapshot NODE (a node id of the config), or --endpoint"
    assert lines[3].startswith("usage: snapshot [-h]") and lines[3].endswith(" [NODE]")
    assert "snapshot [NODE]" in cli("--config", path, stdin="help\n").stdout


def test_cli_status_with_nothing_reachable_exits_3(
    cli: CliRunner, silent: Callable[[], str]
) -> None:
    result = cli("--endpoint", silent(), "--timeout", "0.3", "status")
    assert result.returncode == 3 and result.stdout.splitlines()[1].endswith("no")


def test_cli_bench_summary(cli: CliRunner, config: tuple[FakeCluster, str]) -> None:
    cluster, path = config
    result = cli("--config", path, "bench", "--clients", "4", "--requests", "200")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].startswith("bench put: 4 clients, 200 requests each")
    assert lines[1].startswith("ops 800  errors 0") and "ops/s" in lines[1]
    assert "p50" in lines[2] and "p99" in lines[2]
    assert cluster.applied_writes == 800

    as_json = cli("--json", "--config", path, "bench", "--clients", "2", "--requests", "10")
    summary = json.loads(as_json.stdout)
    assert (summary["ops"], summary["errors"], summary["clients"]) == (20, 0, 2)
    assert set(summary["latency_ms"]) == {"p50", "p90", "p99", "max", "mean"}


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty behaviour is Linux's")
def test_cli_repl_on_a_terminal(
    tmp_path: Path, fake: Callable[..., FakeCluster], cli: CliRunner
) -> None:
    """Prompt, tab-completion of command names, history file, Ctrl-D to leave."""
    cluster = fake()
    history = tmp_path / "history"
    env = {**os.environ, "ZRAFT_HISTORY": str(history), "TERM": "dumb"}
    steps = [
        (b"put a 1\r", b"OK\r\nzraft> "),
        # `snap` completes to `snapshot` (of the --endpoint node), `sta` to `status`
        (b"snap\t\r", b"snapshot at index 1 (4321 bytes, 4.2K)\r\nzraft> "),
        (b"sta\t\r", b"yes\r\nzraft> "),
    ]
    command = [sys.executable, str(CLIENT_BIN), "--endpoint", cluster.endpoints[0]]
    assert type_session(command, env, steps, timeout=SUBPROCESS_TIMEOUT_S) == 0
    assert history.read_text().splitlines() == ["put a 1", "snapshot", "status"]


def test_bench_gives_up_when_no_node_answers(silent: Callable[[], str]) -> None:
    """A bench against nodes that never answer ends after ~2 timeouts, not one per request."""
    from zraft.bench.load import BenchSpec, run_bench

    started = time.monotonic()
    result = run_bench([silent()], BenchSpec(clients=2, requests=1000, timeout=0.2))
    assert result.ops == 0
    assert result.errors >= 2
    # 2000 requests x 0.2 s each would be 400 s; giving up takes about 3 timeouts.
    assert time.monotonic() - started < 60, "the bench must stop issuing once nothing answers"


def test_a_node_that_goes_away_is_left_at_once_not_after_the_attempt_timeout(
    fake: Callable[..., FakeCluster],
) -> None:
    """A killed node closes its connection; the client moves to the next node immediately.

    A REQ socket never reports a dead peer, so without the socket monitor this put would
    wait out the whole 20 s attempt timeout on the vanished endpoint first.
    """
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    doomed, doomed_endpoint = silent_endpoint(context)  # accepts, never answers
    cluster = fake(1)
    client = Client([doomed_endpoint, cluster.endpoints[0]], timeout=40.0, attempt_timeout=20.0)
    try:
        started = time.monotonic()
        outcome: list[Reply] = []

        def close_soon() -> None:
            # Close the silent node once the put is waiting on it: its connection drops.
            time.sleep(0.3)
            doomed.close(linger=0)

        closer = threading.Thread(target=close_soon)
        closer.start()
        outcome.append(client.put("k", "v"))
        closer.join()
        assert outcome[0].ok
        assert outcome[0].endpoint == cluster.endpoints[0]
        assert time.monotonic() - started < 10.0, "waited out the attempt timeout"
    finally:
        client.close()
        context.term()


# --- membership and leadership (issue 6) --------------------------------------------------


def test_membership_changes_through_any_node(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(3)
    with Client(cluster.endpoints[2], timeout=2) as client:
        added = client.add_member("n4", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2", learner=True)
        assert added.ok and added.member("n4") == {
            "id": "n4",
            "role": "learner",
            "peer": "tcp://127.0.0.1:1",
            "client": "tcp://127.0.0.1:2",
            "match_index": 1,
        }
        assert added.config_index == 1
        promoted = client.promote("n4")
        assert promoted.ok and (promoted.member("n4") or {})["role"] == "voter"
        assert client.remove("n4").ok and client.members().member("n4") is None
        auto = client.add_member("n5", "tcp://127.0.0.1:3", "tcp://127.0.0.1:4")
        assert (auto.member("n5") or {})["role"] == "learner"  # promoted after the answer
        moved = client.transfer_leader("n2")
        assert (moved.ok, moved.raw["transferred_to"], moved.leader) == (True, "n2", "n2")
        with pytest.raises(ValueError, match="bad endpoint"):
            client.add_member("n6", "localhost:1", "tcp://127.0.0.1:5")
    sent = [(req.op, req.learner) for _, req in cluster.requests if req.op == "add_member"]
    assert sent == [("add_member", True), ("add_member", False)]  # n6 never left the client


def test_members_asks_the_leader_for_match_indexes(fake: Callable[..., FakeCluster]) -> None:
    cluster = fake(3, leader="n1")
    with Client(cluster.endpoints[1], timeout=2) as client:
        reply = client.members()
        assert reply.endpoint == cluster.endpoints[0] and reply.leader == "n1"
        assert all(type(row["match_index"]) is int for row in reply.members or [])
        local = client.members(match_from_leader=False)
        assert local.endpoint == cluster.endpoints[1]
        assert all(row["match_index"] is None for row in local.members or [])
    assert [node for node, req in cluster.requests] == ["n2", "n1", "n2"]


def test_a_membership_change_is_not_resent_after_a_lost_reply(
    fake: Callable[..., FakeCluster],
) -> None:
    cluster = fake(2)
    cluster.drop_replies = 1  # the change is made, but its answer is lost
    with Client(cluster.endpoints, timeout=0.5) as client:
        with pytest.raises(ClientTimeout, match="outcome is unknown"):
            client.add_member("n3", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
        # Asking again by hand shows why a blind retry would mislead:
        again = client.add_member("n3", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2")
        assert again.error_code == "bad_request" and "n3 is already a" in str(again.error_message)
    assert [req.op for _, req in cluster.requests] == ["add_member", "add_member"]


def test_a_membership_change_is_retried_when_nothing_happened(
    fake: Callable[..., FakeCluster],
) -> None:
    cluster = fake(2)
    cluster.unavailable = 3  # e.g. "the learner is still catching up"
    dead = free_ports(1)[0]  # nothing listens there: the request is never sent
    endpoints = [f"tcp://127.0.0.1:{dead}", *cluster.endpoints]
    with Client(endpoints, timeout=5) as client:
        reply = client.remove("n2")
        assert reply.ok and reply.member("n2") is None
        cluster.conflict = 1  # "one change at a time": returned, not retried
        refused = client.promote("n1")
    assert (refused.ok, refused.error_code) == (False, "conflict")
    assert [req.op for _, req in cluster.requests].count("remove_member") == 4


def test_cli_membership_commands(cli: CliRunner, config: tuple[FakeCluster, str]) -> None:
    cluster, path = config
    table = cli("--config", path, "members")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["node", "role", "match", "peer", "client"]
    assert lines[1].split()[:4] == ["*", "n1", "voter", "0"]
    assert lines[2].split()[:3] == ["n2", "voter", "0"]
    assert lines[-1] == "leader n1, config index 0"
    steps = [
        (["add-learner", "n3", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"], 0,
         "OK: n3 added as a learner (config index 1)\n"),
        (["add-learner", "n3", "tcp://127.0.0.1:1", "tcp://127.0.0.1:2"], 1, ""),
        (["add-learner", "n9", "nowhere", "tcp://127.0.0.1:2"], 2, ""),
        (["promote", "n3"], 0, "OK: n3 is a voter (config index 2)\n"),
        (["remove", "n3"], 0, "OK: n3 removed (config index 3)\n"),
        (["add-member", "n4", "tcp://127.0.0.1:3", "tcp://127.0.0.1:4"], 0,
         "OK: n4 added as a learner; the leader promotes it once caught up (config index 4)\n"),
        (["transfer-leader", "n2"], 0, "OK: n2 is the leader\n"),
        (["remove", "n7"], 1, ""),
        (["promote"], 2, ""),
    ]  # fmt: skip
    for args, code, out in steps:
        result = cli("--config", path, *args)
        assert (result.returncode, result.stdout) == (code, out), (args, result)
    assert cluster.members["n4"].role == "voter" and cluster.leader == "n2"
    as_json = json.loads(cli("--json", "--config", path, "members").stdout)
    assert as_json["leader"] == "n2" and [m["id"] for m in as_json["members"]] == ["n1", "n2", "n4"]
    cluster.conflict = 1
    conflict = cli("--config", path, "remove", "n4")
    assert conflict.returncode == 1 and "error: conflict" in conflict.stderr
    cluster.drop_replies = 1
    lost = cli("--config", path, "--timeout", "0.5", "remove", "n4")
    assert lost.returncode == 3
    assert "outcome is unknown" in lost.stderr and "check `members`" in lost.stderr


def test_cli_membership_in_the_repl(cli: CliRunner, config: tuple[FakeCluster, str]) -> None:
    _, path = config
    script = (
        "add-learner n3 tcp://127.0.0.1:1 tcp://127.0.0.1:2\npromote n3\nremove n3\n"
        "transfer-leader\nhelp add-member\nhelp\n"
    )
    result = cli("--config", path, stdin=script)
    lines = result.stdout.splitlines()
    assert lines[:4] == [
        "OK: n3 added as a learner (config index 1)",
        "OK: n3 is a voter (config index 2)",
        "OK: n3 removed (config index 3)",
        "OK: n2 is the leader",
    ]
    assert lines[4].startswith("usage: add-member [-h] [--public-key KEY]")
    assert "ID PEER CLIENT" in " ".join(lines[4:6])  # argparse may wrap the usage
    assert any(line.startswith("transfer-leader [ID]") for line in lines)


def test_cli_default_config(
    cli: CliRunner, config: tuple[FakeCluster, str], tmp_path: Path
) -> None:
    """Without --config: `$ZRAFT_CONFIG`, else `conf/local.toml` of the current directory."""
    cluster, path = config
    assert cli("put", "k", "v", env={"ZRAFT_CONFIG": path}).returncode == 0
    got = cli("get", "k", env={"ZRAFT_CONFIG": path})
    assert (got.returncode, got.stdout) == (0, "v\n")
    local = tmp_path / "cwd" / "conf" / "local.toml"  # the cli fixture's working directory
    local.parent.mkdir()
    local.write_text(Path(path).read_text())
    here = cli("get", "k")
    assert (here.returncode, here.stdout) == (0, "v\n")
    assert len([node for node, req in cluster.requests if req.op == "get"]) == 2


def test_cli_values_that_start_with_a_dash_or_hold_an_apostrophe(
    cli: CliRunner, config: tuple[FakeCluster, str]
) -> None:
    """`put k -x` stores `-x` (no `--` needed); `put q don't` in the REPL stores `don't`."""
    _, path = config
    assert cli("--config", path, "put", "k", "-x").returncode == 0
    assert cli("--config", path, "get", "k").stdout == "-x\n"
    assert cli("--config", path, "put", "--", "-k", "--v").returncode == 0
    assert cli("--config", path, "get", "-k").stdout == "--v\n"
    repl = cli("--config", path, stdin="put q don't\nget q\nput r 'open\n")
    assert repl.stdout.splitlines() == [
        "OK",
        "don't",
        "error: cannot parse the line: No closing quotation",
    ]
    assert repl.returncode == 2, "an unbalanced quote is a usage error"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="pty behaviour is Linux's")
def test_cli_repl_completes_options_on_a_terminal(
    tmp_path: Path, fake: Callable[..., FakeCluster]
) -> None:
    """Tab completes a command's option (`get a --ser<TAB>` -> `--serializable`)."""
    cluster = fake()
    history = tmp_path / "history"
    env = {**os.environ, "ZRAFT_HISTORY": str(history), "TERM": "dumb"}
    steps = [(b"put a 1\r", b"OK\r\nzraft> "), (b"get a --ser\t\r", b"1\r\nzraft> ")]
    command = [sys.executable, str(CLIENT_BIN), "--endpoint", cluster.endpoints[0]]
    assert type_session(command, env, steps, timeout=SUBPROCESS_TIMEOUT_S) == 0
    assert history.read_text().splitlines() == ["put a 1", "get a --serializable"]


_FULL_MONITOR = """
import time, zmq
from zraft.client import monitor
ctx = zmq.Context()
sock = ctx.socket(zmq.REQ)
sock.reconnect_ivl = sock.reconnect_ivl_max = 1  # a dead node, retried every millisecond
watcher = sock.get_monitor_socket(zmq.EVENT_ALL)
sock.connect("tcp://127.0.0.1:%d")
time.sleep(2.5)  # about 2,000 unread events by then: the queue is full (measured)
%s(sock, watcher)
print("closed")
"""


def test_a_monitor_left_unread_does_not_hang_the_close() -> None:
    """A socket retrying a dead node with its monitor unread fills the monitor's queue;
    libzmq's `disable_monitor` then blocks the whole process (it holds the GIL): the
    client's naive close (`disable_monitor`, then close) hung a watcher thread for minutes
    in a nemesis run, and hangs this script too. `monitor.release` reads the queue first."""
    (port,) = free_ports(1)
    script = _FULL_MONITOR % (port, "monitor.release")
    try:
        done = subprocess.run(
            [sys.executable, "-c", script], capture_output=True, text=True, timeout=8
        )
    except subprocess.TimeoutExpired:
        pytest.fail("monitor.release hung on a full monitor queue")
    assert done.returncode == 0 and done.stdout == "closed\n", done.stderr
