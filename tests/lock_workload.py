"""Locks under faults (issue 16): contenders in processes of their own, paused past their
TTL, while the nemesis works on the cluster; the committed writes must stay in fencing
order.

`run_lock` starts `holders` processes (`tests/lock_holder.py`), each looping: acquire the
lock `jobs` (TTL 2 s), write `lockwl/last = <token>:<holder>:<n>` four times in its
critical section (50 ms apart), release. Besides the cluster nemesis (every fault kind), a
*holder nemesis* SIGSTOPs the holder in its critical section (4 times in 5; else a
random contender) every 1-2 s for TTL + 0.5-2 s, then SIGCONTs it:
a holder paused in its critical section wakes believing it holds the lock. At the end, one
watch from the first revision reads every committed write of `lockwl/last`, in revision
order. `check_lock` (pure):

- `fencing`: the tokens of the committed writes never go down (a write of an older
  holder after a newer holder's write is exactly what a fencing token must prevent, and
  it also means two holders' writes interleaved);
- `unknown-token`: every committed token is one a holder acquired;
- `lost-ack`: every write a holder saw acknowledged is committed, at its revision.

With `mode="guarded"` (`held.put`: the guard compares the holder's key) there must be no
anomaly; with `mode="unguarded"` (a plain put) the paused holders break `fencing`: a lock
alone does not give mutual exclusion (Jepsen's finding for etcd, 2020).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.checkrun import write_faults
from tests.faultplan import Fault, count_faults
from tests.nemesis import FAULT_KINDS, drive_under_faults, make_rig, snapshot_counts
from zraft.client import Client

HOLDER = Path(__file__).resolve().parent / "lock_holder.py"
KEY = "lockwl/last"


@dataclass(frozen=True, slots=True)
class LockAnomaly:
    """A broken rule: the check's name and what was found."""

    check: str
    detail: str


def check_lock(
    committed: Sequence[tuple[int, str]], logs: Iterable[dict[str, Any]]
) -> list[LockAnomaly]:
    """The anomalies of a run: `committed` is every committed (revision, value) of the key
    in revision order; `logs` every holder's log lines."""
    anomalies: list[LockAnomaly] = []
    acquired = set()
    acked: dict[str, int] = {}
    for line in logs:
        if line["event"] == "acquired":
            acquired.add(line["token"])
        elif line["event"] == "write" and line.get("ok"):
            acked[line["value"]] = line["revision"]
    highest, at = 0, 0
    where = {value: revision for revision, value in committed}
    for revision, value in committed:
        token = int(value.split(":", 1)[0])
        if token < highest:
            anomalies.append(
                LockAnomaly(
                    "fencing",
                    f"token {token} ({value}) written at {revision} after token {highest} at {at}",
                )
            )
        elif token > highest:
            highest, at = token, revision
        if token not in acquired:
            anomalies.append(LockAnomaly("unknown-token", f"{value} at {revision}"))
    for value, revision in acked.items():
        if where.get(value) != revision:
            anomalies.append(
                LockAnomaly(
                    "lost-ack",
                    f"{value} acknowledged at {revision}, committed at {where.get(value)}",
                )
            )
    return anomalies


