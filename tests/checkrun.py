"""Judging a recorded nemesis run: outcomes, lost writes, election safety, linearizability.

A nemesis run, whatever injects its faults, ends the same way: the workload's records and
final reads, the faults it injected and every node's JSON event log are turned into a
`tests.nemesis.NemesisReport`. `judge` does that for any cluster that can check its own
election safety and list its events (`tests.procs.ProcessCluster`, `tests.netns.NetnsLab`),
so the 127.0.0.1 nemesis (`tests.nemesis`) and the network-namespace one
(`tests.netns_nemesis`) can share it.

It writes `history.jsonl` (the checker's format, `zraft.testing.history.to_jsonl`) and
`faults.jsonl` into the report's directory.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from tests import workload as wl
from tests.faultplan import Fault
from tests.nemesis import Checker, NemesisReport, anomalies_of, snapshot_counts
from zraft.testing import linearizability
from zraft.testing.history import to_jsonl


class LoggedCluster(Protocol):
    """What `judge` needs of a cluster: its logs, and the election-safety check on them."""

    def assert_safety(self) -> None:
        """Raise AssertionError on two leaders in a term or a node's term going down."""

    def events(self) -> list[dict[str, Any]]:
        """Every event of every node's JSON log."""


def write_faults(path: Path, faults: Iterable[Fault]) -> None:
    """One JSON line per fault (`Fault` fields)."""
    with path.open("w") as out:
        for fault in faults:
            out.write(json.dumps(asdict(fault), sort_keys=True) + "\n")


def judge(
    cluster: LoggedCluster,
    load: wl.Workload,
    faults: Sequence[Fault],
    report: NemesisReport,
    *,
    checker: Checker | None = None,
    say: Callable[[str], None] | None = None,
) -> None:
    """Fill `report` from a finished run (final reads already in `report.final`).

    Sets the outcomes by kind (final reads excluded), the faults, lost acknowledged
    writes, the election-safety verdict, the snapshot event counts, and the anomalies the
    linearizability checker finds (each with the faults near its window). A key the
    checker could not decide within its budget is a harness error, not a pass.
    """
    records = load.records
    report.outcomes = wl.outcome_counts(r for r in records if not r.final)
    report.faults = list(faults)
    write_faults(report.directory / "faults.jsonl", report.faults)
    report.lost = wl.lost_writes(records, report.final)
    try:
        cluster.assert_safety()
    except AssertionError as exc:
        report.safety = str(exc).splitlines()[0]
    report.snapshots = snapshot_counts(cluster.events())
    history = load.history()
    report.history_path.write_text(to_jsonl(load.recorder.history()))
    report.checked_ops = len(history)
    if say is not None:
        say(f"checking {len(history)} operations for linearizability")
    started = time.monotonic()
    result = (checker or linearizability.check)(history)
    report.check_s = time.monotonic() - started
    report.anomalies = anomalies_of(result, report.faults)
    undecided = sorted(key for key, verdict in result.per_key.items() if verdict.ok is None)
    if undecided:
        report.errors.append(f"the checker ran out of budget on keys {undecided}")
