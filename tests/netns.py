"""A lab of network namespaces for real `bin/zraft-node` processes (a test helper).

Each node runs in its own network namespace with its own address, and faults are real
firewall rules (iptables) inside the node namespaces: partitions, a non-transitive
"bridge" cut, an isolated node, random packet loss. PLATFORM.md §1 measured all of it.

**Where it runs.** Never in the machine's own network namespace. The lab is built by a
process that `unshare_command` started in fresh namespaces (network, mount, PID; plus a
user namespace when not root), so:

- the process's network namespace holds only `lo` when the lab starts (checked by
  `assert_private_netns`, which refuses to build anything otherwise) and there is no
  route to the real network: a stray packet to 10.x cannot leave the machine;
- `/run` is a private tmpfs (so `ip netns add` works without touching the host's
  `/run/netns`);
- when the lab process exits, the kernel kills every process of the PID namespace (the
  nodes too) and frees the namespaces with their interfaces and rules.

Layout (`LAB_NET` = 10.88.0.0/24)::

    driver netns (the unshare child, runs the test driver)
      lo, bridge zrbr0 = 10.88.0.100/24
        |-- hveth1 <-veth-> netns zr1: veth0 = 10.88.0.1/24, lo   (node n1)
        |-- hveth2 <-veth-> netns zr2: veth0 = 10.88.0.2/24, lo   (node n2)
        ...

Every node listens on `tcp://10.88.0.I:7001` (peers) and `tcp://10.88.0.I:7002`
(clients). Rules only ever go into the node namespaces, and only name lab addresses; the
driver's address is never blocked, so the driver can still ask a cut-off node for its
status or send it a write.

    lab = NetnsLab(tmp_dir, 3)
    lab.setup()            # namespaces, bridge, veths, config
    lab.start_all()
    leader = lab.wait_leader()
    lab.isolate(leader)
    ...
    lab.kill("n2"); lab.start("n2")       # SIGKILL by PID, restart on the same data
    lab.pause("n3"); lab.resume("n3")     # SIGSTOP / SIGCONT
    lab.heal()
    lab.close()            # flush rules, stop every node by PID, delete the namespaces
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from tests import logscan
from tests.procs import (
    TRANSIENT_ERRORS,
    NoReply,
    ReqClient,
    assert_election_safety,
    client_curve_for,
    describe_nodes,
    leaders_by_term,
    security_lines,
)
from zraft import config, wire
from zraft.net.security import ClientCurve

ROOT = Path(__file__).resolve().parent.parent
NODE_SCRIPT = ROOT / "bin" / "zraft-node"

LAB_NET = ipaddress.ip_network("10.88.0.0/24")
DRIVER_ADDRESS = "10.88.0.100"
BRIDGE = "zrbr0"
PEER_PORT = 7001
CLIENT_PORT = 7002
REQUIRED_TOOLS = ("unshare", "ip", "iptables")
START_TIMEOUT_S = 20.0  # every node logged node_started (imports on a slow, shared core)
STOP_TIMEOUT_S = 5.0  # SIGTERM -> exit, before SIGKILL
COMMAND_TIMEOUT_S = 10.0  # one `ip` or `iptables` invocation


class LabUnavailable(RuntimeError):
    """This machine cannot host the lab (a tool, a namespace or a permission is missing)."""


def missing_tools() -> list[str]:
    """The tools of `REQUIRED_TOOLS` that are not on PATH (see the Debian packages below).

    `unshare` is in util-linux, `ip` in iproute2, `iptables` in iptables.
    """
    return [tool for tool in REQUIRED_TOOLS if shutil.which(tool) is None]


def unshare_command(argv: list[str]) -> list[str]:
    """Wrap `argv` so it runs in fresh network, mount and PID namespaces.

    As root no user namespace is needed; otherwise the caller becomes root of a new user
    namespace (`--map-root-user`), which PLATFORM.md §1 found to be enough for `ip netns`,
    iptables and tmpfs mounts. `--kill-child` makes the child die with `unshare` (even
    when `unshare` is SIGKILLed), and since the child is PID 1 of the new PID namespace,
    its death takes every node process with it.
    """
    command = ["unshare"]
    if os.geteuid() != 0:
        command += ["--user", "--map-root-user"]
    command += ["--net", "--mount", "--pid", "--fork", "--kill-child", "--mount-proc"]
    return command + argv


def _interfaces() -> list[str]:
    """The interfaces of this process's network namespace (from /proc/self/net/dev)."""
    lines = Path("/proc/self/net/dev").read_text().splitlines()[2:]
    return [line.split(":", 1)[0].strip() for line in lines]


