"""What metrics cost: the same load on clusters with and without `metrics`, alternately.

    python -m zraft.bench.metrics_cost [--rounds 3] [--duration 6] [--scrape-every 5] [--json]

Round after round, starts a fresh 3-node cluster (CURVE on, fsync on, the default timings)
without `metrics`, then one with it (every node counting and serving `/metrics`, scraped
every `--scrape-every` seconds during the load, as Prometheus would: its default is 15),
and drives each with the same load generator (`zraft.bench.load`): sequential puts at the
leader (p50), puts/s with 128 clients in flight and linearizable gets/s with 32, each for
`--duration` seconds. It prints the medians over the rounds, the ratio with/without and
the cost in percent. The scrapes run in the load generator's own thread between its
requests (no thread of ours competes with the load); each takes a few milliseconds.

A benchmark that prints figures, never a pass/fail test. It starts and stops its own
processes by PID, on free 127.0.0.1 ports, in a temporary directory removed at the end.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from zraft.bench.compare import medians, shown
from zraft.bench.load import BenchProgress, BenchSpec, run_bench
from zraft.testing.cluster import ProcessCluster

FIGURES = (
    ("sequential put p50 (ms)", "seq_p50_ms", False),
    ("puts/s, 128 in flight", "puts_per_s", True),
    ("linearizable gets/s, 32 in flight", "gets_per_s", True),
)
"""(label, key, whether more is better)."""


class Scraper:
    """Scrapes every node's `/metrics` at most every `every_s` seconds when called."""

    def __init__(self, urls: list[str], every_s: float) -> None:
        self._urls = urls
        self._every_s = every_s
        self._next = 0.0
        self.scrapes = 0
        self.bytes = 0

    def __call__(self, _: BenchProgress | None = None) -> None:
        now = time.monotonic()
        if not self._urls or now < self._next:
            return
        self._next = now + self._every_s
        for url in self._urls:
            with urllib.request.urlopen(url + "/metrics", timeout=5) as reply:
                self.bytes += len(reply.read())
            self.scrapes += 1


def measure(directory: Path, metrics: bool, duration: float, scrape_every: float) -> dict[str, Any]:
    """One cluster, with or without metrics: its figures (and how much was scraped)."""
    cluster = ProcessCluster(directory, 3, metrics=metrics)
    try:
        cluster.start_all()
        endpoint = cluster.client_endpoints[cluster.wait_leader()]
        scraper = Scraper(list(cluster.metrics_urls.values()), scrape_every)

        def run(spec: BenchSpec) -> Any:
            result = run_bench([endpoint], spec, curve=cluster.curve, progress=scraper)
            if result.errors:
                raise RuntimeError(f"{result.errors} errors: {dict(result.error_codes)}")
            return result

        seq = run(BenchSpec(clients=1, requests=None, duration=duration))
        puts = run(BenchSpec(clients=128, requests=None, duration=duration))
        gets = run(BenchSpec(clients=32, requests=None, duration=duration, op="get"))
    finally:
        cluster.close()
    return {
        "seq_p50_ms": seq.latencies_ms["p50"],
        "puts_per_s": puts.ops_per_s,
        "gets_per_s": gets.ops_per_s,
        "scrapes": scraper.scrapes,
        "scraped_bytes": scraper.bytes,
    }


def compare(
    rounds: int, duration: float, scrape_every: float, directory: Path, say: Callable[[str], None]
) -> list[dict[str, dict[str, Any]]]:
    """The rounds, each `{"off": figures, "on": figures}`."""
    results = []
    for number in range(1, rounds + 1):
        row = {}
        for label, on in (("off", False), ("on", True)):
            row[label] = measure(directory / f"{label}-{number}", on, duration, scrape_every)
            say(f"round {number} metrics {label}: {row[label]}")
        results.append(row)
    return results


def table(rounds: list[dict[str, dict[str, Any]]]) -> list[str]:
    """Medians, ratio with/without, and the cost in percent (positive: metrics cost)."""
    lines = ["| figure | without metrics | with metrics | with / without | cost |"]
    lines.append("|---|---|---|---|---|")
    for label, key, more_is_better in FIGURES:
        off, on = medians(rounds, key, "off", "on")
        ratio = on / off
        cost = (1 - ratio) if more_is_better else (ratio - 1)
        lines.append(
            f"| {label} | {shown(key, off)} | {shown(key, on)} | {ratio:.3f} | {cost * 100:+.1f}% |"
        )
    return lines


def main(argv: list[str] | None = None) -> int:
    """Entry point: run the rounds and print the table (or JSON)."""
    parser = argparse.ArgumentParser(
        prog="python -m zraft.bench.metrics_cost", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (3)")
    parser.add_argument("--duration", type=float, default=6.0, help="seconds per load (6)")
    parser.add_argument("--scrape-every", type=float, default=5.0, help="seconds (5)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.duration <= 0 or args.scrape_every <= 0:
        parser.error("--rounds must be >= 1; --duration and --scrape-every > 0")
    directory = Path(tempfile.mkdtemp(prefix="zraft-metrics-cost-"))
    try:
        rounds = compare(
            args.rounds,
            args.duration,
            args.scrape_every,
            directory,
            lambda line: print(line, file=sys.stderr, flush=True),
        )
    except (RuntimeError, AssertionError, OSError) as exc:
        print(f"metrics_cost: failed: {exc}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    print(json.dumps({"rounds": rounds}) if args.json else "\n".join(table(rounds)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
