"""Security on real processes: who may talk to a secured cluster, and what outsiders cannot do.

Every `ProcessCluster` runs CURVE with fresh keys (`tests.procs`): members `n1..nN`, and
client keys `admin`, `writer` and `reader` with those roles. These tests check, on real
`bin/zraft-node` processes and the real `bin/zraft-client`:

- a client with no key, an unknown key, or a `read` key trying to write gets a clear
  error promptly and changes nothing; a plaintext client cannot talk to the node at all;
- a rogue with an unknown key, running beside the cluster for a few seconds (a real node
  process claiming a member's id, and a scripted one flooding the leader with
  higher-term votes and appends), causes no term change, no election, no data change;
- a member's key cannot be used to speak as another member;
- garbage on the secured ports reaches nothing (no `bad_frame`) and the node keeps
  serving.

Events are counted in the nodes' JSON logs, as elsewhere; waits are bounded.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import zmq

from tests import logscan
from tests.procs import NODE_SCRIPT, ROOT, ClusterFactory, ProcessCluster, free_ports
from zraft import wire
from zraft.client import Client, ClientAuthError
from zraft.core.messages import AppendRequest, VoteRequest
from zraft.net import security
from zraft.net.security import Keypair

CLIENT_SCRIPT = ROOT / "bin" / "zraft-client"
ROGUE_RUN_S = 4.0  # how long the rogues run beside the cluster: several election timeouts


@pytest.fixture
def raw_context() -> Iterator[zmq.Context[zmq.Socket[bytes]]]:
    """A context for the tests' own raw sockets; destroy() closes them all with linger 0."""
    context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    yield context
    context.destroy(linger=0)


def zraft_client(
    cluster: ProcessCluster, *args: str, key: str | None = None, config: Path | None = None
) -> tuple[int, str, str, float]:
    """Run `bin/zraft-client --config F [--key K] ARGS`: (exit code, stdout, stderr, seconds)."""
    command = [sys.executable, str(CLIENT_SCRIPT), "--config", str(config or cluster.config_path)]
    if key is not None:
        command += ["--key", key]
    env = {k: v for k, v in os.environ.items() if k != security.ENV_CLIENT_KEY}
    started = time.monotonic()
    done = subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=30, env=env, check=False
    )
    return done.returncode, done.stdout, done.stderr, time.monotonic() - started


def count(cluster: ProcessCluster, name: str, node_id: str | None = None, **fields: str) -> int:
    """How many `name` events one node (or every node) logged with `fields`."""
    events = cluster.node_events(node_id) if node_id else cluster.events()
    return logscan.count(events, name, **fields)


