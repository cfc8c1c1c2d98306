"""Real `bin/zraft-node` processes for integration tests (a test helper, not a test file).

`ProcessCluster` writes a cluster config into a test's temporary directory (ports from the
OS, data dirs and logs inside the directory), starts and signals node processes by PID,
talks to client endpoints through its own small REQ helper, and reads the nodes' JSON
event logs through `tests.logscan`:

    cluster = ProcessCluster(tmp_path, 3)
    cluster.start_all()
    leader = cluster.wait_leader()
    reply = cluster.request("n2", "put", key="k", value="v")
    cluster.close()          # SIGCONT, SIGTERM, bounded wait, SIGKILL; sockets closed

Every wait is bounded (`logscan.wait_for` or a poll with a deadline) and a failed wait
says what was last seen (`describe()`: the last events of each node and its stderr tail).
The client REQ helper depends only on `zraft.wire` (and `zraft.net.security` for its keys),
never on the zraft client library.

Security is on, as in production: each cluster gets fresh CURVE keys in
`directory/keys/` (`n1.key`/`n1.pub` .. per node, and client keys `admin`, `writer`,
`reader` with those roles), and the REQ helper uses the `admin` key. Pass
`security="none"` for a plaintext cluster.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import zmq

from tests import logscan
from zraft import config, wire
from zraft.net import security

ROOT = Path(__file__).resolve().parent.parent
NODE_SCRIPT = ROOT / "bin" / "zraft-node"

START_TIMEOUT_S = 15.0  # a node process is up (node_started logged); imports on 1 core
STOP_TIMEOUT_S = 5.0  # SIGTERM -> exit, before SIGKILL
TRANSIENT_ERRORS = frozenset({"unavailable", "timeout", "not_leader"})
"""Error codes after which the same request may succeed later (no leader yet, a failover)."""


class NoReply(AssertionError):
    """A node did not answer a request within the client-side timeout."""


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ask the OS for `count` distinct free TCP ports on `host`.

    All sockets are held open until every port is chosen, so the ports are distinct; they
    are closed before returning (a small race with other processes remains, as always).
    """
    sockets: list[socket.socket] = []
    try:
        for _ in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sockets.append(sock)
            sock.bind((host, 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def node_ids(n: int) -> list[str]:
    """The ids of an n-node cluster: `n1` .. `nN`."""
    return [f"n{i}" for i in range(1, n + 1)]


CLIENT_ROLES = {"admin": "admin", "writer": "write", "reader": "read"}
"""The client keys every secured test cluster admits: key name -> role."""


def write_keys(keys_dir: Path, ids: Iterable[str]) -> dict[str, str]:
    """Generate (once) a keypair per node id and per `CLIENT_ROLES` name in `keys_dir`.

    Returns:
        name -> its Z85 public key text.
    """
    public: dict[str, str] = {}
    for name in (*ids, *CLIENT_ROLES):
        prefix = keys_dir / name
        if not (keys_dir / f"{name}.pub").exists():
            security.keygen(prefix)
        public[name] = security.read_public_key(keys_dir / f"{name}.pub").decode()
    return public


def security_lines(
    keys_dir: Path, ids: list[str], mode: str
) -> tuple[dict[str, list[str]], list[str]]:
    """The config lines of a test cluster's security: per node, and after the nodes.

    With `mode` "curve", keys are generated into `keys_dir` (inline public keys, secret
    key files, the `CLIENT_ROLES` client keys, `[client]` using `admin`); with "none",
    only `security = "none"` (in the tail: a `[cluster]` key would need the head).
    """
    if mode == "none":
        return {node_id: [] for node_id in ids}, []
    public = write_keys(keys_dir, ids)
    per_node = {
        node_id: [
            f'public_key = "{public[node_id]}"',
            f'secret_key_file = "{keys_dir / node_id}.key"',
        ]
        for node_id in ids
    }
    tail: list[str] = []
    for name, role in CLIENT_ROLES.items():
        tail += ["", "[[client_key]]", f'name = "{name}"', f'public_key = "{public[name]}"']
        tail.append(f'role = "{role}"')
    tail += ["", "[client]", f'secret_key_file = "{keys_dir / "admin.key"}"']
    return per_node, tail


def write_cluster_config(
    directory: Path,
    n: int,
    *,
    heartbeat_ms: int = 50,
    election_timeout_ms: tuple[int, int] = (300, 600),
    request_timeout_ms: int = 3000,
    security_mode: str = "curve",
    **cluster_options: int,
) -> Path:
    """Write `directory/cluster.toml` for n nodes on 127.0.0.1 with OS-chosen ports.

    Data dirs are `directory/data/<id>`, logs `directory/logs/<id>.jsonl`, keys
    `directory/keys/` (absolute paths).

    Args:
        security_mode: `curve` (keys generated, see `security_lines`) or `none`.
        cluster_options: more integer `[cluster]` keys, e.g. `max_value_bytes=1024`.

    Returns:
        The path of the config file.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ports = free_ports(2 * n)
    low, high = election_timeout_ms
    ids = node_ids(n)
    per_node, tail = security_lines(directory / "keys", ids, security_mode)
    lines = [
        "[cluster]",
        'name = "test"',
        f"heartbeat_ms = {heartbeat_ms}",
        f"election_timeout_ms = [{low}, {high}]",
        f"request_timeout_ms = {request_timeout_ms}",
        f'log_dir = "{directory / "logs"}"',
        f'security = "{security_mode}"',
        *(f"{key} = {value}" for key, value in cluster_options.items()),
    ]
    for i, node_id in enumerate(ids):
        lines += [
            "",
            "[[node]]",
            f'id = "{node_id}"',
            f'peer = "tcp://127.0.0.1:{ports[2 * i]}"',
            f'client = "tcp://127.0.0.1:{ports[2 * i + 1]}"',
            f'data_dir = "{directory / "data" / node_id}"',
            *per_node[node_id],
        ]
    path = directory / "cluster.toml"
    path.write_text("\n".join([*lines, *tail]) + "\n")
    return path


def client_curve_for(
    cluster: config.ClusterConfig, name: str = "admin"
) -> security.ClientCurve | None:
    """The `ClientCurve` of client key `name` (a `CLIENT_ROLES` key) of a secured test
    cluster, or None for a plaintext one. The key file is explicit, so a
    `ZRAFT_CLIENT_KEY` in the environment cannot change what tests use."""
    if cluster.security == "none":
        return None
    keys_dir = next(iter(cluster.nodes)).secret_key_file
    assert keys_dir is not None
    return security.client_curve(cluster, keys_dir.parent / f"{name}.key")


def leaders_by_term(events: Iterable[dict[str, Any]]) -> dict[int, list[str]]:
    """term -> the nodes that logged `leader_elected` in that term (election safety input)."""
    leaders: dict[int, list[str]] = defaultdict(list)
    for event in logscan.select(events, "leader_elected"):
        leaders[event["term"]].append(event["node"])
    return dict(leaders)


def own_terms(events: Iterable[dict[str, Any]]) -> list[int]:
    """A node's own current term at each event that states it, in log order.

    Pre-vote events (`election_started`, `vote_granted`) carry the term a pre-candidate
    *would* campaign in, not the node's term, so they are left out.
    """
    terms: list[int] = []
    for event in events:
        name = event["event"]
        if name == "term_changed":
            terms += [event["old_term"], event["new_term"]]
        elif name in ("node_started", "role_changed", "leader_changed", "leader_elected"):
            terms.append(event["term"])
    return terms


def assert_election_safety(
    events: list[dict[str, Any]], ids: Iterable[str], describe: Callable[[], str]
) -> None:
    """At most one `leader_elected` per term across all nodes (§5.2), and each node's own
    term never decreases in its log, across restarts too."""
    doubles = {t: ids for t, ids in leaders_by_term(events).items() if len(ids) > 1}
    assert not doubles, f"two leaders in one term: {doubles}\n{describe()}"
    for node_id in ids:
        terms = own_terms(e for e in events if e.get("node") == node_id)
        assert terms == sorted(terms), f"{node_id}: its term went down: {terms}"


def describe_nodes(
    ids: Iterable[str],
    procs: Mapping[str, subprocess.Popen[bytes]],
    node_events: Callable[[str], list[dict[str, Any]]],
    directory: Path,
    paused: Collection[str] = (),
) -> str:
    """For failure messages: each node's process state, last 20 events and stderr tail
    (read from `directory/<id>.stderr`)."""
    parts: list[str] = []
    for node_id in ids:
        proc = procs.get(node_id)
        if proc is None:
            state = "never started"
        elif proc.poll() is None:
            state = f"running pid {proc.pid}" + (" (paused)" if node_id in paused else "")
        else:
            state = f"exited with code {proc.returncode}"
        parts.append(f"--- {node_id}: {state}; last 20 events:")
        parts.append(logscan.tail(node_events(node_id), 20))
        stderr = directory / f"{node_id}.stderr"
        if stderr.exists() and stderr.stat().st_size:
            text = stderr.read_bytes()[-2000:].decode("utf-8", "replace")
            parts.append(f"--- {node_id} stderr tail:\n{text}")
    return "\n".join(parts)


class ReqClient:
    """One REQ socket per endpoint, with a timeout; a socket that timed out is replaced.

    A REQ socket that sent a request and got no answer cannot send again, so after a
    timeout the socket is closed (linger 0) and a fresh one is made for the next request;
    a late answer to the old one is discarded by libzmq.
    """

    def __init__(self, curve: security.ClientCurve | None = None) -> None:
        self._context: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self._sockets: dict[str, zmq.Socket[bytes]] = {}
        self.curve = curve

    def _socket(self, endpoint: str) -> zmq.Socket[bytes]:
        sock = self._sockets.get(endpoint)
        if sock is None:
            sock = self._context.socket(zmq.REQ)
            sock.setsockopt(zmq.LINGER, 0)
            if self.curve is not None:
                self.curve.apply(sock, endpoint)
            sock.connect(endpoint)
            self._sockets[endpoint] = sock
        return sock

    def drop(self, endpoint: str) -> None:
        """Close the socket for `endpoint` (the next request makes a new one)."""
        sock = self._sockets.pop(endpoint, None)
        if sock is not None:
            sock.close(linger=0)

    def send(self, endpoint: str, frames: list[bytes]) -> None:
        """Send `frames` as one request message (answer it with `receive`)."""
        self._socket(endpoint).send_multipart(frames)

    def receive(self, endpoint: str, timeout: float) -> list[bytes] | None:
        """Wait up to `timeout` s for the reply to the request sent to `endpoint`.

        Returns:
            The reply frames, or None if none arrived in time (the socket is replaced).
        """
        sock = self._socket(endpoint)
        if sock.poll(int(timeout * 1000), zmq.POLLIN):
            return sock.recv_multipart()
        self.drop(endpoint)
        return None

    def exchange(self, endpoint: str, frames: list[bytes], timeout: float) -> list[bytes] | None:
        """`send` then `receive`: the reply frames, or None on timeout."""
        self.send(endpoint, frames)
        return self.receive(endpoint, timeout)

    def close(self) -> None:
        """Close every socket (linger 0) and terminate the context."""
        for endpoint in list(self._sockets):
            self.drop(endpoint)
        self._context.destroy(linger=0)


class ProcessCluster:
    """n real `bin/zraft-node` processes with their config, data and logs in `directory`.

    Args:
        directory: a fresh directory owned by this cluster (a test's `tmp_path`).
        n: the number of nodes, called `n1` .. `nN`.
        heartbeat_ms, election_timeout_ms, request_timeout_ms: `[cluster]` settings.
        security: `curve` (default: keys in `directory/keys`) or `none` (plaintext).
        cluster_options: more integer `[cluster]` keys (`max_value_bytes`, ...).
    """

    def __init__(
        self,
        directory: Path,
        n: int,
        *,
        heartbeat_ms: int = 50,
        election_timeout_ms: tuple[int, int] = (300, 600),
        request_timeout_ms: int = 3000,
        security: str = "curve",
        **cluster_options: int,
    ) -> None:
        self.directory = directory
        self.ids = node_ids(n)
        self.election_timeout_ms = election_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.config_path = write_cluster_config(
            directory,
            n,
            heartbeat_ms=heartbeat_ms,
            election_timeout_ms=election_timeout_ms,
            request_timeout_ms=request_timeout_ms,
            security_mode=security,
            **cluster_options,
        )
        self.log_dir = directory / "logs"
        self.keys_dir = directory / "keys"
        self.config = config.load(self.config_path)
        self.client_endpoints = {node.id: node.client for node in self.config.nodes}
        self.peer_endpoints = {node.id: node.peer for node in self.config.nodes}
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._all_procs: list[subprocess.Popen[bytes]] = []  # every start, for cleanup
        self._paused: set[str] = set()
        # Started with --join: peer and client endpoints, secret key file (CURVE only).
        self._joiners: dict[str, tuple[str, str, Path | None]] = {}
        self.curve = client_curve_for(self.config)
        """The `admin` client's CURVE setup (None for a plaintext cluster)."""
        self._client = ReqClient(self.curve)
        self._closed = False

    # --- processes ------------------------------------------------------------------

    def add_joiner(self, node_id: str) -> dict[str, str]:
        """Make up endpoints, a data dir and (with CURVE) a keypair for a node the config
        file does not name; `start(node_id)` then runs it with `--join`.

        Returns:
            The `add_member` fields that describe it: `peer`, `client_endpoint`, and with
            CURVE `public_key`.
        """
        assert node_id not in self.ids, f"{node_id} is already known"
        peer_port, client_port = free_ports(2)
        peer, client = f"tcp://127.0.0.1:{peer_port}", f"tcp://127.0.0.1:{client_port}"
        fields = {"peer": peer, "client_endpoint": client}
        key_file = None
        if self.curve is not None:
            key_file = self.keys_dir / f"{node_id}.key"
            security.keygen(self.keys_dir / node_id)
            public = security.read_public_key(self.keys_dir / f"{node_id}.pub")
            fields["public_key"] = public.decode()
            # Our own client must know the new node's server key to talk to it.
            self.curve = dataclasses.replace(
                self.curve, server_keys={**self.curve.server_keys, client: public}
            )
            self._client.curve = self.curve
        self._joiners[node_id] = (peer, client, key_file)
        self.ids.append(node_id)
        self.client_endpoints[node_id] = client
        self.peer_endpoints[node_id] = peer
        return fields

    def member_fields(self, node_id: str) -> dict[str, str]:
        """The `add_member` fields for `node_id` (a node of the file or an `add_joiner`):
        `peer`, `client_endpoint`, and with CURVE `public_key`."""
        fields = {
            "peer": self.peer_endpoints[node_id],
            "client_endpoint": self.client_endpoints[node_id],
        }
        if self.curve is not None:
            if node_id in self._joiners:
                key = security.read_public_key(self.keys_dir / f"{node_id}.pub")
            else:
                ref = self.config.node(node_id).public_key
                assert ref is not None
                key = security.resolve(ref)
            fields["public_key"] = key.decode()
        return fields

    def start(self, node_id: str, *, wait: bool = True) -> None:
        """Start `node_id` (again) on its data dir; with `wait`, until it logs `node_started`.

        A node made with `add_joiner` runs with `--join` and its own endpoint flags.

        Raises:
            AssertionError: the node is already running, exits, or does not start in time.
        """
        assert not self.is_running(node_id), f"{node_id} is already running"
        before = self._started_count(node_id)
        out = (self.directory / f"{node_id}.stdout").open("ab")
        err = (self.directory / f"{node_id}.stderr").open("ab")
        command = [sys.executable, str(NODE_SCRIPT), "--config", str(self.config_path)]
        command += ["--id", node_id, "--test-fault-file", str(self.fault_path(node_id))]
        if os.environ.get("ZRAFT_TEST_LOG_LEVEL"):  # e.g. debug, to see every request
            command += ["--log-level", os.environ["ZRAFT_TEST_LOG_LEVEL"]]
        if node_id in self._joiners:
            peer, client, key_file = self._joiners[node_id]
            data_dir = self.directory / "data" / node_id
            command += ["--join", "--peer", peer, "--client", client, "--data-dir", str(data_dir)]
            if key_file is not None:
                command += ["--secret-key-file", str(key_file)]
        with out, err:
            proc = subprocess.Popen(
                command,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                start_new_session=True,  # a terminal's Ctrl-C goes to pytest only
            )
        self._procs[node_id] = proc
        self._all_procs.append(proc)
        if wait:
            self.wait_started([node_id], {node_id: before})

    # --- partitions (zraft.net.faults: the in-node hook, for machines without namespaces) -------

    def fault_path(self, node_id: str) -> Path:
        """The control file `node_id` watches (`--test-fault-file`)."""
        return self.directory / f"{node_id}.faults.json"

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups (nodes not named form one more group)."""
        sets = [set(g) for g in groups]
        rest = set(self.ids) - set().union(*sets)
        if rest:
            sets.append(rest)
        for node_id in self.ids:
            mine = next(g for g in sets if node_id in g)
            self._write_faults(node_id, sorted(set(self.ids) - mine))

    def heal(self) -> None:
        """Restore every link and stop any packet loss."""
        for node_id in self.ids:
            self._write_faults(node_id, [])

    def set_loss(self, probability: float) -> None:
        """Make every node drop this share of its outgoing peer messages (0 heals)."""
        for node_id in self.ids:
            self._write_faults(node_id, [], loss=probability)

    def _write_faults(self, node_id: str, block: list[str], loss: float = 0.0) -> None:
        # Write then rename, so a node never reads a half-written file.
        path = self.fault_path(node_id)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"block": block, "loss": loss}))
        tmp.replace(path)

    def start_all(self, node_ids: Iterable[str] | None = None) -> None:
        """Start the given nodes (default: all) and wait until each logs `node_started`."""
        ids = list(self.ids if node_ids is None else node_ids)
        before = {node_id: self._started_count(node_id) for node_id in ids}
        for node_id in ids:
            self.start(node_id, wait=False)
        self.wait_started(ids, before)

    def wait_started(self, ids: list[str], before: dict[str, int]) -> None:
        """Wait until each node logged more `node_started` events than `before[id]`."""

        def started() -> bool:
            for node_id in ids:
                proc = self._procs[node_id]
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{node_id} exited with code {proc.returncode}\n{self.describe()}"
                    )
            return all(self._started_count(node_id) > before[node_id] for node_id in ids)

        logscan.wait_for(started, timeout=START_TIMEOUT_S, describe=self.describe)

    def _started_count(self, node_id: str) -> int:
        return logscan.count(self.node_events(node_id), "node_started")

    def pid(self, node_id: str) -> int:
        """The PID of the running process of `node_id`."""
        return self._procs[node_id].pid

    def is_running(self, node_id: str) -> bool:
        """Whether `node_id` has a process that has not exited (paused counts as running)."""
        proc = self._procs.get(node_id)
        return proc is not None and proc.poll() is None

    def running(self) -> list[str]:
        """The ids of nodes whose process has not exited."""
        return [node_id for node_id in self.ids if self.is_running(node_id)]

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the node's PID; for SIGKILL/SIGTERM, wait (bounded) until it exits."""
        proc = self._procs[node_id]
        if sig in (signal.SIGKILL, signal.SIGTERM) and node_id in self._paused:
            # SIGCONT first: a stopped process would not act on SIGTERM until resumed.
            self.resume(node_id)
        os.kill(proc.pid, sig)
        if sig in (signal.SIGKILL, signal.SIGTERM):
            proc.wait(timeout=STOP_TIMEOUT_S)

    def pause(self, node_id: str) -> None:
        """SIGSTOP the node (resumed with `resume`, or in `close`)."""
        os.kill(self.pid(node_id), signal.SIGSTOP)
        self._paused.add(node_id)

    def resume(self, node_id: str) -> None:
        """SIGCONT a node paused with `pause`."""
        os.kill(self.pid(node_id), signal.SIGCONT)
        self._paused.discard(node_id)

    def stop_all(self) -> None:
        """SIGCONT paused nodes, SIGTERM every process, wait (bounded), then SIGKILL."""
        for node_id in list(self._paused):
            self._signal(self._procs[node_id], signal.SIGCONT)
        self._paused.clear()
        live = [proc for proc in self._all_procs if proc.poll() is None]
        for proc in live:
            self._signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in live:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                self._signal(proc, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)

    @staticmethod
    def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):  # exited since poll()
                os.kill(proc.pid, sig)

    def close(self) -> None:
        """Stop every process this cluster ever started and close the client sockets."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop_all()
        finally:
            self._client.close()

    # --- client requests ------------------------------------------------------------

    def request_raw(self, node_id: str, frames: list[bytes], timeout: float) -> list[bytes] | None:
        """Send raw frames to `node_id`'s client endpoint from a REQ socket.

        Returns:
            The reply frames, or None on timeout.
        """
        return self._client.exchange(self.client_endpoints[node_id], frames, timeout)

    def request(self, node_id: str, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Send one request (`wire.encode_request(op, **fields)`) and decode the reply.

        Raises:
            NoReply: no reply within `timeout` seconds (the message holds `describe()`).
        """
        self.send_request(node_id, op, **fields)
        return self.receive_reply(node_id, timeout, what=op)

    def send_request(self, node_id: str, op: str, **fields: Any) -> None:
        """Send a request without waiting; `receive_reply` gets the answer."""
        self._client.send(self.client_endpoints[node_id], [wire.encode_request(op, **fields)])

    def receive_reply(self, node_id: str, timeout: float, what: str = "request") -> dict[str, Any]:
        """The decoded reply to the request last sent to `node_id`.

        Raises:
            NoReply: no reply within `timeout` seconds (the message holds `describe()`).
        """
        reply = self._client.receive(self.client_endpoints[node_id], timeout)
        if reply is None:
            raise NoReply(f"{node_id}: no reply to {what} within {timeout:g}s\n{self.describe()}")
        assert len(reply) == 1, f"a reply is one frame, got {len(reply)}"
        return wire.decode_reply(reply[0])

    def request_until_ok(
        self, node_id: str, op: str, timeout: float = 10.0, **fields: Any
    ) -> dict[str, Any]:
        """Repeat a request until it succeeds, retrying no-replies and transient errors.

        Only for requests that are safe to repeat: gets, puts, deletes, and cas with a
        `client`/`seq` session (the retry is then applied at most once).

        Raises:
            AssertionError: a non-transient error, or no success within `timeout` s.
        """
        deadline = time.monotonic() + timeout
        last: object = None
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                reply = self.request(node_id, op, timeout=min(remaining, 5.0), **fields)
            except NoReply:
                last = "no reply"
                continue
            if reply["ok"]:
                return reply
            last = reply
            code = reply["error"]["code"]
            assert code in TRANSIENT_ERRORS, f"{op} via {node_id} failed: {reply}"
            time.sleep(0.05)  # let an election finish before asking again
        raise AssertionError(
            f"{op} {fields} via {node_id}: no success within {timeout:g}s "
            f"(last: {last!r})\n{self.describe()}"
        )

    def status(self, node_id: str, timeout: float = 2.0) -> dict[str, Any]:
        """The `status` map of `node_id` (role, term, leader, commit_index, ...)."""
        reply = self.request(node_id, "status", timeout=timeout)
        assert reply["ok"], reply
        status: dict[str, Any] = reply["status"]
        return status

    def wait_leader(
        self, among: Iterable[str] | None = None, *, min_term: int = 0, timeout: float = 10.0
    ) -> str:
        """Wait until one of `among` (default: the running nodes) reports it leads.

        Args:
            min_term: the leader's term must be above this (a *new* leader after a fault).

        Returns:
            The leader's id.
        """
        candidates = list(self.running() if among is None else among)

        def leader() -> str | None:
            for node_id in candidates:
                try:
                    status = self.status(node_id, timeout=0.5)
                except NoReply:
                    continue
                if status["role"] == "leader" and status["term"] > min_term:
                    return node_id
            return None

        found: str = logscan.wait_for(leader, timeout=timeout, describe=self.describe)
        return found

    def client_socket(
        self, context: zmq.Context[Any], node_id: str, key: str = "admin"
    ) -> zmq.Socket[bytes]:
        """A REQ socket (linger 0) connected to `node_id`'s client endpoint as client `key`."""
        endpoint = self.client_endpoints[node_id]
        sock = context.socket(zmq.REQ)
        sock.setsockopt(zmq.LINGER, 0)
        curve = client_curve_for(self.config, key)
        if curve is not None:
            curve.apply(sock, endpoint)
        sock.connect(endpoint)
        return sock

    def peer_dealer(
        self,
        context: zmq.Context[Any],
        node_id: str,
        key: str | security.Keypair | None,
        routing_id: str | None = None,
    ) -> zmq.Socket[bytes]:
        """A DEALER (linger 0) connected to `node_id`'s PEER endpoint, as a peer would be.

        Args:
            key: a key name in `keys_dir` (`n2`: speak with member n2's key), a keypair
                (a rogue's), or None for plaintext.
            routing_id: the routing id to present (a claim the node must not trust).
        """
        sock = context.socket(zmq.DEALER)
        sock.setsockopt(zmq.LINGER, 0)
        # A refused connection leaves a DEALER with no pipe, where a send would block
        # forever: fail the test after a while instead.
        sock.setsockopt(zmq.SNDTIMEO, 5000)
        if routing_id is not None:
            sock.setsockopt(zmq.ROUTING_ID, routing_id.encode())
        if key is not None:
            pair = security.read_secret_key(self.keys_dir / f"{key}.key") if isinstance(
                key, str
            ) else key
            server = self.config.node(node_id).public_key
            assert server is not None
            sock.curve_serverkey = security.resolve(server)
            sock.curve_publickey = pair.public
            sock.curve_secretkey = pair.secret
        sock.connect(self.peer_endpoints[node_id])
        return sock

    # --- logs -----------------------------------------------------------------------

    def log_path(self, node_id: str) -> Path:
        """The JSONL event log of `node_id`."""
        return self.log_dir / f"{node_id}.jsonl"

    def events(self) -> list[dict[str, Any]]:
        """Every event of every node's log, file by file."""
        return logscan.read_events(self.log_dir)

    def node_events(self, node_id: str) -> list[dict[str, Any]]:
        """The events of one node's log, in write order."""
        return logscan.read_events(self.log_path(node_id))

    def leader_elected(self) -> list[dict[str, Any]]:
        """Every `leader_elected` event, ordered by term."""
        return sorted(logscan.select(self.events(), "leader_elected"), key=lambda e: e["term"])

    def wait_leader_count(self, k: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        """Wait until the logs hold at least k `leader_elected` events; return them all.

        The caller asserts the exact count: waiting for `>= k` fails fast and clearly if
        more elections happened than expected, instead of waiting for a count it passed.
        """
        return logscan.wait_for(
            lambda: found if len(found := self.leader_elected()) >= k else None,
            timeout=timeout,
            describe=self.describe,
        )

    def assert_safety(self) -> None:
        """Assert election safety and monotonic terms over every event logged so far."""
        assert_election_safety(self.events(), self.ids, self.describe)

    def describe(self) -> str:
        """For failure messages: each node's process state, last 20 events, stderr tail."""
        return describe_nodes(self.ids, self._procs, self.node_events, self.directory, self._paused)


ClusterFactory = Callable[..., ProcessCluster]
"""The `make_cluster` fixture: `make_cluster(n, **options) -> ProcessCluster`."""
