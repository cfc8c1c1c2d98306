"""`python -m zraft.bench.snapshot` runs end to end on a small state (a smoke test).

The benchmark's figures are for people to read (README "Snapshots"); this only checks
that it still drives a secured cluster through all three phases and reports what it saw:
a snapshot taken on request, a wiped follower brought back by InstallSnapshot, and a
restart from that snapshot. Nothing here is a timing assertion.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys

from tests.procs import ROOT


def test_bench_snapshot_runs_its_three_phases() -> None:
    command = [sys.executable, "-m", "zraft.bench.snapshot", "--keys", "1000"]
    command += ["--extra-keys", "200", "--json"]
    proc = subprocess.Popen(
        command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        out, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        # SIGINT: the bench stops the nodes it started (by PID) on its way out.
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
        raise AssertionError(f"the bench did not finish in 120 s\n{err}") from None
    assert proc.returncode == 0, err
    figures = json.loads(out)
    assert figures["snapshot"]["reply"]["index"] >= 1000
    assert figures["snapshot"]["saved"], figures["snapshot"]
    installed = figures["install"]["snapshot_installed"]
    assert installed and installed[-1]["index"] == figures["install"]["leader_snapshot"]["index"]
    assert figures["restart"]["snapshot_loaded"], figures["restart"]
    assert figures["writer_errors"] == 0
