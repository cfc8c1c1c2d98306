"""Real `bin/zraft-node` processes for integration tests (a test helper, not a test file).

`ProcessCluster` is the shared harness `zraft.testing.cluster.ProcessCluster` (the config
with fresh keys and OS-chosen ports, processes started and signalled by PID, events,
`status`, `wait_leader`), run from `bin/zraft-node`, plus what only tests need:

- the partition hooks of `zraft.net.faults` (`--test-fault-file`: `partition`, `heal`,
  `set_loss`), nodes that join by `add_member` (`add_joiner`, `member_fields`) and the
  replacement of a removed node by a new host under a new id (`replace`: ids are never
  reused);
- a REQ helper of its own for requests and raw frames (`ReqClient`: it depends only on
  `zraft.wire` and the admin key, never on the client library), `client_socket` as
  another role and `peer_dealer` to speak to a node's peer endpoint as a peer would;
- election-safety assertions, exact `leader_elected` counts, and `describe()` (the last
  events of each node and its stderr tail) for failure messages.

    cluster = ProcessCluster(tmp_path, 3)
    cluster.start_all()
    leader = cluster.wait_leader()
    reply = cluster.request("n2", "put", key="k", value="v")
    cluster.close()          # SIGCONT, SIGTERM, bounded wait, SIGKILL; sockets closed

Every wait is bounded and a failed wait says what was last seen. Security is on, as in
production: each cluster gets fresh CURVE keys in `directory/keys/` (`n1.key`/`n1.pub` ..
per node, and client keys `admin`, `writer`, `reader` with those roles), and the REQ
helper uses the `admin` key. Pass `security="none"` for a plaintext cluster.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any

import zmq

from tests import logscan
from zraft import config as zconfig
from zraft import wire
from zraft.net import security
from zraft.testing import cluster as harness
from zraft.testing.cluster import (  # re-exported: tests import them from here
    START_TIMEOUT_S,
    NoReply,
    client_curve_for,
    free_ports,
    security_lines,
    write_cluster_config,
)

__all__ = [
    "NODE_SCRIPT",
    "ROOT",
    "START_TIMEOUT_S",
    "TRANSIENT_ERRORS",
    "ClusterFactory",
    "NoReply",
    "ProcessCluster",
    "ReqClient",
    "assert_election_safety",
    "client_curve_for",
    "describe_nodes",
    "free_ports",
    "leaders_by_term",
    "own_terms",
    "security_lines",
    "write_cluster_config",
]

ROOT = Path(__file__).resolve().parent.parent
NODE_SCRIPT = ROOT / "bin" / "zraft-node"

TRANSIENT_ERRORS = frozenset({"unavailable", "timeout", "not_leader"})
"""Error codes after which the same request may succeed later (no leader yet, a failover)."""


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


class ProcessCluster(harness.ProcessCluster):
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
        super().__init__(
            directory,
            n,
            security=security,
            heartbeat_ms=heartbeat_ms,
            election_timeout_ms=election_timeout_ms,
            request_timeout_ms=request_timeout_ms,
            **cluster_options,
        )
        # Started with --join: peer and client endpoints, secret key file (CURVE only).
        self._joiners: dict[str, tuple[str, str, Path | None]] = {}
        self._joined_from_file: set[str] = set()  # `replace`d in: in the file, --join
        self.retired: list[str] = []
        """Nodes `replace`d: removed from the cluster, stopped, out of `ids` (logs kept)."""
        if self.curve is not None:
            # One mutable endpoint -> key map, shared by everyone holding `curve` (the
            # workloads too): a replacement serving an old endpoint is reached with its key.
            self.curve = dataclasses.replace(self.curve, server_keys=dict(self.curve.server_keys))
        self._client = ReqClient(self.curve)

    # --- processes ------------------------------------------------------------------

    def launcher(self) -> list[str]:
        """The repository's `bin/zraft-node`: the script the tests are about."""
        return [sys.executable, str(NODE_SCRIPT)]

    def node_flags(self, node_id: str) -> list[str]:
        """The fault file, `ZRAFT_TEST_LOG_LEVEL` if set, and a joiner's `--join` flags."""
        flags = ["--test-fault-file", str(self.fault_path(node_id))]
        if os.environ.get("ZRAFT_TEST_LOG_LEVEL"):  # e.g. debug, to see every request
            flags += ["--log-level", os.environ["ZRAFT_TEST_LOG_LEVEL"]]
        if node_id in self._joined_from_file:
            flags.append("--join")
        if node_id in self._joiners:
            peer, client, key_file = self._joiners[node_id]
            data_dir = self.directory / "data" / node_id
            flags += ["--join", "--peer", peer, "--client", client, "--data-dir", str(data_dir)]
            if key_file is not None:
                flags += ["--secret-key-file", str(key_file)]
        return flags

    def add_joiner(self, node_id: str) -> dict[str, str]:
        """Make up endpoints, a data dir and (with CURVE) a keypair for a node the config
        file does not name; `start(node_id)` then runs it with `--join`.

        Returns:
            The `add_member` fields that describe it: `peer`, `client_endpoint`, and with
            CURVE `public_key`.
        """
        assert node_id not in self.ids and node_id not in self.retired, f"{node_id} is known"
        peer_port, client_port = free_ports(2)
        peer, client = f"tcp://127.0.0.1:{peer_port}", f"tcp://127.0.0.1:{client_port}"
        fields = {"peer": peer, "client_endpoint": client}
        key_file = None
        if self.curve is not None:
            key_file = self.keys_dir / f"{node_id}.key"
            security.keygen(self.keys_dir / node_id)
            public = security.read_public_key(self.keys_dir / f"{node_id}.pub")
            fields["public_key"] = public.decode()
            # Our clients (and the workloads') must know the new node's server key.
            server_keys = self.curve.server_keys
            assert isinstance(server_keys, dict)
            server_keys[client] = public
        self._joiners[node_id] = (peer, client, key_file)
        self.ids.append(node_id)
        self.client_endpoints[node_id] = client
        self.peer_endpoints[node_id] = peer
        return fields

    def replace(self, old_id: str) -> tuple[str, dict[str, str]]:
        """Replace `old_id` (already removed from the cluster) by a new host, as the
        README's runbook does: a new id, key, peer endpoint and data dir, serving clients
        at `old_id`'s client endpoint (a new machine at the old address, so clients that
        knew the old node reach the new one), and the config file naming the new host in
        the old one's place (a node joining later must know the members' keys, whoever
        leads by then). `old_id` is stopped and leaves `ids`; the new node is started
        with `--join` (by `start`).

        Returns:
            The new id (`n<k>`, never used before) and its `add_member` fields.
        """
        if self.is_running(old_id):
            self.kill(old_id)
        self.ids.remove(old_id)
        self.retired.append(old_id)
        numbers = [int(i[1:]) for i in [*self.ids, *self.retired] if i[1:].isdigit()]
        new_id = f"n{max(numbers, default=0) + 1}"
        old = self.config.node(old_id)
        (port,) = free_ports(1)
        lines = ["[[node]]", f'id = "{new_id}"', f'peer = "tcp://127.0.0.1:{port}"']
        lines += [f'client = "{old.client}"', f'data_dir = "{self.directory / "data" / new_id}"']
        if self.curve is not None:
            security.keygen(self.keys_dir / new_id)
            public = security.read_public_key(self.keys_dir / f"{new_id}.pub")
            lines += [f'public_key = "{public.decode()}"']
            lines += [f'secret_key_file = "{self.keys_dir / new_id}.key"']
            server_keys = self.curve.server_keys  # ours and the workloads': one map
            assert isinstance(server_keys, dict)
            server_keys[old.client] = public
            self._client.drop(old.client)  # a socket made with the old node's key
        blocks = self.config_path.read_text().split("\n\n")
        blocks = ["\n".join(lines) if f'id = "{old_id}"' in b else b for b in blocks]
        self.config_path.write_text("\n\n".join(blocks))
        self.config = zconfig.load(self.config_path)
        self._joined_from_file.add(new_id)
        self.ids.append(new_id)
        self.client_endpoints[new_id] = self.client_endpoints.pop(old_id)
        self.peer_endpoints[new_id] = f"tcp://127.0.0.1:{port}"
        return new_id, self.member_fields(new_id)

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

    def close(self) -> None:
        """Stop every process this cluster ever started and close the client sockets."""
        if self._closed:
            return
        try:
            super().close()
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
            pair = (
                security.read_secret_key(self.keys_dir / f"{key}.key")
                if isinstance(key, str)
                else key
            )
            server = self.config.node(node_id).public_key
            assert server is not None
            sock.curve_serverkey = security.resolve(server)
            sock.curve_publickey = pair.public
            sock.curve_secretkey = pair.secret
        sock.connect(self.peer_endpoints[node_id])
        return sock

    # --- logs -----------------------------------------------------------------------

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
        assert_election_safety(self.events(), [*self.ids, *self.retired], self.describe)

    def describe(self) -> str:
        """For failure messages: each node's process state, last 20 events, stderr tail."""
        return describe_nodes(self.ids, self._procs, self.node_events, self.directory, self._paused)


ClusterFactory = Callable[..., ProcessCluster]
"""The `make_cluster` fixture: `make_cluster(n, **options) -> ProcessCluster`."""


def pid_running(pid: int) -> bool:
    """Whether process `pid` runs (a zombie does not: it has exited, unreaped)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"
