"""Leases on real processes under every fault, and the teeth of the lease checks.

`test_leases_under_faults` is a short `bin/zraft-nemesis --workload lease` run: six owners
grant leases, attach their keys, keep them alive and die (or revoke), two observers read
every key, while the nemesis injects every fault kind; the history must show no anomaly
(`tests.lease_workload.check_leases`) and owners' keys must actually have expired. The
run is made once per module: the teeth tests doctor ITS recorded history (a real one,
faults and node logs included), one lie at a time, and each lie must be flagged by the
check meant for it. The synthetic tests pin the bound's rules on hand-made timelines.
"""

from __future__ import annotations

import pytest

from tests.faultplan import Fault
from tests.lease_workload import (
    INF,
    OK,
    Incarnation,
    LeaseOp,
    LeaseParams,
    LeaseReport,
    NodeMark,
    check_leases,
    incarnations,
    leaderships,
    owner_key,
    read_faults,
    read_marks,
    read_ops,
    reads_of,
    recheck,
    refresh_window,
    run_lease,
)
from tests.nemesis import FAULT_KINDS, SHORT_RUN_FAULTS

SEED = 20261204
S = 1_000_000_000  # ns per second


@pytest.fixture(scope="module")
def lease_run(tmp_path_factory: pytest.TempPathFactory) -> LeaseReport:
    """One 20 s lease run under every fault kind (shared by the tests of this module).

    Faults are held a little shorter than by default (pauses keep theirs: they must
    outlast an election), so a whole round of the eight kinds fits in the run; a third
    of the leases race their expiry.
    """
    return run_lease(
        tmp_path_factory.mktemp("lease") / "run",
        seed=SEED,
        duration_s=20,
        faults=FAULT_KINDS,
        nemesis_options=SHORT_RUN_FAULTS,
        workload_options={"racing_share": 0.3},
    )


class History:
    """A fresh copy of the run's records (each test doctors its own)."""

    def __init__(self, report: LeaseReport) -> None:
        self.ops = read_ops(report.ops_path)
        self.faults = read_faults(report.directory / "faults.jsonl")
        self.marks = read_marks(report.directory / "marks.jsonl")
        self.params = report.params

    def checks(self) -> dict[int, set[str]]:
        """op index -> the names of the checks that flag it (-1: node-log findings)."""
        found: dict[int, set[str]] = {}
        for anomaly in check_leases(self.ops, self.faults, self.marks, self.params).anomalies:
            found.setdefault(anomaly.op, set()).add(anomaly.check)
        return found

    def incs(self) -> dict[int, Incarnation]:
        """lease -> incarnation, over the (doctored) ops."""
        return incarnations(self.ops)

    def reads(self, key: str) -> list[LeaseOp]:
        """The ok reads that observed `key`, by invocation."""
        return reads_of(self.ops).get(key, [])


@pytest.fixture
def history(lease_run: LeaseReport) -> History:
    """The run's history, to doctor."""
    return History(lease_run)


def test_leases_under_faults(lease_run: LeaseReport) -> None:
    """Kills, pauses (of any node and of the leader), partitions, packet loss, membership
    changes and leadership transfers while owners keep leases alive and die: no lease
    goes early, no stopped owner's key outlives its bound, nothing reappears, every
    `lease_expired` is legitimate, and owners' keys did expire."""
    report = lease_run
    summary = report.summary()
    print(summary)
    assert not report.errors, summary
    assert not report.anomalies, summary
    assert report.safety is None, summary
    assert set(report.fault_counts) == set(FAULT_KINDS), summary
    assert report.outcomes["keepalive"].get(OK, 0) > 40, summary
    assert report.endings.get("died", 0) >= 8, summary
    # Every owner that died after its key was attached saw the key go, by an expiry
    # that the node logs record; most were judged against the leader rule.
    assert len(report.delays) >= 8, summary
    assert all(delay.expired_ns is not None for delay in report.delays), summary
    assert report.judged["leader"] >= len(report.delays) // 2, summary
    assert report.expired_leases >= len(report.delays), summary
    assert recheck(report.directory).anomalies == []


