"""The process-cluster harness that tests and benchmarks share: real `zraft-node`
processes on 127.0.0.1, started and stopped by PID.

It owns a throw-away local cluster in one directory: the config (free ports from the OS,
fresh CURVE keys per node and per client role, the node table: `write_cluster_config`);
the processes (`ProcessCluster`: start in a new session with output in files, wait for
`node_started`, kill, pause, resume, and stop them all: SIGCONT, SIGTERM, bounded wait,
SIGKILL); what they say (JSON-lines events, `status` through the client library's
`probe_status`) and bounded waits on it (`wait_for`, `ProcessCluster.wait_leader`).

    cluster = ProcessCluster(directory, 3)
    try:
        cluster.start_all()
        leader = cluster.wait_leader()
    finally:
        cluster.close()      # every process it ever started is gone afterwards

It is for tests and benchmarks, never for a node: it spawns and signals processes, sleeps
while it polls, and a failed wait raises an `AssertionError`. What only tests need (fault
files, raw-frame sockets, election-safety checks) lives in `tests/procs.py`, built on this.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import zmq

import zraft
from zraft import config
from zraft.client.probe import probe_status
from zraft.client.reply import Reply
from zraft.net import security

T = TypeVar("T")

START_TIMEOUT_S = 15.0  # a node process is up (node_started logged); imports on 1 core
STOP_TIMEOUT_S = 5.0  # SIGTERM -> exit, before SIGKILL
POLL_S = 0.02  # how often a wait looks again
CLIENT_ROLES = {"admin": "admin", "writer": "write", "reader": "read"}
"""The client keys every secured cluster of this harness admits: key name -> role."""


class NoReply(AssertionError):
    """A node did not answer a request within the client-side timeout."""


class WaitTimeout(AssertionError):
    """A bounded wait ran out; the message says what was last seen."""


# --- ports, keys and the config file ------------------------------------------------------


def free_ports(count: int, host: str = "127.0.0.1") -> list[int]:
    """Ask the OS for `count` distinct free TCP ports on `host` (each socket is held until
    all are chosen, so they differ; a small race with other processes remains, as always)."""
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


def security_lines(
    keys_dir: Path, ids: list[str], mode: str
) -> tuple[dict[str, list[str]], list[str]]:
    """The config lines of a cluster's security: per node, and after the nodes.

    With `mode` "curve", a keypair per node and per `CLIENT_ROLES` name is generated into
    `keys_dir` (inline public keys, secret key files, `[client]` using `admin`); with "none",
    only `security = "none"` (in the tail: a `[cluster]` key would need the head).
    """
    if mode == "none":
        return {node_id: [] for node_id in ids}, []
    public: dict[str, str] = {}  # key name -> its Z85 public key text
    for name in (*ids, *CLIENT_ROLES):
        if not (keys_dir / f"{name}.pub").exists():  # generated once per directory
            security.keygen(keys_dir / name)
        public[name] = security.read_public_key(keys_dir / f"{name}.pub").decode()
    per_node = {
        i: [f'public_key = "{public[i]}"', f'secret_key_file = "{keys_dir / i}.key"'] for i in ids
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
    name: str = "test",
    heartbeat_ms: int = 50,
    election_timeout_ms: tuple[int, int] = (300, 600),
    request_timeout_ms: int = 3000,
    security_mode: str = "curve",
    metrics: bool = False,
    **cluster_options: int | str,
) -> Path:
    """Write `directory/cluster.toml` for n nodes on 127.0.0.1 with OS-chosen ports, data
    dirs `directory/data/<id>`, logs `directory/logs/<id>.jsonl` and keys `directory/keys/`
    (absolute paths); return its path.

    Args:
        security_mode: `curve` (keys generated, see `security_lines`) or `none`.
        metrics: give every node `metrics = "http://127.0.0.1:PORT"` (a free port).
        cluster_options: more `[cluster]` keys, e.g. `max_value_bytes=1024`.
    """
    directory.mkdir(parents=True, exist_ok=True)
    ports = free_ports(3 * n if metrics else 2 * n)
    low, high = election_timeout_ms
    ids = node_ids(n)
    per_node, tail = security_lines(directory / "keys", ids, security_mode)
    lines = [
        "[cluster]",
        f'name = "{name}"',
        f"heartbeat_ms = {heartbeat_ms}",
        f"election_timeout_ms = [{low}, {high}]",
        f"request_timeout_ms = {request_timeout_ms}",
        f'log_dir = "{directory / "logs"}"',
        f'security = "{security_mode}"',
        *(f"{key} = {_toml_value(value)}" for key, value in cluster_options.items()),
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
            *([f'metrics = "http://127.0.0.1:{ports[2 * n + i]}"'] if metrics else []),
        ]
    path = directory / "cluster.toml"
    path.write_text("\n".join([*lines, *tail]) + "\n")
    return path


def client_curve_for(
    cluster: config.ClusterConfig, name: str = "admin"
) -> security.ClientCurve | None:
    """The `ClientCurve` of client key `name` (a `CLIENT_ROLES` key) of a secured cluster of
    this harness, or None for a plaintext one. The key file is explicit, so a
    `ZRAFT_CLIENT_KEY` in the environment cannot change which key is used."""
    if cluster.security == "none":
        return None
    keys_dir = next(iter(cluster.nodes)).secret_key_file
    assert keys_dir is not None
    return security.client_curve(cluster, keys_dir.parent / f"{name}.key")


# --- events and waits ---------------------------------------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    """The events of one JSON-lines log, in write order ([] while the file is missing);
    a torn last line (a node killed mid-write) and any non-object line are skipped."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    events: list[dict[str, Any]] = []
    for line in data.splitlines():
        try:
            event = json.loads(line)
        except ValueError:  # JSONDecodeError or bad UTF-8
            continue
        if isinstance(event, dict):
            events.append(event)
    return events