def test_clients_without_a_fitting_key_get_clear_errors_and_change_nothing(
    make_cluster: ClusterFactory, tmp_path: Path, raw_context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """No key: exit 2 naming --key/ZRAFT_CLIENT_KEY. Unknown key: `auth_failed`, exit 4,
    well before the request timeout, and the nodes log `auth_denied`. A `read` key: gets
    work, put/del/cas are `forbidden` (exit 1); a `write` key may write but not run an
    admin op. A plaintext REQ socket gets no answer at all, and the client library in
    plaintext raises `ClientAuthError` at once. The value written first is unchanged."""
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    assert cluster.request_until_ok(leader, "put", key="k", value="original")["ok"]

    no_key_config = tmp_path / "no-key.toml"
    text = cluster.config_path.read_text()
    no_key_config.write_text(text[: text.index("[client]")])
    code, _, err, _ = zraft_client(cluster, "put", "k", "x", config=no_key_config)
    assert code == 2 and "--key FILE" in err and "ZRAFT_CLIENT_KEY" in err, err

    security.keygen(tmp_path / "stranger")
    denied_before = count(cluster, "auth_denied", source="client")
    code, _, err, took = zraft_client(
        cluster, "--timeout", "20", "put", "k", "x", key=str(tmp_path / "stranger.key")
    )
    assert code == 4 and "auth_failed" in err and "refused this client's key" in err, err
    assert took < 10, f"an auth refusal must be reported promptly, took {took:.1f} s"
    logscan.wait_for(
        lambda: count(cluster, "auth_denied", source="client") > denied_before,
        timeout=5,
        describe=cluster.describe,
    )
    code, _, err, _ = zraft_client(cluster, "status", key=str(tmp_path / "stranger.key"))
    assert code == 4 and "auth_failed" in err, err

    reader = str(cluster.keys_dir / "reader.key")
    for command in (["put", "k", "x"], ["del", "k"], ["cas", "k", "original", "x"]):
        code, _, err, _ = zraft_client(cluster, *command, key=reader)
        assert code == 1 and "forbidden" in err and "'write'" in err, (command, err)
    code, out, err, _ = zraft_client(cluster, "get", "k", key=reader)
    assert (code, out.strip()) == (0, "original"), err
    code, out, _, _ = zraft_client(cluster, "status", key=reader)
    assert code == 0 and "leader" in out

    writer = security.client_curve(cluster.config, cluster.keys_dir / "writer.key")
    with Client.from_config(cluster.config_path, curve=writer) as client:
        assert client.put("w", "by writer").ok
        snapshot = client.request("snapshot")
        assert (snapshot.ok, snapshot.error_code) == (False, "forbidden"), snapshot

    plain = raw_context.socket(zmq.REQ)
    plain.setsockopt(zmq.LINGER, 0)
    plain.connect(cluster.client_endpoints[leader])
    plain.send(wire.encode_request("put", key="k", value="plaintext"))
    assert not plain.poll(1500, zmq.POLLIN), "a plaintext client was answered"
    started = time.monotonic()
    with (
        Client(list(cluster.client_endpoints.values()), timeout=20) as plaintext,
        pytest.raises(ClientAuthError, match="plaintext client and CURVE node"),
    ):
        plaintext.put("k", "plaintext")
    assert time.monotonic() - started < 10

    got = cluster.request(leader, "get", key="k")
    assert got["ok"] and got["value"] == b"original", got


def _rogue_config(cluster: ProcessCluster, directory: Path, rogue_key: Path) -> Path:
    """A config in which the rogue, with its own key, claims to be member n2 (on ports of
    its own) of a cluster whose other members are the real ones."""
    lines = cluster.config_path.read_text().splitlines()
    port_peer, port_client = free_ports(2)
    n2 = cluster.config.node("n2")
    public = security.read_public_key(rogue_key.with_suffix(".pub")).decode()
    out: list[str] = []
    in_n2 = False
    for line in lines:
        if line.startswith("id = "):
            in_n2 = line == 'id = "n2"'
        elif line.startswith("[") and line != "[[node]]":
            in_n2 = False
        if in_n2 and line.startswith("peer = "):
            line = f'peer = "tcp://127.0.0.1:{port_peer}"'
        elif in_n2 and line.startswith("client = "):
            line = f'client = "tcp://127.0.0.1:{port_client}"'
        elif in_n2 and line.startswith("public_key = "):
            line = f'public_key = "{public}"'
        elif in_n2 and line.startswith("secret_key_file = "):
            line = f'secret_key_file = "{rogue_key}"'
        elif line.startswith("data_dir = ") and in_n2:
            line = f'data_dir = "{directory / "data"}"'
        elif line.startswith("log_dir = "):
            line = f'log_dir = "{directory / "logs"}"'
        out.append(line)
    assert n2.peer not in "\n".join(out)
    path = directory / "rogue.toml"
    path.write_text("\n".join(out) + "\n")
    return path


def test_a_rogue_with_an_unknown_key_changes_nothing(
    make_cluster: ClusterFactory, tmp_path: Path, raw_context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Beside a healthy cluster, for a few seconds: a real node process with its own key
    claiming to be n2 (it campaigns, since it never hears a leader), and a scripted rogue
    that keeps connecting to the leader's peer port with fresh unknown keys, sending
    higher-term VoteRequests and AppendRequests as n2. The cluster logs no election and
    no term change, keeps its term and data, logs `auth_denied` (rate-limited), and never
    logs a `bad_frame`: nothing the rogues sent was delivered."""
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    assert cluster.request_until_ok(leader, "put", key="k", value="before")["ok"]
    term = cluster.status(leader)["term"]
    elected, term_changes = count(cluster, "leader_elected"), count(cluster, "term_changed")
    bad_before = count(cluster, "bad_frame")

    rogue_dir = tmp_path / "rogue"
    rogue_dir.mkdir()
    security.keygen(rogue_dir / "rogue")
    rogue_config = _rogue_config(cluster, rogue_dir, rogue_dir / "rogue.key")
    with (rogue_dir / "stderr").open("wb") as err:
        rogue = subprocess.Popen(
            [sys.executable, str(NODE_SCRIPT), "--config", str(rogue_config), "--id", "n2"],
            stdout=subprocess.DEVNULL,
            stderr=err,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + ROGUE_RUN_S
        attempts = 0
        while time.monotonic() < deadline:
            attempts += 1
            dealer = cluster.peer_dealer(
                raw_context, leader, Keypair(*zmq.curve_keypair()), routing_id="n2"
            )
            for msg in (
                VoteRequest("n2", leader, term + 10, 1000, term + 5, False, False),
                AppendRequest("n2", leader, term + 10, 0, 0, (), 0, 0),
            ):
                with contextlib.suppress(zmq.Again):  # refused already: no pipe left
                    dealer.send(wire.encode_message(msg), zmq.NOBLOCK)
            dealer.poll(50, zmq.POLLIN)  # pace the flood: ~20 connections a second
            dealer.close(linger=0)
        rogue_events = logscan.read_events(rogue_dir / "logs" / "n2.jsonl")
        assert logscan.count(rogue_events, "election_started") > 0, "the rogue never campaigned"
        assert rogue.poll() is None, "the rogue node exited"
    finally:
        rogue.terminate()
        rogue.wait(timeout=10)

    assert count(cluster, "leader_elected") == elected, cluster.describe()
    assert count(cluster, "term_changed") == term_changes, cluster.describe()
    status = cluster.status(leader)
    assert (status["role"], status["term"]) == ("leader", term), status
    assert count(cluster, "bad_frame") == bad_before, cluster.describe()
    denied_events = logscan.select(cluster.node_events(leader), "auth_denied", source="peer")
    denied = len(denied_events)
    assert denied >= 1, cluster.describe()
    # Rate-limited: at most 5 a second (plus a window's worth at either end), and what
    # was held back is counted in the next event's `suppressed`, not lost.
    ceiling = 5 * (ROGUE_RUN_S + 2)
    assert attempts > ceiling, f"only {attempts} attempts: too few to exceed the limit"
    assert denied <= ceiling, f"{denied} auth_denied for {attempts} attempts"
    assert sum(e["suppressed"] for e in denied_events) > 0, denied_events
    got = cluster.request(leader, "get", key="k")
    assert got["ok"] and got["value"] == b"before", got
    cluster.assert_safety()


def test_a_members_key_cannot_speak_as_another_member(
    make_cluster: ClusterFactory, raw_context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Follower A's key, presenting B's routing id, sends messages whose `src` is B:
    each is dropped as a `bad_frame` from A (the key decides, not the routing id or the
    payload), the leader keeps its term, and A's own messages still count (writes
    commit with B down)."""
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    follower_a, follower_b = (n for n in cluster.ids if n != leader)
    term = cluster.status(leader)["term"]
    logged = count(cluster, "bad_frame", leader, source="peer", sender=follower_a)
    dealer = cluster.peer_dealer(raw_context, leader, follower_a, routing_id=follower_b)
    for msg in (
        VoteRequest(follower_b, leader, term + 3, 1000, term, False, False),
        AppendRequest(follower_b, leader, term + 3, 0, 0, (), 0, 0),
    ):
        dealer.send(wire.encode_message(msg))
    logscan.wait_for(
        lambda: count(cluster, "bad_frame", leader, source="peer", sender=follower_a) >= logged + 2,
        timeout=5,
        describe=cluster.describe,
    )
    dealer.close(linger=0)
    reasons = {
        e["reason"]
        for e in logscan.select(cluster.node_events(leader), "bad_frame", sender=follower_a)
    }
    assert reasons == {f"claims to be {follower_b!r}"}, reasons
    status = cluster.status(leader)
    assert (status["role"], status["term"]) == ("leader", term), status
    cluster.kill(follower_b)
    put = cluster.request(leader, "put", key="after", value="with A only")
    assert put["ok"], f"{put}\n{cluster.describe()}"
    assert len(cluster.leader_elected()) == 1, cluster.describe()


def test_garbage_on_secured_ports_reaches_nothing(
    make_cluster: ClusterFactory, raw_context: zmq.Context[zmq.Socket[bytes]]
) -> None:
    """Raw TCP garbage (random bytes, an HTTP request, ZMTP/1.0 frames naming a peer) and
    plaintext ZeroMQ messages, 5 rounds on both of the leader's ports: no `bad_frame` is
    logged (the CURVE handshake fails before anything is delivered), the leader keeps
    serving and leading, and no election happens."""
    cluster = make_cluster(3)
    cluster.start_all()
    leader = cluster.wait_leader()
    rng = random.Random(8)
    bad_before = count(cluster, "bad_frame")
    endpoints = (cluster.peer_endpoints[leader], cluster.client_endpoints[leader])
    for _ in range(5):
        for endpoint in endpoints:
            host, port = endpoint.removeprefix("tcp://").rsplit(":", 1)
            for payload in (
                rng.randbytes(rng.randint(1, 4096)),
                b"GET / HTTP/1.1\r\nHost: zraft\r\n\r\n",
                b"\x03\x00n2\x06\x00hello",
            ):
                # A short timeout: libzmq may wait for more bytes of a greeting; nothing
                # is asserted about what (if anything) comes back.
                with socket.create_connection((host, int(port)), timeout=0.5) as raw:
                    try:
                        raw.sendall(payload)
                        raw.recv(4096)
                    except OSError:
                        pass  # reset by the node: the expected outcome
            plain = raw_context.socket(zmq.DEALER)
            plain.setsockopt(zmq.LINGER, 0)
            plain.setsockopt(zmq.ROUTING_ID, b"n2")
            plain.connect(endpoint)
            # NOBLOCK: once the handshake has failed a DEALER has no pipe left, and a
            # blocking send would wait forever.
            with contextlib.suppress(zmq.Again):
                plain.send_multipart(
                    [b"", wire.encode_request("put", key="k", value="x")], zmq.NOBLOCK
                )
            plain.close(linger=0)
    put = cluster.request(leader, "put", key="k", value="real")
    assert put["ok"], put
    assert count(cluster, "bad_frame") == bad_before, cluster.describe()
    assert cluster.status(leader)["role"] == "leader"
    assert len(cluster.leader_elected()) == 1, cluster.describe()


def test_a_plaintext_cluster_warns_at_every_start(make_cluster: ClusterFactory) -> None:
    """`security = "none"` is allowed only explicitly, and each start says so."""
    cluster = make_cluster(1, security="none")
    cluster.start_all()
    cluster.kill("n1")
    cluster.start("n1")
    assert count(cluster, "security_disabled", "n1") == 2
    assert 'security = "none"' in (cluster.directory / "n1.stderr").read_text()
    cluster.wait_leader()
    assert cluster.request_until_ok("n1", "put", key="k", value="v")["ok"]


def test_one_node_without_a_config_by_its_server_key(make_cluster: ClusterFactory) -> None:
    """`--endpoint` with `--server-key` (Z85 text or a .pub file) and `--key` reaches a
    secured node with no config; without the server key, the handshake cannot succeed."""
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()
    keys = cluster.keys_dir
    endpoint = cluster.client_endpoints["n2"]
    env = {
        k: v for k, v in os.environ.items() if k not in (security.ENV_CLIENT_KEY, "ZRAFT_CONFIG")
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, str(CLIENT_SCRIPT), "--endpoint", endpoint, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=30, env=env)

    admin = str(keys / "admin.key")
    put = run("--server-key", str(keys / "n2.pub"), "--key", admin, "put", "solo", "yes")
    assert (put.returncode, put.stdout) == (0, "OK\n"), put.stderr
    text_key = (keys / "n2.pub").read_text().strip()
    # `=`: a Z85 key may start with `-`, which argparse would take for an option.
    got = run(f"--server-key={text_key}", "--key", admin, "get", "solo")
    assert (got.returncode, got.stdout) == (0, "yes\n"), got.stderr
    wrong = run("--server-key", str(keys / "n1.pub"), "--key", admin, "--timeout", "2", "get", "x")
    assert wrong.returncode == 4 and "auth_failed" in wrong.stderr, wrong.stderr
    no_key = run(f"--server-key={text_key}", "get", "solo")
    assert no_key.returncode == 2 and "--key" in no_key.stderr
    plain = run("--timeout", "2", "get", "solo")  # no server key: plaintext to a CURVE node
    assert plain.returncode == 4 and "auth_failed" in plain.stderr, plain.stderr
