"""Side-by-side benchmark of two versions of the node: an older commit and this checkout.

    python -m zraft.bench.compare --base REV [--rounds 3] [--duration 6] [--json]

Checks out REV into a temporary git worktree, then, round after round, starts a fresh
3-node cluster (CURVE on, fsync on, the default timings) from the older version's
`bin/zraft-node` and one from this checkout's, alternately, and drives each with the SAME
load generator (this checkout's `zraft.bench.load`, the one `zraft-client bench` runs),
so only the nodes differ. Per cluster: sequential puts at the leader (one client,
`--seq-requests` of them, 2,000 by default: p50/p99), puts/s with 128 clients in
flight, and linearizable gets/s with 32, each for `--duration` seconds at the leader.
It prints the medians over the rounds with the ratio current/base, and every round's
figures; `--json` prints them as one object.

A benchmark that prints figures, never a pass/fail test. It starts and stops its own
processes by PID (`zraft.testing.cluster`), on free 127.0.0.1 ports, in a temporary
directory removed at the end (`--keep DIR` keeps the clusters' files there).
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import zraft
from zraft.bench.load import BenchSpec, run_bench
from zraft.bench.workdir import run_in_workdir, say
from zraft.testing.cluster import ProcessCluster

FIGURES = (
    ("sequential put p50 (ms)", "seq_p50_ms", False),
    ("sequential put p99 (ms)", "seq_p99_ms", False),
    ("puts/s, 128 in flight", "puts_per_s", True),
    ("linearizable gets/s, 32 in flight", "gets_per_s", True),
)
"""(label, key, whether more is better) of each figure, in the order printed."""


class _TreeCluster(ProcessCluster):
    """A cluster whose nodes run the `bin/zraft-node` of another checkout (its own code:
    the script puts its checkout first on the path)."""

    def __init__(self, directory: Path, tree: Path | None) -> None:
        self._tree = tree
        super().__init__(directory, 3)

    def launcher(self) -> list[str]:
        """The other checkout's node, or this one's."""
        if self._tree is None:
            return super().launcher()
        return [sys.executable, str(self._tree / "bin" / "zraft-node")]


def measure(
    directory: Path, tree: Path | None, duration: float, seq_requests: int = 2000
) -> dict[str, float]:
    """Start a cluster from `tree` (None: this checkout), load its leader, stop it."""
    cluster = _TreeCluster(directory, tree)
    try:
        cluster.start_all()
        endpoint = cluster.client_endpoints[cluster.wait_leader()]

        def run(spec: BenchSpec) -> Any:
            result = run_bench([endpoint], spec, curve=cluster.curve)
            if result.errors:
                raise RuntimeError(f"{result.errors} errors: {dict(result.error_codes)}")
            return result

        seq = run(BenchSpec(clients=1, requests=seq_requests))
        puts = run(BenchSpec(clients=128, requests=None, duration=duration))
        gets = run(BenchSpec(clients=32, requests=None, duration=duration, op="get"))
    finally:
        cluster.close()
    return {
        "seq_p50_ms": seq.latencies_ms["p50"],
        "seq_p99_ms": seq.latencies_ms["p99"],
        "puts_per_s": puts.ops_per_s,
        "gets_per_s": gets.ops_per_s,
    }


def compare(
    base: str,
    rounds: int,
    duration: float,
    directory: Path,
    progress: Callable[[str], None],
    seq_requests: int = 2000,
) -> dict[str, Any]:
    """Run the rounds; returns `{"base", "rounds": [{"base": {...}, "current": {...}}]}`."""
    root = Path(zraft.__file__).resolve().parent.parent
    tree = directory / "base-tree"
    subprocess.run(
        ["git", "-C", str(root), "worktree", "add", "--detach", "--quiet", str(tree), base],
        check=True,
    )
    results: list[dict[str, dict[str, float]]] = []
    try:
        for number in range(1, rounds + 1):
            row = {}
            for label, source in (("base", tree), ("current", None)):
                row[label] = measure(
                    directory / f"{label}-{number}", source, duration, seq_requests
                )
                progress(f"round {number} {label}: {_short(row[label])}")
            results.append(row)
    finally:
        subprocess.run(
            ["git", "-C", str(root), "worktree", "remove", "--force", str(tree)], check=False
        )
    return {"base": base, "rounds": results}


def _short(figures: dict[str, float]) -> str:
    return ", ".join(f"{key} {value:.3g}" for key, value in figures.items())


def medians(rounds: list[dict[str, dict[str, Any]]], key: str, *sides: str) -> list[float]:
    """The median of figure `key` over the rounds, for each of `sides` (`base`, `on`...)."""
    return [statistics.median(r[side][key] for r in rounds) for side in sides]


def shown(key: str, value: float) -> str:
    """A figure as the tables print it: rates as whole numbers, times with 3 decimals."""
    return f"{value:,.0f}" if key.endswith("_per_s") else f"{value:.3f}"


def table(report: dict[str, Any]) -> list[str]:
    """The medians, the ratio current/base, and each round's figures, as text lines."""
    rounds = report["rounds"]
    lines = [
        f"| figure | base {report['base']} | current | current / base | rounds (base; current) |"
    ]
    lines.append("|---|---|---|---|---|")
    for label, key, _ in FIGURES:
        base, current = medians(rounds, key, "base", "current")
        each = "; ".join(
            ", ".join(shown(key, r[side][key]) for r in rounds) for side in ("base", "current")
        )
        lines.append(
            f"| {label} | {shown(key, base)} | {shown(key, current)} "
            f"| {current / base:.3f} | {each} |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the comparison and print it."""
    parser = argparse.ArgumentParser(
        prog="python -m zraft.bench.compare",
        description="Compare this checkout's node with an older commit's, side by side.",
    )
    parser.add_argument("--base", required=True, help="the commit to compare with (git rev)")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per load (6)")
    parser.add_argument(
        "--seq-requests", type=int, default=2000, help="sequential puts per cluster (2000)"
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--keep", type=Path, metavar="DIR", help="keep the clusters' files")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.seq_requests < 1:
        parser.error("--rounds and --seq-requests must be >= 1, --duration > 0")
    return run_in_workdir(
        "compare",
        args.keep,
        lambda directory: compare(
            args.base, args.rounds, args.duration, directory, say, args.seq_requests
        ),
        table,
        as_json=args.json,
        failures=(subprocess.CalledProcessError, RuntimeError, AssertionError),
    )


if __name__ == "__main__":
    sys.exit(main())
