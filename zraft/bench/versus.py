"""zraft side by side with etcd 3.4, in one run, on this machine.

    python -m zraft.bench.versus [--rounds 2] [--duration 5] [--json]
    python -m zraft.bench.versus --nodes 5 --value-size 1024 --spread --put-clients 1000

Round after round, it starts a fresh zraft cluster (CURVE on, fsync on, heartbeat 50 ms,
election timeout 300-600 ms, as `zraft.testing.cluster` writes its config) and a fresh
etcd cluster (Debian's `etcd-server`, its defaults, through its v3 JSON gateway) of the
same size on 127.0.0.1, one after the other, alternating which goes first, and drives each
with the same closed-loop load (`zraft.bench.load` and `zraft.bench.etcd`): 16-byte keys
(`bench-N`), `--value-size` byte values, requests to the leader (`--spread`: round-robin
over every node, followers forwarding). Per cluster it measures:

- sequential puts, one client (`--seq-requests`): p50 and p99;
- puts/s with `--put-clients` in flight, linearizable gets/s with `--get-clients`, each
  for `--duration` seconds;
- what each put and each get cost in CPU time (user + system, every thread: libzmq's
  and Go's included), in microseconds per acknowledged request, on the leader, on all
  followers together and in this process (the load generator); the get figures include
  the not-measured prefill of the keys, about 2% of the requests;
- the resident memory of the leader once elected, before any load (`VmRSS`), and the
  peak (`VmHWM`) of the leader and of the largest follower after the load;
- `--failovers` times: kill -9 the leader, then one client writing to the surviving
  nodes (each attempt waits at most 250 ms, then the next node) until a put is
  acknowledged: the time from the kill to that acknowledgement; the killed node is then
  restarted and the cluster left to settle (`SETTLE_S`) before the next trial.

It prints the medians over the rounds, zraft / etcd, the goal of issue 18 for each ratio,
and every round's figures (`--json`: one object). Without an `etcd` binary (or with
`--systems zraft`) it prints zraft's figures alone. A benchmark that prints figures,
never a pass/fail test; it starts and stops its own processes by PID, on free loopback
ports, in a temporary directory removed at the end (`--keep DIR` keeps it).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

import zmq

from zraft import wire
from zraft.bench.etcd import EtcdCluster, b64, etcd_request, run_etcd_bench
from zraft.bench.load import BenchResult, BenchSpec, run_bench
from zraft.bench.workdir import run_in_workdir, say
from zraft.testing.cluster import ProcessCluster

FIGURES = (
    ("sequential put p50 (ms)", "seq_p50_ms", 0.7),
    ("sequential put p99 (ms)", "seq_p99_ms", 1.0),
    ("puts/s", "puts_per_s", 2.0),
    ("linearizable gets/s", "gets_per_s", 2.5),
    ("kill -9 leader -> first acknowledged write (s)", "failover_s", 0.3),
    ("peak RSS of the leader (MiB)", "leader_rss_mib", 0.4),
    ("peak RSS of the largest follower (MiB)", "follower_rss_mib", None),
    ("RSS of the leader before the load (MiB)", "idle_rss_mib", None),
    ("CPU per put, leader (µs)", "put_cpu_us_leader", None),
    ("CPU per put, followers (µs)", "put_cpu_us_followers", None),
    ("CPU per put, load generator (µs)", "put_cpu_us_client", None),
    ("CPU per get, leader (µs)", "get_cpu_us_leader", None),
    ("CPU per get, followers (µs)", "get_cpu_us_followers", None),
    ("CPU per get, load generator (µs)", "get_cpu_us_client", None),
)
"""(label, key, goal for zraft / etcd or None) of each figure, in the order printed. For
rates the goal is a lower bound, for times and memory an upper bound."""

SETTLE_S = 2.0
"""How long a cluster is left alone after a restarted node is back, before the next trial."""

ATTEMPT_S = 0.25
"""How long one failover write attempt waits before trying the next node."""


class Target(Protocol):
    """What the measurement needs of a running cluster, zraft's or etcd's."""

    def leader(self) -> str:
        """The node that leads now (waits, bounded)."""
        ...

    def nodes(self) -> list[str]:
        """Every node's name."""
        ...

    def bench(self, nodes: list[str], spec: BenchSpec) -> BenchResult:
        """Run a closed-loop load against these nodes."""
        ...

    def write_once(self, node: str, key: str) -> bool:
        """One put to `node`, waiting at most `ATTEMPT_S`: whether it was acknowledged."""
        ...

    def pid(self, node: str) -> int:
        """The node's process id."""
        ...

    def kill(self, node: str) -> None:
        """kill -9 the node and reap it."""
        ...

    def restart(self, node: str) -> None:
        """Start the node again on its data."""
        ...

    def close(self) -> None:
        """Stop every process."""
        ...