def _routes() -> list[str]:
    """The IPv4 routes of this process's network namespace (from /proc/self/net/route)."""
    return Path("/proc/self/net/route").read_text().splitlines()[1:]


def assert_private_netns() -> None:
    """Refuse to go on unless this process is in a fresh, empty network namespace.

    A fresh namespace has only `lo` and no route; the machine's own namespace has a real
    interface and a default route. Building the lab (or connecting to 10.88.0.x) there
    would touch or leak onto the real network, so this raises instead.

    Raises:
        LabUnavailable: another interface or a route exists.
    """
    interfaces = _interfaces()
    routes = _routes()
    if interfaces != ["lo"] or routes:
        raise LabUnavailable(
            "refusing to build the lab outside a fresh network namespace "
            f"(interfaces {interfaces}, {len(routes)} routes); run it under unshare_command"
        )


def check_lab_endpoint(endpoint: str) -> None:
    """Assert that `endpoint` (tcp://HOST:PORT) points into the lab network or loopback.

    Raises:
        AssertionError: any other address; the driver must never send traffic there.
    """
    host = endpoint.removeprefix("tcp://").rsplit(":", 1)[0]
    address = ipaddress.ip_address(host)
    allowed = address in LAB_NET or address.is_loopback
    assert allowed, f"refusing to send to {endpoint}: outside {LAB_NET} and loopback"