@dataclass
class LockReport:
    """What a run found."""

    mode: str
    seed: int
    duration_s: float
    directory: Path
    committed: list[tuple[int, str]] = field(default_factory=list)
    logs: list[dict[str, Any]] = field(default_factory=list)
    pauses: int = 0
    faults: list[Fault] = field(default_factory=list)
    anomalies: list[LockAnomaly] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    snapshots: dict[str, int] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many of each holder event."""
        found: dict[str, int] = {}
        for line in self.logs:
            found[line["event"]] = found.get(line["event"], 0) + 1
        return found

    @property
    def ok(self) -> bool:
        return not self.anomalies and not self.errors

    def summary(self) -> str:
        by_check: dict[str, int] = {}
        for anomaly in self.anomalies:
            by_check[anomaly.check] = by_check.get(anomaly.check, 0) + 1
        lines = [
            f"lock run ({self.mode}) seed {self.seed}, {self.duration_s:g}s: "
            f"{len(self.committed)} committed writes, holder events {self.counts()}, "
            f"holders paused {self.pauses} times",
            "faults: "
            + ", ".join(f"{k} {n}" for k, n in count_faults(self.faults, FAULT_KINDS).items()),
            f"anomalies: {by_check or 0}",
            *(f"  {a.check}: {a.detail}" for a in self.anomalies[:10]),
            *(f"error: {e}" for e in self.errors),
        ]
        return "\n".join(lines)


def run_lock(
    directory: Path,
    *,
    seed: int,
    duration_s: float,
    mode: str = "guarded",
    holders: int = 4,
    ttl: int = 2,
    faults: Iterable[str] = FAULT_KINDS,
    nemesis_options: dict[str, Any] | None = None,
    progress: Callable[[str], None] | None = None,
) -> LockReport:
    """Run contenders under the nemesis and the holder pauses, read, check."""
    say = progress or (lambda _line: None)
    directory.mkdir(parents=True, exist_ok=True)
    report = LockReport(mode, seed, duration_s, directory)
    rig = make_rig(directory, seed=seed, faults=faults, nemesis_options=nemesis_options)
    cluster = rig.cluster
    rng = random.Random(seed)
    processes: list[subprocess.Popen[bytes]] = []
    logs = [directory / f"holder{n}.jsonl" for n in range(holders)]
    start = [0]

    def setup() -> None:
        with Client.from_config(cluster.config_path, timeout=10) as client:
            reply = client.put("lockwl/start", "x")
            start[0] = reply.header.revision if reply.header else 0
        env = {**os.environ, "PYTHONPATH": str(HOLDER.parent.parent)}
        for number in range(holders):
            command = [
                sys.executable,
                str(HOLDER),
                "--config",
                str(cluster.config_path),
                "--name",
                "jobs",
                "--holder",
                str(number),
                "--mode",
                mode,
                "--ttl",
                str(ttl),
                "--log",
                str(logs[number]),
            ]
            processes.append(subprocess.Popen(command, env=env, start_new_session=True))

    def run_load(should_stop: Callable[[], bool]) -> None:
        deadline = time.monotonic() + duration_s
        while time.monotonic() < deadline and not should_stop():
            time.sleep(rng.uniform(1.0, 2.0))
            holding = _holding(logs)  # mostly the holder, in its critical section
            victim = (
                processes[holding]
                if holding is not None and rng.random() < 0.8
                else (rng.choice(processes))
            )
            os.kill(victim.pid, signal.SIGSTOP)
            report.pauses += 1
            time.sleep(ttl + rng.uniform(0.5, 2.0))
            os.kill(victim.pid, signal.SIGCONT)

    try:
        drive_under_faults(
            rig,
            run_load,
            clients=holders,
            duration_s=duration_s,
            errors=report.errors,
            say=say,
            setup=setup,
        )
        time.sleep(1.0)  # let woken holders finish what they were doing
        for process in processes:
            process.kill()
            process.wait(timeout=10)
        say("reading every committed write")
        report.committed = _committed(cluster.config_path, start[0], report.errors)
        report.logs = [
            json.loads(line)
            for path in logs
            if path.exists()
            for line in path.read_text().splitlines()
            if line.strip()
        ]
        report.faults = list(rig.nemesis.faults)
        write_faults(directory / "faults.jsonl", report.faults)
        report.snapshots = snapshot_counts(cluster.events())
        report.anomalies = check_lock(report.committed, report.logs)
        (directory / "committed.json").write_text(json.dumps(report.committed) + "\n")
        return report
    finally:
        for process in processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGCONT)
                process.kill()
                process.wait(timeout=10)
        try:
            rig.nemesis.stop()
        finally:
            cluster.close()


def _holding(logs: Sequence[Path]) -> int | None:
    """The holder whose log says it is in its critical section now, if one does."""
    for number, path in enumerate(logs):
        if not path.exists():
            continue
        with path.open("rb") as log:
            log.seek(max(0, path.stat().st_size - 400))
            tail = log.read().splitlines()
        if tail:
            try:
                last = json.loads(tail[-1])
            except ValueError:
                continue
            if last["event"] in ("acquired", "invoke", "write"):
                return number
    return None


def _committed(config: Path, start: int, errors: list[str]) -> list[tuple[int, str]]:
    """Every committed write of the key since `start`, in revision order (polls of the
    watch op that answer at once, until past the final revision)."""
    with Client.from_config(config, timeout=10) as client:
        end = client.range(KEY).header
        if end is None:
            errors.append("the final read failed")
            return []
        found: list[tuple[int, str]] = []
        after = start
        while after <= end.revision:
            reply = client.request(
                "watch", key=KEY, start_revision=after, wait_ms=0, filters=["nodelete"]
            )
            if not reply.ok:
                errors.append(f"reading the history: {reply.error_code}")
                return found
            for event in reply.raw["events"]:
                found.append((event["kv"]["mod_revision"], event["kv"]["value"].decode()))
            after = reply.raw["next_revision"]
        return found
