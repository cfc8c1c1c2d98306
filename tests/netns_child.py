"""Run one network-namespace fault scenario; meant to run under `netns.unshare_command`.

    unshare --net --mount --pid --fork --kill-child --mount-proc \\
        python -m tests.netns_child SCENARIO --dir DIR
    ... python -m tests.netns_child nemesis --dir DIR --duration 300 --seed 7 [--nodes 3]

It builds a `tests.netns.NetnsLab` in DIR, runs the scenario with this process as the
client driver (10.88.0.100, on the lab's bridge), and prints exactly one JSON line:
``{"scenario": ..., "ok": true|false, "unavailable": null|reason, "details": {...},
"error": null|text, "elapsed_s": ...}``. Exit codes: 0 passed, 1 failed (safety or
liveness), 2 usage, 3 the lab could not be built here (a missing tool or permission; the
pytest side skips with the reason).

Scenarios (each ends with the election-safety check over every node's JSON log):

- `majority`: 5 nodes; {leader, one} | {three}: the three elect a higher-term leader and
  take writes, the cut-off pair acknowledges nothing and does not inflate its term; after
  healing the old leader follows and reads the majority's value through itself.
- `isolated`: 3 nodes; the leader is cut off: a new leader, the old one steps down, heal.
- `bridge`: 5 nodes; {leader, one} | {bridge node} | {two}, where only the two outer
  groups are cut apart: writes keep succeeding, at most one leader per term.
- `loss`: 3 nodes; 20% random loss on every node's OUTPUT for ~10 s while a client
  advances a counter with session-carrying `cas` writes (a retry applied twice would
  fail its cas); afterwards the nodes converge on one commit index.
- `nemesis`: 5 nodes (`--nodes`); a history-checked run (`tests.netns_nemesis`): five
  clients (`--clients`) on five keys (`--keys`) for at least `--duration` seconds (25 by
  default) and one round of every fault kind, while a nemesis seeded by `--seed` makes
  majority/minority partitions, isolates the leader, makes bridge cuts and 10-30% packet
  loss with iptables, kills (-9) and pauses (SIGSTOP) random nodes and the leader. Then it
  heals, waits for one agreed leader, reads every key, waits for the logs to converge and
  checks the history for linearizability, lost acknowledged writes and election safety.
  `details` holds operations by outcome, faults by kind, the anomalies with their keys and
  windows, the lost writes, elections and the fault log; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import logscan, netns_nemesis
from tests.netns import LabUnavailable, NetnsLab
from tests.procs import NoReply

EXIT_PASSED = 0
EXIT_FAILED = 1
EXIT_UNAVAILABLE = 3

REQUEST_TIMEOUT_MS = 2000
NEMESIS_REQUEST_TIMEOUT_MS = 1500  # as tests.nemesis: clients wait 0.5 s longer per attempt
LEADER_TIMEOUT_S = 15.0  # a new leader after a fault (election 300-600 ms, slow machine)
HEAL_TIMEOUT_S = 20.0  # zmq heartbeats close the dead links, reconnects back off to 1 s


def _minority_write(lab: NetnsLab, node_id: str, key: str) -> str:
    """Send one write to a cut-off node; assert it is not acknowledged.

    Returns:
        How it ended: `no reply` or the error code.
    """
    try:
        reply = lab.request(
            node_id,
            "put",
            timeout=REQUEST_TIMEOUT_MS / 1000 + 2.0,
            key=key,
            value="minority",
            client=f"minority-{node_id}",
            seq=1,
        )
    except NoReply:
        return "no reply"
    assert not reply["ok"], f"cut-off {node_id} acknowledged a write: {reply}\n{lab.describe()}"
    code: str = reply["error"]["code"]
    return code


def _wait_stepped_down(lab: NetnsLab, node_id: str) -> None:
    def stepped_down() -> bool:
        try:
            return lab.status(node_id)["role"] != "leader"
        except NoReply:
            return False

    logscan.wait_for(stepped_down, timeout=LEADER_TIMEOUT_S, describe=lab.describe)


def _heal_and_check_follower(
    lab: NetnsLab, old: str, min_term: int, key: str, expected: bytes
) -> dict[str, Any]:
    """Heal, wait for one agreed leader, and read `key` through the old leader."""
    lab.heal()
    healed_at = time.monotonic()
    leader, term = lab.wait_agreed_leader(timeout=HEAL_TIMEOUT_S)
    assert term >= min_term, f"agreed on term {term} below {min_term}"
    assert leader != old, f"the old leader {old} leads again in term {term}"
    reply, _ = lab.request_until_ok("get", [old], timeout=10.0, key=key)
    assert reply["value"] == expected, f"read via {old} gave {reply} (want {expected!r})"
    return {
        "leader_after_heal": leader,
        "term_after_heal": term,
        "heal_to_agreement_s": round(time.monotonic() - healed_at, 2),
        "read_via_old_leader": expected.decode(),
    }


def scenario_majority(lab: NetnsLab) -> dict[str, Any]:
    """{leader, one} | {three}: majority side progresses, minority acknowledges nothing."""
    lab.start_all()
    old = lab.wait_leader(timeout=LEADER_TIMEOUT_S)
    old_term = lab.status(old)["term"]
    lab.request_until_ok("put", lab.ids, key="k", value="before", client="drv", seq=1)
    buddy = next(n for n in lab.ids if n != old)
    minority = [old, buddy]
    majority = [n for n in lab.ids if n not in minority]

    lab.partition(minority)
    cut_at = time.monotonic()
    new = lab.wait_leader(among=majority, min_term=old_term, timeout=LEADER_TIMEOUT_S)
    elected_s = time.monotonic() - cut_at
    new_term = lab.status(new)["term"]
    reply, attempts = lab.request_until_ok(
        "put", [new, *majority], key="k", value="during", client="drv", seq=2
    )
    minority_outcomes = {n: _minority_write(lab, n, "k") for n in minority}
    _wait_stepped_down(lab, old)
    minority_terms = {n: lab.status(n)["term"] for n in minority}
    inflated = {n: t for n, t in minority_terms.items() if t != old_term}
    assert not inflated, f"the cut-off minority raised its term (pre-vote): {inflated}"

    healed = _heal_and_check_follower(lab, old, new_term, "k", b"during")
    lab.assert_safety()
    return {
        "old_leader": old,
        "old_term": old_term,
        "minority": minority,
        "new_leader": new,
        "new_term": new_term,
        "partition_to_new_leader_s": round(elected_s, 2),
        "majority_write_attempts": attempts,
        "majority_write_index": reply["index"],
        "minority_writes": minority_outcomes,
        "minority_terms": minority_terms,
        **healed,
    }


def scenario_isolated(lab: NetnsLab) -> dict[str, Any]:
    """The leader alone is cut off: replaced, steps down, follows after healing."""
    lab.start_all()
    old = lab.wait_leader(timeout=LEADER_TIMEOUT_S)
    old_term = lab.status(old)["term"]
    lab.request_until_ok("put", lab.ids, key="k", value="before", client="drv", seq=1)
    others = [n for n in lab.ids if n != old]

    lab.isolate(old)
    cut_at = time.monotonic()
    new = lab.wait_leader(among=others, min_term=old_term, timeout=LEADER_TIMEOUT_S)
    elected_s = time.monotonic() - cut_at
    new_term = lab.status(new)["term"]
    lab.request_until_ok("put", [new, *others], key="k", value="during", client="drv", seq=2)
    _wait_stepped_down(lab, old)
    stepped_down_s = time.monotonic() - cut_at
    outcome = _minority_write(lab, old, "k")

    healed = _heal_and_check_follower(lab, old, new_term, "k", b"during")
    lab.assert_safety()
    return {
        "old_leader": old,
        "old_term": old_term,
        "new_leader": new,
        "new_term": new_term,
        "isolation_to_new_leader_s": round(elected_s, 2),
        "isolation_to_step_down_s": round(stepped_down_s, 2),
        "isolated_write": outcome,
        **healed,
    }


def scenario_bridge(lab: NetnsLab, duration: float = 6.0) -> dict[str, Any]:
    """{leader, one} | {bridge} | {two}, outer groups cut apart: progress, one leader/term."""
    lab.start_all()
    leader = lab.wait_leader(timeout=LEADER_TIMEOUT_S)
    term = lab.status(leader)["term"]
    rest = [n for n in lab.ids if n != leader]
    bridge = rest[0]
    side_a = [leader, rest[1]]
    side_c = rest[2:]
    elections_before = sum(len(v) for v in lab.elections().values())

    lab.cut(side_a, side_c)
    reachable = [*side_a, bridge]
    writes = 0
    worst = 0.0
    seq = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        seq += 1
        began = time.monotonic()
        lab.request_until_ok(
            "put", reachable, timeout=10.0, key=f"b{seq % 7}", value=str(seq), client="b", seq=seq
        )
        worst = max(worst, time.monotonic() - began)
        writes += 1
    assert writes >= 10, f"only {writes} writes succeeded in {duration}s"
    during = lab.statuses()
    leaders_during = {n: s["term"] for n, s in during.items() if s["role"] == "leader"}
    lab.assert_safety()

    lab.heal()
    final_leader, final_term = lab.wait_agreed_leader(timeout=HEAL_TIMEOUT_S)
    commit = lab.wait_converged(timeout=HEAL_TIMEOUT_S)
    lab.assert_safety()
    elections = lab.elections()
    return {
        "leader_before": leader,
        "term_before": term,
        "sides": [side_a, [bridge], side_c],
        "writes": writes,
        "worst_write_s": round(worst, 3),
        "leaders_during_cut": leaders_during,
        "terms_during_cut": {n: s["term"] for n, s in during.items()},
        "elections_during_cut": sum(len(v) for v in elections.values()) - elections_before,
        "elections": {str(t): ids for t, ids in sorted(elections.items())},
        "leader_after_heal": final_leader,
        "term_after_heal": final_term,
        "commit_index": commit,
    }


def scenario_loss(
    lab: NetnsLab, duration: float = 10.0, probability: float = 0.2
) -> dict[str, Any]:
    """Random loss on every node while a counter advances by session-carrying cas."""
    lab.start_all()
    lab.wait_leader(timeout=LEADER_TIMEOUT_S)
    lab.request_until_ok("put", lab.ids, key="ctr", value="0", client="setup", seq=1)
    for node_id in lab.ids:
        lab.loss(node_id, probability, "OUTPUT")
    writes = 0
    attempts = 0
    worst = 0.0
    last_index = 0
    end = time.monotonic() + duration
    while time.monotonic() < end:
        began = time.monotonic()
        reply, tries = lab.request_until_ok(
            "cas",
            lab.ids,
            timeout=20.0,
            attempt_timeout=0.5,
            key="ctr",
            expected=str(writes),
            value=str(writes + 1),
            client="loss",
            seq=writes + 1,
        )
        worst = max(worst, time.monotonic() - began)
        attempts += tries
        writes += 1
        last_index = max(last_index, reply["index"])
    assert writes >= 5, f"only {writes} writes succeeded in {duration}s of {probability} loss"
    dropped = {n: lab.dropped(n) for n in lab.ids}
    assert all(dropped.values()), f"the loss rules dropped nothing: {dropped}"
    lab.assert_safety()

    lab.heal()
    commit = lab.wait_converged(min_index=last_index, timeout=HEAL_TIMEOUT_S)
    reply, _ = lab.request_until_ok("get", lab.ids, key="ctr")
    assert reply["value"] == str(writes).encode(), f"counter is {reply}, want {writes}"
    lab.assert_safety()
    elections = lab.elections()
    return {
        "probability": probability,
        "writes": writes,
        "attempts": attempts,
        "retries": attempts - writes,
        "worst_write_s": round(worst, 3),
        "packets_dropped": dropped,
        "elections": {str(t): ids for t, ids in sorted(elections.items())},
        "commit_index": commit,
        "counter": writes,
    }


class ScenarioFailed(AssertionError):
    """A scenario failed but has details to report (they go into the JSON line)."""

    def __init__(self, message: str, details: dict[str, Any]) -> None:
        super().__init__(message)
        self.details = details


def _progress(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def scenario_nemesis(
    lab: NetnsLab, *, seed: int, duration: float, clients: int, keys: int
) -> dict[str, Any]:
    """A history-checked nemesis run with real iptables faults (`tests.netns_nemesis`).

    Raises:
        ScenarioFailed: an anomaly, a lost write, an election-safety violation or a
            harness error; the details are reported all the same.
    """
    report = netns_nemesis.run_lab_nemesis(
        lab, seed=seed, duration_s=duration, clients=clients, keys=keys, say=_progress
    )
    _progress(netns_nemesis.summary(report))
    details = netns_nemesis.details(report, lab)
    if not report.ok:
        keys = sorted({anomaly.key for anomaly in report.anomalies})
        raise ScenarioFailed(
            f"nemesis run failed (exit {report.exit_code}): {len(report.anomalies)} anomalies "
            f"(keys {keys}), {len(report.lost)} lost writes, safety: {report.safety or 'ok'}, "
            f"harness errors: {report.errors or 'none'}",
            details,
        )
    return details


SCENARIOS: dict[str, tuple[int, Callable[[NetnsLab], dict[str, Any]]]] = {
    "majority": (5, scenario_majority),
    "isolated": (3, scenario_isolated),
    "bridge": (5, scenario_bridge),
    "loss": (3, scenario_loss),
}
"""name -> (cluster size, the scenario)."""


def main(argv: list[str] | None = None) -> int:
    """Build the lab, run one scenario, print its JSON line, return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("scenario", choices=[*sorted(SCENARIOS), "nemesis"])
    parser.add_argument("--dir", type=Path, required=True, help="a fresh working directory")
    nemesis = parser.add_argument_group("nemesis scenario")
    nemesis.add_argument("--seed", type=int, default=0, help="seeds workload and faults")
    nemesis.add_argument(
        "--duration", type=float, default=25.0, help="at least this many seconds (default 25)"
    )
    nemesis.add_argument("--nodes", type=int, choices=(3, 5), default=5)
    nemesis.add_argument("--clients", type=int, default=5, help="concurrent clients")
    nemesis.add_argument("--keys", type=int, default=5, help="keys of the workload")
    args = parser.parse_args(argv)
    options: dict[str, Any] = {"request_timeout_ms": REQUEST_TIMEOUT_MS}
    if args.scenario == "nemesis":
        size = args.nodes
        scenario: Callable[[NetnsLab], dict[str, Any]] = functools.partial(
            scenario_nemesis,
            seed=args.seed,
            duration=args.duration,
            clients=args.clients,
            keys=args.keys,
        )
        options = {
            "request_timeout_ms": NEMESIS_REQUEST_TIMEOUT_MS,
            "cluster_options": netns_nemesis.LAB_CLUSTER_OPTIONS,
        }
    else:
        size, scenario = SCENARIOS[args.scenario]
    result: dict[str, Any] = {
        "scenario": args.scenario,
        "ok": False,
        "unavailable": None,
        "details": {},
        "error": None,
    }
    started = time.monotonic()
    code = EXIT_FAILED
    lab = NetnsLab(args.dir, size, **options)
    try:
        try:
            lab.setup()
        except LabUnavailable as exc:
            result["unavailable"] = str(exc)
            code = EXIT_UNAVAILABLE
        else:
            result["details"] = scenario(lab)
            result["ok"] = True
            code = EXIT_PASSED
    except ScenarioFailed as exc:
        result["details"] = exc.details
        result["error"] = str(exc)
    except Exception as exc:  # reported in the JSON line, then the exit code says failed
        result["error"] = "".join(traceback.format_exception(exc))
    finally:
        try:
            lab.close()
        except Exception as exc:
            result["ok"] = False
            result["error"] = (result["error"] or "") + f"\nclose failed: {exc!r}"
            code = code if code != EXIT_PASSED else EXIT_FAILED
    result["elapsed_s"] = round(time.monotonic() - started, 2)
    print(json.dumps(result), flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
