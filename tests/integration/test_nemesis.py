"""The nemesis suite on real processes: faults, a recorded history, a linearizability check.

`test_faults_leave_a_linearizable_history` is a short `bin/zraft-nemesis` run: every fault
kind is injected while five clients work, and the history must be linearizable with no lost
acknowledged write. The other tests prove that the pipeline has teeth without breaking the
product: a real cluster's history, doctored by one stale read or one lost write, is flagged.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tests.nemesis import FAULT_KINDS, run_nemesis
from tests.procs import ClusterFactory
from tests.workload import OK, OpRecord, Workload, lost_writes
from zraft.testing.history import Op, OpKind, Outcome
from zraft.testing.linearizability import check

SEED = 20261125


def test_faults_leave_a_linearizable_history(tmp_path: Path) -> None:
    """Kills, pauses (of any node and of the leader), partitions, packet loss, membership
    changes (a voter removed and replaced by a new host under a new id) and leadership
    transfers under load: no anomaly.

    The cluster snapshots every 100 entries (`SNAPSHOT_OPTIONS`), so the faults also hit
    snapshot writes, compactions and InstallSnapshot transfers.

    Every kind is injected at least once (the nemesis draws kinds in shuffled rounds),
    most operations succeed, the final reads agree with the history, no acknowledged write
    is lost, and the logs show at most one leader per term.
    """
    report = run_nemesis(
        tmp_path / "run",
        seed=SEED,
        duration_s=25,
        faults=FAULT_KINDS,
        nemesis_options={"gap_s": (0.3, 1.0)},
    )
    summary = report.summary()
    print(summary)
    assert not report.errors, summary
    assert not report.anomalies, summary
    assert not report.lost, summary
    assert report.safety is None, summary
    assert set(report.fault_counts) == set(FAULT_KINDS), summary
    for kind in ("kill-leader", "pause-leader", "transfer-leader"):
        hit_leader = [f for f in report.faults if f.kind == kind and f.note is None]
        assert hit_leader, f"no {kind} fault found a leader to hit (or moved it)\n{summary}"
    # A membership fault that found no leader changed nothing; one that did removed a
    # voter and made it a voter again (anything stuck is in report.errors above).
    changed = [f for f in report.faults if f.kind == "membership" and f.nodes]
    assert changed, f"no membership fault changed the membership\n{summary}"
    assert report.ok_count() > 100, summary
    assert len(report.final) == 5, summary
    # The cluster snapshots every 100 entries: faults hit snapshot writes too.
    assert report.snapshots["snapshot_saved"] > 0, summary
    assert report.snapshots["log_compacted"] > 0, summary


def _stale_read(history: list[Op]) -> tuple[Op, bytes]:
    """An ok get and a value it certainly cannot have returned.

    The get returned the value of write W, which completed before the get began; W0, an
    ok write of another value to the same key, completed before W began. Values are
    unique per write, so once W took effect W0's value can never be read again.
    """
    writes = {
        op.value: op
        for op in history
        if op.kind in (OpKind.PUT, OpKind.CAS) and op.outcome is Outcome.OK
    }
    for read in history:
        if read.kind is not OpKind.GET or read.outcome is not Outcome.OK:
            continue
        source = writes.get(read.result) if read.result is not None else None
        if source is None or source.complete is None or source.complete >= read.invoke:
            continue
        for older in writes.values():
            if (
                older.key == read.key
                and older.value != read.result
                and older.complete is not None
                and older.complete < source.invoke
                and older.value is not None
            ):
                return read, older.value
    raise AssertionError("the history holds no read with an overwritten older write")


def _run_workload(make_cluster: ClusterFactory) -> tuple[Workload, dict[str, str | None]]:
    cluster = make_cluster(3)
    cluster.start_all()
    cluster.wait_leader()
    load = Workload(cluster.client_endpoints, clients=5, keys=3, seed=SEED, curve=cluster.curve)
    try:
        load.run(4.0)
        final = load.final_reads(timeout_s=20)
    finally:
        load.close()
    return load, final


def test_checker_flags_a_doctored_stale_read(make_cluster: ClusterFactory) -> None:
    """A real, fault-free history passes; the same history with one read made stale fails,
    and the window the checker reports contains that read."""
    load, final = _run_workload(make_cluster)
    history = load.history()
    assert len(final) == 3
    assert sum(op.outcome is Outcome.OK for op in history) > 100
    assert check(history).ok is True

    read, old_value = _stale_read(history)
    doctored = [
        dataclasses.replace(op, result=old_value, result_found=True) if op.id == read.id else op
        for op in history
    ]
    result = check(doctored)
    assert result.ok is False, result.describe()
    assert result.key == read.key
    assert read.id in {op.id for op in result.window}, result.describe()


def test_lost_write_is_flagged_by_final_reads_and_checker(make_cluster: ClusterFactory) -> None:
    """A final read doctored to an older acknowledged value is reported as a lost write
    (and as non-linearizable), naming the acknowledged write that it contradicts."""
    load, final = _run_workload(make_cluster)
    records = load.records
    assert lost_writes(records, final) == []

    # Only acknowledged puts and cas: a get records the value it read, and one that read
    # the final value may complete before the write that made it does.
    acked = [
        op for op in records if not op.final and op.outcome == OK and op.kind in ("put", "cas")
    ]
    key, source, older = next(
        (key, source, older)
        for key, value in final.items()
        for source in acked
        if source.key == key and source.value == value
        for older in acked
        if older.key == key and (older.complete_ns or 0) < source.invoke_ns
    )
    doctored_final = {**final, key: older.value}
    lost = lost_writes(records, doctored_final)
    assert source in [x.write for x in lost]
    assert all(x.key == key for x in lost)

    final_read = next(op for op in records if op.final and op.key == key)
    assert older.value is not None
    doctored = [
        dataclasses.replace(op, result=older.value.encode(), result_found=True)
        if op.id == final_read.op_id
        else op
        for op in load.history()
    ]
    result = check(doctored)
    assert result.ok is False and result.key == key, result.describe()


def test_lost_writes_respects_indeterminate_sources() -> None:
    """An `info` write of the final value excuses everything (it may have landed last);
    an ok source only excuses writes that began before it completed."""

    def op(
        index: int, kind: str, value: str | None, start: int, end: int, outcome: str
    ) -> OpRecord:
        return OpRecord(
            index=index,
            process=index,
            kind=kind,
            key="k",
            value=value,
            invoke_ns=start,
            complete_ns=end,
            outcome=outcome,
        )

    old = op(0, "put", "a", 0, 10, OK)
    new = op(1, "put", "b", 20, 30, OK)
    concurrent = op(2, "put", "c", 5, 40, OK)
    assert [x.write for x in lost_writes([old, new, concurrent], {"k": "a"})] == [new]
    maybe = op(3, "put", "d", 0, 5, "info")
    assert lost_writes([old, new, maybe], {"k": "d"}) == []
    assert [x.write for x in lost_writes([old, new], {"k": None})] == [old, new]
    deleted = op(4, "delete", None, 50, 60, OK)
    assert lost_writes([old, new, deleted], {"k": None}) == []
