"""The nemesis inside the network-namespace lab: real iptables faults, a checked history.

`tests.nemesis` checks a cluster on 127.0.0.1 whose partitions and packet loss come from
the in-node fault hook. Here the same kind of run happens in a `tests.netns.NetnsLab`
(one network namespace per node, a bridge, the driver on 10.88.0.100), and the network
faults are firewall rules in the node namespaces, so the kernel drops the packets and the
nodes' TCP connections see real silence, retransmissions and resets:

- `partition`: a minority (half of the time one holding the leader) and the majority
  are cut apart, both ways (`NetnsLab.partition`);
- `isolate-leader`: the leader alone is cut off (`NetnsLab.isolate`);
- `bridge`: a non-transitive cut: one node (not the leader) sees both sides, the two
  sides cannot see each other; the leader, when known, is on a side (`NetnsLab.cut`);
- `loss`: every node drops 10%, 20% or 30% of the packets it sends into the lab
  (`NetnsLab.loss`, the `statistic` match), client replies included;
- `kill`, `kill-leader`: SIGKILL by PID, stay down a while, restart on the same data;
- `pause`, `pause-leader`: SIGSTOP for 1.5x to 4x the maximum election timeout, SIGCONT.

As in `tests.nemesis`, one fault is active at a time: it is applied, held for a time drawn
from the seed, and undone; kinds come in rounds, each a seeded shuffle of every kind. A
run lasts at least its duration and until `min_rounds` whole rounds were injected (so a
short run has hit every kind), at most three times the duration.

`run_lab_nemesis` is the whole run, used by the `nemesis` scenario of `tests.netns_child`:
start the nodes, run `tests.workload.Workload` against the lab's client endpoints while
the nemesis works, heal everything, wait for one agreed leader, read every key, wait until
every node holds the same log, and judge the run with `tests.checkrun.judge`
(linearizability, lost acknowledged writes, election safety). Files are left in the lab
directory: `history.jsonl`, `ops.jsonl`, `faults.jsonl`, `logs/` (each node's events).

While the workload runs, only the nemesis thread uses the lab's request helper (it is not
thread-safe); the workload has its own ZeroMQ context and sockets.
"""

from __future__ import annotations

import random
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from tests import checkrun
from tests import workload as wl
from tests.nemesis import (
    SNAPSHOT_OPTIONS,
    Checker,
    Fault,
    NemesisReport,
    describe_fault,
    summary_json,
)
from tests.netns import NetnsLab, check_lab_endpoint
from tests.procs import NoReply

IPTABLES_FAULT_KINDS = ("partition", "isolate-leader", "bridge", "loss")
"""The faults made with firewall rules."""

PROCESS_FAULT_KINDS = ("kill", "kill-leader", "pause", "pause-leader")
"""The faults made with signals."""

NETNS_FAULT_KINDS = IPTABLES_FAULT_KINDS + PROCESS_FAULT_KINDS
"""Every fault this nemesis knows, in the order a summary lists them."""

LAB_CLUSTER_OPTIONS = SNAPSHOT_OPTIONS
"""`[cluster]` keys of the lab: frequent snapshots, as in `tests.nemesis`."""

LEADER_SEARCH_S = 4.0  # how long to look for a leader before hitting a random node
LOSS_PROBABILITIES = (0.1, 0.2, 0.3)
HEAL_TIMEOUT_S = 30.0  # one agreed leader, the final reads, convergence: each bounded


