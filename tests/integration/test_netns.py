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

ROOT = Path(__file__).resolve().parent.parent.parent
HARD_TIMEOUT_S = 90.0  # one scenario, lab setup to teardown (~5-12 s measured)
SCENARIOS = ("majority", "isolated", "bridge", "loss")


def _result_line(stdout: str) -> dict[str, Any] | None:
    """The child's JSON verdict: the last stdout line that is a map with a `scenario`."""
    for line in reversed(stdout.splitlines()):
        with contextlib.suppress(ValueError):
            result = json.loads(line)
            if isinstance(result, dict) and "scenario" in result:
                return result
    return None


def _run_child(scenario: str, directory: Path) -> tuple[int, str, str]:
    """Run one scenario under unshare; kill it by PID if it outlives HARD_TIMEOUT_S."""
    argv = [sys.executable, "-m", "tests.netns_child", scenario, "--dir", str(directory)]
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
        out, err = proc.communicate(timeout=HARD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGKILL)  # --kill-child: the lab and its nodes go too
        out, err = proc.communicate(timeout=10)
        pytest.fail(
            f"scenario {scenario} did not finish within {HARD_TIMEOUT_S:g}s; killed\n"
            f"stdout:\n{out[-4000:]}\nstderr:\n{err[-4000:]}"
        )
    return proc.returncode, out, err


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_netns_scenario(
    scenario: str, tmp_path: Path, record_property: Callable[[str, object], None]
) -> None:
    """The scenario keeps election safety and makes progress within its bounded waits
    (see `tests/netns_child.py` for what each one checks)."""
    missing = netns.missing_tools()
    if missing:
        pytest.skip(
            f"network-namespace tests need {', '.join(missing)} on PATH "
            "(Debian packages util-linux, iproute2, iptables)"
        )
    code, out, err = _run_child(scenario, tmp_path / "lab")
    result = _result_line(out)
    if result is None:
        if code != 0 and err.lstrip().startswith("unshare:"):
            pytest.skip(f"cannot create namespaces here: {err.strip()}")
        pytest.fail(f"no verdict from the child (exit {code})\nstdout:\n{out}\nstderr:\n{err}")
    record_property("netns_result", json.dumps(result["details"]))
    if result["unavailable"]:
        pytest.skip(f"the namespace lab cannot be built here: {result['unavailable']}")
    assert code == 0 and result["ok"], (
        f"scenario {scenario} failed (exit {code}):\n{result['error']}\n"
        f"details: {json.dumps(result['details'])}\nstderr:\n{err[-4000:]}"
    )