# --- teeth: the real history, doctored ---------------------------------------------------


def test_the_recorded_history_is_clean(history: History) -> None:
    """The baseline for the doctored copies below."""
    assert history.checks() == {}


def _kept(history: History) -> tuple[Incarnation, LeaseOp, LeaseOp]:
    """An incarnation, an acknowledged keepalive K of it, and a read R that saw its key
    present, invoked after the put was acknowledged and completed before K.invoke + ttl."""
    for inc in history.incs().values():
        put = inc.first("put")
        if put is None or put.outcome != OK:
            continue
        for keepalive in inc.ops:
            if keepalive.kind != "keepalive" or keepalive.outcome != OK:
                continue
            for read in history.reads(inc.key):
                if (
                    read.invoke_ns > (put.complete_ns or 0)
                    and (read.complete_ns or 0) < keepalive.invoke_ns + inc.ttl_ns
                    and read.invoke_ns > keepalive.complete_ns + S // 10
                    and read.lease_seen(inc.key) == inc.lease
                ):
                    return inc, keepalive, read
    raise AssertionError("no read of a kept lease's key")


def test_a_key_missing_early_is_flagged(history: History) -> None:
    """A read that saw a kept lease's key, shown absent instead: revoked before its TTL."""
    inc, _, read = _kept(history)
    assert read.seen is not None
    del read.seen[inc.key]
    assert "early" in history.checks().get(read.index, set())


def test_a_keepalive_refused_early_is_flagged(history: History) -> None:
    """An acknowledged keepalive answered `lease_not_found` instead, while a later one
    was acknowledged: the lease was gone and came back."""
    for inc in history.incs().values():
        kept = [op for op in inc.ops if op.kind == "keepalive" and op.outcome == OK]
        if len(kept) >= 2:
            break
    else:
        raise AssertionError("no lease with two acknowledged keepalives")
    kept[0].outcome, kept[0].error = "fail", "lease_not_found"
    assert "early" in history.checks().get(kept[0].index, set())


def _died(history: History, report: LeaseReport) -> tuple[Incarnation, int, int]:
    """A died incarnation with its bound (the leader rule's) and its first absence."""
    for delay in report.delays:
        if delay.rule == "leader":
            return history.incs()[delay.lease], delay.bound_ns, delay.gone_ns
    raise AssertionError("no incarnation judged by the leader rule")


def _late_reads(history: History, key: str, after: int) -> list[LeaseOp]:
    return [r for r in history.reads(key) if r.invoke_ns > after]


def test_a_key_outliving_the_bound_is_flagged(history: History, lease_run: LeaseReport) -> None:
    """A read invoked after a died owner's bound shows its key still there: flagged by the
    leader rule; one far later (the final read) by the fault rule too."""
    inc, bound, _ = _died(history, lease_run)
    late = _late_reads(history, inc.key, bound)
    assert late, "no read after the bound"
    read = late[0]
    assert read.seen is not None
    saved = dict(read.seen)
    read.seen[inc.key] = [inc.lease, inc.lease if read.kind == "read" else None]
    checks = history.checks().get(read.index, set())
    assert "outlived-leader" in checks, checks
    read.seen = saved  # (only the first late read of a lease is reported)
    final = next(op for op in history.ops if op.final)
    assert final.seen is not None
    final.seen[inc.key] = [inc.lease, inc.lease]
    assert {"outlived-faults", "outlived-leader"} <= history.checks()[final.index]


def test_a_key_reappearing_is_flagged(history: History, lease_run: LeaseReport) -> None:
    """A read after the first that saw a died owner's key gone shows it again."""
    inc, _, gone = _died(history, lease_run)
    later = _late_reads(history, inc.key, gone)
    assert later, "no read after the key was seen gone"
    read = later[0]
    assert read.seen is not None
    read.seen[inc.key] = [inc.lease, None]
    assert "reappeared" in history.checks().get(read.index, set())


