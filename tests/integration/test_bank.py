"""Jepsen's bank on real processes under every fault, and the teeth of its checks.

`test_bank_under_faults` is a short `bin/zraft-nemesis --workload bank` run: five clients
transfer money between five accounts with transactions (compare both accounts' mod
revisions, put both balances) and read every account at one revision (now, serializable,
or at a past revision) while the nemesis injects every fault kind; the history must show
no anomaly (`tests.bank.check_bank`). The run is made once per module: the teeth tests
below doctor ITS recorded history (a real one, faults included), one lie at a time, and
each lie must be flagged by the check meant for it. The synthetic tests pin the rules for
indeterminate transfers, which a clean run rarely exercises.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from pathlib import Path

import pytest

from tests.bank import (
    FAIL,
    INFO,
    OK,
    BankAnomaly,
    BankOp,
    BankReport,
    account_keys,
    answered_revision,
    check_bank,
    check_final,
    check_invariant,
    check_range_at_revision,
    read_ops,
    recheck,
    run_bank,
    write_ops,
)
from tests.nemesis import FAULT_KINDS, SHORT_RUN_FAULTS

SEED = 20261201
ACCOUNTS = account_keys(5)
TOTAL = 500


@pytest.fixture(scope="module")
def bank_run(tmp_path_factory: pytest.TempPathFactory) -> BankReport:
    """One 22 s bank run under every fault kind (shared by the tests of this module).

    Faults are held a little shorter than by default (pauses keep theirs: they must
    outlast an election), so a whole round of the eight kinds fits in the run.
    """
    return run_bank(
        tmp_path_factory.mktemp("bank") / "run",
        seed=SEED,
        duration_s=22,
        faults=FAULT_KINDS,
        nemesis_options=SHORT_RUN_FAULTS,
    )


@pytest.fixture
def history(bank_run: BankReport) -> list[BankOp]:
    """A fresh copy of the run's recorded history (each test doctors its own)."""
    return read_ops(bank_run.ops_path)


def test_bank_under_faults(bank_run: BankReport) -> None:
    """Kills, pauses (of any node and of the leader), partitions, packet loss, membership
    changes and leadership transfers while money moves: every read sums to the total,
    equals the state at its revision, revisions respect real time, and the final read
    after healing holds every acknowledged transfer. Snapshots every 100 entries
    (`SNAPSHOT_OPTIONS`), so reads at past revisions also cross snapshots."""
    report = bank_run
    summary = report.summary()
    print(summary)
    assert not report.errors, summary
    assert not report.anomalies, summary
    assert report.safety is None, summary
    assert set(report.fault_counts) == set(FAULT_KINDS), summary
    outcomes = report.outcomes
    transfers_ok = outcomes["transfer"].get(OK, 0)
    reads_ok = sum(outcomes.get(kind, {}).get(OK, 0) for kind in ("read", "read-at"))
    assert transfers_ok > 100 and reads_ok > 200, summary
    done = sum(sum(per.values()) for kind, per in outcomes.items() if kind not in ("init", "final"))
    not_decided = sum(per.get(INFO, 0) + per.get(FAIL, 0) for per in outcomes.values())
    assert not_decided < done // 10, summary  # most ops decided (compare failures aside)
    assert report.final_revision is not None and report.init_revision is not None
    assert report.final_revision > report.init_revision + transfers_ok - 1, summary
    assert sorted(report.final) == ACCOUNTS
    assert sum(int(balance) for balance in report.final.values()) == TOTAL
    assert report.snapshots["snapshot_saved"] > 0, summary


# --- teeth: a real history, doctored --------------------------------------------------


def _checks_on(anomalies: Iterable[BankAnomaly], index: int) -> set[str]:
    return {a.check for a in anomalies if a.op == index}


def _current_reads(history: list[BankOp]) -> list[BankOp]:
    return [
        op
        for op in history
        if op.kind == "read"
        and op.outcome == OK
        and not op.at_revision
        and not op.final
        and op.kvs is not None
    ]


def _transfers(history: list[BankOp]) -> list[BankOp]:
    return [op for op in history if op.kind == "transfer" and op.is_applied]


def test_the_recorded_history_is_clean(history: list[BankOp]) -> None:
    """The baseline for the doctored copies below: no check flags the real history."""
    assert check_bank(history, ACCOUNTS, TOTAL) == []


