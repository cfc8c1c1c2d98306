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

The lifecycle is `tests.faultplan.FaultPlan`'s, as in `tests.nemesis`: one fault is
active at a time: it is recorded, applied, held for a time drawn from the seed, and undone;
kinds come in rounds, each a seeded shuffle of every kind. `LabNemesis` is the table of
actions that make each kind in the lab, and the heal. A run lasts at least its duration
and until `min_rounds` whole rounds were injected (so a short run has hit every kind), at
most three times the duration.

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

import time
from collections import Counter
from collections.abc import Callable, Iterable
from typing import Any

from tests import checkrun
from tests import workload as wl
from tests.faultplan import Action, Fault, FaultPlan, Injection, PlannedNemesis, count_faults
from tests.nemesis import SNAPSHOT_OPTIONS, Checker, NemesisReport, describe_fault, summary_json
from tests.netns import NetnsLab, check_lab_endpoint

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


class LabNemesis(PlannedNemesis):
    """Injects seeded faults into a running `NetnsLab` from a background thread.

    The schedule, the thread and the fault records are `tests.faultplan.FaultPlan`'s; this
    class is the table of actions that make each kind in the lab, and the heal.

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
        actions: dict[str, Action] = {
            "partition": self._partition,
            "isolate-leader": self._isolate_leader,
            "bridge": self._bridge,
            "loss": self._loss,
            "kill": self._kill,
            "kill-leader": self._kill,
            "pause": self._pause,
            "pause-leader": self._pause,
        }
        self._plan = FaultPlan(
            actions,
            self._heal,
            kinds=kinds,
            known=NETNS_FAULT_KINDS,
            seed=seed,
            origin_ns=origin_ns,
            gap_s=gap_s,
            thread_name="lab-nemesis",
        )
        if "bridge" in self._plan.kinds and len(lab.ids) < 3:
            raise ValueError("a bridge cut needs at least 3 nodes")
        self._lab = lab
        self._rng = self._plan.rng  # the plan's: its draws and ours interleave in one order
        election_max_s = lab.election_timeout_ms[1] / 1000
        self._hold_s = hold_s
        self._down_s = down_s
        self._pause_s = pause_s or (1.5 * election_max_s, 4.0 * election_max_s)
        self._paused: set[str] = set()
        self._ruled = False  # firewall rules may be in place

    def _heal(self) -> None:
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

    # --- choosing targets ---------------------------------------------------------------

    def _find_leader(self) -> str | None:
        """The running, unpaused node reporting itself leader with the highest term."""
        return self._plan.find_leader(self._lab, search_s=LEADER_SEARCH_S, skip=self._paused)

    def _leader_or_random(self) -> tuple[str, str | None]:
        leader = self._find_leader()
        if leader is not None:
            return leader, None
        return self._rng.choice(self._lab.running()), "no leader found; hit a random node"

    # --- faults: each plans one `Injection` (the plan records, holds and undoes it) -------

    def _firewall(self, nodes: list[str], note: str | None, apply: Callable[[], None]) -> Injection:
        """A fault made of firewall rules: apply them, hold them, flush them."""

        def rule(_fault: Fault) -> None:
            self._ruled = True
            apply()

        return Injection(nodes, note, rule, self._hold_s, self._flush)

    def _flush(self, _fault: Fault) -> None:
        self._lab.heal()
        self._ruled = False

    def _partition(self, kind: str) -> Injection:
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
        return self._firewall(minority, note, lambda: self._lab.partition(minority))

    def _isolate_leader(self, kind: str) -> Injection:
        node_id, note = self._leader_or_random()
        return self._firewall([node_id], note, lambda: self._lab.isolate(node_id))

    def _bridge(self, kind: str) -> Injection:
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
        return self._firewall([bridge], note, lambda: self._lab.cut(side_a, side_b))

    def _loss(self, kind: str) -> Injection:
        """Every node drops a share of the packets it sends; the drop count goes in the note."""
        probability = self._rng.choice(LOSS_PROBABILITIES)
        ids = list(self._lab.ids)

        def lose(_fault: Fault) -> None:
            self._ruled = True
            for node_id in ids:
                self._lab.loss(node_id, probability, "OUTPUT")

        def flush(fault: Fault) -> None:
            dropped = sum(self._lab.dropped(node_id) for node_id in ids)
            self._flush(fault)
            fault.note = f"{probability:.0%}, {dropped} packets dropped"

        return Injection(ids, f"{probability:.0%}", lose, self._hold_s, flush)

    def _kill(self, kind: str) -> Injection:
        if kind == "kill-leader":
            node_id, note = self._leader_or_random()
        else:
            node_id, note = self._rng.choice(self._lab.running()), None
        return Injection(
            [node_id],
            note,
            lambda _fault: self._lab.kill(node_id),
            self._down_s,
            lambda _fault: self._lab.start(node_id),
        )

    def _pause(self, kind: str) -> Injection:
        if kind == "pause-leader":
            node_id, note = self._leader_or_random()
        else:
            node_id, note = self._rng.choice(self._lab.running()), None

        def pause(_fault: Fault) -> None:
            self._lab.pause(node_id)
            self._paused.add(node_id)

        def resume(_fault: Fault) -> None:
            self._lab.resume(node_id)
            self._paused.discard(node_id)

        return Injection([node_id], note, pause, self._pause_s, resume)


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
        return nemesis.is_finished(time.monotonic() - started, duration_s, min_rounds)

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
    result["faults"] = count_faults(report.faults, NETNS_FAULT_KINDS)
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
    counts = count_faults(report.faults, NETNS_FAULT_KINDS)
    faults_line = "faults: " + (", ".join(f"{k}={n}" for k, n in counts.items()) or "none")
    lines = [
        faults_line if line.startswith("faults: ") else line
        for line in report.summary().splitlines()
        if not line.startswith("  note: ") or "no leader found" in line
    ]
    return "\n".join(lines)