def test_a_key_detached_from_its_lease_is_flagged(history: History) -> None:
    """A prefix read shows a key attached to no lease although its value names one."""
    read = next(op for op in history.ops if op.kind == "read" and op.outcome == OK and op.seen)
    assert read.seen is not None
    key, (named, _) = next(iter(read.seen.items()))
    read.seen[key] = [named, 0]
    assert "detached" in history.checks().get(read.index, set())


def test_a_node_expiring_a_kept_lease_is_flagged(history: History) -> None:
    """A `lease_expired` logged right after a keepalive was acknowledged, and one for a
    lease nobody granted."""
    inc, keepalive, _ = _kept(history)
    history.marks.append(
        NodeMark("n1", "lease_expired", keepalive.invoke_ns + S // 2, lease=inc.lease, keys=1)
    )
    history.marks.append(NodeMark("n2", "lease_expired", S, lease=424242, keys=0))
    history.marks.sort(key=lambda m: m.at_ns)
    found = history.checks()
    assert "expired-while-kept" in found.get(keepalive.index, set()), found
    assert "expired-unknown" in found.get(-1, set()), found


# --- the bound's rules on hand-made timelines ------------------------------------------


PARAMS = LeaseParams(election_max_s=0.6, request_timeout_s=1.5)


def _op(index: int, kind: str, at: float, done: float, **fields: object) -> LeaseOp:
    return LeaseOp(
        index=index,
        actor="o0",
        kind=kind,
        invoke_ns=int(at * S),
        complete_ns=int(done * S),
        outcome=OK,
        **fields,  # type: ignore[arg-type]
    )


def _owner(lease: int = 1_000_001, ttl: int = 2) -> list[LeaseOp]:
    """Owner 0: grant and put at 0.0, keepalives acknowledged at 0.7 and 1.4, stop at 1.5."""
    common = {"owner": 0, "lease": lease, "ttl": ttl}
    return [
        _op(0, "grant", 0.00, 0.01, **common),
        _op(1, "put", 0.01, 0.02, **common),
        _op(2, "keepalive", 0.70, 0.71, **common),
        _op(3, "keepalive", 1.40, 1.41, **common),
        _op(4, "stop", 1.50, 1.50, **common),
    ]


def _read(index: int, at: float, lease: int | None) -> LeaseOp:
    seen = {} if lease is None else {owner_key(0): [lease, lease]}
    return LeaseOp(
        index=index,
        actor="r0",
        kind="read",
        invoke_ns=int(at * S),
        complete_ns=int((at + 0.002) * S),
        outcome=OK,
        seen=seen,  # type: ignore[arg-type]
    )


def _checks(ops: list[LeaseOp], faults: list[Fault], marks: list[NodeMark]) -> set[str]:
    return {a.check for a in check_leases(ops, faults, marks, PARAMS).anomalies}


def _elected(node: str, at: float, term: int) -> NodeMark:
    return NodeMark(node, "leader_elected", int(at * S), term=term)


def test_a_new_leader_restarting_the_ttl_is_flagged_by_the_leader_rule() -> None:
    """etcd's rule on a timeline: last ack 1.41 (ttl 2), the leader n1 killed at 2.0, n2
    elected at 2.4 with the refresh applied long before; expiry is due by max(2.4, 3.41)
    + M = 3.91. A key still there at 4.1 (as a full TTL from 2.4 would keep it, till
    4.4) breaks the leader rule, not the coarse one (the kill buys a TTL from its end)."""
    marks = [_elected("n1", 0.0, 1), _elected("n2", 2.4, 2)]
    faults = [Fault("kill-leader", ["n1"], int(2.0 * S), int(2.8 * S))]
    ops = [*_owner(), _read(5, 3.0, 1_000_001), _read(6, 4.1, 1_000_001), _read(7, 4.5, None)]
    assert _checks(ops, faults, marks) == {"outlived-leader"}
    ops[6] = _read(6, 3.8, 1_000_001)  # before the bound: fine
    assert _checks(ops, faults, marks) == set()


def test_an_unexplained_leader_change_may_restart_the_clock() -> None:
    """The same change without a fault on n1 (it may have acknowledged the refresh without
    telling the followers): n2's clock may start at its election, so 4.1 is fine."""
    marks = [_elected("n1", 0.0, 1), _elected("n2", 2.4, 2)]
    ops = [*_owner(), _read(5, 4.1, 1_000_001), _read(6, 4.95, None)]
    assert _checks(ops, [], marks) == set()


def test_a_stable_leader_must_expire_within_the_margin() -> None:
    """No fault, one leader: gone by 1.41 + 2 + M = 3.91."""
    marks = [_elected("n1", 0.0, 1)]
    ops = [*_owner(), _read(5, 3.85, 1_000_001), _read(6, 4.0, 1_000_001)]
    assert _checks(ops, [], marks) == {"outlived-leader"}


def test_an_abandoned_keepalive_queued_in_a_paused_node_extends_the_bound() -> None:
    """A keepalive attempt sent to a paused node at 1.0 and abandoned may be served when
    the node resumes (2.5), up to R later: the lease may live until 2.5 + 1.5 + 2."""
    ops = _owner()
    ops[3].attempt_errors, ops[3].nodes = ["no_reply"], ["n3", "n1"]
    ops[3].sent_ns = [int(1.0 * S), int(1.3 * S)]
    faults = [Fault("pause", ["n3"], int(0.9 * S), int(2.5 * S))]
    inc = incarnations(ops)[1_000_001]
    last, doubtful = refresh_window(inc, faults, PARAMS)
    assert (last, doubtful) == (int(4.0 * S), True)
    marks = [_elected("n1", 0.0, 1)]
    ops += [_read(5, 6.3, 1_000_001), _read(6, 6.6, None)]
    assert _checks(ops, faults, marks) == set()


def test_a_revoked_key_still_visible_is_flagged() -> None:
    """An acknowledged revoke at 1.0, then a read showing the key; and a revoke answered
    `lease_not_found` before the TTL ran out is an early revocation."""
    ops = _owner()[:3]
    ops.append(_op(3, "revoke", 1.0, 1.01, owner=0, lease=1_000_001, ttl=2))
    ops += [_read(4, 0.9, 1_000_001), _read(5, 1.02, None), _read(6, 1.2, 1_000_001)]
    marks = [_elected("n1", 0.0, 1)]
    assert _checks(ops, [], marks) == {"revoked-visible", "reappeared"}
    ops[6] = _read(6, 1.2, None)
    assert _checks(ops, [], marks) == set()
    ops[3].outcome, ops[3].error = "fail", "lease_not_found"
    assert _checks(ops, [], marks) == {"early"}


def test_packet_loss_cuts_a_hole_in_a_leadership() -> None:
    """n1 leads throughout; loss from 5 to 6 s: two stretches, the second from 6 + C."""
    faults = [Fault("loss", ["n1", "n2", "n3"], 5 * S, 6 * S)]
    found = leaderships([_elected("n1", 0.0, 1)], faults, PARAMS)
    stretches = [(x.node, x.start_ns, x.end_ns) for x in found]
    assert stretches == [("n1", 0, 5 * S - S // 10), ("n1", 7 * S, INF)]


def test_a_history_survives_a_round_trip(lease_run: LeaseReport) -> None:
    """`recheck` reads back everything the checks need (ops, faults, marks, params)."""
    again = recheck(lease_run.directory)
    assert again.anomalies == lease_run.anomalies
    assert again.delays == lease_run.delays