class ZraftTarget:
    """A zraft cluster of `n` nodes (CURVE on) in `directory`."""

    def __init__(self, directory: Path, n: int) -> None:
        self.cluster = ProcessCluster(directory, n)
        self.cluster.start_all()
        self._context: zmq.Context[Any] = zmq.Context()

    def leader(self) -> str:
        return self.cluster.wait_leader(timeout=20)

    def nodes(self) -> list[str]:
        return list(self.cluster.ids)

    def bench(self, nodes: list[str], spec: BenchSpec) -> BenchResult:
        endpoints = [self.cluster.client_endpoints[n] for n in nodes]
        return run_bench(endpoints, spec, curve=self.cluster.curve, context=self._context)

    def write_once(self, node: str, key: str) -> bool:
        endpoint = self.cluster.client_endpoints[node]
        sock = self._context.socket(zmq.REQ)
        sock.linger = 0
        try:
            if self.cluster.curve is not None:
                self.cluster.curve.apply(sock, endpoint)
            sock.connect(endpoint)
            sock.send(wire.encode_request("put", key=key, value=b"x"))
            if not sock.poll(int(ATTEMPT_S * 1000), zmq.POLLIN):
                return False
            return bool(wire.decode_reply(sock.recv()).get("ok"))
        finally:
            sock.close(linger=0)

    def pid(self, node: str) -> int:
        return self.cluster.pid(node)

    def kill(self, node: str) -> None:
        self.cluster.kill(node)

    def restart(self, node: str) -> None:
        self.cluster.start(node)

    def close(self) -> None:
        try:
            self.cluster.close()
        finally:
            self._context.destroy(linger=0)


class EtcdTarget:
    """An etcd cluster of `n` members in `directory` (its default timings unless
    `timings` gives heartbeat and election timeout in ms)."""

    def __init__(
        self, directory: Path, n: int, binary: str, timings: tuple[int, int] | None = None
    ) -> None:
        self.cluster = EtcdCluster(binary, directory, n, timings=timings)
        self.cluster.start_all()

    def leader(self) -> str:
        return self.cluster.leader()

    def nodes(self) -> list[str]:
        return list(self.cluster.names)

    def bench(self, nodes: list[str], spec: BenchSpec) -> BenchResult:
        return run_etcd_bench([self.cluster.client[n] for n in nodes], spec)

    def write_once(self, node: str, key: str) -> bool:
        body = {"key": b64(key), "value": b64("x")}
        try:
            answer = etcd_request(self.cluster.client[node], "/v3/kv/put", body, ATTEMPT_S)
        except OSError:
            return False
        return "header" in answer

    def pid(self, node: str) -> int:
        return self.cluster.pid(node)

    def kill(self, node: str) -> None:
        self.cluster.kill(node)

    def restart(self, node: str) -> None:
        self.cluster.start(node, state="existing")

    def close(self) -> None:
        self.cluster.close()


def peak_rss_mib(pid: int) -> float:
    """A process's peak resident set (`VmHWM`), in MiB."""
    return _status_kib(pid, "VmHWM:") / 1024


def rss_mib(pid: int) -> float:
    """A process's resident set now (`VmRSS`), in MiB."""
    return _status_kib(pid, "VmRSS:") / 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system, all threads) process `pid` used so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def own_cpu_s() -> float:
    """CPU seconds this process used so far (the load generator, its threads included)."""
    times = os.times()
    return times.user + times.system


