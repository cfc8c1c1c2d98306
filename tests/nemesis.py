"""The nemesis: seeded process faults on a `ProcessCluster`, plus a whole checked run.

`Nemesis` runs in its own thread and, on a schedule drawn from a seed, injects one fault at a
time, holds it, and undoes it:

- `kill`: SIGKILL a random node, keep it down a while, restart it on the same data dir;
- `kill-leader`: the same for the current leader;
- `pause`: SIGSTOP a random node for longer than the maximum election timeout, SIGCONT it;
- `pause-leader`: the same for the leader (it must step down; no stale read may follow);
- `partition`: cut a minority off (half of the time the leader alone) through the in-node
  hook (`ProcessCluster.partition`, `--test-fault-file`), then heal. It drops peer traffic
  inside the nodes while TCP stays up; client traffic is untouched, so clients keep talking
  to the cut-off side. (Network-namespace partitions, PLATFORM.md §1, are not used.)
- `loss`: every node drops 10-30% of its outgoing peer messages for a while (same hook).
- `membership`: remove a random voter other than the leader (it keeps running, its key
  revoked, and answers clients `unavailable` "not a member"), hold, then replace it as an
  operator replaces a host: the removed node is stopped for good (its id is retired and
  can never be added again) and a new host joins under a new id (`n4`, `n5`, ...) with a
  new key, peer endpoint and empty data dir, at the old node's client endpoint
  (`ProcessCluster.replace`), by `add_member` (`learner` false: the leader promotes it
  once its log caught up, through InstallSnapshot when the log was compacted); then wait,
  bounded, until it is a voter. A leader change in between loses the automatic promotion,
  so after `PROMOTION_WAIT_S` it is promoted explicitly (noted in the fault). A change is
  re-sent only after the leader's member list shows it was not made (never blindly after
  a lost reply).
- `transfer-leader`: ask the leader to hand leadership to a random other voter (half of
  the time naming none: the most up-to-date one); the answer is noted when not ok.

The lifecycle is `tests.faultplan.FaultPlan`'s, shared with `tests.netns_nemesis`: kinds
are drawn in rounds, each a seeded shuffle of every enabled kind, so a run of a few rounds
has hit every kind; each fault is recorded, made, held and undone there. `Nemesis` is the
table of actions that make each kind here, and the heal. Which nodes are hit, for how long
and how long the gaps are come from the seed too; who leads at a given moment comes from
the cluster, so two runs of a seed inject the same kinds in the same order but not
necessarily on the same nodes. The run stops after its duration (`run_nemesis` does not
wait for a whole round).

`run_nemesis` is a whole run, used by `bin/zraft-nemesis` and the integration test: start a
cluster, run `tests.workload.Workload` and the nemesis together for a duration, heal
everything, read every key, check the history with `zraft.testing.linearizability.check`,
look for lost acknowledged writes and for election safety in the logs, check that every
member lists as retired exactly the ids the nemesis removed, and report. The
cluster snapshots often (`SNAPSHOT_OPTIONS`: every 100 entries, 10 kept behind, 16 KiB WAL
segments), so kills and pauses hit snapshot writes and compactions, and a node that was
down or cut off comes back through InstallSnapshot; the report counts those events. Every
process it starts is stopped by PID in a `finally` (paused ones are resumed first). It
leaves in its directory: `history.jsonl` (the checker's format,
`zraft.testing.history.to_jsonl`), `ops.jsonl` (the workload's detailed records: session,
seq, attempts, nodes, per-attempt errors), `faults.jsonl`, and `cluster/` (config, data,
each node's JSON event log).

`make_rig` and `drive_under_faults` are the workload-free half of a run (the cluster, the
nemesis on the same clock, the heal), so another workload, the bank of `tests.bank`,
runs under exactly the same faults and snapshot settings.

Only the nemesis thread uses the `ProcessCluster` while the workload runs (its REQ helper is
not thread-safe); the workload has its own ZeroMQ context and sockets. `heal` (after the
thread stopped) also completes every replacement (so the cluster has its size again, every
member a voter); a membership change that cannot be
completed within its bounds is a `Nemesis.problems` entry, which fails the run.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from tests import workload as wl
from tests.faultplan import Action, Fault, FaultPlan, Injection, PlannedNemesis, count_faults
from tests.procs import NoReply, ProcessCluster
from zraft.testing import linearizability
from zraft.testing.history import Op, to_jsonl

FAULT_KINDS = (
    "kill", "kill-leader", "pause", "pause-leader", "partition", "loss", "membership",
    "transfer-leader",
)  # fmt: skip
"""Every fault the nemesis knows, in the order a summary lists them."""

SHORT_RUN_FAULTS: dict[str, tuple[float, float]] = {
    "gap_s": (0.3, 1.0),
    "down_s": (0.3, 1.0),
    "partition_s": (0.8, 1.5),
    "removed_s": (0.5, 1.0),
}
"""Nemesis options of the CI's short runs: faults held a little shorter than by default
(pauses keep theirs: they must outlast an election), so a whole round of the eight kinds
fits in about 20 s."""

PROCESS_FAULT_KINDS = ("kill", "kill-leader", "pause", "pause-leader")
"""The faults made with signals only (no partition hook)."""

CHANGE_FAULT_KINDS = ("membership", "transfer-leader")
"""The faults made through the cluster's own admin ops (membership, leadership)."""