def wait_for(
    predicate: Callable[[], T],
    timeout: float,
    *,
    what: str = "condition",
    interval: float = POLL_S,
    describe: Callable[[], str] | None = None,
) -> T:
    """Poll `predicate` until it returns something truthy, and return that. It is called at
    least once, and once more at the deadline, so a slow machine keeps its last chance.

    Raises:
        WaitTimeout: the deadline passed; the message names `what`, the last value seen
            and `describe()` (for example each node's state).
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        time.sleep(min(interval, remaining))  # a harness's poll, never a node's loop
    details = describe() if describe is not None else "(no describe callback given)"
    raise WaitTimeout(f"{what} not met within {timeout:g}s (last result: {result!r})\n{details}")


def _signal(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Send `sig` to `proc` by PID unless it has exited (a reaped PID may be reused)."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):  # exited since poll()
            os.kill(proc.pid, sig)


# --- the processes ------------------------------------------------------------------------


class ProcessCluster:
    """n `zraft-node` processes with their config, data, keys and logs in `directory`.

    A subclass may change how a node is run (`launcher`, `node_flags`) and what a failure
    message shows (`describe`).

    Args:
        directory: a fresh directory owned by this cluster.
        n: the number of nodes, called `n1` .. `nN`.
        security: `curve` (default: keys in `directory/keys`) or `none` (plaintext).
        start_timeout_s: how long a start may take until the node logs `node_started`.
        config_text: a whole config to run instead of writing one (the nodes are still
            `n1` .. `nN`; `security` and `options` are then ignored).
        options: `write_cluster_config`'s keywords (`name`, `heartbeat_ms`,
            `election_timeout_ms`, `request_timeout_ms`) and integer `[cluster]` keys.
    """

    def __init__(
        self,
        directory: Path,
        n: int,
        *,
        security: str = "curve",
        start_timeout_s: float = START_TIMEOUT_S,
        config_text: str | None = None,
        **options: Any,
    ) -> None:
        self.directory = directory
        self.ids = node_ids(n)
        self.start_timeout_s = start_timeout_s
        if config_text is None:
            self.config_path = write_cluster_config(directory, n, security_mode=security, **options)
        else:  # a config made elsewhere (its keys too): written as given
            directory.mkdir(parents=True, exist_ok=True)
            self.config_path = directory / "cluster.toml"
            self.config_path.write_text(config_text)
        self.config = config.load(self.config_path)
        self.election_timeout_ms = self.config.election_timeout_ms
        self.request_timeout_ms = self.config.request_timeout_ms
        self.log_dir = directory / "logs"
        self.keys_dir = directory / "keys"
        self.client_endpoints = {node.id: node.client for node in self.config.nodes}
        self.metrics_urls = {n.id: n.metrics for n in self.config.nodes if n.metrics}
        """node id -> its `http://HOST:PORT` (with `metrics=True`)."""
        self.peer_endpoints = {node.id: node.peer for node in self.config.nodes}
        self.curve = client_curve_for(self.config)
        """The `admin` client's CURVE setup (None for a plaintext cluster)."""
        self.spawned_at: dict[str, float] = {}
        """node id -> `time.monotonic()` of its latest spawn (a benchmark's zero)."""
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._all_procs: list[subprocess.Popen[bytes]] = []  # every start, for cleanup
        self._paused: set[str] = set()
        self._context: zmq.Context[Any] = zmq.Context()  # for status probes
        self._closed = False

    def launcher(self) -> list[str]:
        """The command that runs `zraft-node`: the installed package's, checkout or not."""
        code = "import sys; from zraft.cli.node import main; sys.exit(main())"
        return [sys.executable, "-c", code]

    def node_flags(self, node_id: str) -> list[str]:
        """Command-line flags of `node_id` after `--config` and `--id` (none here)."""
        del node_id
        return []

    def start(self, node_id: str, *, wait: bool = True) -> None:
        """Start `node_id` (again) on its data dir; with `wait`, until it logs `node_started`.

        Its stdout and stderr are appended to `directory/<id>.stdout` and `.stderr`.

        Raises:
            AssertionError: the node is already running, exits, or does not start in time.
        """
        assert not self.is_running(node_id), f"{node_id} is already running"
        before = self._started_count(node_id)
        command = [*self.launcher(), "--config", str(self.config_path), "--id", node_id]
        # This very zraft first on the child's path, whatever the working directory.
        root = str(Path(zraft.__file__).resolve().parent.parent)
        path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p)
        out = (self.directory / f"{node_id}.stdout").open("ab")
        err = (self.directory / f"{node_id}.stderr").open("ab")
        with out, err:
            self.spawned_at[node_id] = time.monotonic()
            proc = subprocess.Popen(
                [*command, *self.node_flags(node_id)],
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
                cwd=self.directory,
                env={**os.environ, "PYTHONPATH": path},
                start_new_session=True,  # a terminal's Ctrl-C reaches only the harness
            )
        self._procs[node_id] = proc
        self._all_procs.append(proc)
        if wait:
            self.wait_started([node_id], {node_id: before})

    def start_all(self, node_ids: Iterable[str] | None = None) -> None:
        """Start the given nodes (default: all) and wait until each logs `node_started`."""
        ids = list(self.ids if node_ids is None else node_ids)
        before = {node_id: self._started_count(node_id) for node_id in ids}
        for node_id in ids:
            self.start(node_id, wait=False)
        self.wait_started(ids, before)

    def wait_started(self, ids: list[str], before: dict[str, int]) -> None:
        """Wait until each node logged more `node_started` events than `before[id]`.

        Raises:
            AssertionError: a node exited, or the start took over `start_timeout_s`.
        """

        def started() -> bool:
            for node_id in ids:
                proc = self._procs[node_id]
                if proc.poll() is not None:
                    raise AssertionError(
                        f"{node_id} exited with code {proc.returncode}\n{self.describe()}"
                    )
            return all(self._started_count(node_id) > before[node_id] for node_id in ids)

        what = f"node_started of {', '.join(ids)}"
        wait_for(started, self.start_timeout_s, what=what, describe=self.describe)

    def _started_count(self, node_id: str) -> int:
        return sum(1 for e in self.node_events(node_id) if e.get("event") == "node_started")

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
        """Send `sig` to the node's PID; for SIGKILL/SIGTERM, wait (bounded) until it exits.

        Raises:
            subprocess.TimeoutExpired: it did not exit within `STOP_TIMEOUT_S` (it has been
                SIGKILLed by then, so nothing is left behind).
        """
        proc = self._procs[node_id]
        stopping = sig in (signal.SIGKILL, signal.SIGTERM)
        if stopping and node_id in self._paused:
            # SIGCONT first: a stopped process would not act on SIGTERM until resumed.
            self.resume(node_id)
        _signal(proc, sig)
        if stopping:
            try:
                proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)
                raise

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
            _signal(self._procs[node_id], signal.SIGCONT)
        self._paused.clear()
        live = [proc for proc in self._all_procs if proc.poll() is None]
        for proc in live:
            _signal(proc, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in live:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal(proc, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)

    def close(self) -> None:
        """Stop every process this cluster ever started and close its sockets (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.stop_all()
        finally:
            self._context.destroy(linger=0)

    def probe(self, ids: Iterable[str] | None = None, timeout: float = 1.0) -> dict[str, Reply]:
        """Ask the given nodes (default: the running ones) for `status`, all at once.

        Returns:
            node id -> its reply, for the nodes that answered within `timeout`.
        """
        ids = list(self.running() if ids is None else ids)
        endpoints = [self.client_endpoints[node_id] for node_id in ids]
        found = probe_status(endpoints, timeout=timeout, context=self._context, curve=self.curve)
        return {i: probe.reply for i, probe in zip(ids, found, strict=True) if probe.reply}

    def status(self, node_id: str, timeout: float = 2.0) -> dict[str, Any]:
        """The `status` map of `node_id` (role, term, leader, commit_index, ...).

        Raises:
            NoReply: no reply within `timeout` seconds (the message holds `describe()`).
            AssertionError: the reply is an error.
        """
        reply = self.probe([node_id], timeout).get(node_id)
        if reply is None:
            raise NoReply(f"{node_id}: no status within {timeout:g}s\n{self.describe()}")
        assert reply.ok and reply.status is not None, dict(reply.raw)
        return reply.status

    def wait_leader(
        self,
        among: Iterable[str] | None = None,
        *,
        min_term: int = 0,
        timeout: float = 10.0,
        agreed: bool = False,
    ) -> str:
        """Wait until one of `among` (default: the running nodes) reports it leads.

        Args:
            min_term: the leader's term must be above this (a *new* leader after a fault).
            agreed: every node of `among` must also answer and name that leader.

        Returns:
            The leader's id (the first in `among` order, should two claim it).
        """
        candidates = list(self.running() if among is None else among)

        def leader() -> str | None:
            views = {i: r.status or {} for i, r in self.probe(candidates, 0.5).items() if r.ok}
            leaders = [
                node_id
                for node_id, view in views.items()
                if view.get("role") == "leader" and view.get("term", 0) > min_term
            ]
            named = {views.get(node_id, {}).get("leader") for node_id in candidates}
            if not leaders or (agreed and named != {leaders[0]}):
                return None
            return leaders[0]

        what = "an agreed leader" if agreed else "a leader"
        found: str = wait_for(leader, timeout, what=what, describe=self.describe)
        return found

    def log_path(self, node_id: str) -> Path:
        """The JSONL event log of `node_id`."""
        return self.log_dir / f"{node_id}.jsonl"

    def node_events(self, node_id: str) -> list[dict[str, Any]]:
        """The events of one node's log, in write order."""
        return read_events(self.log_path(node_id))

    def events(self) -> list[dict[str, Any]]:
        """Every event of every log in `log_dir`, file by file (sorted by name)."""
        return [e for path in sorted(self.log_dir.glob("*.jsonl")) for e in read_events(path)]

    def mark(self) -> dict[str, int]:
        """How many events each node has logged so far (see `events_since`)."""
        return {node_id: len(self.node_events(node_id)) for node_id in self.ids}

    def events_since(self, mark: dict[str, int], name: str) -> list[dict[str, Any]]:
        """The `name` events logged after `mark`, node by node."""
        return [
            event
            for node_id in self.ids
            for event in self.node_events(node_id)[mark.get(node_id, 0) :]
            if event.get("event") == name
        ]

    def describe(self) -> str:
        """For failure messages: where the files are and each node's process state."""
        return "\n".join([f"files in {self.directory}", *map(self.process_state, self.ids)])

    def process_state(self, node_id: str) -> str:
        """`n1: running pid 123 (paused)`, `n2: exited with code -9` or `n3: never started`."""
        proc = self._procs.get(node_id)
        if proc is None:
            return f"{node_id}: never started"
        if proc.poll() is not None:
            return f"{node_id}: exited with code {proc.returncode}"
        paused = " (paused)" if node_id in self._paused else ""
        return f"{node_id}: running pid {proc.pid}{paused}"


def _toml_value(value: int | str) -> str:
    return f'"{value}"' if isinstance(value, str) else str(value)
