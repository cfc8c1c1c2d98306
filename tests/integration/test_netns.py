"""Partitions, a non-transitive cut and packet loss as real firewall rules between hosts.

Each test runs one scenario of `tests/netns_child.py` in a child process started in fresh
network, mount and PID namespaces (`tests.netns.unshare_command`): the five or three
nodes each get a network namespace of their own behind a bridge, the child is the client
driver, and iptables rules inside the node namespaces make the faults (PLATFORM.md §1).
Nothing is created in this machine's own network namespace and no packet can leave the
lab: the child has no route but the lab's 10.88.0.0/24.

The child prints one JSON line (its verdict and figures) and exits 0 only if every
safety and liveness check of the scenario passed. It is killed by PID after a hard
timeout; `--kill-child` and the PID namespace take every node process with it.

`test_netns_nemesis` runs the `nemesis` scenario (`tests/netns_nemesis.py`) for ~25 s:
five clients record a history while every iptables fault (partition, isolated leader,
bridge cut, packet loss) and every process fault (kill -9, SIGSTOP, of random nodes and
of the leader) is injected; the history must be linearizable with no lost acknowledged
write. A longer run by hand (the same child, same checks)::

    bin/zraft-netns-nemesis --duration 300 --seed 7

Skipped, with the reason, where `unshare`, `ip` (iproute2) or `iptables` is missing or
the namespaces cannot be made (no privileges); never run against the real network.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests import netns
from tests.netns_nemesis import NETNS_FAULT_KINDS

ROOT = Path(__file__).resolve().parent.parent.parent
HARD_TIMEOUT_S = 90.0  # one scenario, lab setup to teardown (~5-12 s measured)
SCENARIOS = ("majority", "isolated", "bridge", "loss")
NEMESIS_SEED = 20261126
NEMESIS_DURATION_S = 25.0  # the run goes on until every kind was injected once (~27 s)
NEMESIS_HARD_TIMEOUT_S = 240.0  # <= 3x the duration, plus heal, final reads and the check


def _result_line(stdout: str) -> dict[str, Any] | None:
    """The child's JSON verdict: the last stdout line that is a map with a `scenario`."""
    for line in reversed(stdout.splitlines()):
        with contextlib.suppress(ValueError):
            result = json.loads(line)
            if isinstance(result, dict) and "scenario" in result:
                return result
    return None


def _run_child(
    scenario: str,
    directory: Path,
    extra: list[str] | None = None,
    hard_timeout: float = HARD_TIMEOUT_S,
) -> tuple[int, str, str]:
    """Run one scenario under unshare; kill it by PID if it outlives `hard_timeout`."""
    argv = [sys.executable, "-m", "tests.netns_child", scenario, "--dir", str(directory)]
    argv += extra or []
    proc = subprocess.Popen(
        netns.unshare_command(argv),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=hard_timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)  # --kill-child: the lab and its nodes go too
        out, err = proc.communicate(timeout=10)
        pytest.fail(
            f"scenario {scenario} did not finish within {hard_timeout:g}s; killed\n"
            f"stdout:\n{out[-4000:]}\nstderr:\n{err[-4000:]}"
        )
    return proc.returncode, out, err


def _skip_without_tools() -> None:
    missing = netns.missing_tools()
    if missing:
        pytest.skip(
            f"network-namespace tests need {', '.join(missing)} on PATH "
            "(Debian packages util-linux, iproute2, iptables)"
        )


def _verdict(
    code: int, out: str, err: str, record_property: Callable[[str, object], None]
) -> dict[str, Any]:
    """The child's JSON line; skips (with the reason) when the lab could not be built."""
    result = _result_line(out)
    if result is None:
        if code != 0 and err.lstrip().startswith("unshare:"):
            pytest.skip(f"cannot create namespaces here: {err.strip()}")
        pytest.fail(f"no verdict from the child (exit {code})\nstdout:\n{out}\nstderr:\n{err}")
    record_property("netns_result", json.dumps(result["details"]))
    if result["unavailable"]:
        pytest.skip(f"the namespace lab cannot be built here: {result['unavailable']}")
    return result


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_netns_scenario(
    scenario: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """The scenario keeps election safety and makes progress within its bounded waits
    (see `tests/netns_child.py` for what each one checks)."""
    _skip_without_tools()
    code, out, err = _run_child(scenario, tmp_path / "lab")
    result = _verdict(code, out, err, record_property)
    assert code == 0 and result["ok"], (
        f"scenario {scenario} failed (exit {code}):\n{result['error']}\n"
        f"details: {json.dumps(result['details'])}\nstderr:\n{err[-4000:]}"
    )


def test_netns_nemesis(tmp_path: Path, record_property: Callable[[str, object], None]) -> None:
    """Real firewall faults and kills/pauses under load leave a linearizable history.

    Every fault kind is injected at least once (the run goes on until one shuffled round
    of all eight is done) and the leader-targeted ones found the leader; most operations
    succeed; the loss rules really dropped packets; every key is read back; no anomaly, no
    lost acknowledged write, at most one leader per term in every node's log.
    """
    _skip_without_tools()
    extra = ["--seed", str(NEMESIS_SEED), "--duration", f"{NEMESIS_DURATION_S:g}"]
    code, out, err = _run_child(
        "nemesis", tmp_path / "lab", extra, hard_timeout=NEMESIS_HARD_TIMEOUT_S
    )
    result = _verdict(code, out, err, record_property)
    details = result["details"]
    shown = f"{json.dumps(details, indent=1)}\nerror: {result['error']}\nstderr:\n{err[-6000:]}"
    assert details, f"no details (exit {code})\n{shown}"
    assert details["anomalies"] == [], shown
    assert details["lost_writes"] == [], shown
    assert details["safety"] is None, shown
    assert details["errors"] == [], shown
    assert code == 0 and result["ok"], shown
    assert set(details["faults"]) == set(NETNS_FAULT_KINDS), shown
    leader_faults = [line for line in details["fault_log"] if "no leader found" not in line]
    for kind in ("isolate-leader", "kill-leader", "pause-leader"):
        assert any(line.startswith(f"{kind} ") for line in leader_faults), (
            f"no {kind} fault found a leader to hit\n{shown}"
        )
    dropped = [line for line in details["fault_log"] if line.startswith("loss ")]
    assert all(", 0 packets dropped" not in line for line in dropped), shown
    assert details["ok_ops"] > 300, shown
    assert len(details["final"]) == 5, shown