def failover_s(target: Target, trial: int, settle_s: float = SETTLE_S) -> float:
    """Kill the leader; seconds until a put to a surviving node is acknowledged. The
    killed node is restarted and a leader awaited before returning."""
    leader = target.leader()
    survivors = [n for n in target.nodes() if n != leader]
    killed_at = time.monotonic()
    target.kill(leader)
    attempt = 0
    while not target.write_once(survivors[attempt % len(survivors)], f"failover-{trial}"):
        attempt += 1
        if time.monotonic() - killed_at > 60:
            raise TimeoutError("no write acknowledged within 60 s of killing the leader")
    took = time.monotonic() - killed_at
    target.restart(leader)
    target.leader()
    # Each trial starts from a settled cluster: every link up again (a DEALER's reconnect
    # backoff reaches 1 s while its peer is down), the restarted node caught up.
    time.sleep(settle_s)
    return took


def measure(target: Target, args: argparse.Namespace) -> dict[str, float]:
    """Every figure of one cluster (see the module doc)."""
    leader = target.leader()
    nodes = target.nodes() if args.spread else [leader]

    def run(spec: BenchSpec) -> BenchResult:
        result = target.bench(nodes, spec)
        if result.errors:
            raise RuntimeError(f"{result.errors} errors: {dict(result.error_codes)}")
        return result

    pids = {n: target.pid(n) for n in target.nodes()}
    figures = {"idle_rss_mib": rss_mib(pids[leader])}

    def costed(spec: BenchSpec) -> BenchResult:
        """Run `spec`; note its CPU per acknowledged request, by role."""
        before = {n: cpu_s(pid) for n, pid in pids.items()}
        own = own_cpu_s()
        result = run(spec)
        used = {n: cpu_s(pid) - before[n] for n, pid in pids.items()}
        per_op = 1e6 / max(1, result.ops)
        figures[f"{spec.op}_cpu_us_leader"] = used.pop(leader) * per_op
        figures[f"{spec.op}_cpu_us_followers"] = sum(used.values()) * per_op
        figures[f"{spec.op}_cpu_us_client"] = (own_cpu_s() - own) * per_op
        return result

    size = args.value_size
    seq = run(BenchSpec(clients=1, requests=args.seq_requests, value_size=size))
    puts = costed(
        BenchSpec(clients=args.put_clients, requests=None, duration=args.duration, value_size=size)
    )
    gets = costed(
        BenchSpec(
            clients=args.get_clients,
            requests=None,
            duration=args.duration,
            op="get",
            value_size=size,
        )
    )
    followers = [peak_rss_mib(pid) for n, pid in pids.items() if n != leader]
    figures |= {
        "seq_p50_ms": seq.latencies_ms["p50"],
        "seq_p99_ms": seq.latencies_ms["p99"],
        "puts_per_s": puts.ops_per_s,
        "gets_per_s": gets.ops_per_s,
        "leader_rss_mib": peak_rss_mib(pids[leader]),
        "follower_rss_mib": max(followers),
    }
    trials = [failover_s(target, trial, args.settle) for trial in range(args.failovers)]
    figures["failover_s"] = statistics.median(trials) if trials else 0.0
    return figures


def run_rounds(
    args: argparse.Namespace, directory: Path, progress: Callable[[str], None]
) -> dict[str, Any]:
    """The rounds: `{"systems", "settings", "rounds": [{system: figures}]}`."""
    makers: dict[str, Callable[[Path], Target]] = {
        "zraft": lambda path: ZraftTarget(path, args.nodes),
        "etcd": lambda path: EtcdTarget(path, args.nodes, args.etcd, args.etcd_timings),
    }
    rounds: list[dict[str, dict[str, float]]] = []
    for number in range(1, args.rounds + 1):
        order = args.systems if number % 2 else list(reversed(args.systems))
        row: dict[str, dict[str, float]] = {}
        for system in order:
            target = makers[system](directory / f"{system}-{number}")
            try:
                row[system] = measure(target, args)
            finally:
                target.close()
            shown = ", ".join(f"{k} {v:.3g}" for k, v in row[system].items())
            progress(f"round {number} {system}: {shown}")
        rounds.append(row)
    settings = {
        key: getattr(args, key)
        for key in (
            "nodes",
            "value_size",
            "spread",
            "put_clients",
            "get_clients",
            "duration",
            "seq_requests",
            "failovers",
            "etcd_timings",
        )
    }
    return {"systems": list(args.systems), "settings": settings, "rounds": rounds}