def test_a_read_whose_sum_is_off_is_flagged(history: list[BankOp]) -> None:
    """One balance of one read raised by 1: the bank invariant flags that read."""
    reads = _current_reads(history)
    read = reads[len(reads) // 4]
    account = ACCOUNTS[0]
    assert read.kvs is not None
    read.kvs[account][0] = str(int(read.kvs[account][0]) + 1)
    found = check_bank(history, ACCOUNTS, TOTAL)
    assert "sum" in _checks_on(found, read.index), found
    # The value is not what the write at its mod revision put there, either.
    assert "wrong-value" in _checks_on(check_range_at_revision(history), read.index)


def _read_before(history: list[BankOp]) -> tuple[BankOp, BankOp]:
    """An applied transfer T at revision r and a read at r - 1 (T's state before)."""
    at = {op.revision: op for op in _current_reads(history) if not op.serializable}
    for transfer in _transfers(history):
        read = at.get((transfer.revision or 0) - 1)
        if read is not None:
            return transfer, read
    raise AssertionError("no linearizable read at the revision just before a transfer")


def test_a_read_showing_the_next_revisions_write_is_flagged(history: list[BankOp]) -> None:
    """A read at R shows a transfer made at R + 1 (both of its accounts, so the sum still
    holds): the invariant is blind to it, range-at-revision is not."""
    transfer, read = _read_before(history)
    assert read.kvs is not None and transfer.revision is not None
    for account, balance in transfer.writes.items():
        value, mod, version, create = read.kvs[account]
        assert (int(value), mod) == (transfer.before[account], transfer.expected[account])
        read.kvs[account] = [str(balance), transfer.revision, version + 1, create]
    assert check_invariant(history, ACCOUNTS, TOTAL) == []
    checks = _checks_on(check_range_at_revision(history), read.index)
    assert "mod-above-revision" in checks, checks


def test_a_read_showing_a_later_value_at_an_old_mod_is_flagged(history: list[BankOp]) -> None:
    """The same lie told with the old mod revisions kept: the balances are not the ones
    the writes at those revisions put (the sum still holds)."""
    transfer, read = _read_before(history)
    assert read.kvs is not None
    for account, balance in transfer.writes.items():
        read.kvs[account][0] = str(balance)
    assert check_invariant(history, ACCOUNTS, TOTAL) == []
    checks = _checks_on(check_range_at_revision(history), read.index)
    assert checks & {"wrong-value", "record-identity"}, checks


def test_a_transfer_split_over_two_revisions_is_flagged(history: list[BankOp]) -> None:
    """A read shows a transfer's two puts at two revisions (r - 1 and r), what a store
    that gave the second put of a transaction its own revision would show."""
    reads = _current_reads(history)
    for transfer in _transfers(history):
        first, second = list(transfer.writes)
        shown = next(
            (
                read
                for read in reads
                if read.kvs is not None
                and read.kvs[first][1] == transfer.revision == read.kvs[second][1]
            ),
            None,
        )
        if shown is not None:
            break
    else:
        raise AssertionError("no read shows a transfer's two accounts at its revision")
    assert shown.kvs is not None and transfer.revision is not None
    shown.kvs[first][1] = transfer.revision - 1
    checks = _checks_on(check_range_at_revision(history), shown.index)
    assert "split-transfer" in checks, checks


def test_a_lost_transfer_in_the_final_read_is_flagged(history: list[BankOp]) -> None:
    """The final read shows an account as it was before its last acknowledged transfer."""
    final = next(op for op in history if op.final)
    assert final.kvs is not None
    by_revision = {op.revision: op for op in _transfers(history)}
    account, last = next(
        (account, by_revision[kv[1]]) for account, kv in final.kvs.items() if kv[1] in by_revision
    )
    final.kvs[account] = [
        str(last.before[account]),
        last.expected[account],
        final.kvs[account][2] - 1,
        final.kvs[account][3],
    ]
    lost = [a for a in check_final(history) if a.check == "lost-transfer"]
    assert [a.op for a in lost] == [last.index], lost
    # Missed (or split, when the transfer's other account still shows it) at its revision.
    checks = _checks_on(check_range_at_revision(history), final.index)
    assert checks & {"missed-write", "split-transfer"}, checks


def test_a_stale_linearizable_read_is_flagged(history: list[BankOp]) -> None:
    """A linearizable read answered with an older read's state (valid at ITS revision,
    so only real-time order can tell): what serving it locally, stale, would do."""
    done = sorted(
        (op for op in history if answered_revision(op) is not None),
        key=lambda op: op.complete_ns or 0,
    )
    reads = [op for op in _current_reads(history) if not op.serializable]
    for read in reads[len(reads) // 2 :]:
        before = [op for op in done if (op.complete_ns or 0) < read.invoke_ns]
        floor = max(answered_revision(op) or 0 for op in before)
        old = next((op for op in reads if (op.revision or 0) < floor), None)
        if old is not None:
            break
    else:
        raise AssertionError("no read has an older one to be replaced with")
    read.revision, read.kvs = old.revision, copy.deepcopy(old.kvs)
    assert check_invariant(history, ACCOUNTS, TOTAL) == []
    checks = _checks_on(check_range_at_revision(history), read.index)
    assert checks == {"stale-revision"}, checks


# --- the rules for indeterminate transfers, on synthetic histories ----------------------


class _Bank:
    """A tiny, sequential model bank that writes a history as the workload would."""

    def __init__(self, accounts: int = 3, balance: int = 10) -> None:
        self.accounts = account_keys(accounts)
        self.total = accounts * balance
        self.revision = 2
        self.state = {a: [balance, 2, 1] for a in self.accounts}  # balance, mod, version
        self.ops: list[BankOp] = []
        self._clock = 0
        self._add("init", OK, succeeded=True, revision=2, writes=dict.fromkeys(self.accounts, 10))

    def _add(self, kind: str, outcome: str, **fields: object) -> BankOp:
        op = BankOp(
            index=len(self.ops),
            process=len(self.ops) % 3,
            kind=kind,
            invoke_ns=self._clock,
            complete_ns=self._clock + 1,
            outcome=outcome,
            **fields,  # type: ignore[arg-type]
        )
        self._clock += 2
        self.ops.append(op)
        return op

    def transfer(
        self, source: str, target: str, amount: int, outcome: str = OK, *, applied: bool = True
    ) -> BankOp:
        """A transfer by a client that knows the current state; `applied` says whether
        it takes effect (an `ok` one always does)."""
        before = {a: self.state[a][0] for a in (source, target)}
        expected = {a: self.state[a][1] for a in (source, target)}
        writes = {source: before[source] - amount, target: before[target] + amount}
        if applied:
            self.revision += 1
            for account, balance in writes.items():
                self.state[account] = [balance, self.revision, self.state[account][2] + 1]
        return self._add(
            "transfer",
            outcome,
            expected=expected,
            before=before,
            writes=writes,
            succeeded=True if outcome == OK else None,
            revision=self.revision if outcome == OK else None,
        )

    def read(self, *, final: bool = False) -> BankOp:
        """A linearizable read of every account now."""
        kvs = {a: [str(b), mod, version, 2] for a, (b, mod, version) in self.state.items()}
        return self._add(
            "read", OK, revision=self.revision, kvs=kvs, count=len(kvs), more=False, final=final
        )

    def check(self) -> set[str]:
        """The names of the checks that flag the history."""
        return {a.check for a in check_bank(self.ops, self.accounts, self.total)}


def test_an_indeterminate_transfer_may_have_happened_or_not() -> None:
    """An `info` transfer seen applied, and another never seen: both are fine."""
    bank = _Bank()
    a, b, c = bank.accounts
    bank.transfer(a, b, 3)
    bank.read()
    bank.transfer(b, c, 5, INFO, applied=True)
    bank.read()
    bank.transfer(c, a, 1, INFO, applied=False)
    bank.transfer(a, c, 2)
    bank.read(final=True)
    assert bank.check() == set()


def test_a_write_nobody_can_have_made_is_flagged() -> None:
    """The same applied transfer, but answered as certainly not applied (`fail`): the
    reads show a write no transfer can explain, and a revision too many."""
    bank = _Bank()
    a, b, _ = bank.accounts
    bank.transfer(a, b, 3)
    bank.transfer(b, a, 5, FAIL, applied=True)
    bank.read(final=True)
    assert {"unexplained-write", "revision-accounting"} <= bank.check()


def test_one_indeterminate_transfer_cannot_explain_two_revisions() -> None:
    """An `info` transfer applied once; a read then shows its balances again at the next
    revision: one transfer cannot have made two revisions."""
    bank = _Bank()
    a, b, _ = bank.accounts
    bank.transfer(a, b, 3, INFO, applied=True)
    bank.read()
    again = bank.read(final=True)
    assert again.kvs is not None and again.revision is not None
    again.revision += 1
    for account in (a, b):
        again.kvs[account][1] += 1
        again.kvs[account][2] += 1
    assert {"info-matching", "revision-accounting"} <= bank.check()


def test_serializable_reads_may_be_stale_but_linearizable_ones_may_not() -> None:
    """An old state read after a newer transfer completed: fine when serializable."""
    bank = _Bank()
    a, b, _ = bank.accounts
    old = bank.read()
    bank.transfer(a, b, 3)
    late = bank.read(final=True)
    late.revision, late.kvs = old.revision, copy.deepcopy(old.kvs)
    late.final = False
    bank.read(final=True)
    assert bank.check() == {"stale-revision"}
    late.serializable = True
    assert bank.check() == set()


def test_a_linearizable_read_refused_a_revision_it_had_seen_is_flagged() -> None:
    """`future_revision` for a past revision that was acknowledged before the read."""
    bank = _Bank()
    a, b, _ = bank.accounts
    done = bank.transfer(a, b, 3)
    refused = bank._add("read", FAIL, at_revision=done.revision, error="future_revision")
    bank.read(final=True)
    assert bank.check() == {"future-revision"}
    assert refused.index in {a.op for a in check_range_at_revision(bank.ops)}


def test_the_checks_need_the_final_read() -> None:
    """Without a successful final read, nothing proves that no transfer was lost."""
    bank = _Bank()
    a, b, _ = bank.accounts
    bank.transfer(a, b, 3)
    assert bank.check() == {"final-missing"}


def test_a_history_survives_a_round_trip(tmp_path: Path) -> None:
    """ops.jsonl holds everything the checks need (`--recheck` reads it back)."""
    bank = _Bank()
    a, b, _ = bank.accounts
    bank.transfer(a, b, 3)
    bank.read(final=True)
    write_ops(tmp_path / "ops.jsonl", bank.ops)
    assert read_ops(tmp_path / "ops.jsonl") == bank.ops
    assert recheck(tmp_path) == []