def run(command: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run one setup or fault command with a timeout, capturing its output.

    Raises:
        LabUnavailable: with `check`, the command failed (its stderr is in the message).
    """
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=COMMAND_TIMEOUT_S,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabUnavailable(f"{' '.join(command)}: {exc}") from exc
    if check and done.returncode != 0:
        raise LabUnavailable(
            f"{' '.join(command)} exited with {done.returncode}: {done.stderr.strip()}"
        )
    return done


class NetnsLab:
    """n zraft nodes, each in its own network namespace, and iptables faults between them.

    Must run in a process started by `unshare_command` (see the module docstring);
    `setup` checks that and raises `LabUnavailable` otherwise.

    Args:
        directory: a fresh directory for the config, data dirs, logs and node output.
        n: the number of nodes, `n1` .. `nN`, at 10.88.0.1 .. 10.88.0.N (N < 100).
        heartbeat_ms, election_timeout_ms, request_timeout_ms: `[cluster]` settings.
        cluster_options: more integer `[cluster]` keys (`snapshot_entries`, ...).
    """

    def __init__(
        self,
        directory: Path,
        n: int,
        *,
        heartbeat_ms: int = 50,
        election_timeout_ms: tuple[int, int] = (300, 600),
        request_timeout_ms: int = 2000,
        cluster_options: Mapping[str, int] | None = None,
    ) -> None:
        assert 1 <= n < 100, "node addresses are 10.88.0.1 .. 10.88.0.99"
        self.cluster_options = dict(cluster_options or {})
        self.directory = directory
        self.ids = [f"n{i}" for i in range(1, n + 1)]
        self.heartbeat_ms = heartbeat_ms
        self.election_timeout_ms = election_timeout_ms
        self.request_timeout_ms = request_timeout_ms
        self.config_path = directory / "cluster.toml"
        self.log_dir = directory / "logs"
        self.client_endpoints = {
            node_id: f"tcp://{self.address(node_id)}:{CLIENT_PORT}" for node_id in self.ids
        }
        self._procs: dict[str, subprocess.Popen[bytes]] = {}
        self._all_procs: list[subprocess.Popen[bytes]] = []
        self._namespaces: list[str] = []
        self._client: ReqClient | None = None
        self._curve: ClientCurve | None = None
        self._faulty: set[str] = set()  # nodes whose namespace may hold rules
        self._paused: set[str] = set()  # nodes stopped with SIGSTOP
        self._closed = False

    # --- naming -------------------------------------------------------------------------

    @staticmethod
    def index(node_id: str) -> int:
        """The number of a node id: `n3` -> 3."""
        return int(node_id.removeprefix("n"))

    def address(self, node_id: str) -> str:
        """The node's IPv4 address in the lab: `n3` -> 10.88.0.3."""
        return str(LAB_NET.network_address + self.index(node_id))

    def namespace(self, node_id: str) -> str:
        """The network namespace the node runs in: `n3` -> `zr3`."""
        return f"zr{self.index(node_id)}"

    # --- building -----------------------------------------------------------------------

    def setup(self) -> None:
        """Mount a private /run, build the bridge and one namespace per node, write config.

        Raises:
            LabUnavailable: not in a fresh network namespace, or a command failed.
        """
        assert_private_netns()
        missing = missing_tools()
        if missing:
            raise LabUnavailable(f"missing tools: {', '.join(missing)}")
        # Private to this mount namespace: the host's /run (and /run/netns) is untouched.
        run(["mount", "-t", "tmpfs", "-o", "mode=0755", "zraft-lab-run", "/run"])
        Path("/run/netns").mkdir(parents=True, exist_ok=True)
        run(["ip", "link", "set", "lo", "up"])
        run(["ip", "link", "add", BRIDGE, "type", "bridge"])
        run(["ip", "addr", "add", f"{DRIVER_ADDRESS}/{LAB_NET.prefixlen}", "dev", BRIDGE])
        run(["ip", "link", "set", BRIDGE, "up"])
        for node_id in self.ids:
            self._add_host(node_id)
        # Fail here, not in the middle of a scenario, if the firewall cannot be used.
        self._iptables(self.ids[0], "-L", "-n")
        self._write_config()
        self._client = ReqClient(self._curve)

    def _add_host(self, node_id: str) -> None:
        """A namespace for `node_id`, linked to the bridge by a veth pair."""
        ns = self.namespace(node_id)
        host_end = f"hveth{self.index(node_id)}"
        run(["ip", "netns", "add", ns])
        self._namespaces.append(ns)
        run(["ip", "link", "add", host_end, "type", "veth", "peer", "name", "veth0", "netns", ns])
        run(["ip", "link", "set", host_end, "master", BRIDGE])
        run(["ip", "link", "set", host_end, "up"])
        address = f"{self.address(node_id)}/{LAB_NET.prefixlen}"
        run(["ip", "-n", ns, "addr", "add", address, "dev", "veth0"])
        run(["ip", "-n", ns, "link", "set", "veth0", "up"])
        run(["ip", "-n", ns, "link", "set", "lo", "up"])

    def _write_config(self) -> None:
        low, high = self.election_timeout_ms
        lines = [
            "[cluster]",
            'name = "netns-lab"',
            f"heartbeat_ms = {self.heartbeat_ms}",
            f"election_timeout_ms = [{low}, {high}]",
            f"request_timeout_ms = {self.request_timeout_ms}",
            f'log_dir = "{self.log_dir}"',
        ]
        lines += [f"{key} = {int(value)}" for key, value in sorted(self.cluster_options.items())]
        # Secured like production: keys generated into directory/keys (tests.procs).
        per_node, tail = security_lines(self.directory / "keys", self.ids, "curve")
        for node_id in self.ids:
            host = self.address(node_id)
            lines += [
                "",
                "[[node]]",
                f'id = "{node_id}"',
                f'peer = "tcp://{host}:{PEER_PORT}"',
                f'client = "tcp://{host}:{CLIENT_PORT}"',
                f'data_dir = "{self.directory / "data" / node_id}"',
                *per_node[node_id],
            ]
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text("\n".join([*lines, *tail]) + "\n")
        self._curve = client_curve_for(config.load(self.config_path))  # validates it too

    @property
    def curve(self) -> ClientCurve | None:
        """The client keys of the lab's secured cluster (after `setup`)."""
        return self._curve

    # --- processes ----------------------------------------------------------------------

    def start(self, node_id: str) -> None:
        """Start `node_id` in its namespace (`ip netns exec` execs in place: same PID)."""
        assert not self.is_running(node_id), f"{node_id} is already running"
        command = ["ip", "netns", "exec", self.namespace(node_id), sys.executable]
        command += [str(NODE_SCRIPT), "--config", str(self.config_path), "--id", node_id]
        out = (self.directory / f"{node_id}.stdout").open("ab")
        err = (self.directory / f"{node_id}.stderr").open("ab")
        with out, err:
            proc = subprocess.Popen(
                command, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=self.directory
            )
        self._procs[node_id] = proc
        self._all_procs.append(proc)

    def start_all(self) -> None:
        """Start every node and wait (bounded) until each logged `node_started`."""
        for node_id in self.ids:
            self.start(node_id)

        def started() -> bool:
            for node_id in self.ids:
                code = self._procs[node_id].poll()
                if code is not None:
                    raise AssertionError(f"{node_id} exited with {code}\n{self.describe()}")
            return all(
                logscan.count(self.node_events(node_id), "node_started") >= 1
                for node_id in self.ids
            )

        logscan.wait_for(started, timeout=START_TIMEOUT_S, describe=self.describe)

    def is_running(self, node_id: str) -> bool:
        """Whether the node has a process that has not exited."""
        proc = self._procs.get(node_id)
        return proc is not None and proc.poll() is None

    def pid(self, node_id: str) -> int:
        """The PID of the node's process."""
        return self._procs[node_id].pid

    def running(self) -> list[str]:
        """The ids of nodes whose process has not exited (paused ones included)."""
        return [node_id for node_id in self.ids if self.is_running(node_id)]

    def kill(self, node_id: str) -> None:
        """SIGKILL the node by PID and wait (bounded) until it is gone; `start` restarts it
        on the same data directory."""
        proc = self._procs[node_id]
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=STOP_TIMEOUT_S)
        self._paused.discard(node_id)

    def pause(self, node_id: str) -> None:
        """SIGSTOP the node (undone by `resume`, or by `stop_all`)."""
        os.kill(self.pid(node_id), signal.SIGSTOP)
        self._paused.add(node_id)

    def resume(self, node_id: str) -> None:
        """SIGCONT a node stopped by `pause`."""
        os.kill(self.pid(node_id), signal.SIGCONT)
        self._paused.discard(node_id)

    def stop_all(self) -> None:
        """SIGCONT paused nodes, SIGTERM every process ever started, wait (bounded), then
        SIGKILL, all by PID."""
        for node_id in sorted(self._paused):
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid(node_id), signal.SIGCONT)
        self._paused.clear()
        live = [proc for proc in self._all_procs if proc.poll() is None]
        for proc in live:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for proc in live:
            try:
                proc.wait(timeout=max(0.05, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=STOP_TIMEOUT_S)

    def close(self) -> None:
        """Flush every rule, stop every node, close sockets, delete the namespaces.

        Each step runs even if an earlier one failed; the namespaces would vanish with
        the unshare child anyway, this just leaves nothing behind inside it either.
        """
        if self._closed:
            return
        self._closed = True
        try:
            with contextlib.suppress(LabUnavailable):
                self.heal()
        finally:
            try:
                self.stop_all()
            finally:
                if self._client is not None:
                    self._client.close()
                for ns in self._namespaces:
                    run(["ip", "netns", "del", ns], check=False)

    # --- faults (iptables inside the node namespaces only) ------------------------------

    def _iptables(self, node_id: str, *args: str) -> None:
        run(["ip", "netns", "exec", self.namespace(node_id), "iptables", "-w", "5", *args])

    def block(self, node_id: str, sources: Iterable[str]) -> None:
        """Drop every packet `node_id` receives from the `sources` nodes (one direction)."""
        for source in sources:
            if source != node_id:
                self._faulty.add(node_id)
                self._iptables(node_id, "-A", "INPUT", "-s", self.address(source), "-j", "DROP")

    def cut(self, side_a: Iterable[str], side_b: Iterable[str]) -> None:
        """Cut every link between a node of `side_a` and a node of `side_b`, both ways.

        Links inside a side, and links to nodes on neither side, stay up; two calls make
        a non-transitive topology (a node that sees both sides).
        """
        a, b = list(side_a), list(side_b)
        for node_id in a:
            self.block(node_id, b)
        for node_id in b:
            self.block(node_id, a)

    def partition(self, *groups: Iterable[str]) -> None:
        """Cut every link between different groups (nodes not named form one more group)."""
        sets = [set(group) for group in groups]
        rest = set(self.ids) - set().union(*sets)
        if rest:
            sets.append(rest)
        for first, second in itertools.combinations(sets, 2):
            self.cut(sorted(first), sorted(second))

    def isolate(self, node_id: str) -> None:
        """Cut `node_id` off from every other node (the driver still reaches it)."""
        self.partition({node_id})

    def loss(self, node_id: str, probability: float, chain: str = "OUTPUT") -> None:
        """Drop each lab packet `node_id` sends (`OUTPUT`) or receives (`INPUT`) at random.

        Uses `-m statistic --mode random`; client replies to the driver are hit too.
        """
        assert 0.0 < probability < 1.0
        assert chain in ("INPUT", "OUTPUT")
        direction = "-d" if chain == "OUTPUT" else "-s"
        self._faulty.add(node_id)
        self._iptables(
            node_id,
            "-A",
            chain,
            direction,
            str(LAB_NET),
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            f"{probability:.4f}",
            "-j",
            "DROP",
        )

    def dropped(self, node_id: str) -> int:
        """How many packets the DROP rules in `node_id`'s namespace have dropped so far."""
        command = ["ip", "netns", "exec", self.namespace(node_id), "iptables", "-w", "5"]
        listing = run([*command, "-L", "-v", "-n", "-x"]).stdout
        total = 0
        for line in listing.splitlines():
            fields = line.split()
            if len(fields) > 2 and fields[2] == "DROP" and fields[0].isdigit():
                total += int(fields[0])
        return total

    def heal(self) -> None:
        """Flush the filter rules of every node namespace that has any."""
        for node_id in sorted(self._faulty):
            self._iptables(node_id, "-F")
        self._faulty.clear()

    # --- client requests ----------------------------------------------------------------

    def request(self, node_id: str, op: str, timeout: float = 5.0, **fields: Any) -> dict[str, Any]:
        """Send one request to `node_id`'s client endpoint and decode the reply.

        Raises:
            NoReply: no reply within `timeout` seconds.
        """
        assert self._client is not None, "setup() first"
        endpoint = self.client_endpoints[node_id]
        check_lab_endpoint(endpoint)
        frames = self._client.exchange(endpoint, [wire.encode_request(op, **fields)], timeout)
        if frames is None:
            raise NoReply(f"{node_id}: no reply to {op} within {timeout:g}s")
        assert len(frames) == 1, f"a reply is one frame, got {len(frames)}"
        return wire.decode_reply(frames[0])

    def status(self, node_id: str, timeout: float = 1.0) -> dict[str, Any]:
        """The node's `status` map (role, term, leader, commit_index, ...)."""
        reply = self.request(node_id, "status", timeout=timeout)
        assert reply["ok"], reply
        status: dict[str, Any] = reply["status"]
        return status

    def statuses(self, among: Iterable[str] | None = None) -> dict[str, dict[str, Any]]:
        """The status of each node of `among` (default all) that answers within 1 s."""
        found: dict[str, dict[str, Any]] = {}
        for node_id in self.ids if among is None else among:
            with contextlib.suppress(NoReply):
                found[node_id] = self.status(node_id)
        return found

    def request_until_ok(
        self,
        op: str,
        via: Iterable[str],
        *,
        timeout: float = 15.0,
        attempt_timeout: float = 3.0,
        **fields: Any,
    ) -> tuple[dict[str, Any], int]:
        """Repeat a request until some node of `via` answers it with success.

        Tries the nodes in turn, moving on after a no-reply or a transient error (a
        `leader` hint inside `via` is tried next). Only for requests that are safe to
        repeat: gets, and writes that carry a `client`/`seq` session.

        Returns:
            The successful reply and the number of attempts it took.

        Raises:
            AssertionError: a non-transient error, or no success within `timeout` s.
        """
        nodes = list(via)
        deadline = time.monotonic() + timeout
        attempts = 0
        target = nodes[0]
        last: object = None
        while (remaining := deadline - time.monotonic()) > 0:
            attempts += 1
            try:
                reply = self.request(target, op, timeout=min(remaining, attempt_timeout), **fields)
            except NoReply:
                last = f"no reply from {target}"
                target = nodes[(nodes.index(target) + 1) % len(nodes)]
                continue
            if reply["ok"]:
                return reply, attempts
            last = reply
            code = reply["error"]["code"]
            assert code in TRANSIENT_ERRORS, f"{op} {fields} via {target} failed: {reply}"
            hint = reply.get("leader")
            if hint in nodes and hint != target:
                target = hint
            else:
                target = nodes[(nodes.index(target) + 1) % len(nodes)]
                time.sleep(0.05)  # let an election finish before asking again
        raise AssertionError(
            f"{op} {fields} via {nodes}: no success within {timeout:g}s after {attempts} "
            f"attempts (last: {last!r})\n{self.describe()}"
        )

    def wait_leader(
        self, among: Iterable[str] | None = None, *, min_term: int = 0, timeout: float = 10.0
    ) -> str:
        """Wait until a node of `among` (default all) reports it leads in a term > min_term."""
        candidates = list(self.ids if among is None else among)

        def leader() -> str | None:
            for node_id, status in self.statuses(candidates).items():
                if status["role"] == "leader" and status["term"] > min_term:
                    return node_id
            return None

        found: str = logscan.wait_for(leader, timeout=timeout, describe=self.describe)
        return found

    def wait_agreed_leader(self, timeout: float = 15.0) -> tuple[str, int]:
        """Wait until every node answers and all name the same leader in the same term.

        Returns:
            The leader and its term.
        """

        def agreed() -> tuple[str, int] | None:
            statuses = self.statuses()
            if len(statuses) != len(self.ids):
                return None
            views = {(s["leader"], s["term"]) for s in statuses.values()}
            leaders = [n for n, s in statuses.items() if s["role"] == "leader"]
            if len(views) != 1 or len(leaders) != 1:
                return None
            leader, term = views.pop()
            return (leader, term) if leader == leaders[0] else None

        found: tuple[str, int] = logscan.wait_for(agreed, timeout=timeout, describe=self.describe)
        return found

    def wait_converged(self, min_index: int = 0, timeout: float = 15.0) -> int:
        """Wait until every node answers with one commit index, applied and at its log's end.

        Args:
            min_index: the common commit index must be at least this (the last ack seen).

        Returns:
            The common commit index.
        """

        def converged() -> int | None:
            statuses = self.statuses()
            if len(statuses) != len(self.ids):
                return None
            marks = {
                (s["commit_index"], s["applied_index"], s["last_index"]) for s in statuses.values()
            }
            if len(marks) != 1:
                return None
            commit, applied, last = marks.pop()
            ok = commit == applied == last and commit >= min_index
            return commit if ok else None

        found: int = logscan.wait_for(converged, timeout=timeout, describe=self.describe)
        return found

    # --- logs ---------------------------------------------------------------------------

    def node_events(self, node_id: str) -> list[dict[str, Any]]:
        """The events of one node's JSONL log, in write order."""
        return logscan.read_events(self.log_dir / f"{node_id}.jsonl")

    def events(self) -> list[dict[str, Any]]:
        """Every event of every node's log."""
        return logscan.read_events(self.log_dir)

    def elections(self) -> dict[int, list[str]]:
        """term -> the nodes that logged `leader_elected` in it."""
        return leaders_by_term(self.events())

    def assert_safety(self) -> None:
        """At most one `leader_elected` per term; each node's own term never decreases."""
        assert_election_safety(self.events(), self.ids, self.describe)

    def describe(self) -> str:
        """For failure messages: each node's process state, last events and stderr tail."""
        return describe_nodes(self.ids, self._procs, self.node_events, self.directory)