class LabNemesis:
    """Injects seeded faults into a running `NetnsLab` from a background thread.

    Args:
        lab: the lab, nodes started; the nemesis is the only user of its request helper.
        kinds: which faults to draw from (a subset of `NETNS_FAULT_KINDS`).
        seed: seeds every choice (kinds, nodes, durations).
        origin_ns: `time.monotonic_ns()` at the start of the run (shared with the workload).
        gap_s: the quiet time between two faults (uniform range).
        hold_s: how long a partition, cut or loss lasts.
        down_s: how long a killed node stays down.
        pause_s: how long a node stays stopped; default 1.5x to 4x the maximum election
            timeout, so the others elect a leader meanwhile.
    """

    def __init__(
        self,
        lab: NetnsLab,
        *,
        kinds: Iterable[str] = NETNS_FAULT_KINDS,
        seed: int = 0,
        origin_ns: int | None = None,
        gap_s: tuple[float, float] = (0.2, 0.8),
        hold_s: tuple[float, float] = (0.8, 2.5),
        down_s: tuple[float, float] = (0.3, 2.0),
        pause_s: tuple[float, float] | None = None,
    ) -> None:
        self.kinds = list(kinds)
        unknown = set(self.kinds) - set(NETNS_FAULT_KINDS)
        if unknown or not self.kinds:
            raise ValueError(
                f"unknown or no fault kinds {sorted(unknown)}; known: {NETNS_FAULT_KINDS}"
            )
        if "bridge" in self.kinds and len(lab.ids) < 3:
            raise ValueError("a bridge cut needs at least 3 nodes")
        self._lab = lab
        self._rng = random.Random(seed)
        self._origin_ns = time.monotonic_ns() if origin_ns is None else origin_ns
        election_max_s = lab.election_timeout_ms[1] / 1000
        self._gap_s = gap_s
        self._hold_s = hold_s
        self._down_s = down_s
        self._pause_s = pause_s or (1.5 * election_max_s, 4.0 * election_max_s)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._paused: set[str] = set()
        self._ruled = False  # firewall rules may be in place
        self.faults: list[Fault] = []
        self.error: str | None = None

    # --- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start injecting faults in a background thread."""
        self._thread = threading.Thread(target=self._run, name="lab-nemesis", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 60.0) -> None:
        """Ask the thread to stop (the current fault is undone first) and wait for it.

        Raises:
            RuntimeError: the thread did not finish within `timeout`.
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                raise RuntimeError(f"the nemesis thread did not stop within {timeout:g}s")

    def heal(self) -> None:
        """Undo everything still in effect: SIGCONT, flush rules, restart. Safe to repeat."""
        for node_id in sorted(self._paused):
            if self._lab.is_running(node_id):
                self._lab.resume(node_id)
        self._paused.clear()
        if self._ruled:
            self._lab.heal()
            self._ruled = False
        for node_id in self._lab.ids:
            if not self._lab.is_running(node_id):
                self._lab.start(node_id)

    def rounds_done(self) -> int:
        """How many whole rounds (every kind once) were injected and undone."""
        done = sum(1 for fault in self.faults if fault.end_ns is not None)
        return done // len(self.kinds)

    def counts(self) -> dict[str, int]:
        """kind -> how many faults of that kind were injected, in `NETNS_FAULT_KINDS` order."""
        counts = Counter(fault.kind for fault in self.faults)
        return {kind: counts[kind] for kind in NETNS_FAULT_KINDS if counts[kind]}

    def _now(self) -> int:
        return time.monotonic_ns() - self._origin_ns

    def _run(self) -> None:
        schedule: list[str] = []
        try:
            while not self._stop.wait(self._rng.uniform(*self._gap_s)):
                if not schedule:
                    schedule = list(self.kinds)
                    self._rng.shuffle(schedule)
                self._inject(schedule.pop())
        except Exception:  # the thread's boundary: report; the runner heals and fails
            self.error = traceback.format_exc()

    def _hold(self, span: tuple[float, float]) -> None:
        """Keep a fault for a random time from `span`; a stop request cuts it short."""
        self._stop.wait(self._rng.uniform(*span))

    def _find_leader(self) -> str | None:
        """The running node reporting itself leader with the highest term, polled a while."""
        deadline = time.monotonic() + LEADER_SEARCH_S
        while not self._stop.is_set() and time.monotonic() < deadline:
            best: tuple[int, str] | None = None
            for node_id in self._lab.running():
                if node_id in self._paused:
                    continue
                try:
                    status = self._lab.status(node_id, timeout=0.3)
                except NoReply:
                    continue
                if status["role"] == "leader" and (best is None or status["term"] > best[0]):
                    best = (status["term"], node_id)
            if best is not None:
                return best[1]
            self._stop.wait(0.05)
        return None

    def _leader_or_random(self) -> tuple[str, str | None]:
        leader = self._find_leader()
        if leader is not None:
            return leader, None
        return self._rng.choice(self._lab.running()), "no leader found; hit a random node"

    # --- faults -------------------------------------------------------------------------

    def _inject(self, kind: str) -> None:
        inject: dict[str, Callable[[str], None]] = {
            "partition": self._partition,
            "isolate-leader": self._isolate_leader,
            "bridge": self._bridge,
            "loss": self._loss,
            "kill": self._kill,
            "kill-leader": self._kill,
            "pause": self._pause,
            "pause-leader": self._pause,
        }
        inject[kind](kind)

    def _firewall(self, fault: Fault, apply: Callable[[], None]) -> None:
        """Record `fault`, apply its rules, hold them, flush them."""
        self.faults.append(fault)
        self._ruled = True
        apply()
        self._hold(self._hold_s)
        self._lab.heal()
        self._ruled = False
        fault.end_ns = self._now()

    def _partition(self, kind: str) -> None:
        """A minority | majority split; half of the time the leader is in the minority."""
        ids = list(self._lab.ids)
        size = self._rng.randint(1, (len(ids) - 1) // 2)
        leader = self._find_leader() if self._rng.random() < 0.5 else None
        if leader is not None:
            others = [n for n in ids if n != leader]
            minority = sorted([leader, *self._rng.sample(others, size - 1)])
        else:
            minority = sorted(self._rng.sample(ids, size))
        majority = [n for n in ids if n not in minority]
        note = f"{minority} | {majority}" + (f", leader {leader} in the minority" if leader else "")
        fault = Fault(kind, minority, self._now(), note=note)
        self._firewall(fault, lambda: self._lab.partition(minority))

    def _isolate_leader(self, kind: str) -> None:
        node_id, note = self._leader_or_random()
        fault = Fault(kind, [node_id], self._now(), note=note)
        self._firewall(fault, lambda: self._lab.isolate(node_id))

    def _bridge(self, kind: str) -> None:
        """{leader, ...} | bridge | {...}: only the bridge node sees both sides."""
        leader = self._find_leader()
        ids = list(self._lab.ids)
        bridge = self._rng.choice([n for n in ids if n != leader])
        rest = [n for n in ids if n != bridge]
        self._rng.shuffle(rest)
        if leader is not None:  # the leader on a side: the interesting case
            rest.remove(leader)
            rest.insert(0, leader)
        half = len(rest) // 2
        side_a, side_b = sorted(rest[:half]), sorted(rest[half:])
        note = f"{side_a} | {bridge} | {side_b}" + ("" if leader else "; no leader found")
        fault = Fault(kind, [bridge], self._now(), note=note)
        self._firewall(fault, lambda: self._lab.cut(side_a, side_b))

    def _loss(self, kind: str) -> None:
        """Every node drops a share of the packets it sends; the drop count goes in the note."""
        probability = self._rng.choice(LOSS_PROBABILITIES)
        ids = list(self._lab.ids)
        fault = Fault(kind, ids, self._now(), note=f"{probability:.0%}")
        self.faults.append(fault)
        self._ruled = True
        for node_id in ids:
            self._lab.loss(node_id, probability, "OUTPUT")
        self._hold(self._hold_s)
        dropped = sum(self._lab.dropped(node_id) for node_id in ids)
        self._lab.heal()
        self._ruled = False
        fault.end_ns = self._now()
        fault.note = f"{probability:.0%}, {dropped} packets dropped"

    def _kill(self, kind: str) -> None:
        if kind == "kill-leader":
            node_id, note = self._leader_or_random()
        else:
            node_id, note = self._rng.choice(self._lab.running()), None
        fault = Fault(kind, [node_id], self._now(), note=note)
        self.faults.append(fault)
        self._lab.kill(node_id)
        self._hold(self._down_s)
        self._lab.start(node_id)
        fault.end_ns = self._now()

    def _pause(self, kind: str) -> None:
        if kind == "pause-leader":
            node_id, note = self._leader_or_random()
        else:
            node_id, note = self._rng.choice(self._lab.running()), None
        fault = Fault(kind, [node_id], self._now(), note=note)
        self.faults.append(fault)
        self._lab.pause(node_id)
        self._paused.add(node_id)
        self._hold(self._pause_s)
        self._lab.resume(node_id)
        self._paused.discard(node_id)
        fault.end_ns = self._now()


def run_lab_nemesis(
    lab: NetnsLab,
    *,
    seed: int,
    duration_s: float,
    clients: int = 5,
    keys: int = 5,
    kinds: Iterable[str] = NETNS_FAULT_KINDS,
    min_rounds: int = 1,
    checker: Checker | None = None,
    say: Callable[[str], None] | None = None,
    nemesis_options: dict[str, Any] | None = None,
) -> NemesisReport:
    """Run the lab's nodes under workload and nemesis, heal, read every key back, judge.

    Args:
        lab: a lab after `setup()`, nodes not started; the caller closes it.
        seed: seeds the workload (seed) and the nemesis (seed + 1).
        duration_s: the least time operations are started and faults injected; the run
            goes on until `min_rounds` rounds of every kind were injected (at most 3x).
        clients, keys: the workload's concurrent clients and key count.
        kinds: the fault kinds to draw from.
        checker: the linearizability check (default: `zraft.testing.linearizability`).
        say: called with one progress line per phase.
        nemesis_options: more `LabNemesis` keyword arguments (`gap_s`, `hold_s`, ...).

    Returns:
        The report (`report.ok`, `report.exit_code`); `details(report, lab, nemesis)`
        gives its JSON form.
    """
    tell = say or (lambda _line: None)
    report = NemesisReport(
        seed, len(lab.ids), clients, duration_s, lab.directory, lab.directory / "history.jsonl"
    )
    endpoints = dict(lab.client_endpoints)
    for endpoint in endpoints.values():
        check_lab_endpoint(endpoint)
    tell(f"starting {len(lab.ids)} nodes in network namespaces, config {lab.config_path}")
    lab.start_all()
    lab.wait_leader(timeout=20)
    origin_ns = time.monotonic_ns()
    nemesis = LabNemesis(
        lab, kinds=kinds, seed=seed + 1, origin_ns=origin_ns, **(nemesis_options or {})
    )
    stream = (lab.directory / "ops.jsonl").open("w")
    timeout_s = lab.request_timeout_ms / 1000
    load = wl.Workload(
        endpoints,
        clients=clients,
        keys=keys,
        seed=seed,
        origin_ns=origin_ns,
        attempt_timeout_s=timeout_s + 0.5,
        op_timeout_s=2 * timeout_s + 1.0,
        on_record=lambda op: stream.write(op.to_json() + "\n"),
        curve=lab.curve,
    )
    try:
        _drive(lab, load, nemesis, report, duration_s, min_rounds, tell)
        stream.close()
        checkrun.judge(lab, load, nemesis.faults, report, checker=checker, say=tell)
        return report
    finally:
        stream.close()
        try:
            nemesis.stop()
            nemesis.heal()
        finally:
            load.close()


def _drive(
    lab: NetnsLab,
    load: wl.Workload,
    nemesis: LabNemesis,
    report: NemesisReport,
    duration_s: float,
    min_rounds: int,
    tell: Callable[[str], None],
) -> None:
    """Workload and nemesis together; heal; one agreed leader; final reads; convergence."""
    tell(
        f"running {report.clients} clients and faults {nemesis.kinds} for at least "
        f"{duration_s:g}s and {min_rounds} round(s) of every kind"
    )
    started = time.monotonic()

    def should_stop() -> bool:
        if nemesis.error is not None:
            return True
        elapsed = time.monotonic() - started
        return elapsed >= duration_s and nemesis.rounds_done() >= min_rounds

    nemesis.start()
    try:
        load.run(3 * duration_s, should_stop=should_stop)
    finally:
        nemesis.stop()
        nemesis.heal()
    report.duration_s = round(time.monotonic() - started, 1)  # the run may outlast the minimum
    if nemesis.error is not None:
        report.errors.append(f"nemesis failed:\n{nemesis.error}")
    tell(f"healed after {time.monotonic() - started:.1f}s; waiting for one agreed leader")
    try:
        lab.wait_agreed_leader(timeout=HEAL_TIMEOUT_S)
    except AssertionError as exc:
        report.errors.append(f"no agreed leader within {HEAL_TIMEOUT_S:g}s of healing: {exc}")
    report.final = load.final_reads(timeout_s=HEAL_TIMEOUT_S)
    missing = sorted(set(load.keys) - set(report.final))
    if missing:
        report.errors.append(f"final reads failed for keys {missing}")
    try:
        lab.wait_converged(timeout=HEAL_TIMEOUT_S)
    except AssertionError as exc:
        report.errors.append(f"logs did not converge within {HEAL_TIMEOUT_S:g}s: {exc}")


def details(report: NemesisReport, lab: NetnsLab) -> dict[str, Any]:
    """The report as plain JSON values, plus what the lab adds (elections, fault log)."""
    result = summary_json(report)
    counts = Counter(fault.kind for fault in report.faults)
    result["faults"] = {kind: counts[kind] for kind in NETNS_FAULT_KINDS if counts[kind]}
    total: Counter[str] = Counter()
    for per_kind in report.outcomes.values():
        total.update(per_kind)
    result["ops_total"] = dict(total)
    result["ok_ops"] = report.ok_count()
    elections = lab.elections()
    result["elections"] = sum(len(ids) for ids in elections.values())
    result["max_term"] = max(elections, default=0)
    result["fault_log"] = [
        describe_fault(fault) + (f" ({fault.note})" if fault.note else "")
        for fault in report.faults
    ]
    result["directory"] = str(report.directory)
    result["ok"] = report.ok
    return result


def summary(report: NemesisReport) -> str:
    """`NemesisReport.summary()`, with the faults line listing this nemesis's kinds and
    only the notes that say a plan was not followed (the layouts are in `faults.jsonl`)."""
    counts = Counter(fault.kind for fault in report.faults)
    faults_line = "faults: " + (
        ", ".join(f"{kind}={counts[kind]}" for kind in NETNS_FAULT_KINDS if counts[kind]) or "none"
    )
    lines = [
        faults_line if line.startswith("faults: ") else line
        for line in report.summary().splitlines()
        if not line.startswith("  note: ") or "no leader found" in line
    ]
    return "\n".join(lines)
