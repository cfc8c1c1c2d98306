"""Watches on real processes under every fault, and the teeth of the watch checks.

`test_watches_under_faults` is a short `bin/zraft-nemesis --workload watch` run: writers
put, delete, transact, delete a range and attach keys to leases (revoked, or left to
expire) while watchers follow the range from one start revision (one starting at each
node, one moving between nodes, one over a sub-range, one taking one event per poll, one
started halfway through), under every fault kind. After healing every stream must pass
`tests.watch_workload.check_watch`. The run is made once per module: the teeth tests
doctor ITS recorded streams, one lie at a time, and each must be flagged by the check
meant for it.
"""

from __future__ import annotations

import copy

import pytest

from tests.nemesis import FAULT_KINDS, SHORT_RUN_FAULTS
from tests.watch_workload import PREFIX, Stream, WatchReport, check_watch, run_watch

SEED = 20261205


@pytest.fixture(scope="module")
def watch_run(tmp_path_factory: pytest.TempPathFactory) -> WatchReport:
    """One 20 s watch run under every fault kind (shared by the tests of this module)."""
    return run_watch(
        tmp_path_factory.mktemp("watch") / "run",
        seed=SEED,
        duration_s=20,
        faults=FAULT_KINDS,
        nemesis_options=SHORT_RUN_FAULTS,
    )


def test_watches_under_faults(watch_run: WatchReport) -> None:
    report = watch_run
    assert report.ok, report.summary()
    assert {f.kind for f in report.faults} == set(FAULT_KINDS), report.summary()
    full = [s for s in report.streams if s.prefix == PREFIX]
    assert len(full) >= 5 and all(s.events for s in full)
    kinds = {event[2] for event in full[0].events}
    assert kinds == {"put", "delete"}
    # Lease revocations and expiries were among the changes (deletes no writer made).
    assert any(w.kind == "lease_put" and w.outcome == "ok" for w in report.writes)
    acked = sum(1 for w in report.writes if w.outcome == "ok")
    assert acked > 500, report.summary()


def doctored(report: WatchReport, change: str) -> set[str]:
    """The checks that flag the run once one stream (the switching one) is changed."""
    streams = copy.deepcopy(report.streams)
    victim = next(s for s in streams if s.name == "switching")
    events = victim.events
    middle = len(events) // 2
    if change == "drop":
        del events[middle]
    elif change == "duplicate":
        events.insert(middle, events[middle])
    elif change == "swap":
        first = next(i for i in range(middle, len(events) - 1) if events[i][0] != events[i + 1][0])
        events[first], events[first + 1] = events[first + 1], events[first]
    elif change == "split":
        # One event of a multi-key revision goes missing (a revision split across replies
        # whose resume skipped the rest).
        at = next(i for i in range(middle, len(events) - 1) if events[i][0] == events[i + 1][0])
        del events[at + 1]
    elif change == "value":
        at = next(i for i in range(middle, len(events)) if events[i][2] == "put")
        revision, key, kind, value, received = events[at]
        events[at] = (revision, key, kind, value + "x", received)
    elif change == "stalled":
        victim.next_revision = report.end
    elif change == "resume-at-last":
        # The client resuming from its last revision instead of the next: that revision's
        # events come twice.
        at = next(i for i in range(middle, len(events) - 1) if events[i][0] != events[i + 1][0])
        events.insert(at + 1, events[at])
    found = check_watch(report.writes, streams, report.final, report.start, report.end)
    assert all(a.watcher == "switching" for a in found), found[:5]
    return {a.check for a in found}


@pytest.mark.parametrize(
    ("change", "flagged"),
    [
        ("drop", {"agree"}),
        ("duplicate", {"order", "agree"}),
        ("swap", {"order", "agree"}),
        ("split", {"agree"}),
        ("value", {"phantom", "agree"}),
        ("stalled", {"caught-up"}),
        ("resume-at-last", {"order", "agree"}),
    ],
)
def test_the_checks_have_teeth(watch_run: WatchReport, change: str, flagged: set[str]) -> None:
    assert watch_run.ok, watch_run.summary()
    assert flagged <= doctored(watch_run, change)


def test_every_stream_is_checked_against_the_acknowledged_writes(watch_run: WatchReport) -> None:
    # Take one acknowledged transaction out of EVERY stream: the watchers still agree,
    # and only `acknowledged` (with `final`, if it was a key's last change) can tell.
    streams: list[Stream] = copy.deepcopy(watch_run.streams)
    txn = next(w for w in reversed(watch_run.writes) if w.kind == "txn" and w.outcome == "ok")
    for stream in streams:
        stream.events = [e for e in stream.events if e[0] != txn.revision]
    found = check_watch(watch_run.writes, streams, watch_run.final, watch_run.start, watch_run.end)
    assert "acknowledged" in {a.check for a in found}
    assert "agree" not in {a.check for a in found}