CHANGE_TIMEOUT_S = 20.0
"""How long one membership change may take, retries included, before it counts as stuck."""

PROMOTION_WAIT_S = 8.0
"""How long a replacement node may stay a learner before it is promoted explicitly."""

RETIRED_AGREE_S = 15.0
"""How long, after healing, every member may take to list the same retired ids."""

_CHANGE_RETRY_CODES = frozenset({"unavailable", "not_leader", "conflict", "timeout"})

SNAPSHOT_OPTIONS: dict[str, int] = {
    "snapshot_entries": 100,
    "snapshot_trailing": 10,
    "wal_segment_bytes": 16 << 10,
}
"""The `[cluster]` keys of a nemesis run: snapshots every few hundred operations, and a log
tail short enough that a node back from a fault usually needs InstallSnapshot."""

SNAPSHOT_EVENTS = (
    "snapshot_saved",
    "snapshot_sent",
    "snapshot_installed",
    "snapshot_loaded",
    "snapshot_refused",
    "log_compacted",
)
"""The snapshot events a report counts (over every node's log)."""

LEADER_SEARCH_S = 3.0  # how long to look for a leader before hitting a random node instead


class Nemesis(PlannedNemesis):
    """Injects seeded faults into a running `ProcessCluster` from a background thread.

    The schedule, the thread and the fault records are `tests.faultplan.FaultPlan`'s; this
    class is the table of actions that make each kind on a `ProcessCluster`, and the heal.

    Args:
        cluster: the running cluster; the nemesis is its only user while it runs.
        kinds: which faults to draw from (a subset of `FAULT_KINDS`).
        seed: seeds every choice.
        origin_ns: `time.monotonic_ns()` at the start of the run (shared with the workload).
        gap_s: the quiet time between two faults (uniform range).
        down_s: how long a killed node stays down.
        pause_s: how long a node stays stopped; default 1.5x to 4x the maximum election
            timeout, so the rest of the cluster elects a new leader meanwhile (and some
            pauses outlast a client's attempt timeout).
        partition_s: how long a partition lasts.
        removed_s: how long a removed voter stays out before it is replaced.
    """

    def __init__(
        self,
        cluster: ProcessCluster,
        *,
        kinds: Iterable[str] = FAULT_KINDS,
        seed: int = 0,
        origin_ns: int | None = None,
        gap_s: tuple[float, float] = (0.5, 2.0),
        down_s: tuple[float, float] = (0.3, 2.0),
        pause_s: tuple[float, float] | None = None,
        partition_s: tuple[float, float] = (1.0, 3.0),
        removed_s: tuple[float, float] = (0.5, 2.0),
    ) -> None:
        actions: dict[str, Action] = {
            "kill": self._kill,
            "kill-leader": self._kill,
            "pause": self._pause,
            "pause-leader": self._pause,
            "partition": self._partition,
            "loss": self._lose_packets,
            "membership": self._remove_and_replace,
            "transfer-leader": self._transfer_leader,
        }
        self._plan = FaultPlan(
            actions,
            self._heal,
            kinds=kinds,
            known=FAULT_KINDS,
            seed=seed,
            origin_ns=origin_ns,
            gap_s=gap_s,
            thread_name="nemesis",
        )
        self._cluster = cluster
        self._rng = self._plan.rng  # the plan's: its draws and ours interleave in one order
        election_max_s = cluster.election_timeout_ms[1] / 1000
        self._down_s = down_s
        self._pause_s = pause_s or (1.5 * election_max_s, 4.0 * election_max_s)
        self._partition_s = partition_s
        self._removed_s = removed_s
        self._request_s = cluster.request_timeout_ms / 1000 + 1.0
        self._paused: set[str] = set()
        self._killed: set[str] = set()
        self._partitioned = False
        self._removed: set[str] = set()  # voters removed and not yet replaced
        self.retired: set[str] = set()  # every id removed: never a member again
        self._joining: set[str] = set()  # their replacements, not yet voters
        self.problems: list[str] = []  # membership changes that could not be completed

    def _heal(self) -> None:
        for node_id in sorted(self._paused):
            if self._cluster.is_running(node_id):
                self._cluster.resume(node_id)
        self._paused.clear()
        if self._partitioned:
            self._cluster.heal()  # also ends packet loss
            self._partitioned = False
        down = [n for n in self._cluster.ids if not self._cluster.is_running(n)]
        if down:
            self._cluster.start_all(down)
        self._killed.clear()
        # Final reads and convergence expect a cluster of the initial size, all voters.
        for node_id in sorted(self._removed):
            problem = self._replace(node_id)
            if problem is not None:
                self.problems.append(f"heal: {problem}")
        for node_id in sorted(self._joining):
            problem = self._make_voter(node_id, self._cluster.member_fields(node_id))
            if problem is not None:
                self.problems.append(f"heal: {problem}")

    # --- choosing targets ---------------------------------------------------------------

    def _target(self, kind: str) -> tuple[str, str | None]:
        """The node to hit: the leader for `*-leader` kinds (if one is found), else random."""
        candidates = sorted(self._cluster.running())
        if kind.endswith("-leader"):
            leader = self._find_leader()
            if leader is not None:
                return leader, None
            return self._rng.choice(candidates), "no leader found; hit a random node"
        return self._rng.choice(candidates), None

    def _find_leader(self, *, while_stopping: bool = False) -> str | None:
        """The node reporting itself leader with the highest term, polled for a while.

        A stop request ends the search at once, unless `while_stopping` (a membership
        change that must be completed even then, to leave every node a voter).
        """
        return self._plan.find_leader(
            self._cluster, search_s=LEADER_SEARCH_S, while_stopping=while_stopping
        )

    # --- faults: each plans one `Injection` (the plan records, holds and undoes it) -------

    def _kill(self, kind: str) -> Injection:
        node_id, note = self._target(kind)

        def kill(_fault: Fault) -> None:
            self._killed.add(node_id)
            self._cluster.kill(node_id)

        def restart(_fault: Fault) -> None:
            self._cluster.start(node_id)
            self._killed.discard(node_id)

        return Injection([node_id], note, kill, self._down_s, restart, restamp=True)

    def _pause(self, kind: str) -> Injection:
        node_id, note = self._target(kind)

        def pause(_fault: Fault) -> None:
            self._cluster.pause(node_id)
            self._paused.add(node_id)

        def resume(_fault: Fault) -> None:
            self._cluster.resume(node_id)
            self._paused.discard(node_id)

        return Injection([node_id], note, pause, self._pause_s, resume, restamp=True)

    def _partition(self, kind: str) -> Injection:
        ids = sorted(self._cluster.ids)
        note = None
        if self._rng.random() < 0.5:
            leader = self._find_leader()
            minority = [leader] if leader is not None else []
            note = None if leader is not None else "no leader found; random minority"
        else:
            minority = []
        if not minority:
            size = self._rng.randint(1, (len(ids) - 1) // 2)
            minority = sorted(self._rng.sample(ids, size))

        def cut(_fault: Fault) -> None:
            self._partitioned = True
            self._cluster.partition(set(minority))

        return Injection(minority, note, cut, self._partition_s, self._heal_network)

    def _lose_packets(self, kind: str) -> Injection:
        """Every node drops 10-30% of its peer messages for a while (in-node hook)."""
        probability = self._rng.choice((0.1, 0.2, 0.3))

        def lose(_fault: Fault) -> None:
            self._partitioned = True
            self._cluster.set_loss(probability)

        nodes = sorted(self._cluster.ids)
        return Injection(nodes, f"{probability:.0%}", lose, self._partition_s, self._heal_network)

    def _heal_network(self, _fault: Fault) -> None:
        self._cluster.heal()  # ends partitions and packet loss alike
        self._partitioned = False

    # --- membership and leadership (through the cluster's admin ops) ----------------------

    def _remove_and_replace(self, kind: str) -> Injection:
        """Remove a non-leader voter (still running), hold, replace it by a new host under a
        new id, wait till that one is a voter."""
        leader = self._find_leader()
        view = self._members(leader) if leader is not None else None
        if leader is None or view is None:
            return Injection([], "no leader found; nothing changed")
        voters = sorted(n for n, role in view.items() if role == "voter" and n != leader)
        node_id = self._rng.choice(voters)

        def remove(fault: Fault) -> None:
            problem = self._change("remove_member", lambda v: node_id not in v, id=node_id)
            if problem is not None:
                self.problems.append(problem)
                fault.note = problem
            else:
                self._removed.add(node_id)
                self.retired.add(node_id)

        def replace(fault: Fault) -> None:
            if node_id not in self._removed:
                return  # the removal failed (a problem already): nothing to replace
            problem = self._replace(node_id, fault)
            if problem is not None:
                self.problems.append(problem)
                fault.note = problem

        return Injection([node_id], None, remove, self._removed_s, replace, restamp=True)

    def _replace(self, old_id: str, fault: Fault | None = None) -> str | None:
        """Retire removed `old_id` and make a new host a voter in its place; None or why not."""
        new_id, fields = self._cluster.replace(old_id)
        self._removed.discard(old_id)
        self._joining.add(new_id)
        if fault is not None:
            fault.note = f"replaced by {new_id}"
        self._cluster.start(new_id)
        return self._make_voter(new_id, fields, fault)

    def _make_voter(
        self, node_id: str, fields: dict[str, str], fault: Fault | None = None
    ) -> str | None:
        """Add `node_id` and wait for its promotion (promote it explicitly after
        `PROMOTION_WAIT_S`); None or why not."""
        problem = self._change("add_member", lambda v: node_id in v, id=node_id, **fields)
        if problem is not None:
            return problem
        deadline = time.monotonic() + PROMOTION_WAIT_S
        while time.monotonic() < deadline:
            leader = self._find_leader(while_stopping=True)
            view = self._members(leader) if leader is not None else None
            if view is not None and view.get(node_id) == "voter":
                self._joining.discard(node_id)
                return None
            time.sleep(0.1)  # the leader promotes it once its log has caught up
        if fault is not None:
            fault.note = f"{node_id} not promoted within {PROMOTION_WAIT_S:g}s; promoted explicitly"
        problem = self._change("promote_member", lambda v: v.get(node_id) == "voter", id=node_id)
        if problem is None:
            self._joining.discard(node_id)
        return problem

    def _change(self, op: str, done: Callable[[dict[str, str]], bool], **fields: Any) -> str | None:
        """Send a membership op until the leader's member list satisfies `done`.

        The list is read before every (re)send, so a change whose reply was lost, or
        answered `timeout`, is not sent again once it took effect; `unavailable`,
        `not_leader` and `conflict` (nothing done) are retried. Returns None when done,
        else what went wrong (after `CHANGE_TIMEOUT_S`, or at once on another error).
        """
        deadline = time.monotonic() + CHANGE_TIMEOUT_S
        last: object = None
        while time.monotonic() < deadline:
            leader = self._find_leader(while_stopping=True)
            view = self._members(leader) if leader is not None else None
            if view is not None and done(view):
                return None
            target = leader or self._rng.choice(sorted(self._cluster.running()))
            try:
                reply = self._cluster.request(target, op, timeout=self._request_s, **fields)
            except NoReply:
                last = f"no reply from {target}"
                continue  # outcome unknown: look at the member list before resending
            if not reply["ok"]:
                error = reply["error"]
                last = f"{target}: {error['code']}: {error['message']}"
                if error["code"] not in _CHANGE_RETRY_CODES:
                    return f"{op} {fields} refused: {last}"
                time.sleep(0.1)  # e.g. the previous change is still committing
        return f"{op} {fields} not done within {CHANGE_TIMEOUT_S:g}s (last: {last})"

    def _members(self, node_id: str) -> dict[str, str] | None:
        """id -> role in `node_id`'s member list, or None if it does not answer."""
        try:
            reply = self._cluster.request(node_id, "members", timeout=1.0)
        except NoReply:
            return None
        return {row["id"]: row["role"] for row in reply["members"]} if reply["ok"] else None

    def _transfer_leader(self, kind: str) -> Injection:
        """Ask the leader to hand over to a random other voter (or its own choice)."""
        leader = self._find_leader()
        view = self._members(leader) if leader is not None else None
        if leader is None or view is None:
            return Injection([], "no leader found; nothing asked")
        voters = sorted(n for n, role in view.items() if role == "voter" and n != leader)
        target = self._rng.choice(voters) if self._rng.random() < 0.5 else None
        fields = {} if target is None else {"id": target}

        def transfer(fault: Fault) -> None:
            try:
                reply = self._cluster.request(
                    leader, "transfer_leader", timeout=self._request_s, **fields
                )
            except NoReply:
                fault.note = "no reply"
            else:
                if reply["ok"]:
                    fault.nodes = [leader, reply["transferred_to"]]
                else:
                    fault.note = f"{reply['error']['code']}: {reply['error']['message']}"

        # A one-shot change: nothing to hold, nothing to undo.
        return Injection([leader] + ([target] if target else []), None, transfer)


# --- a whole run --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A non-linearizable stretch of one key's history, as the checker reported it."""

    key: str
    window: tuple[float, float] | None  # seconds since the origin, when the checker gives one
    detail: str
    faults: tuple[str, ...] = ()  # faults overlapping the window, for the reader


@dataclass(slots=True)
class NemesisReport:
    """Everything a run found; `exit_code` says what the runner returns."""

    seed: int
    nodes: int
    clients: int
    duration_s: float
    directory: Path
    history_path: Path
    outcomes: dict[str, dict[str, int]] = field(default_factory=dict)
    faults: list[Fault] = field(default_factory=list)
    final: dict[str, str | None] = field(default_factory=dict)
    anomalies: list[Anomaly] = field(default_factory=list)
    lost: list[wl.LostWrite] = field(default_factory=list)
    safety: str | None = None  # an election-safety / monotonic-term violation
    snapshots: dict[str, int] = field(default_factory=dict)  # SNAPSHOT_EVENTS counts
    errors: list[str] = field(default_factory=list)  # harness trouble, not product bugs
    checked_ops: int = 0
    check_s: float = 0.0

    @property
    def fault_counts(self) -> dict[str, int]:
        """kind -> how many were injected."""
        return dict(Counter(fault.kind for fault in self.faults))

    @property
    def ok(self) -> bool:
        """No anomaly, no lost write, no safety violation, no harness error."""
        return not (self.anomalies or self.lost or self.safety or self.errors)

    @property
    def exit_code(self) -> int:
        """0 clean; 1 the product misbehaved; 2 the run itself could not be completed."""
        if self.anomalies or self.lost or self.safety:
            return 1
        return 2 if self.errors else 0

    def ok_count(self) -> int:
        """How many operations completed ok (final reads excluded)."""
        return sum(per.get(wl.OK, 0) for per in self.outcomes.values())

    def summary(self) -> str:
        """A human-readable summary of the run."""
        lines = [
            f"zraft nemesis: seed={self.seed} nodes={self.nodes} clients={self.clients} "
            f"duration={self.duration_s:g}s",
            f"directory: {self.directory}",
            f"history:   {self.history_path}",
            "operations (kind: outcome counts):",
        ]
        for kind in sorted(self.outcomes):
            counts = ", ".join(f"{o}={n}" for o, n in sorted(self.outcomes[kind].items()))
            lines.append(f"  {kind:7s} {counts}")
        total = Counter[str]()
        for per in self.outcomes.values():
            total.update(per)
        lines.append(f"  {'total':7s} " + ", ".join(f"{o}={n}" for o, n in sorted(total.items())))
        counts = count_faults(self.faults, FAULT_KINDS)
        lines.append("faults: " + (", ".join(f"{k}={n}" for k, n in counts.items()) or "none"))
        for fault in self.faults:
            if fault.note:
                lines.append(f"  note: {fault.kind} {fault.nodes}: {fault.note}")
        snaps = self.snapshots
        if snaps:
            lines.append(
                f"snapshots: saved={snaps.get('snapshot_saved', 0)} "
                f"sent={snaps.get('snapshot_sent', 0)} "
                f"(not delivered={snaps.get('snapshot_sent_failed', 0)}) "
                f"installed={snaps.get('snapshot_installed', 0)} "
                f"loaded at start={snaps.get('snapshot_loaded', 0)} "
                f"refused={snaps.get('snapshot_refused', 0)} "
                f"log compactions={snaps.get('log_compacted', 0)}"
            )
        lines.append(f"final values: {self.final}")
        lines.append(f"checked {self.checked_ops} operations in {self.check_s:.1f}s")
        lines.append(f"anomalies: {len(self.anomalies)}")
        for anomaly in self.anomalies:
            window = (
                "?"
                if anomaly.window is None
                else f"{anomaly.window[0]:.3f}s..{anomaly.window[1]:.3f}s"
            )
            lines.append(f"  key {anomaly.key} window {window}: {anomaly.detail}")
            for text in anomaly.faults:
                lines.append(f"    during {text}")
        lines.append(f"lost acknowledged writes: {len(self.lost)}")
        for lost in self.lost[:20]:
            w = lost.write
            lines.append(
                f"  {w.kind} {w.key}={w.value!r} (session {w.session} seq {w.seq}, ok at "
                f"{(w.complete_ns or 0) / 1e9:.3f}s) but final value {lost.final!r} was "
                f"written by ops {[s.index for s in lost.sources]} that completed earlier"
            )
        lines.append(f"election safety: {'ok' if self.safety is None else self.safety}")
        for error in self.errors:
            lines.append(f"harness error: {error}")
        lines.append("result: " + ("OK" if self.ok else f"FAILED (exit {self.exit_code})"))
        return "\n".join(lines)


def describe_fault(fault: Fault) -> str:
    """`kind [nodes] 1.234s..2.345s`."""
    end = "still active" if fault.end_ns is None else f"{fault.end_ns / 1e9:.3f}s"
    return f"{fault.kind} {fault.nodes} {fault.start_ns / 1e9:.3f}s..{end}"


def overlapping_faults(
    faults: Sequence[Fault], window: tuple[float, float] | None, margin_s: float = 2.0
) -> tuple[str, ...]:
    """The faults active within `margin_s` of `window` (seconds since the origin)."""
    if window is None:
        return ()
    low = int((window[0] - margin_s) * 1e9)
    high = int((window[1] + margin_s) * 1e9)
    return tuple(
        describe_fault(f) for f in faults if f.start_ns <= high and (f.end_ns or high) >= low
    )


Checker = Callable[[Sequence[Op]], linearizability.CheckResult]
"""A linearizability check of a history (default: `zraft.testing.linearizability.check`)."""


def anomalies_of(result: linearizability.CheckResult, faults: Sequence[Fault]) -> list[Anomaly]:
    """One `Anomaly` per key the checker found not linearizable, with nearby faults."""
    found: list[Anomaly] = []
    for key, verdict in sorted(result.per_key.items()):
        if verdict.ok is not False:
            continue
        window = verdict.window
        span = None
        if window:
            span = (
                min(op.invoke for op in window),
                max(op.invoke if op.complete is None else op.complete for op in window),
            )
        detail = f"{len(window)} ops cannot be ordered: " + "; ".join(
            _format_op(op) for op in window
        )
        found.append(Anomaly(key, span, detail, overlapping_faults(faults, span)))
    return found


def _format_op(op: Op) -> str:
    """`#12 p3 put k1 'v' ok [1.234s..1.240s]` in a window listing."""
    end = "..." if op.complete is None else f"{op.complete:.3f}s"
    what = {"get": op.result, "put": op.value, "cas": (op.expected, op.value)}.get(op.kind, "")
    shown = repr(what) if what != "" else ""
    if op.error:
        shown += f" {op.error}" + (f" saw {op.result!r}" if op.kind == "cas" else "")
    return f"#{op.id} p{op.process} {op.kind} {shown} {op.outcome} [{op.invoke:.3f}s..{end}]"


def run_nemesis(
    directory: Path,
    *,
    seed: int,
    duration_s: float,
    nodes: int = 3,
    clients: int = 5,
    keys: int = 5,
    faults: Iterable[str] = FAULT_KINDS,
    request_timeout_ms: int = 1500,
    max_attempts: int = 0,
    trust_unavailable: bool = False,
    checker: Checker | None = None,
    progress: Callable[[str], None] | None = None,
    nemesis_options: dict[str, Any] | None = None,
    cluster_options: dict[str, int] | None = None,
) -> NemesisReport:
    """Run a cluster under workload and nemesis, heal, read everything back, check.

    Args:
        directory: an empty directory for the cluster, the history and the fault log.
        seed: seeds the workload (seed) and the nemesis (seed + 1).
        duration_s: how long operations are started and faults injected.
        faults: the fault kinds to draw from.
        request_timeout_ms: the cluster's request timeout; clients wait 0.5 s longer.
        max_attempts, trust_unavailable: see `tests.workload.Workload`.
        checker: the linearizability check (default: `zraft.testing.linearizability`).
        progress: called with one line per phase (the runner prints them).
        nemesis_options: more `Nemesis` keyword arguments (`gap_s`, `pause_s`, ...).
        cluster_options: integer `[cluster]` keys of the cluster (default
            `SNAPSHOT_OPTIONS`; `{}` runs with the node's defaults).

    Returns:
        The report; `report.exit_code` is what a runner should exit with.
    """
    say = progress or (lambda _line: None)
    directory.mkdir(parents=True, exist_ok=True)
    report = NemesisReport(seed, nodes, clients, duration_s, directory, directory / "history.jsonl")
    rig = make_rig(
        directory,
        seed=seed,
        nodes=nodes,
        faults=faults,
        request_timeout_ms=request_timeout_ms,
        nemesis_options=nemesis_options,
        cluster_options=cluster_options,
    )
    cluster, nemesis = rig.cluster, rig.nemesis
    stream = (directory / "ops.jsonl").open("w")

    def record(op: wl.OpRecord) -> None:
        stream.write(op.to_json() + "\n")

    load = wl.Workload(
        cluster.client_endpoints,
        clients=clients,
        keys=keys,
        seed=seed,
        origin_ns=rig.origin_ns,
        attempt_timeout_s=request_timeout_ms / 1000 + 0.5,
        op_timeout_s=2 * request_timeout_ms / 1000 + 1.0,
        max_attempts=max_attempts,
        trust_unavailable=trust_unavailable,
        on_record=record,
        curve=cluster.curve,
    )
    try:
        _drive(rig, load, report, say)
        stream.close()
        _judge(cluster, load, nemesis, report, checker or linearizability.check, say)
        return report
    finally:
        stream.close()
        try:
            nemesis.stop()
        finally:
            load.close()
            cluster.close()


@dataclass(frozen=True, slots=True)
class Rig:
    """A cluster and its nemesis on one clock: what a workload of any kind runs against.

    Made by `make_rig`, driven by `drive_under_faults`; the caller owns it and must
    `nemesis.stop()` and `cluster.close()` it in a `finally` (as `run_nemesis` does).

    Attributes:
        cluster: the (not yet started) cluster, in `directory/cluster`.
        nemesis: its nemesis (not yet started).
        origin_ns: `time.monotonic_ns()` at the start: the workload's clock origin too.
    """

    cluster: ProcessCluster
    nemesis: Nemesis
    origin_ns: int


def make_rig(
    directory: Path,
    *,
    seed: int,
    nodes: int = 3,
    faults: Iterable[str] = FAULT_KINDS,
    request_timeout_ms: int = 1500,
    nemesis_options: dict[str, Any] | None = None,
    cluster_options: dict[str, int] | None = None,
) -> Rig:
    """The cluster and nemesis of a run (see `run_nemesis` for the arguments); the nemesis
    is seeded with `seed + 1`, so a workload seeded with `seed` keeps its schedule."""
    options = SNAPSHOT_OPTIONS if cluster_options is None else cluster_options
    cluster = ProcessCluster(
        directory / "cluster", nodes, request_timeout_ms=request_timeout_ms, **options
    )
    origin_ns = time.monotonic_ns()
    nemesis = Nemesis(
        cluster, kinds=faults, seed=seed + 1, origin_ns=origin_ns, **(nemesis_options or {})
    )
    return Rig(cluster, nemesis, origin_ns)


def drive_under_faults(
    rig: Rig,
    run_load: Callable[[Callable[[], bool]], None],
    *,
    clients: int,
    duration_s: float,
    errors: list[str],
    say: Callable[[str], None],
    setup: Callable[[], None] | None = None,
) -> None:
    """Start the cluster, run a workload while the nemesis injects faults, heal everything.

    Args:
        rig: from `make_rig`.
        run_load: runs the workload for its duration; it is given `should_stop`, which
            turns true when the nemesis failed (stop starting operations then).
        clients, duration_s: for the progress line only.
        errors: harness trouble is appended here (a failed nemesis, a stuck membership
            change, no leader after healing).
        say: progress lines.
        setup: run once a leader is known, before the nemesis starts (e.g. to create
            the workload's initial state).
    """
    cluster, nemesis = rig.cluster, rig.nemesis
    say(f"starting {len(cluster.ids)} nodes in {cluster.directory}")
    cluster.start_all()
    cluster.wait_leader(timeout=20)
    if setup is not None:
        setup()
    say(f"running {clients} clients, faults {nemesis.kinds}, for {duration_s:g}s")
    nemesis.start()
    try:
        run_load(lambda: nemesis.error is not None)
    finally:
        nemesis.stop()
        nemesis.heal()
    if nemesis.error is not None:
        errors.append(f"nemesis failed:\n{nemesis.error}")
    errors.extend(f"stuck membership change: {p}" for p in nemesis.problems)
    say("healed; waiting for a leader")
    try:
        cluster.wait_leader(timeout=30)
    except AssertionError as exc:
        errors.append(f"no leader within 30s of healing: {str(exc).splitlines()[0]}")
    errors.extend(retired_disagreements(cluster, nemesis.retired))


def retired_disagreements(cluster: ProcessCluster, removed: set[str]) -> list[str]:
    """Every running member lists as retired exactly the ids the nemesis removed, marked in
    their removal or not (a node still catching up gets `RETIRED_AGREE_S`); what differs."""
    deadline = time.monotonic() + RETIRED_AGREE_S
    while True:
        wrong: dict[str, str] = {}
        for node_id in cluster.running():
            try:
                reply = cluster.request(node_id, "members", timeout=1.0)
            except NoReply:
                wrong[node_id] = "no answer"
                continue
            listed = set(reply.get("retired") or []) if reply.get("ok") else None
            if listed != removed:
                wrong[node_id] = str(sorted(listed)) if listed is not None else str(reply)
        if not wrong:
            return []
        if time.monotonic() > deadline:
            return [
                f"retired ids: {node_id} lists {seen}, the nemesis removed {sorted(removed)}"
                for node_id, seen in sorted(wrong.items())
            ]
        time.sleep(0.2)


def _drive(rig: Rig, load: wl.Workload, report: NemesisReport, say: Callable[[str], None]) -> None:
    """Start the cluster, run workload and nemesis, heal everything, read every key."""
    drive_under_faults(
        rig,
        lambda should_stop: load.run(report.duration_s, should_stop=should_stop),
        clients=report.clients,
        duration_s=report.duration_s,
        errors=report.errors,
        say=say,
    )
    say("reading every key")
    report.final = load.final_reads(timeout_s=30)
    missing = sorted(set(load.keys) - set(report.final))
    if missing:
        report.errors.append(f"final reads failed for keys {missing}")


def _judge(
    cluster: ProcessCluster,
    load: wl.Workload,
    nemesis: Nemesis,
    report: NemesisReport,
    checker: Checker,
    say: Callable[[str], None],
) -> None:
    """Fill the report: outcomes, faults, lost writes, election safety, linearizability.

    Writes `history.jsonl` (the checker's format, `zraft.testing.history.to_jsonl`) and
    `faults.jsonl` next to `ops.jsonl` (the workload's detailed records).
    """
    records = load.records
    report.outcomes = wl.outcome_counts(r for r in records if not r.final)
    report.faults = list(nemesis.faults)
    _write_faults(report.directory / "faults.jsonl", report.faults)
    report.lost = wl.lost_writes(records, report.final)
    try:
        cluster.assert_safety()
    except AssertionError as exc:
        report.safety = str(exc).splitlines()[0]
    report.snapshots = snapshot_counts(cluster.events())
    history = load.history()
    report.history_path.write_text(to_jsonl(load.recorder.history()))
    report.checked_ops = len(history)
    say(f"checking {len(history)} operations for linearizability")
    started = time.monotonic()
    result = checker(history)
    report.check_s = time.monotonic() - started
    report.anomalies = anomalies_of(result, report.faults)
    undecided = sorted(key for key, v in result.per_key.items() if v.ok is None)
    if undecided:
        report.errors.append(f"the checker ran out of budget on keys {undecided}")


def snapshot_counts(events: Iterable[dict[str, Any]]) -> dict[str, int]:
    """How many of each `SNAPSHOT_EVENTS` name the logs hold, plus `snapshot_sent_failed`
    (transfers that ended undelivered)."""
    counts = dict.fromkeys(SNAPSHOT_EVENTS, 0)
    counts["snapshot_sent_failed"] = 0
    for event in events:
        name = event.get("event")
        if name in counts:
            counts[name] += 1
            if name == "snapshot_sent" and not event.get("delivered"):
                counts["snapshot_sent_failed"] += 1
    return counts


def _write_faults(path: Path, faults: Iterable[Fault]) -> None:
    with path.open("w") as out:
        for fault in faults:
            out.write(json.dumps(asdict(fault), sort_keys=True) + "\n")


def summary_json(report: NemesisReport) -> dict[str, Any]:
    """The report as plain JSON values (written next to the history as summary.json)."""
    return {
        "seed": report.seed,
        "nodes": report.nodes,
        "clients": report.clients,
        "duration_s": report.duration_s,
        "outcomes": report.outcomes,
        "faults": report.fault_counts,
        "final": report.final,
        "anomalies": [asdict(a) for a in report.anomalies],
        "lost_writes": [
            {"key": x.key, "final": x.final, "write": asdict(x.write)} for x in report.lost
        ],
        "safety": report.safety,
        "snapshots": report.snapshots,
        "errors": report.errors,
        "checked_ops": report.checked_ops,
        "check_s": round(report.check_s, 3),
        "exit_code": report.exit_code,
    }
