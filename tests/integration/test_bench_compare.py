"""`python -m zraft.bench.compare` runs end to end (a smoke test; the figures are the
benchmark's business, not a test's)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_compare_runs_a_round_of_both_versions() -> None:
    """One round, this checkout against its own HEAD: every figure of both is measured."""
    if not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout (it makes a worktree of the base commit)")
    command = [
        sys.executable,
        "-m",
        "zraft.bench.compare",
        "--base",
        "HEAD",
        "--rounds",
        "1",
        "--duration",
        "0.5",
        "--seq-requests",
        "50",
        "--json",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    (row,) = report["rounds"]
    for label in ("base", "current"):
        assert set(row[label]) == {"seq_p50_ms", "seq_p99_ms", "puts_per_s", "gets_per_s"}
        assert all(value > 0 for value in row[label].values()), row