def _shown(key: str, value: float) -> str:
    if key.endswith("_per_s") or "_cpu_us_" in key:
        return f"{value:,.0f}"
    return f"{value:.1f}" if key.endswith("_mib") else f"{value:.3f}"


def table(report: dict[str, Any]) -> list[str]:
    """The medians (and zraft / etcd with its goal, when both ran) as Markdown lines."""
    systems, rounds = report["systems"], report["rounds"]
    both = set(systems) == {"zraft", "etcd"}
    head = "| figure | " + " | ".join(systems)
    head += " | zraft / etcd | goal | rounds |" if both else " | rounds |"
    lines = [head, "|---" * (head.count("|") - 1) + "|"]
    for label, key, goal in FIGURES:
        values = {s: statistics.median(r[s][key] for r in rounds) for s in systems}
        cells = [_shown(key, values[s]) for s in systems]
        if both:
            ratio = values["zraft"] / values["etcd"] if values["etcd"] else float("inf")
            sign = ">=" if key.endswith("_per_s") else "<="
            cells += [f"{ratio:.2f}", f"{sign} {goal}" if goal is not None else ""]
        each = "; ".join(", ".join(_shown(key, r[s][key]) for r in rounds) for s in systems)
        lines.append(f"| {label} | " + " | ".join([*cells, each]) + " |")
    return lines


def _timings(text: str) -> tuple[int, int]:
    """`HB,ELECTION` in ms, as `--etcd-timings` takes it."""
    try:
        heartbeat, election = (int(part) for part in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected HB,ELECTION in ms, got {text!r}") from None
    if not 0 < heartbeat < election:
        raise argparse.ArgumentTypeError("the heartbeat must be positive and below the election")
    return heartbeat, election


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the rounds and print the table (or JSON)."""
    parser = argparse.ArgumentParser(
        prog="python -m zraft.bench.versus", description="zraft and etcd 3.4, side by side."
    )
    parser.add_argument("--rounds", type=int, default=2, help="alternating rounds (2)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per load (5)")
    parser.add_argument("--seq-requests", type=int, default=2000, help="sequential puts (2000)")
    parser.add_argument("--put-clients", type=int, default=128, help="puts in flight (128)")
    parser.add_argument("--get-clients", type=int, default=32, help="gets in flight (32)")
    parser.add_argument("--value-size", type=int, default=256, help="bytes per value (256)")
    parser.add_argument("--nodes", type=int, default=3, choices=(3, 5), help="cluster size")
    parser.add_argument("--spread", action="store_true", help="requests to every node")
    parser.add_argument("--failovers", type=int, default=3, help="leader kills per cluster")
    parser.add_argument(
        "--settle", type=float, default=SETTLE_S, help=f"seconds after a restart ({SETTLE_S:g})"
    )
    parser.add_argument("--systems", default="zraft,etcd", help="zraft, etcd or both")
    parser.add_argument("--etcd", default="etcd", help="the etcd binary (etcd)")
    parser.add_argument(
        "--etcd-timings",
        type=_timings,
        metavar="HB,ELECTION",
        help="etcd's heartbeat and election timeout in ms (default: etcd's, 100,1000); "
        "50,300 matches zraft's",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the clusters' files")
    args = parser.parse_args(argv)
    args.systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    if not set(args.systems) <= {"zraft", "etcd"} or not args.systems:
        parser.error("--systems: zraft, etcd or both")
    if "etcd" in args.systems and shutil.which(args.etcd) is None:
        print(f"versus: no {args.etcd!r} binary: zraft alone", file=sys.stderr)
        args.systems = [s for s in args.systems if s != "etcd"] or ["zraft"]
    if min(args.rounds, args.seq_requests, args.put_clients, args.get_clients) < 1:
        parser.error("--rounds, --seq-requests and the client counts must be >= 1")
    if args.duration <= 0 or min(args.failovers, args.value_size, args.settle) < 0:
        parser.error("--duration must be > 0, --failovers, --value-size and --settle >= 0")
    return run_in_workdir(
        "versus",
        args.keep,
        lambda directory: run_rounds(args, directory, say),
        table,
        as_json=args.json,
        failures=(RuntimeError, AssertionError, OSError, TimeoutError),
    )


if __name__ == "__main__":
    sys.exit(main())
