"""Locks on real processes under every fault, with holders paused past their TTL
(`tests.lock_workload`): guarded writes stay in fencing order; plain writes under the same
lock do not (a lock alone is not mutual exclusion, as Jepsen found for etcd)."""

from __future__ import annotations

import pytest

from tests.lock_workload import LockReport, check_lock, run_lock
from tests.nemesis import FAULT_KINDS, SHORT_RUN_FAULTS

SEED = 20261211


def lock_run(tmp_path_factory: pytest.TempPathFactory, mode: str) -> LockReport:
    return run_lock(
        tmp_path_factory.mktemp(f"lock-{mode}") / "run",
        seed=SEED,
        duration_s=16,
        mode=mode,
        faults=FAULT_KINDS,
        nemesis_options=SHORT_RUN_FAULTS,
    )


def test_guarded_writes_keep_fencing_order(tmp_path_factory: pytest.TempPathFactory) -> None:
    report = lock_run(tmp_path_factory, "guarded")
    assert report.ok, report.summary()
    counts = report.counts()
    assert counts.get("acquired", 0) >= 10 and len(report.committed) >= 40, report.summary()
    # Paused holders woke up and were refused (the guard did its work).
    assert counts.get("lost", 0) >= 1 and report.pauses >= 3, report.summary()
    # The checker sees a stale write when one is slipped into the real history.
    first_token = report.committed[0][1].split(":", 1)[0]
    stale = (report.committed[-1][0] + 1, f"{first_token}:9:99")  # the first holder, late
    doctored = [*report.committed, stale]
    assert [a.check for a in check_lock(doctored, report.logs)] == ["fencing"]


def test_unguarded_writes_break(tmp_path_factory: pytest.TempPathFactory) -> None:
    report = lock_run(tmp_path_factory, "unguarded")
    assert not report.errors, report.summary()
    assert {a.check for a in report.anomalies} == {"fencing"}, report.summary()
