"""`python -m zraft.bench.versus` (with etcd when it is installed) and `python -m
zraft.bench.breakdown` run end to end (smoke tests; the figures are the benchmarks'
business, not a test's)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

from zraft.bench import breakdown
from zraft.bench.versus import FIGURES, table

ROOT = Path(__file__).resolve().parents[2]


def test_versus_runs_a_round_of_each_system() -> None:
    """One short round: every figure of each system is measured and the table prints
    them (with the ratio column only when etcd ran)."""
    systems = ["zraft", "etcd"] if shutil.which("etcd") else ["zraft"]
    command = [sys.executable, "-m", "zraft.bench.versus", "--rounds", "1", "--json"]
    command += ["--duration", "0.3", "--seq-requests", "30", "--failovers", "1", "--settle", "0"]
    command += ["--put-clients", "8", "--get-clients", "4", "--systems", ",".join(systems)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["systems"] == systems
    (row,) = report["rounds"]
    for system in systems:
        assert set(row[system]) == {key for _, key, _ in FIGURES}
        assert all(value > 0 for value in row[system].values()), row
    lines = table(report)
    assert len(lines) == 2 + len(FIGURES)
    assert ("zraft / etcd" in lines[0]) == (len(systems) == 2)


def test_breakdown_joins_every_write_with_the_nodes_traces() -> None:
    """Every measured write is found in the leader's and a follower's trace, and its
    stages are all there (the medians of the durations are positive)."""
    command = [sys.executable, "-m", "zraft.bench.breakdown", "--json"]
    command += ["--writes", "40", "--warmup", "10"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=90)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["writes"] == report["joined"] == 40
    medians = report["median_ms"]
    assert all(medians[key] > 0 for _, key in breakdown.STAGES), medians
    assert medians["total"] >= medians["leader_fsync"] + medians["client_to_leader"]
    assert len(breakdown.table(report)) == 2 + len(breakdown.STAGES) + 3
